//! The architecture presets: one table ([`PRESETS`]) from which the preset names, the
//! configurations ([`VitConfig::preset`]) and the release weights `fungi fetch` downloads
//! ([`Preset::entry`]) all derive.
//!
//! DINO / DINOv2 presets are the torch.hub models; the paper's other backbones go by their timm
//! / torchvision names (reference spec §2.2): what `timm.create_model(name, num_classes=0)`
//! (CLIP: its 512-d projection head kept) or torchvision's `vit_b_16()` with `heads = Identity`
//! builds, with the model's eval transform.

use fungi_hub::{Entry, Source};

use crate::config::VitConfig;
use crate::error::{Error, Result};
use fungi_aug::normalize::{IMAGENET_MEAN, IMAGENET_STD};
use fungi_aug::resample::Filter;
use fungi_aug::transforms::EvalTransform;

use crate::family::{Layout, PosPrefix};

const HALF: [f32; 3] = [0.5, 0.5, 0.5];
const CLIP_MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
#[allow(clippy::excessive_precision)] // timm's OPENAI_CLIP_STD digits, as written there
const CLIP_STD: [f32; 3] = [0.268_629_54, 0.261_302_58, 0.275_777_1];

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
    c.transform = Some(EvalTransform::timm(224, 0.9, Filter::Bicubic, mean, std));
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
        transform: Some(EvalTransform::torchvision(
            224,
            256,
            Filter::Bilinear,
            IMAGENET_MEAN,
            IMAGENET_STD,
        )),
        ..VitConfig::dino(patch, 768, 12)
    })
}

/// One architecture preset: its name, what it is, how its configuration is made and where its
/// official release weights are published.
#[derive(Debug, Clone, Copy)]
pub struct Preset {
    /// The name (`dino_vitb16`, `vit_base_patch16_224.mae`, `vit_b_16`, ...).
    pub name: &'static str,
    /// What it is, for `fungi fetch --list`.
    pub description: &'static str,
    /// Where torch.hub / torchvision / timm download its weights from.
    pub weights: Source,
    make: fn(&str) -> Option<VitConfig>,
}

impl Preset {
    /// The architecture.
    ///
    /// # Errors
    /// Never for an entry of [`PRESETS`] (each is checked by a test).
    pub fn config(&self) -> Result<VitConfig> {
        (self.make)(self.name).ok_or_else(|| Error::UnknownPreset {
            name: self.name.to_string(),
        })
    }
    /// Its release weights, for [`fungi_hub`]'s downloader.
    pub fn entry(&self) -> Entry {
        Entry {
            name: self.name,
            source: self.weights,
            description: self.description,
        }
    }
}

/// The preset called `name`.
pub fn find(name: &str) -> Option<&'static Preset> {
    PRESETS.iter().find(|p| p.name == name)
}

/// Every preset name, in table order.
pub fn names() -> Vec<&'static str> {
    PRESETS.iter().map(|p| p.name).collect()
}

const fn dino(
    name: &'static str,
    make: fn(&str) -> Option<VitConfig>,
    url: &'static str,
    description: &'static str,
) -> Preset {
    Preset {
        name,
        description,
        weights: Source::Url {
            url,
            sha256_prefix: None,
        },
        make,
    }
}

const fn timm(name: &'static str, repo: &'static str, description: &'static str) -> Preset {
    Preset {
        name,
        description,
        weights: Source::HuggingFace {
            repo,
            file: "model.safetensors",
            revision: "main",
        },
        make: timm_preset,
    }
}

const fn torchvision(
    name: &'static str,
    url: &'static str,
    sha256_prefix: &'static str,
    description: &'static str,
) -> Preset {
    Preset {
        name,
        description,
        weights: Source::Url {
            url,
            sha256_prefix: Some(sha256_prefix),
        },
        make: torchvision_preset,
    }
}

/// Every architecture preset, with its official release weights: DINO / DINOv2 at torch.hub's
/// URLs (no checksum published), timm's Hugging Face repos `timm/<name>` (the hub publishes each
/// file's sha256), torchvision's `IMAGENET1K_V1` files (the sha256 prefix in the file name, as
/// torch.hub checks it).
pub const PRESETS: &[Preset] = &[
    dino(
        "dino_vits16",
        |_| Some(VitConfig::dino_vits16()),
        "https://dl.fbaipublicfiles.com/dino/dino_deitsmall16_pretrain/dino_deitsmall16_pretrain.pth",
        "DINO ViT-S/16 backbone (torch.hub facebookresearch/dino)",
    ),
    dino(
        "dino_vits8",
        |_| Some(VitConfig::dino_vits8()),
        "https://dl.fbaipublicfiles.com/dino/dino_deitsmall8_pretrain/dino_deitsmall8_pretrain.pth",
        "DINO ViT-S/8 backbone",
    ),
    dino(
        "dino_vitb16",
        |_| Some(VitConfig::dino_vitb16()),
        "https://dl.fbaipublicfiles.com/dino/dino_vitbase16_pretrain/dino_vitbase16_pretrain.pth",
        "DINO ViT-B/16 backbone",
    ),
    dino(
        "dino_vitb8",
        |_| Some(VitConfig::dino_vitb8()),
        "https://dl.fbaipublicfiles.com/dino/dino_vitbase8_pretrain/dino_vitbase8_pretrain.pth",
        "DINO ViT-B/8 backbone",
    ),
    dino(
        "dinov2_vits14",
        |_| Some(VitConfig::dinov2_vits14()),
        "https://dl.fbaipublicfiles.com/dinov2/dinov2_vits14/dinov2_vits14_pretrain.pth",
        "DINOv2 ViT-S/14 (torch.hub facebookresearch/dinov2)",
    ),
    dino(
        "dinov2_vitb14",
        |_| Some(VitConfig::dinov2_vitb14()),
        "https://dl.fbaipublicfiles.com/dinov2/dinov2_vitb14/dinov2_vitb14_pretrain.pth",
        "DINOv2 ViT-B/14",
    ),
    dino(
        "dinov2_vits14_reg",
        |_| Some(VitConfig::dinov2_vits14_reg()),
        "https://dl.fbaipublicfiles.com/dinov2/dinov2_vits14/dinov2_vits14_reg4_pretrain.pth",
        "DINOv2 ViT-S/14 with 4 registers",
    ),
    dino(
        "dinov2_vitb14_reg",
        |_| Some(VitConfig::dinov2_vitb14_reg()),
        "https://dl.fbaipublicfiles.com/dinov2/dinov2_vitb14/dinov2_vitb14_reg4_pretrain.pth",
        "DINOv2 ViT-B/14 with 4 registers",
    ),
    timm(
        "vit_small_patch16_224.augreg_in1k",
        "timm/vit_small_patch16_224.augreg_in1k",
        "AugReg ViT-S/16, ImageNet-1k (timm)",
    ),
    timm(
        "vit_small_patch16_224.augreg_in21k",
        "timm/vit_small_patch16_224.augreg_in21k",
        "AugReg ViT-S/16, ImageNet-21k (timm)",
    ),
    timm(
        "vit_base_patch16_224.augreg_in1k",
        "timm/vit_base_patch16_224.augreg_in1k",
        "AugReg ViT-B/16, ImageNet-1k (timm)",
    ),
    timm(
        "vit_base_patch16_224.augreg_in21k",
        "timm/vit_base_patch16_224.augreg_in21k",
        "AugReg ViT-B/16, ImageNet-21k (timm)",
    ),
    timm(
        "vit_large_patch16_224.augreg_in21k",
        "timm/vit_large_patch16_224.augreg_in21k",
        "AugReg ViT-L/16, ImageNet-21k (timm)",
    ),
    timm(
        "vit_base_patch16_clip_224.openai",
        "timm/vit_base_patch16_clip_224.openai",
        "OpenAI CLIP ViT-B/16 image tower (timm)",
    ),
    timm(
        "vit_base_patch16_224.mae",
        "timm/vit_base_patch16_224.mae",
        "MAE ViT-B/16 (timm)",
    ),
    timm(
        "deit3_small_patch16_224.fb_in1k",
        "timm/deit3_small_patch16_224.fb_in1k",
        "DeiT III ViT-S/16 (timm)",
    ),
    timm(
        "deit3_base_patch16_224.fb_in1k",
        "timm/deit3_base_patch16_224.fb_in1k",
        "DeiT III ViT-B/16 (timm)",
    ),
    torchvision(
        "vit_b_16",
        "https://download.pytorch.org/models/vit_b_16-c867db91.pth",
        "c867db91",
        "torchvision ViT-B/16 (IMAGENET1K_V1)",
    ),
    torchvision(
        "vit_b_32",
        "https://download.pytorch.org/models/vit_b_32-d86f8d99.pth",
        "d86f8d99",
        "torchvision ViT-B/32 (IMAGENET1K_V1)",
    ),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_preset_builds_a_valid_architecture_with_unique_names() {
        let mut seen = std::collections::HashSet::new();
        for p in PRESETS {
            assert!(seen.insert(p.name), "{} twice", p.name);
            let c = p.config().unwrap();
            c.validate(Some(p.name)).unwrap();
            assert_eq!(VitConfig::from_preset_or_file(p.name).unwrap(), c);
            if let Source::Url {
                url,
                sha256_prefix: Some(h),
            } = p.weights
            {
                assert!(url.contains(&format!("-{h}.")), "{}", p.name);
            }
        }
        assert!(find("vit_huge").is_none());
    }
}
