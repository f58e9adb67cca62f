//! # fungi-backbone
//!
//! Vision Transformers in [Burn](https://burn.dev), generic over the backend: DINO (v1) and
//! DINOv2 (with registers), timm's `VisionTransformer` family (AugReg, CLIP, MAE, DeiT III,
//! configured by timm's keyword names), torchvision's `vit_b_16` / `vit_b_32` and Hugging
//! Face's `Dinov2Model` / `ViTModel`. Module fields are named like the DINO / timm state dict,
//! so those checkpoints (`.pth`, `.safetensors`, ONNX initializers) load without remapping,
//! strictly; the other layouts are mapped by [`keys`].
//!
//! ```no_run
//! use burn::backend::Flex;
//! use fungi_backbone::{Vit, VitConfig};
//!
//! let device = Default::default();
//! let config = VitConfig::dino_vits16();
//! let vit = Vit::<Flex>::from_file(&config, "dino_deitsmall16_pretrain.pth", &device)?;
//! let images = burn::tensor::Tensor::zeros([2, 3, 224, 224], &device);
//! let cls = vit.forward(images); // [2, 384]
//! # Ok::<(), fungi_backbone::Error>(())
//! ```
//!
//! For FUNGI's gradient engine the forward can be split around any Linear layer
//! ([`Vit::tap`] / [`Vit::resume`], addressed by [`TargetLayer`] dot paths such as
//! `blocks.11.attn.proj`), so that only the part after the target layer needs autodiff.
#![warn(missing_docs)]

mod attention;
mod block;
mod config;
mod error;
pub mod family;
pub mod keys;
mod layer_norm;
mod linear;
pub mod memory;
mod mlp;
mod onnx;
pub mod ops;
mod parse;
mod patch_embed;
pub mod pos_embed;
pub mod precision;
pub mod presets;
mod target;
mod vit;
mod weights;

pub use attention::Attention;
pub use block::{Block, BlockTap, LayerScale};
pub use config::VitConfig;
pub use error::{Error, KeyProblem, Result};
pub use family::{Act, Layout, Pool, PosPrefix};
pub use layer_norm::LayerNorm;
pub use mlp::{activate, gelu_exact, gelu_tanh, quick_gelu, Mlp};
pub use ops::{AutodiffVitOps, LinearEpilogue, VitOps};
pub use patch_embed::PatchEmbed;
pub use precision::Precision;
pub use presets::{Preset, PRESETS};
pub use target::{Site, TargetLayer};
pub use vit::{Tap, Vit};
pub use weights::{RawTensor, StateDict};
