//! # fungi-aug
//!
//! The image side of FUNGI, reproducing the reference pipelines bit for bit: decoding to RGB as
//! `PIL.Image.open(f).convert("RGB")`, Pillow's fixed-point resampling ([`resample`]), the views
//! each objective makes of an image ([`transforms`]) and ImageNet normalisation ([`normalize`]).
//! No Burn dependency: outputs are CHW `f32` buffers ready to become a tensor batch.
#![warn(missing_docs)]

pub mod color;
pub mod crop;
pub mod decode;
mod error;
pub mod mask;
pub mod multicrop;
pub mod normalize;
pub mod patchify;
pub mod resample;
pub mod transforms;

pub use color::{ColorJitter, JitterParams};
pub use crop::{CropBox, RandomResizedCrop};
pub use decode::{check_not_empty, decode_rgb, decode_rgb_bytes, DecodeOptions, MAX_IMAGE_PIXELS};
pub use error::{DecodeError, Error, Limit, Result};
pub use image;
pub use image::RgbImage;
pub use multicrop::{DinoTransform, MultiCrop};
pub use patchify::Patchify;
pub use transforms::{EvalStyle, EvalTransform, KlTransform};
