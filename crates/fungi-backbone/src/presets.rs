//! Architecture presets of the paper's other backbones, by their timm / torchvision names
//! (reference spec §2.2). Each is what `timm.create_model(name, num_classes=0)` (CLIP: its
//! 512-d projection head kept) or torchvision's `vit_b_16()` with `heads = Identity` builds,
//! with the model's eval transform.

use crate::config::VitConfig;
use crate::family::{Interpolation, Layout, ModelTransform, PosPrefix};

const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];
const HALF: [f32; 3] = [0.5, 0.5, 0.5];
const CLIP_MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
#[allow(clippy::excessive_precision)] // timm's OPENAI_CLIP_STD digits, as written there
const CLIP_STD: [f32; 3] = [0.268_629_54, 0.261_302_58, 0.275_777_1];

/// timm's eval transform for a square `img_size` (`floor(img_size / crop_pct)`, center crop).
pub(crate) fn timm_transform(
    img_size: usize,
    crop_pct: f64,
    interpolation: Interpolation,
    mean: [f32; 3],
    std: [f32; 3],
) -> ModelTransform {
    ModelTransform {
        resize: (img_size as f64 / crop_pct).floor() as u32,
        crop: img_size as u32,
        interpolation,
        mean,
        std,
        squash: false,
        style: Default::default(),
    }
}

/// A timm `VisionTransformer` with timm's defaults (class token, position embedding over the
/// prefix, final norm, token pooling, GELU, LayerNorm eps 1e-6), without a head.
pub(crate) fn timm_base(embed_dim: usize, depth: usize, num_heads: usize) -> VitConfig {
    VitConfig {
        img_size: 224,
        patch_size: 16,
        layout: Layout::Timm,
        pos_prefix: PosPrefix::All,
        interpolate_offset: 0.0,
        depth,
        ..VitConfig::dino(16, embed_dim, num_heads)
    }
}

fn timm_preset(name: &str) -> Option<VitConfig> {
    let (arch, tag) = name.split_once('.')?;
    let mut c = match arch {
        "vit_small_patch16_224" => timm_base(384, 12, 6),
        "vit_base_patch16_224" => timm_base(768, 12, 12),
        "vit_large_patch16_224" => timm_base(1024, 24, 16),
        "vit_base_patch16_clip_224" => VitConfig {
            pre_norm: true,
            patch_bias: false,
            layer_norm_eps: 1e-5,
            ..timm_base(768, 12, 12)
        },
        "deit3_small_patch16_224" => VitConfig {
            layer_scale: true,
            pos_prefix: PosPrefix::None,
            ..timm_base(384, 12, 6)
        },
        "deit3_base_patch16_224" => VitConfig {
            layer_scale: true,
            pos_prefix: PosPrefix::None,
            ..timm_base(768, 12, 12)
        },
        _ => return None,
    };
    let (mean, std) = match (arch, tag) {
        (_, "augreg_in1k" | "augreg_in21k") if arch.starts_with("vit_") => (HALF, HALF),
        ("vit_base_patch16_clip_224", "openai") => {
            c.num_classes = 512;
            (CLIP_MEAN, CLIP_STD)
        }
        ("vit_base_patch16_224", "mae") => (IMAGENET_MEAN, IMAGENET_STD),
        ("deit3_small_patch16_224" | "deit3_base_patch16_224", "fb_in1k") => {
            (IMAGENET_MEAN, IMAGENET_STD)
        }
        _ => return None,
    };
    if arch == "vit_large_patch16_224" && tag != "augreg_in21k" {
        return None;
    }
    c.transform = Some(timm_transform(224, 0.9, Interpolation::Bicubic, mean, std));
    Some(c)
}

/// torchvision's `vit_b_16` / `vit_b_32` with `IMAGENET1K_V1` weights (heads dropped): its
/// weights transform is `ImageClassification(crop_size=224, resize_size=256, bilinear)`.
fn torchvision_preset(name: &str) -> Option<VitConfig> {
    let patch = match name {
        "vit_b_16" => 16,
        "vit_b_32" => 32,
        _ => return None,
    };
    Some(VitConfig {
        layout: Layout::Torchvision,
        interpolate_offset: 0.0,
        transform: Some(ModelTransform {
            resize: 256,
            crop: 224,
            interpolation: Interpolation::Bilinear,
            mean: IMAGENET_MEAN,
            std: IMAGENET_STD,
            squash: false,
            style: Default::default(),
        }),
        ..VitConfig::dino(patch, 768, 12)
    })
}

/// The timm or torchvision preset called `name`, if any.
pub(crate) fn other_family(name: &str) -> Option<VitConfig> {
    timm_preset(name).or_else(|| torchvision_preset(name))
}
