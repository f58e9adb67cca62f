//! # fungi-backbone
//!
//! DINO (v1) and DINOv2 Vision Transformers in [Burn](https://burn.dev), generic over the
//! backend, with module fields named exactly like the PyTorch state dict so DINO's released
//! checkpoints (`.pth`) and safetensors files load without remapping, strictly.
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
mod layer_norm;
mod linear;
pub mod memory;
mod mlp;
pub mod ops;
mod patch_embed;
pub mod pos_embed;
pub mod precision;
mod target;
mod vit;
mod weights;

pub use attention::Attention;
pub use block::{Block, BlockTap, LayerScale};
pub use config::{VitConfig, PRESETS};
pub use error::{Error, KeyProblem, Result};
pub use layer_norm::LayerNorm;
pub use mlp::{gelu_exact, Mlp};
pub use ops::{AutodiffVitOps, LinearEpilogue, VitOps};
pub use patch_embed::PatchEmbed;
pub use precision::Precision;
pub use target::{Site, TargetLayer};
pub use vit::{Tap, Vit};
pub use weights::{RawTensor, StateDict};
