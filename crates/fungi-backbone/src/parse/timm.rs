//! timm's `VisionTransformer(**kwargs)` and its `pretrained_cfg` (`"family": "timm"`).

use serde_json::{Map, Value};

use super::{interpolation, Keys, DESCRIPTIVE};
use crate::config::VitConfig;
use crate::error::Result;
use crate::family::{Act, Pool, PosPrefix};
use crate::presets::timm_base;
use fungi_aug::resample::Filter;
use fungi_aug::transforms::EvalTransform;

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
pub(super) fn timm(map: Map<String, Value>, source: Option<&str>) -> Result<VitConfig> {
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
