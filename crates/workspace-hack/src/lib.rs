//! `fungi-workspace-hack`: no code. Every workspace crate depends on it so that each third-party
//! crate is built with one feature set whichever package a build selects (`cargo test
//! --workspace`, `-p fungi-tests --features ndarray`, maturin's `-p fungi-py`): one compilation of
//! burn-flex, gemm and the rest serves them all. Managed by `cargo hakari` (`.config/hakari.toml`;
//! after changing dependencies: `cargo hakari generate && cargo hakari manage-deps`), see docs/ci.md.
