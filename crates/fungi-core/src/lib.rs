//! # fungi-core
//!
//! The engine of FUNGI ("Features from UNsupervised GradIents"): for every image and every
//! self-supervised [`Objective`], the per-image gradient of the objective's loss w.r.t. one
//! Linear layer of a frozen ViT ([`GradientEngine`]), projected by a fixed random ±1 matrix
//! ([`Projection`]), L2-normalised, and concatenated ([`FungiExtractor`]).
//!
//! Generic over Burn's autodiff backends (`B: AutodiffBackend`); this crate enables none.
//! See `docs/design.md` for why the engine is exact.
#![warn(missing_docs)]

pub mod device_projection;
pub mod engine;
mod error;
pub mod extractor;
pub mod head;
pub mod memory;
pub mod objective;
pub mod projection;
pub mod rng;
pub mod state;
pub mod tensor_file;
pub mod token_projection;
pub mod transform;

pub use device_projection::{DeviceProjection, Residency};
pub use engine::{l2_normalize, GradPath, GradientEngine, PerImage, PerToken};
pub use error::{Error, Result};
pub use extractor::{
    ExtractorConfig, FungiExtractor, FungiExtractorBuilder, ObjectiveOutput, PreparedBatch,
};
pub use head::Head;
pub use objective::{Objective, SetupContext, StateTensor};
pub use projection::Projection;
pub use state::take_state;
pub use transform::EmbeddingTransform;
