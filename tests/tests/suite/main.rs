//! The suite of `fungi-tests`, one module per area, in one test binary: the golden-parity,
//! autodiff, batch-invariance and image-pipeline tests on the backend the package's feature
//! selects (`cargo test-flex`, `cargo test-ndarray`, `cargo test-cuda`; see `src/lib.rs`).
//!
//! One binary rather than one per file: each test binary instantiates Burn's generic backend
//! code for the backend under test again, and on ndarray that is ~100 CPU-s per binary
//! (docs/ci.md). Run one area with a filter: `cargo test --release -p fungi-tests --test suite
//! -- core::`.

mod aug;
mod backbone;
mod backbones;
mod core;
mod deepcluster;
mod dense;
mod facade;
mod knn;
mod objectives;
