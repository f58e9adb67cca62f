//! The official release weights of every architecture preset, at the addresses torch.hub,
//! torchvision and timm's `pretrained_cfg` download them from.

/// Where a checkpoint is published.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A plain HTTPS file (torch.hub `load_state_dict_from_url`: DINO, DINOv2, torchvision).
    Url {
        /// The release URL.
        url: &'static str,
        /// The checksum the source publishes: torchvision's file names carry the first hex
        /// digits of the file's sha256 (torch.hub's `check_hash`); DINO's and DINOv2's carry none.
        sha256_prefix: Option<&'static str>,
    },
    /// A file of a Hugging Face hub model repository (timm's `hf_hub_id`); the hub publishes
    /// the sha256 of large files as their `X-Linked-Etag`.
    HuggingFace {
        /// `owner/name` of the model repository.
        repo: &'static str,
        /// The file in the repository.
        file: &'static str,
        /// Branch, tag or commit.
        revision: &'static str,
    },
}

/// One downloadable checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// The name: the architecture preset these weights fit (fungi-backbone's `PRESETS`).
    pub name: &'static str,
    /// Where it is published.
    pub source: Source,
    /// What it is, for `fungi fetch --list`.
    pub description: &'static str,
}

impl Entry {
    /// The original URL (before any mirror): the release URL, or the hub's `resolve` URL.
    pub fn url(&self) -> String {
        match self.source {
            Source::Url { url, .. } => url.to_string(),
            Source::HuggingFace {
                repo,
                file,
                revision,
            } => format!(
                "{}/{repo}/resolve/{revision}/{file}",
                crate::HF_DEFAULT_ENDPOINT
            ),
        }
    }
}

const fn url(name: &'static str, url: &'static str, description: &'static str) -> Entry {
    Entry {
        name,
        source: Source::Url {
            url,
            sha256_prefix: None,
        },
        description,
    }
}

const fn torchvision(
    name: &'static str,
    url: &'static str,
    sha256_prefix: &'static str,
    description: &'static str,
) -> Entry {
    Entry {
        name,
        source: Source::Url {
            url,
            sha256_prefix: Some(sha256_prefix),
        },
        description,
    }
}

const fn timm(name: &'static str, repo: &'static str, description: &'static str) -> Entry {
    Entry {
        name,
        source: Source::HuggingFace {
            repo,
            file: "model.safetensors",
            revision: "main",
        },
        description,
    }
}

/// Every checkpoint `fungi fetch` knows, by preset name.
pub const CATALOGUE: &[Entry] = &[
    url(
        "dino_vits16",
        "https://dl.fbaipublicfiles.com/dino/dino_deitsmall16_pretrain/dino_deitsmall16_pretrain.pth",
        "DINO ViT-S/16 backbone (torch.hub facebookresearch/dino)",
    ),
    url(
        "dino_vits8",
        "https://dl.fbaipublicfiles.com/dino/dino_deitsmall8_pretrain/dino_deitsmall8_pretrain.pth",
        "DINO ViT-S/8 backbone",
    ),
    url(
        "dino_vitb16",
        "https://dl.fbaipublicfiles.com/dino/dino_vitbase16_pretrain/dino_vitbase16_pretrain.pth",
        "DINO ViT-B/16 backbone",
    ),
    url(
        "dino_vitb8",
        "https://dl.fbaipublicfiles.com/dino/dino_vitbase8_pretrain/dino_vitbase8_pretrain.pth",
        "DINO ViT-B/8 backbone",
    ),
    url(
        "dinov2_vits14",
        "https://dl.fbaipublicfiles.com/dinov2/dinov2_vits14/dinov2_vits14_pretrain.pth",
        "DINOv2 ViT-S/14 (torch.hub facebookresearch/dinov2)",
    ),
    url(
        "dinov2_vitb14",
        "https://dl.fbaipublicfiles.com/dinov2/dinov2_vitb14/dinov2_vitb14_pretrain.pth",
        "DINOv2 ViT-B/14",
    ),
    url(
        "dinov2_vits14_reg",
        "https://dl.fbaipublicfiles.com/dinov2/dinov2_vits14/dinov2_vits14_reg4_pretrain.pth",
        "DINOv2 ViT-S/14 with 4 registers",
    ),
    url(
        "dinov2_vitb14_reg",
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

/// The catalogue entry of `name`.
pub fn find(name: &str) -> Option<&'static Entry> {
    CATALOGUE.iter().find(|e| e.name == name)
}

/// Every name in the catalogue.
pub fn names() -> Vec<&'static str> {
    CATALOGUE.iter().map(|e| e.name).collect()
}
