//! Architecture configs of the other families, by their own keyword names: timm's
//! `VisionTransformer(**kwargs)` plus its `pretrained_cfg` (`"family": "timm"`), torchvision's
//! `VisionTransformer` (`"family": "torchvision"`), and Hugging Face `config.json` files
//! (`"model_type": "dinov2" | "vit"`). Unknown keys are errors naming the key.

use serde_json::{Map, Value};

use crate::config::{edit_distance, VitConfig};
use crate::error::{Error, Result};
use fungi_aug::resample::Filter;
use fungi_aug::transforms::{EvalStyle, EvalTransform};

use crate::family::{Act, Layout, Pool, PosPrefix};
use crate::presets::timm_base;

/// Takes typed values out of a JSON object; what is left at the end is an unknown key.
struct Keys<'a> {
    map: Map<String, Value>,
    source: Option<&'a str>,
    family: &'static str,
    known: Vec<&'static str>,
}

impl<'a> Keys<'a> {
    fn new(map: Map<String, Value>, source: Option<&'a str>, family: &'static str) -> Self {
        Self {
            map,
            source,
            family,
            known: Vec::new(),
        }
    }

    fn err(&self, key: &str, value: &Value, expected: &str) -> Error {
        Error::Config {
            source_name: self.source.map(str::to_string),
            key: key.to_string(),
            value: value.to_string(),
            expected: expected.to_string(),
        }
    }

    fn take(&mut self, key: &'static str) -> Option<Value> {
        self.known.push(key);
        self.map.remove(key).filter(|v| !v.is_null())
    }

    /// A value that may be present as JSON `null` (meaning "the default").
    fn take_nullable(&mut self, key: &'static str) -> Option<Value> {
        self.known.push(key);
        self.map.remove(key)
    }

    fn usize(&mut self, key: &'static str, default: usize) -> Result<usize> {
        match self.take(key) {
            None => Ok(default),
            Some(v) => match v.as_u64() {
                Some(n) => usize::try_from(n).map_err(|_| self.err(key, &v, "a smaller integer")),
                None => Err(self.err(key, &v, "a non-negative integer")),
            },
        }
    }

    /// An integer, or a `[h, w]` pair with `h == w` (timm accepts both for sizes).
    fn square(&mut self, key: &'static str, default: usize) -> Result<usize> {
        match self.take(key) {
            None => Ok(default),
            Some(v) => {
                let n = match &v {
                    Value::Array(a) if a.len() == 2 && a[0] == a[1] => a[0].as_u64(),
                    Value::Array(_) => None,
                    other => other.as_u64(),
                };
                n.map(|n| n as usize)
                    .ok_or_else(|| self.err(key, &v, "a positive integer or a square [n, n] pair"))
            }
        }
    }

    fn f64(&mut self, key: &'static str, default: f64) -> Result<f64> {
        match self.take(key) {
            None => Ok(default),
            Some(v) => v.as_f64().ok_or_else(|| self.err(key, &v, "a number")),
        }
    }

    fn bool(&mut self, key: &'static str, default: bool) -> Result<bool> {
        match self.take(key) {
            None => Ok(default),
            Some(v) => v
                .as_bool()
                .ok_or_else(|| self.err(key, &v, "true or false")),
        }
    }

    fn string(&mut self, key: &'static str) -> Result<Option<String>> {
        match self.take(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(v) => Err(self.err(key, &v, "a string")),
        }
    }

    fn rgb(&mut self, key: &'static str, default: [f32; 3]) -> Result<[f32; 3]> {
        match self.take(key) {
            None => Ok(default),
            Some(v) => {
                let parsed = v.as_array().filter(|a| a.len() == 3).and_then(|a| {
                    let x: Vec<f32> = a
                        .iter()
                        .filter_map(|x| x.as_f64())
                        .map(|x| x as f32)
                        .collect();
                    (x.len() == 3).then(|| [x[0], x[1], x[2]])
                });
                parsed.ok_or_else(|| self.err(key, &v, "three numbers (R, G, B)"))
            }
        }
    }

    /// Drops keys that only matter for training or bookkeeping.
    fn ignore(&mut self, keys: &[&'static str]) {
        for k in keys {
            self.known.push(k);
            self.map.remove(*k);
        }
    }

    /// Errors on the first key nobody took.
    fn finish(self) -> Result<()> {
        let Some(key) = self.map.keys().next() else {
            return Ok(());
        };
        let closest = self
            .known
            .iter()
            .min_by_key(|k| edit_distance(key, k))
            .filter(|k| edit_distance(key, k) <= 1 + key.len() / 3)
            .map(|k| format!(" (did you mean `{k}`?)"))
            .unwrap_or_default();
        let mut known = self.known.clone();
        known.sort_unstable();
        known.dedup();
        Err(Error::ConfigParse {
            path: self.source.unwrap_or("<string>").into(),
            reason: format!(
                "unknown key `{key}` for the {} family{closest}; known keys: {}",
                self.family,
                known.join(", ")
            ),
        })
    }
}

const DESCRIPTIVE: &[&str] = &[
    "family",
    "comment",
    "description",
    "name",
    "arch",
    "architecture",
];

/// timm training-only constructor arguments (accepted, not used by an eval forward).
const TIMM_TRAINING: &[&str] = &[
    "drop_rate",
    "pos_drop_rate",
    "patch_drop_rate",
    "proj_drop_rate",
    "attn_drop_rate",
    "drop_path_rate",
    "weight_init",
    "fix_init",
    "dynamic_img_size",
    "dynamic_img_pad",
];

fn interpolation(keys: &Keys<'_>, key: &str, v: Option<String>, default: Filter) -> Result<Filter> {
    match v.as_deref() {
        None => Ok(default),
        Some("bicubic") => Ok(Filter::Bicubic),
        Some("bilinear") => Ok(Filter::Bilinear),
        Some(other) => Err(keys.err(
            key,
            &Value::String(other.into()),
            "\"bicubic\" or \"bilinear\" (PIL filters of the eval resize)",
        )),
    }
}

/// `pretrained_cfg`: `{mean, std, interpolation, crop_pct, input_size, crop_mode}`.
fn timm_pretrained_cfg(outer: &Keys<'_>, v: Value, img_size: usize) -> Result<EvalTransform> {
    let Value::Object(map) = v else {
        return Err(outer.err("pretrained_cfg", &v, "an object (timm's pretrained_cfg)"));
    };
    let mut k = Keys::new(map, outer.source, "timm pretrained_cfg");
    let mean = k.rgb("mean", [0.485, 0.456, 0.406])?;
    let std = k.rgb("std", [0.229, 0.224, 0.225])?;
    let interp = k.string("interpolation")?;
    let interp = interpolation(&k, "pretrained_cfg.interpolation", interp, Filter::Bicubic)?;
    let crop_pct = k.f64("crop_pct", 0.875)?;
    if !(crop_pct > 0.0 && crop_pct <= 1.0) {
        return Err(k.err(
            "pretrained_cfg.crop_pct",
            &Value::from(crop_pct),
            "a number in (0, 1]",
        ));
    }
    let size = match k.take("input_size") {
        None => img_size,
        Some(v) => match v
            .as_array()
            .map(|a| a.iter().map(|x| x.as_u64()).collect::<Vec<_>>())
        {
            Some(a) if a.len() == 3 && a[1].is_some() && a[1] == a[2] => a[1].unwrap_or(0) as usize,
            _ => {
                return Err(k.err(
                    "pretrained_cfg.input_size",
                    &v,
                    "[3, n, n] (a square input; the eval transform crops a square)",
                ))
            }
        },
    };
    if let Some(mode) = k.string("crop_mode")? {
        if mode != "center" {
            return Err(k.err(
                "pretrained_cfg.crop_mode",
                &Value::String(mode),
                "\"center\" (the only crop mode implemented)",
            ));
        }
    }
    k.ignore(&[
        "url",
        "hf_hub_id",
        "hf_hub_filename",
        "file",
        "state_dict",
        "architecture",
        "tag",
        "custom_load",
        "num_classes",
        "pool_size",
        "first_conv",
        "classifier",
        "fixed_input_size",
        "min_input_size",
        "test_input_size",
        "test_crop_pct",
        "license",
        "notes",
        "paper_ids",
        "paper_name",
        "origin_url",
        "source",
        "label_names",
        "label_descriptions",
    ]);
    k.finish()?;
    Ok(EvalTransform::timm(
        size as u32,
        crop_pct,
        interp,
        mean,
        std,
    ))
}

/// `{"family": "timm", ...}`: timm's `VisionTransformer` keyword arguments.
fn timm(map: Map<String, Value>, source: Option<&str>) -> Result<VitConfig> {
    let mut k = Keys::new(map, source, "timm");
    let img_size = k.square("img_size", 224)?;
    let patch_size = k.square("patch_size", 16)?;
    let embed_dim = k.usize("embed_dim", 768)?;
    let depth = k.usize("depth", 12)?;
    let num_heads = k.usize("num_heads", 12)?;
    let mut c = timm_base(embed_dim, depth, num_heads);
    c.img_size = img_size;
    c.patch_size = patch_size;
    c.in_chans = k.usize("in_chans", 3)?;
    c.mlp_ratio = k.f64("mlp_ratio", 4.0)?;
    c.qkv_bias = k.bool("qkv_bias", true)?;
    c.qk_norm = k.bool("qk_norm", false)?;
    c.proj_bias = k.bool("proj_bias", true)?;
    c.layer_scale = match k.take("init_values") {
        None => false,
        Some(v) => match v.as_f64() {
            Some(x) if x != 0.0 => true,
            Some(_) => false,
            None => return Err(k.err("init_values", &v, "a number (LayerScale init) or null")),
        },
    };
    c.class_token = k.bool("class_token", true)?;
    c.pos_prefix = if k.bool("no_embed_class", false)? {
        PosPrefix::None
    } else {
        PosPrefix::All
    };
    c.reg_tokens = k.usize("reg_tokens", 0)?;
    c.pre_norm = k.bool("pre_norm", false)?;
    c.patch_bias = !c.pre_norm;
    let final_norm = k.bool("final_norm", true)?;
    let pool = match k.take_nullable("global_pool") {
        None => Pool::Token,
        Some(Value::String(s)) => match s.as_str() {
            "token" => Pool::Token,
            "avg" => Pool::Avg,
            "max" => Pool::Max,
            "avgmax" => Pool::Avgmax,
            "" => {
                return Err(k.err(
                    "global_pool",
                    &Value::String(s),
                    "\"token\", \"avg\", \"max\" or \"avgmax\": with \"\" timm returns every token, and FUNGI needs one embedding per view",
                ))
            }
            _ => {
                return Err(k.err(
                    "global_pool",
                    &Value::String(s),
                    "\"token\", \"avg\", \"max\" or \"avgmax\" (attention pooling, \"map\"/\"prr\", is not implemented)",
                ))
            }
        },
        Some(v) => return Err(k.err("global_pool", &v, "a string")),
    };
    c.global_pool = pool;
    let use_fc_norm = match k.take("fc_norm") {
        None => matches!(pool, Pool::Avg | Pool::Max | Pool::Avgmax),
        Some(v) => v
            .as_bool()
            .ok_or_else(|| k.err("fc_norm", &v, "true, false or null"))?,
    };
    c.final_norm = final_norm && !use_fc_norm;
    c.fc_norm = final_norm && use_fc_norm;
    c.num_classes = k.usize("num_classes", 0)?;
    let act = k.string("act_layer")?;
    c.act_layer = match act.as_deref() {
        None | Some("gelu") => Act::Gelu,
        Some("gelu_tanh") => Act::GeluTanh,
        Some("quick_gelu") => Act::QuickGelu,
        Some(other) => {
            return Err(k.err(
                "act_layer",
                &Value::String(other.into()),
                "\"gelu\", \"gelu_tanh\" or \"quick_gelu\"",
            ))
        }
    };
    c.layer_norm_eps = k.f64("norm_eps", 1e-6)?;
    if let Some(v) = k.take("pretrained_cfg") {
        c.transform = Some(timm_pretrained_cfg(&k, v, img_size)?);
    }
    if !c.class_token && c.global_pool == Pool::Token {
        return Err(k.err(
            "global_pool",
            &Value::String("token".into()),
            "\"avg\", \"max\" or \"avgmax\": token pooling needs the class token (class_token is false)",
        ));
    }
    c.state_dict_prefix = k.string("state_dict_prefix")?;
    k.ignore(DESCRIPTIVE);
    k.ignore(TIMM_TRAINING);
    k.finish()?;
    Ok(c)
}

/// `{"family": "torchvision", ...}`: torchvision's `VisionTransformer` keyword arguments, plus
/// `transforms` (its weights' `ImageClassification` parameters).
fn torchvision(map: Map<String, Value>, source: Option<&str>) -> Result<VitConfig> {
    let mut k = Keys::new(map, source, "torchvision");
    let image_size = k.usize("image_size", 224)?;
    let patch_size = k.usize("patch_size", 16)?;
    let num_layers = k.usize("num_layers", 12)?;
    let num_heads = k.usize("num_heads", 12)?;
    let hidden_dim = k.usize("hidden_dim", 768)?;
    let mlp_dim = k.usize("mlp_dim", 3072)?;
    let num_classes = k.usize("num_classes", 0)?;
    if let Some(v) = k.take("representation_size") {
        return Err(k.err(
            "representation_size",
            &v,
            "null (the pre-logits layer of torchvision's ViT is not implemented)",
        ));
    }
    let mut c = VitConfig {
        img_size: image_size,
        patch_size,
        depth: num_layers,
        num_heads,
        embed_dim: hidden_dim,
        layout: Layout::Torchvision,
        interpolate_offset: 0.0,
        num_classes,
        ..VitConfig::dino(patch_size, hidden_dim, num_heads)
    };
    if hidden_dim > 0 {
        c.mlp_ratio = mlp_dim as f64 / hidden_dim as f64;
        if c.mlp_hidden_dim() != mlp_dim {
            return Err(k.err(
                "mlp_dim",
                &Value::from(mlp_dim),
                "a hidden size this implementation can express as embed_dim * ratio",
            ));
        }
    }
    if let Some(v) = k.take("transforms") {
        let Value::Object(map) = v else {
            return Err(k.err(
                "transforms",
                &v,
                "an object {crop_size, resize_size, interpolation, mean, std}",
            ));
        };
        let mut t = Keys::new(map, source, "torchvision transforms");
        let crop = t.usize("crop_size", 224)? as u32;
        let resize = t.usize("resize_size", 256)? as u32;
        let interp = t.string("interpolation")?;
        let interp = interpolation(&t, "transforms.interpolation", interp, Filter::Bilinear)?;
        let mean = t.rgb("mean", [0.485, 0.456, 0.406])?;
        let std = t.rgb("std", [0.229, 0.224, 0.225])?;
        if let Some(v) = t.take("antialias") {
            if v != Value::Bool(true) {
                return Err(t.err(
                    "transforms.antialias",
                    &v,
                    "true (PIL resizes are antialiased)",
                ));
            }
        }
        t.finish()?;
        if resize < crop {
            return Err(k.err(
                "transforms.resize_size",
                &Value::from(resize),
                &format!("at least crop_size = {crop}"),
            ));
        }
        c.transform = Some(EvalTransform::torchvision(crop, resize, interp, mean, std));
    }
    c.state_dict_prefix = k.string("state_dict_prefix")?;
    k.ignore(DESCRIPTIVE);
    k.ignore(&["dropout", "attention_dropout"]);
    k.finish()?;
    Ok(c)
}

/// Hugging Face `config.json` keys that do not change an eval forward.
const HF_IGNORED: &[&str] = &[
    "architectures",
    "model_type",
    "transformers_version",
    "torch_dtype",
    "dtype",
    "initializer_range",
    "hidden_dropout_prob",
    "attention_probs_dropout_prob",
    "drop_path_rate",
    "encoder_stride",
    "_name_or_path",
    "return_dict",
    "output_hidden_states",
    "output_attentions",
    "torchscript",
    "use_bfloat16",
    "tf_legacy_loss",
    "pruned_heads",
    "tie_word_embeddings",
    "chunk_size_feed_forward",
    "is_encoder_decoder",
    "is_decoder",
    "cross_attention_hidden_size",
    "add_cross_attention",
    "tie_encoder_decoder",
    "finetuning_task",
    "id2label",
    "label2id",
    "problem_type",
    "tokenizer_class",
    "prefix",
    "bos_token_id",
    "pad_token_id",
    "eos_token_id",
    "sep_token_id",
    "decoder_start_token_id",
    "task_specific_params",
    "out_features",
    "out_indices",
    "stage_names",
    "apply_layernorm",
    "reshape_hidden_states",
    "pooler_act",
    "pooler_output_size",
    "num_labels",
    "output_scores",
    "return_dict_in_generate",
    "max_length",
    "min_length",
    "do_sample",
    "early_stopping",
    "num_beams",
    "num_beam_groups",
    "diversity_penalty",
    "temperature",
    "top_k",
    "top_p",
    "typical_p",
    "repetition_penalty",
    "length_penalty",
    "no_repeat_ngram_size",
    "encoder_no_repeat_ngram_size",
    "bad_words_ids",
    "num_return_sequences",
    "exponential_decay_length_penalty",
    "suppress_tokens",
    "begin_suppress_tokens",
    "forced_bos_token_id",
    "forced_eos_token_id",
    "remove_invalid_values",
    "chunk_size",
    "use_mask_token",
];

/// A Hugging Face `config.json` of a `Dinov2Model` or a `ViTModel`.
fn hugging_face(
    model_type: &str,
    map: Map<String, Value>,
    source: Option<&str>,
) -> Result<VitConfig> {
    let (layout, family) = match model_type {
        "dinov2" => (Layout::HfDinov2, "Hugging Face dinov2"),
        "vit" => (Layout::HfVit, "Hugging Face vit"),
        other => {
            return Err(Error::Config {
                source_name: source.map(str::to_string),
                key: "model_type".into(),
                value: format!("\"{other}\""),
                expected: "\"dinov2\" (Dinov2Model) or \"vit\" (ViTModel)".into(),
            })
        }
    };
    let mut k = Keys::new(map, source, family);
    let hidden = k.usize("hidden_size", 768)?;
    let depth = k.usize("num_hidden_layers", 12)?;
    let heads = k.usize("num_attention_heads", 12)?;
    let mut c = VitConfig {
        layout,
        depth,
        img_size: k.usize("image_size", 224)?,
        in_chans: k.usize("num_channels", 3)?,
        qkv_bias: k.bool("qkv_bias", true)?,
        layer_norm_eps: k.f64(
            "layer_norm_eps",
            if layout == Layout::HfDinov2 {
                1e-6
            } else {
                1e-12
            },
        )?,
        interpolate_offset: 0.0,
        ..VitConfig::dino(16, hidden, heads)
    };
    c.patch_size = k.usize(
        "patch_size",
        if layout == Layout::HfDinov2 { 14 } else { 16 },
    )?;
    let act = k.string("hidden_act")?;
    if let Some(a) = act.filter(|a| a != "gelu") {
        return Err(k.err("hidden_act", &Value::String(a), "\"gelu\" (exact GELU)"));
    }
    if layout == Layout::HfDinov2 {
        c.mlp_ratio = k.f64("mlp_ratio", 4.0)?;
        c.layer_scale = true;
        k.ignore(&["layerscale_value"]);
        if k.bool("use_swiglu_ffn", false)? {
            return Err(k.err(
                "use_swiglu_ffn",
                &Value::Bool(true),
                "false (SwiGLU MLPs are not implemented)",
            ));
        }
        c.reg_tokens = k.usize("num_register_tokens", 0)?;
    } else {
        let inter = k.usize("intermediate_size", 3072)?;
        if hidden > 0 {
            c.mlp_ratio = inter as f64 / hidden as f64;
            if c.mlp_hidden_dim() != inter {
                return Err(k.err(
                    "intermediate_size",
                    &Value::from(inter),
                    "a hidden size this implementation can express as hidden_size * ratio",
                ));
            }
        }
    }
    if let Some(v) = k.take("preprocessor") {
        c.transform = Some(hf_preprocessor(&k, v)?);
    }
    c.state_dict_prefix = k.string("state_dict_prefix")?;
    k.ignore(DESCRIPTIVE);
    k.ignore(HF_IGNORED);
    k.finish()?;
    Ok(c)
}

/// The `size` / `crop_size` dictionaries of a transformers image processor.
fn hf_size(k: &mut Keys<'_>, key: &'static str) -> Result<Option<(u32, bool)>> {
    let Some(v) = k.take(key) else {
        return Ok(None);
    };
    let expected = "{\"shortest_edge\": n} or {\"height\": n, \"width\": n} (square)";
    let get = |name: &str| {
        v.get(name)
            .and_then(Value::as_u64)
            .filter(|&n| n > 0 && n <= 1 << 16)
    };
    let obj = v.as_object().map(|o| o.len()).unwrap_or(0);
    match (get("shortest_edge"), get("height"), get("width")) {
        (Some(n), None, None) if obj == 1 => Ok(Some((n as u32, false))),
        (None, Some(h), Some(w)) if h == w && obj == 2 => Ok(Some((h as u32, true))),
        _ => Err(k.err(&format!("preprocessor.{key}"), &v, expected)),
    }
}

/// `preprocessor`: a transformers image processor's `preprocessor_config.json`
/// (`BitImageProcessor` of Dinov2, `ViTImageProcessor`): resize (`size`, `resample`), center
/// crop (`crop_size`), rescale by 1/255, normalise. `image_processor_type` ending in `Pil`
/// (or `"backend": "pil"`) selects the PIL backend's conventions; otherwise transformers 5's
/// default torchvision backend.
fn hf_preprocessor(outer: &Keys<'_>, v: Value) -> Result<EvalTransform> {
    let Value::Object(map) = v else {
        return Err(outer.err(
            "preprocessor",
            &v,
            "an object (the image processor's preprocessor_config.json)",
        ));
    };
    let mut k = Keys::new(map, outer.source, "transformers image processor");
    let ty = k.string("image_processor_type")?.unwrap_or_default();
    let style = match k.string("backend")?.as_deref() {
        Some("pil") => EvalStyle::HfPil,
        Some("torchvision") => EvalStyle::HfTorch,
        None if ty.ends_with("Pil") => EvalStyle::HfPil,
        None => EvalStyle::HfTorch,
        Some(other) => {
            return Err(k.err(
                "preprocessor.backend",
                &Value::String(other.into()),
                "\"pil\" or \"torchvision\"",
            ))
        }
    };
    let must = |k: &mut Keys<'_>, key: &'static str, what: &str| -> Result<()> {
        if k.bool(key, true)? {
            Ok(())
        } else {
            Err(k.err(
                &format!("preprocessor.{key}"),
                &Value::Bool(false),
                &format!("true ({what} is always part of the eval transform here)"),
            ))
        }
    };
    must(&mut k, "do_resize", "the resize")?;
    must(&mut k, "do_rescale", "scaling to [0, 1]")?;
    must(&mut k, "do_normalize", "the normalisation")?;
    let factor = k.f64("rescale_factor", 1.0 / 255.0)?;
    if (factor * 255.0 - 1.0).abs() > 1e-12 {
        return Err(k.err(
            "preprocessor.rescale_factor",
            &Value::from(factor),
            "1/255 (0.00392156862745098)",
        ));
    }
    let interpolation = match k.take("resample") {
        None => Filter::Bicubic,
        Some(Value::Number(n)) if n.as_u64() == Some(3) => Filter::Bicubic,
        Some(Value::Number(n)) if n.as_u64() == Some(2) => Filter::Bilinear,
        Some(v) => {
            return Err(k.err(
                "preprocessor.resample",
                &v,
                "3 (PIL BICUBIC) or 2 (PIL BILINEAR)",
            ))
        }
    };
    let Some((resize, squash)) = hf_size(&mut k, "size")? else {
        return Err(k.err(
            "preprocessor.size",
            &Value::Null,
            "the resize size ({\"shortest_edge\": n} or {\"height\": n, \"width\": n})",
        ));
    };
    let crop = if k.bool("do_center_crop", !squash)? {
        match hf_size(&mut k, "crop_size")? {
            Some((c, true)) => c,
            _ => {
                return Err(k.err(
                    "preprocessor.crop_size",
                    &Value::Null,
                    "{\"height\": n, \"width\": n} (a square crop)",
                ))
            }
        }
    } else {
        k.ignore(&["crop_size"]);
        if !squash {
            return Err(k.err(
                "preprocessor.do_center_crop",
                &Value::Bool(false),
                "true with a shortest_edge resize (without a crop the inputs are not square)",
            ));
        }
        resize
    };
    if crop > resize {
        return Err(k.err(
            "preprocessor.crop_size",
            &Value::from(crop),
            &format!("at most the resize size {resize}"),
        ));
    }
    let mean = k.rgb("image_mean", [0.485, 0.456, 0.406])?;
    let std = k.rgb("image_std", [0.229, 0.224, 0.225])?;
    if std.iter().any(|&s| !(s > 0.0 && s.is_finite())) {
        return Err(k.err(
            "preprocessor.image_std",
            &Value::from(std.to_vec()),
            "three positive numbers",
        ));
    }
    if !k.bool("do_convert_rgb", true)? {
        return Err(k.err(
            "preprocessor.do_convert_rgb",
            &Value::Bool(false),
            "true (images are always converted to RGB)",
        ));
    }
    k.ignore(&[
        "processor_class",
        "default_to_square",
        "do_pad",
        "pad_size",
        "data_format",
    ]);
    k.finish()?;
    Ok(EvalTransform {
        resize,
        crop,
        filter: interpolation,
        mean,
        std,
        squash,
        style,
    })
}

/// The config of another family, if `map` names one (`family` or `model_type`); `None` for a
/// DINO config.
pub(crate) fn other_family(
    map: &mut Map<String, Value>,
    source: Option<&str>,
) -> Result<Option<VitConfig>> {
    if let Some(mt) = map
        .get("model_type")
        .and_then(Value::as_str)
        .map(str::to_string)
    {
        return hugging_face(&mt, std::mem::take(map), source).map(Some);
    }
    let family = match map.get("family") {
        None => return Ok(None),
        Some(Value::String(s)) => s.clone(),
        Some(v) => {
            return Err(Error::Config {
                source_name: source.map(str::to_string),
                key: "family".into(),
                value: v.to_string(),
                expected: "\"dino\", \"timm\" or \"torchvision\"".into(),
            })
        }
    };
    match family.as_str() {
        "dino" | "dinov2" => {
            map.remove("family");
            Ok(None)
        }
        "timm" => timm(std::mem::take(map), source).map(Some),
        "torchvision" => torchvision(std::mem::take(map), source).map(Some),
        other => Err(Error::Config {
            source_name: source.map(str::to_string),
            key: "family".into(),
            value: format!("\"{other}\""),
            expected:
                "\"dino\", \"timm\" or \"torchvision\" (Hugging Face configs carry `model_type`)"
                    .into(),
        }),
    }
}
