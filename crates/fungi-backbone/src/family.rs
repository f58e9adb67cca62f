//! The options of the ViT families beyond DINO (timm's `VisionTransformer`, torchvision's
//! `VisionTransformer`, Hugging Face's `Dinov2Model` / `ViTModel`) and the model eval transform.

use serde::{Deserialize, Serialize};

/// How a checkpoint names its tensors. The model's own fields use the DINO / timm names; the
/// other layouts are mapped onto them when loading (see [`crate::keys`]), and target layers may
/// be named either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Layout {
    /// facebookresearch DINO / DINOv2 (`blocks.N.attn.qkv`, `register_tokens`).
    #[default]
    Dino,
    /// timm's `VisionTransformer` (`blocks.N.attn.qkv`, `reg_token`, `fc_norm`, `head`).
    Timm,
    /// torchvision's `VisionTransformer` (`encoder.layers.encoder_layer_N.self_attention`).
    Torchvision,
    /// Hugging Face transformers `Dinov2Model` (`encoder.layer.N.attention.attention.query`).
    HfDinov2,
    /// Hugging Face transformers `ViTModel` (`encoder.layer.N.intermediate.dense`).
    HfVit,
}

impl Layout {
    /// The name used in configs and messages.
    pub fn name(self) -> &'static str {
        match self {
            Layout::Dino => "dino",
            Layout::Timm => "timm",
            Layout::Torchvision => "torchvision",
            Layout::HfDinov2 => "hf_dinov2",
            Layout::HfVit => "hf_vit",
        }
    }
}

/// How the tokens become one embedding (timm's `global_pool`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pool {
    /// The class token (`x[:, 0]`).
    #[default]
    Token,
    /// Mean of the patch tokens (prefix tokens excluded).
    Avg,
    /// Maximum over the patch tokens.
    Max,
    /// `0.5 * (max + mean)` over the patch tokens.
    Avgmax,
}

/// The MLP activation (timm's `act_layer`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Act {
    /// Exact (erf) GELU (`nn.GELU()`).
    #[default]
    Gelu,
    /// tanh-approximated GELU (`nn.GELU(approximate="tanh")`).
    GeluTanh,
    /// CLIP's `x * sigmoid(1.702 x)`.
    QuickGelu,
}

/// Which prefix tokens the position embedding covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PosPrefix {
    /// The class token only: `cat(cls, patches) + pos`, register tokens inserted after
    /// (DINO, DINOv2 with registers, Hugging Face, torchvision).
    #[default]
    Cls,
    /// Every prefix token (timm's default: `cat(cls, reg, patches) + pos`).
    All,
    /// None (timm's `no_embed_class`: `cat(cls, reg, patches + pos)`).
    None,
}
