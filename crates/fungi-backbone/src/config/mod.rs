//! Architecture configuration: presets and DINO-style JSON configs.

mod validate;

use std::path::Path;

use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use fungi_aug::transforms::EvalTransform;

use crate::family::{Act, Layout, Pool, PosPrefix};
use crate::vit::Vit;

/// Keys an architecture JSON may carry for people (documentation, provenance) or for DINO's
/// training-only constructor arguments; their values are not used.
pub const DESCRIPTIVE_KEYS: &[&str] = &[
    "arch",
    "activation",
    "attn_drop_rate",
    "comment",
    "description",
    "drop_path_rate",
    "drop_rate",
    "dropout",
    "dtype",
    "files",
    "head",
    "init",
    "name",
    "norm_layer",
    "num_parameters",
    "output",
    "state_dict",
    "target_layer",
];

/// Keys that restate a value derived from the others; when present they must agree with it
/// (`num_classes` must be 0: the embedding is the CLS token, no classification head).
pub const DERIVED_KEYS: &[&str] = &[
    "attn_scale",
    "head_dim",
    "mlp_hidden_dim",
    "num_classes",
    "num_patches",
    "num_tokens",
    "qk_scale",
];

const FIELDS: &[&str] = &[
    "img_size",
    "patch_size",
    "in_chans",
    "embed_dim",
    "depth",
    "num_heads",
    "mlp_ratio",
    "qkv_bias",
    "layer_norm_eps",
    "layer_scale",
    "interpolate_offset",
    "num_register_tokens",
    "interpolate_antialias",
    "state_dict_prefix",
];

/// Levenshtein distance, for "did you mean" hints.
pub(crate) fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            cur.push(
                (prev[j] + usize::from(ca != *cb))
                    .min(prev[j + 1] + 1)
                    .min(cur[j] + 1),
            );
        }
        prev = cur;
    }
    prev[b.len()]
}

/// `n`, `[n]` or `[n, n]`: the side of a square input.
fn square_side<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<usize, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Side {
        One(usize),
        List(Vec<usize>),
    }
    match Side::deserialize(d)? {
        Side::One(n) => Ok(n),
        Side::List(v) if matches!(v.len(), 1 | 2) && v.iter().all(|&x| x == v[0]) => Ok(v[0]),
        Side::List(v) => Err(serde::de::Error::custom(format!(
            "{v:?}: a square input size expected (n, [n] or [n, n])"
        ))),
    }
}

fn default_in_chans() -> usize {
    3
}
fn default_mlp_ratio() -> f64 {
    4.0
}
fn default_true() -> bool {
    true
}
fn default_eps() -> f64 {
    1e-6
}
fn default_offset() -> f64 {
    0.1
}

/// Architecture of a DINO (v1) or DINOv2 Vision Transformer.
///
/// Field names are the keyword arguments of DINO's `VisionTransformer`, so a JSON file written
/// for it (such as the golden `model.json`) loads as is. Unknown keys are errors (a typo such as
/// `layer_norm_epsilon` must not silently fall back to a default); see [`DESCRIPTIVE_KEYS`] and
/// [`DERIVED_KEYS`] for the other keys a config may carry.
/// `layer_scale` (DINOv2's `ls1/ls2.gamma`) and `interpolate_offset` default to DINO v1 values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VitConfig {
    /// Image size the position embedding was trained for (224 for DINO, 518 for DINOv2); in a
    /// file also as DINO's constructor takes it, `[224]` (or `[224, 224]`).
    #[serde(deserialize_with = "square_side")]
    pub img_size: usize,
    /// Patch size in pixels.
    pub patch_size: usize,
    /// Input channels.
    #[serde(default = "default_in_chans")]
    pub in_chans: usize,
    /// Embedding (token) dimension.
    pub embed_dim: usize,
    /// Number of transformer blocks.
    pub depth: usize,
    /// Attention heads per block.
    pub num_heads: usize,
    /// MLP hidden size = `int(embed_dim * mlp_ratio)`.
    #[serde(default = "default_mlp_ratio")]
    pub mlp_ratio: f64,
    /// Whether `attn.qkv` has a bias.
    #[serde(default = "default_true")]
    pub qkv_bias: bool,
    /// LayerNorm epsilon (1e-6 in DINO and DINOv2).
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    /// DINOv2 LayerScale (`blocks.N.ls1.gamma`, `blocks.N.ls2.gamma`).
    #[serde(default)]
    pub layer_scale: bool,
    /// Offset added to the target grid size when the position embedding is interpolated
    /// (DINO's and DINOv2's `+ 0.1` kludge; 0 interpolates to the size, as timm and Hugging
    /// Face do).
    #[serde(default = "default_offset")]
    pub interpolate_offset: f64,
    /// Antialiased bicubic interpolation of the position embedding (DINOv2 with registers:
    /// `interpolate_antialias=True`).
    #[serde(default, skip_serializing_if = "is_false")]
    pub interpolate_antialias: bool,
    /// Register tokens (DINOv2's `num_register_tokens`, timm's `reg_tokens`).
    #[serde(
        default,
        alias = "num_register_tokens",
        skip_serializing_if = "is_zero"
    )]
    pub reg_tokens: usize,

    // The options below are set by the other families' configs (timm, torchvision, Hugging
    // Face; see `family`); their defaults are DINO's, and a DINO config never serialises them.
    /// How the checkpoint names its tensors.
    #[serde(default, skip_serializing_if = "is_default")]
    pub layout: Layout,
    /// Whether there is a class token (timm's `class_token`).
    #[serde(default = "default_true", skip_serializing_if = "is_true")]
    pub class_token: bool,
    /// Which prefix tokens the position embedding covers (timm's `no_embed_class`).
    #[serde(default, skip_serializing_if = "is_default")]
    pub pos_prefix: PosPrefix,
    /// A LayerNorm after the position embedding (`norm_pre`, CLIP).
    #[serde(default, skip_serializing_if = "is_false")]
    pub pre_norm: bool,
    /// A LayerNorm over the tokens after the blocks (`norm`).
    #[serde(default = "default_true", skip_serializing_if = "is_true")]
    pub final_norm: bool,
    /// A LayerNorm after pooling (`fc_norm`, MAE-style) instead of `norm`.
    #[serde(default, skip_serializing_if = "is_false")]
    pub fc_norm: bool,
    /// Token pooling.
    #[serde(default, skip_serializing_if = "is_default")]
    pub global_pool: Pool,
    /// Outputs of a Linear head kept as the embedding (`head`, e.g. CLIP's projection); 0: none.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub num_classes: usize,
    /// MLP activation.
    #[serde(default, skip_serializing_if = "is_default")]
    pub act_layer: Act,
    /// LayerNorm of queries and keys per head (`attn.q_norm`, `attn.k_norm`).
    #[serde(default, skip_serializing_if = "is_false")]
    pub qk_norm: bool,
    /// Whether `attn.proj` and the MLP's `fc1` / `fc2` have biases (timm's `proj_bias`).
    #[serde(default = "default_true", skip_serializing_if = "is_true")]
    pub proj_bias: bool,
    /// Whether the patch embedding has a bias (timm: not with `pre_norm`).
    #[serde(default = "default_true", skip_serializing_if = "is_true")]
    pub patch_bias: bool,
    /// The model's own eval transform (timm's `pretrained_cfg`, torchvision's weights
    /// transforms), if the config carries one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transform: Option<EvalTransform>,
    /// Where the backbone sits in the checkpoint: only its keys starting with this prefix are
    /// read, without it (the rest is ignored) — `teacher.backbone.` of DINO's full checkpoints,
    /// `state_dict.module.base_encoder.` of MoCo v3's (a `.pth`'s nested dicts are joined with
    /// `.`). With it, a timm config without a head also ignores every `head.*` key (a training
    /// projector).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_dict_prefix: Option<String>,
}

fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}
fn is_true(v: &bool) -> bool {
    *v
}
fn is_false(v: &bool) -> bool {
    !*v
}
fn is_zero(v: &usize) -> bool {
    *v == 0
}

impl VitConfig {
    pub(crate) fn dino(patch_size: usize, embed_dim: usize, num_heads: usize) -> Self {
        Self {
            img_size: 224,
            patch_size,
            in_chans: 3,
            embed_dim,
            depth: 12,
            num_heads,
            mlp_ratio: 4.0,
            qkv_bias: true,
            layer_norm_eps: 1e-6,
            layer_scale: false,
            interpolate_offset: 0.1,
            interpolate_antialias: false,
            reg_tokens: 0,
            layout: Layout::Dino,
            class_token: true,
            pos_prefix: PosPrefix::Cls,
            pre_norm: false,
            final_norm: true,
            fc_norm: false,
            global_pool: Pool::Token,
            num_classes: 0,
            act_layer: Act::Gelu,
            qk_norm: false,
            proj_bias: true,
            patch_bias: true,
            transform: None,
            state_dict_prefix: None,
        }
    }
    fn dinov2(embed_dim: usize, num_heads: usize) -> Self {
        Self {
            img_size: 518,
            patch_size: 14,
            layer_scale: true,
            ..Self::dino(14, embed_dim, num_heads)
        }
    }
    /// DINO ViT-S/16 (`dino_vits16`).
    pub fn dino_vits16() -> Self {
        Self::dino(16, 384, 6)
    }
    /// DINO ViT-S/8 (`dino_vits8`).
    pub fn dino_vits8() -> Self {
        Self::dino(8, 384, 6)
    }
    /// DINO ViT-B/16 (`dino_vitb16`).
    pub fn dino_vitb16() -> Self {
        Self::dino(16, 768, 12)
    }
    /// DINO ViT-B/8 (`dino_vitb8`).
    pub fn dino_vitb8() -> Self {
        Self::dino(8, 768, 12)
    }
    /// DINOv2 ViT-S/14 (`dinov2_vits14`, no registers).
    pub fn dinov2_vits14() -> Self {
        Self::dinov2(384, 6)
    }
    /// DINOv2 ViT-B/14 (`dinov2_vitb14`, no registers).
    pub fn dinov2_vitb14() -> Self {
        Self::dinov2(768, 12)
    }
    /// DINOv2 ViT-S/14 with 4 registers (`dinov2_vits14_reg`, torch.hub's
    /// `dinov2_vits14_reg4_pretrain.pth`).
    pub fn dinov2_vits14_reg() -> Self {
        Self {
            reg_tokens: 4,
            interpolate_offset: 0.0,
            interpolate_antialias: true,
            ..Self::dinov2(384, 6)
        }
    }
    /// DINOv2 ViT-B/14 with 4 registers (`dinov2_vitb14_reg`).
    pub fn dinov2_vitb14_reg() -> Self {
        Self {
            reg_tokens: 4,
            interpolate_offset: 0.0,
            interpolate_antialias: true,
            ..Self::dinov2(768, 12)
        }
    }

    /// A preset by name (see [`crate::presets::PRESETS`]).
    pub fn preset(name: &str) -> Result<Self> {
        crate::presets::find(name)
            .ok_or_else(|| Error::UnknownPreset {
                name: name.to_string(),
            })?
            .config()
    }

    /// Parses a JSON architecture config (DINO keyword names) and validates it. Unknown keys are
    /// errors naming the key (with the closest known one); [`DESCRIPTIVE_KEYS`] are accepted and
    /// ignored; [`DERIVED_KEYS`] must agree with the configuration.
    pub fn from_json_str(json: &str, source_name: Option<&str>) -> Result<Self> {
        let parse_err = |reason: String| Error::ConfigParse {
            path: source_name.unwrap_or("<string>").into(),
            reason,
        };
        let de = &mut serde_json::Deserializer::from_str(json);
        let mut map: serde_json::Map<String, serde_json::Value> =
            serde_path_to_error::deserialize(de)
                .map_err(|e| parse_err(format!("`{}`: {}", e.path(), e.inner())))?;
        if let Some(cfg) = crate::parse::other_family(&mut map, source_name)? {
            cfg.validate(source_name)?;
            return Ok(cfg);
        }
        let mut derived = Vec::new();
        for key in map.keys().cloned().collect::<Vec<_>>() {
            if FIELDS.contains(&key.as_str()) {
                continue;
            }
            let value = map.remove(&key).unwrap_or_default();
            if DERIVED_KEYS.contains(&key.as_str()) {
                derived.push((key, value));
            } else if !DESCRIPTIVE_KEYS.contains(&key.as_str()) {
                let closest = FIELDS
                    .iter()
                    .chain(DERIVED_KEYS)
                    .min_by_key(|k| edit_distance(&key, k))
                    .filter(|k| edit_distance(&key, k) <= 1 + key.len() / 3)
                    .map(|k| format!(" (did you mean `{k}`?)"))
                    .unwrap_or_default();
                return Err(parse_err(format!(
                    "unknown key `{key}`{closest}; known keys: {}",
                    FIELDS.join(", ")
                )));
            }
        }
        let cfg: Self = serde_path_to_error::deserialize(serde_json::Value::Object(map))
            .map_err(|e| parse_err(format!("`{}`: {}", e.path(), e.inner())))?;
        cfg.validate(source_name)?;
        for (key, value) in derived {
            cfg.check_derived(&key, &value, source_name)?;
        }
        Ok(cfg)
    }

    fn check_derived(
        &self,
        key: &str,
        value: &serde_json::Value,
        source_name: Option<&str>,
    ) -> Result<()> {
        let g = self.pos_grid();
        let scale = (self.head_dim() as f64).powf(-0.5);
        let (ok, expected) = match key {
            "mlp_hidden_dim" => (
                value.as_u64() == Some(self.mlp_hidden_dim() as u64),
                self.mlp_hidden_dim().to_string(),
            ),
            "head_dim" => (
                value.as_u64() == Some(self.head_dim() as u64),
                self.head_dim().to_string(),
            ),
            "num_patches" => (value.as_u64() == Some((g * g) as u64), (g * g).to_string()),
            "num_tokens" => (
                value.as_u64() == Some((g * g + 1) as u64),
                (g * g + 1).to_string(),
            ),
            "num_classes" => (
                value.as_u64() == Some(0),
                "0 (no classification head: the embedding is the CLS token)".into(),
            ),
            "attn_scale" | "qk_scale" => (
                value.is_null()
                    || value
                        .as_f64()
                        .is_some_and(|v| (v - scale).abs() <= 1e-6 * scale),
                format!(
                    "{scale} (head_dim^-0.5){}",
                    if key == "qk_scale" { " or null" } else { "" }
                ),
            ),
            _ => (true, String::new()),
        };
        if ok {
            Ok(())
        } else {
            Err(Error::Config {
                source_name: source_name.map(str::to_string),
                key: key.to_string(),
                value: value.to_string(),
                expected: format!("{expected}, as derived from the other keys"),
            })
        }
    }

    /// Number of parameters (`None` on overflow).
    pub fn num_parameters(&self) -> Option<u64> {
        let (e, h, p, c) = (
            self.embed_dim as u64,
            self.mlp_hidden_dim() as u64,
            self.patch_size as u64,
            self.in_chans as u64,
        );
        let g = self.pos_grid() as u64;
        let per_block = e
            .checked_mul(e)?
            .checked_mul(4)?
            .checked_add(e.checked_mul(h)?.checked_mul(2)?)?
            .checked_add(h.checked_add(e.checked_mul(if self.layer_scale {
                11
            } else {
                9
            })?)?)?;
        let stem = g
            .checked_mul(g)?
            .checked_add(3)?
            .checked_mul(e)?
            .checked_add(e.checked_mul(c)?.checked_mul(p)?.checked_mul(p)?)?;
        let approx = per_block
            .checked_mul(self.depth as u64)?
            .checked_add(stem)?
            .checked_add(2 * e)?;
        if approx > (1 << 40) || self.depth > 100_000 {
            return Some(approx);
        }
        // Small enough to list: exact for every family option.
        Some(
            self.state_dict_shapes()
                .iter()
                .map(|(_, s)| s.iter().product::<usize>() as u64)
                .sum(),
        )
    }

    /// Reads a JSON architecture config file.
    pub fn from_json_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_json_str(&text, Some(&path.display().to_string()))
    }

    /// A preset name, or else the path of a JSON config file.
    pub fn from_preset_or_file(arch: &str) -> Result<Self> {
        if let Some(p) = crate::presets::find(arch) {
            return p.config();
        }
        let path = Path::new(arch);
        if path.exists() {
            return Self::from_json_file(path);
        }
        Err(Error::UnknownPreset {
            name: arch.to_string(),
        })
    }

    /// MLP hidden width, `int(embed_dim * mlp_ratio)` as in DINO.
    pub fn mlp_hidden_dim(&self) -> usize {
        (self.embed_dim as f64 * self.mlp_ratio).max(0.0) as usize
    }
    /// Per-head dimension.
    pub fn head_dim(&self) -> usize {
        self.embed_dim / self.num_heads
    }
    /// Side of the square position-embedding grid (`img_size / patch_size`).
    pub fn pos_grid(&self) -> usize {
        self.img_size / self.patch_size
    }

    /// Every parameter of the architecture as (key, PyTorch shape), in state-dict order, named
    /// as the model's fields are (DINO / timm names; [`crate::keys`] maps other layouts).
    pub fn state_dict_shapes(&self) -> Vec<(String, Vec<usize>)> {
        let (e, h, p, c) = (
            self.embed_dim,
            self.mlp_hidden_dim(),
            self.patch_size,
            self.in_chans,
        );
        let g = self.pos_grid();
        let hd = self.head_dim();
        let mut v: Vec<(String, Vec<usize>)> = Vec::new();
        if self.class_token {
            v.push(("cls_token".into(), vec![1, 1, e]));
        }
        if self.reg_tokens > 0 {
            v.push(("reg_token".into(), vec![1, self.reg_tokens, e]));
        }
        v.push((
            "pos_embed".into(),
            vec![1, self.pos_prefix_len() + g * g, e],
        ));
        v.push(("patch_embed.proj.weight".into(), vec![e, c, p, p]));
        if self.patch_bias {
            v.push(("patch_embed.proj.bias".into(), vec![e]));
        }
        if self.pre_norm {
            v.push(("norm_pre.weight".into(), vec![e]));
            v.push(("norm_pre.bias".into(), vec![e]));
        }
        for i in 0..self.depth {
            let b = format!("blocks.{i}.");
            v.push((format!("{b}norm1.weight"), vec![e]));
            v.push((format!("{b}norm1.bias"), vec![e]));
            v.push((format!("{b}attn.qkv.weight"), vec![3 * e, e]));
            if self.qkv_bias {
                v.push((format!("{b}attn.qkv.bias"), vec![3 * e]));
            }
            if self.qk_norm {
                for n in ["q_norm", "k_norm"] {
                    v.push((format!("{b}attn.{n}.weight"), vec![hd]));
                    v.push((format!("{b}attn.{n}.bias"), vec![hd]));
                }
            }
            v.push((format!("{b}attn.proj.weight"), vec![e, e]));
            if self.proj_bias {
                v.push((format!("{b}attn.proj.bias"), vec![e]));
            }
            if self.layer_scale {
                v.push((format!("{b}ls1.gamma"), vec![e]));
            }
            v.push((format!("{b}norm2.weight"), vec![e]));
            v.push((format!("{b}norm2.bias"), vec![e]));
            v.push((format!("{b}mlp.fc1.weight"), vec![h, e]));
            if self.proj_bias {
                v.push((format!("{b}mlp.fc1.bias"), vec![h]));
            }
            v.push((format!("{b}mlp.fc2.weight"), vec![e, h]));
            if self.proj_bias {
                v.push((format!("{b}mlp.fc2.bias"), vec![e]));
            }
            if self.layer_scale {
                v.push((format!("{b}ls2.gamma"), vec![e]));
            }
        }
        if self.final_norm {
            v.push(("norm.weight".into(), vec![e]));
            v.push(("norm.bias".into(), vec![e]));
        }
        if self.fc_norm {
            v.push(("fc_norm.weight".into(), vec![e]));
            v.push(("fc_norm.bias".into(), vec![e]));
        }
        if self.num_classes > 0 {
            v.push(("head.weight".into(), vec![self.num_classes, e]));
            v.push(("head.bias".into(), vec![self.num_classes]));
        }
        v
    }

    /// Rows of the position embedding before the patch grid (prefix tokens it covers).
    pub fn pos_prefix_len(&self) -> usize {
        let cls = usize::from(self.class_token);
        match self.pos_prefix {
            PosPrefix::Cls => cls,
            PosPrefix::All => cls + self.reg_tokens,
            PosPrefix::None => 0,
        }
    }

    /// Tokens before the patch tokens (class token and registers).
    pub fn num_prefix_tokens(&self) -> usize {
        usize::from(self.class_token) + self.reg_tokens
    }

    /// Dimension of the embedding the model returns: `num_classes` with a head, else
    /// `embed_dim`.
    pub fn out_dim(&self) -> usize {
        if self.num_classes > 0 {
            self.num_classes
        } else {
            self.embed_dim
        }
    }

    /// Keys (model names) that checkpoints of this architecture may carry although the forward
    /// pass does not use them; they are accepted and ignored: DINOv2's `mask_token` (iBOT
    /// masking only), a classifier `head` when the config keeps none (`num_classes` 0: timm's
    /// `num_classes=0`, torchvision's `heads = Identity`), Hugging Face ViT's `pooler`.
    pub fn ignored_keys(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        if matches!(self.layout, Layout::Dino | Layout::HfDinov2 | Layout::HfVit) {
            // DINOv2 keeps it with or without layer scale; DINO v1 has none.
            v.push("mask_token");
        }
        if self.num_classes == 0
            && matches!(
                self.layout,
                Layout::Dino | Layout::Timm | Layout::Torchvision
            )
        {
            // DINO's VisionTransformer never applies its `head` (a linear-eval checkpoint may
            // carry one).
            v.extend(["head.weight", "head.bias"]);
        }
        if self.layout == Layout::HfVit {
            v.extend(["pooler.dense.weight", "pooler.dense.bias"]);
        }
        v
    }

    /// A randomly initialised model (DINO's init: truncated-normal std 0.02 for linear weights,
    /// CLS token and position embedding). For benchmarks and tests; load real weights with
    /// [`Vit::from_file`].
    pub fn init<B: Backend>(&self, device: &B::Device) -> Vit<B> {
        Vit::random(self, device)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn img_size_as_dinos_constructor_takes_it() {
        let base = r#""patch_size": 16, "embed_dim": 192, "depth": 2, "num_heads": 3"#;
        for (size, want) in [
            ("224", Some(224)),
            ("[224]", Some(224)),
            ("[96, 96]", Some(96)),
            ("[224, 160]", None),
        ] {
            let json = format!(r#"{{"img_size": {size}, {base}}}"#);
            let got = VitConfig::from_json_str(&json, Some("a.json"));
            match want {
                Some(n) => assert_eq!(got.unwrap().img_size, n, "{size}"),
                None => assert!(got.unwrap_err().to_string().contains("square"), "{size}"),
            }
        }
    }

    #[test]
    fn dino_checkpoints_may_carry_mask_token_and_an_unused_head() {
        let mut c = VitConfig::dino_vits16();
        assert!(c.ignored_keys().contains(&"mask_token"));
        assert!(c.ignored_keys().contains(&"head.weight"));
        c.layer_scale = false;
        assert!(c.ignored_keys().contains(&"mask_token"));
    }
}
