//! Checkpoint key layouts: the tensors of a torchvision, Hugging Face or DINO checkpoint renamed
//! (and, for separate `query` / `key` / `value`, fused) onto the model's DINO / timm names, and
//! back for messages; target layers named as in the user's checkpoint.

use std::collections::BTreeMap;

use crate::family::Layout;
use crate::target::{Site, TargetLayer};
use crate::weights::{RawTensor, StateDict};

/// Module-name prefixes that wrappers put in front of a backbone's keys (the paper's
/// `model.backbone`, Hugging Face task models' `dinov2.` / `vit.`); stripped when every key
/// carries the same one.
const WRAPPER_PREFIXES: &[&str] = &["backbone.", "module.", "dinov2.", "vit.", "model."];

/// The model's name of a checkpoint key of `layout`, if the layout renames it.
fn rename(layout: Layout, key: &str) -> Option<String> {
    match layout {
        Layout::Dino => (key == "register_tokens").then(|| "reg_token".to_string()),
        Layout::Timm => None,
        Layout::Torchvision => torchvision_to_model(key),
        Layout::HfDinov2 | Layout::HfVit => hf_to_model(layout, key),
    }
}

fn torchvision_to_model(key: &str) -> Option<String> {
    let direct = match key {
        "class_token" => Some("cls_token"),
        "encoder.pos_embedding" => Some("pos_embed"),
        "conv_proj.weight" => Some("patch_embed.proj.weight"),
        "conv_proj.bias" => Some("patch_embed.proj.bias"),
        "encoder.ln.weight" => Some("norm.weight"),
        "encoder.ln.bias" => Some("norm.bias"),
        "heads.head.weight" => Some("head.weight"),
        "heads.head.bias" => Some("head.bias"),
        _ => None,
    };
    if let Some(d) = direct {
        return Some(d.to_string());
    }
    let rest = key.strip_prefix("encoder.layers.encoder_layer_")?;
    let (n, tail) = rest.split_once('.')?;
    let n: usize = n.parse().ok()?;
    let t = match tail {
        "ln_1.weight" => "norm1.weight",
        "ln_1.bias" => "norm1.bias",
        "self_attention.in_proj_weight" => "attn.qkv.weight",
        "self_attention.in_proj_bias" => "attn.qkv.bias",
        "self_attention.out_proj.weight" => "attn.proj.weight",
        "self_attention.out_proj.bias" => "attn.proj.bias",
        "ln_2.weight" => "norm2.weight",
        "ln_2.bias" => "norm2.bias",
        "mlp.0.weight" | "mlp.linear_1.weight" => "mlp.fc1.weight",
        "mlp.0.bias" | "mlp.linear_1.bias" => "mlp.fc1.bias",
        "mlp.3.weight" | "mlp.linear_2.weight" => "mlp.fc2.weight",
        "mlp.3.bias" | "mlp.linear_2.bias" => "mlp.fc2.bias",
        _ => return None,
    };
    Some(format!("blocks.{n}.{t}"))
}

fn hf_to_model(layout: Layout, key: &str) -> Option<String> {
    let direct = match key {
        "embeddings.cls_token" => Some("cls_token"),
        "embeddings.mask_token" => Some("mask_token"),
        "embeddings.register_tokens" => Some("reg_token"),
        "embeddings.position_embeddings" => Some("pos_embed"),
        "embeddings.patch_embeddings.projection.weight" => Some("patch_embed.proj.weight"),
        "embeddings.patch_embeddings.projection.bias" => Some("patch_embed.proj.bias"),
        "layernorm.weight" => Some("norm.weight"),
        "layernorm.bias" => Some("norm.bias"),
        _ => None,
    };
    if let Some(d) = direct {
        return Some(d.to_string());
    }
    let (n, tail) = hf_block(key)?;
    let (module, param) = tail.rsplit_once('.')?;
    let site = match (layout, module) {
        (_, "attention.output.dense" | "attention.o_proj") => "attn.proj",
        (Layout::HfDinov2, "norm1") | (Layout::HfVit, "layernorm_before") => "norm1",
        (Layout::HfDinov2, "norm2") | (Layout::HfVit, "layernorm_after") => "norm2",
        (_, "mlp.fc1") | (Layout::HfVit, "intermediate.dense") => "mlp.fc1",
        (_, "mlp.fc2") | (Layout::HfVit, "output.dense") => "mlp.fc2",
        (Layout::HfDinov2, "layer_scale1") if param == "lambda1" => {
            return Some(format!("blocks.{n}.ls1.gamma"))
        }
        (Layout::HfDinov2, "layer_scale2") if param == "lambda1" => {
            return Some(format!("blocks.{n}.ls2.gamma"))
        }
        _ => return None,
    };
    Some(format!("blocks.{n}.{site}.{param}"))
}

/// The checkpoint's name of a model key, for messages (the inverse of the renaming; fused
/// `qkv` of Hugging Face layouts names its three source tensors).
pub fn checkpoint_name(layout: Layout, key: &str) -> String {
    let tail_of = |k: &str| -> Option<(usize, String)> {
        let rest = k.strip_prefix("blocks.")?;
        let (n, tail) = rest.split_once('.')?;
        Some((n.parse().ok()?, tail.to_string()))
    };
    match layout {
        Layout::Dino => match key {
            "reg_token" => "register_tokens".into(),
            k => k.into(),
        },
        Layout::Timm => key.into(),
        Layout::Torchvision => {
            let direct = match key {
                "cls_token" => Some("class_token"),
                "pos_embed" => Some("encoder.pos_embedding"),
                "patch_embed.proj.weight" => Some("conv_proj.weight"),
                "patch_embed.proj.bias" => Some("conv_proj.bias"),
                "norm.weight" => Some("encoder.ln.weight"),
                "norm.bias" => Some("encoder.ln.bias"),
                "head.weight" => Some("heads.head.weight"),
                "head.bias" => Some("heads.head.bias"),
                _ => None,
            };
            if let Some(d) = direct {
                return d.into();
            }
            let Some((n, tail)) = tail_of(key) else {
                return key.into();
            };
            let t = match tail.as_str() {
                "norm1.weight" => "ln_1.weight",
                "norm1.bias" => "ln_1.bias",
                "attn.qkv.weight" => "self_attention.in_proj_weight",
                "attn.qkv.bias" => "self_attention.in_proj_bias",
                "attn.proj.weight" => "self_attention.out_proj.weight",
                "attn.proj.bias" => "self_attention.out_proj.bias",
                "norm2.weight" => "ln_2.weight",
                "norm2.bias" => "ln_2.bias",
                "mlp.fc1.weight" => "mlp.0.weight",
                "mlp.fc1.bias" => "mlp.0.bias",
                "mlp.fc2.weight" => "mlp.3.weight",
                "mlp.fc2.bias" => "mlp.3.bias",
                _ => return key.into(),
            };
            format!("encoder.layers.encoder_layer_{n}.{t}")
        }
        Layout::HfDinov2 | Layout::HfVit => {
            let direct = match key {
                "cls_token" => Some("embeddings.cls_token"),
                "reg_token" => Some("embeddings.register_tokens"),
                "pos_embed" => Some("embeddings.position_embeddings"),
                "patch_embed.proj.weight" => Some("embeddings.patch_embeddings.projection.weight"),
                "patch_embed.proj.bias" => Some("embeddings.patch_embeddings.projection.bias"),
                "norm.weight" => Some("layernorm.weight"),
                "norm.bias" => Some("layernorm.bias"),
                _ => None,
            };
            if let Some(d) = direct {
                return d.into();
            }
            let Some((n, tail)) = tail_of(key) else {
                return key.into();
            };
            let dino = layout == Layout::HfDinov2;
            let t = match tail.as_str() {
                "attn.qkv.weight" => "attention.attention.{query,key,value}.weight".to_string(),
                "attn.qkv.bias" => "attention.attention.{query,key,value}.bias".to_string(),
                "ls1.gamma" => "layer_scale1.lambda1".into(),
                "ls2.gamma" => "layer_scale2.lambda1".into(),
                other => {
                    let Some((module, param)) = other.rsplit_once('.') else {
                        return key.into();
                    };
                    let m = match (dino, module) {
                        (_, "attn.proj") => "attention.output.dense",
                        (true, "norm1") => "norm1",
                        (false, "norm1") => "layernorm_before",
                        (true, "norm2") => "norm2",
                        (false, "norm2") => "layernorm_after",
                        (true, "mlp.fc1") => "mlp.fc1",
                        (false, "mlp.fc1") => "intermediate.dense",
                        (true, "mlp.fc2") => "mlp.fc2",
                        (false, "mlp.fc2") => "output.dense",
                        _ => return key.into(),
                    };
                    format!("{m}.{param}")
                }
            };
            format!("encoder.layer.{n}.{t}")
        }
    }
}

/// The separate `query` / `key` / `value` tensors of one block's parameter, with their keys.
type QkvParts = [Option<(String, RawTensor)>; 3];

/// A wrapper prefix shared by every key, if any (see [`WRAPPER_PREFIXES`]).
fn shared_prefix(sd: &StateDict) -> Option<&'static str> {
    WRAPPER_PREFIXES
        .iter()
        .copied()
        .find(|p| !sd.tensors.is_empty() && sd.tensors.keys().all(|k| k.starts_with(p)))
}

/// The state dict with the model's key names: a shared wrapper prefix stripped, the layout's
/// keys renamed, Hugging Face's separate `query` / `key` / `value` fused into `attn.qkv`
/// (rows `q | k | v`, as timm's fused projection). Keys the layout does not know are kept
/// as they are (and reported as unexpected by the strict check).
pub fn to_model_names(layout: Layout, sd: &StateDict) -> StateDict {
    let prefix = shared_prefix(sd).unwrap_or("");
    let mut out = BTreeMap::new();
    // (block, param) -> [q, k, v]
    let mut qkv: BTreeMap<(usize, String), QkvParts> = BTreeMap::new();
    for (key, t) in &sd.tensors {
        let key = key.strip_prefix(prefix).unwrap_or(key);
        if matches!(layout, Layout::HfDinov2 | Layout::HfVit) {
            if let Some((n, which, param)) = hf_qkv_part(key) {
                qkv.entry((n, param)).or_default()[which] = Some((key.to_string(), t.clone()));
                continue;
            }
        }
        let name = rename(layout, key).unwrap_or_else(|| key.to_string());
        out.insert(name, t.clone());
    }
    for ((n, param), parts) in qkv {
        match fuse(&parts) {
            Some(t) => {
                out.insert(format!("blocks.{n}.attn.qkv.{param}"), t);
            }
            None => {
                // Incomplete or inconsistent: keep the pieces under their own names, so the
                // strict check reports the missing fused tensor and these as unexpected.
                for (k, t) in parts.into_iter().flatten() {
                    out.insert(k, t);
                }
            }
        }
    }
    StateDict {
        path: sd.path.clone(),
        tensors: out,
    }
}

/// `encoder.layer.N.<tail>` (the saved / hub layout) or `layers.N.<tail>` (transformers 5's
/// in-memory `ViTModel` names) -> (N, tail).
fn hf_block(key: &str) -> Option<(usize, &str)> {
    let rest = key
        .strip_prefix("encoder.layer.")
        .or_else(|| key.strip_prefix("layers."))?;
    let (n, tail) = rest.split_once('.')?;
    Some((n.parse().ok()?, tail))
}

/// `encoder.layer.N.attention.attention.{query,key,value}.{weight,bias}` (saved layout) or
/// `....attention.{q,k,v}_proj.{weight,bias}` (transformers 5's in-memory names)
/// -> (N, 0|1|2, param).
fn hf_qkv_part(key: &str) -> Option<(usize, usize, String)> {
    let (n, tail) = hf_block(key)?;
    let tail = tail.strip_prefix("attention.")?;
    let tail = tail.strip_prefix("attention.").unwrap_or(tail);
    let (which, param) = tail.split_once('.')?;
    let which = match which {
        "query" | "q_proj" => 0,
        "key" | "k_proj" => 1,
        "value" | "v_proj" => 2,
        _ => return None,
    };
    Some((n, which, param.to_string()))
}

/// Concatenates q, k, v along their first axis when all three are present, readable and of
/// one shape.
fn fuse(parts: &[Option<(String, RawTensor)>; 3]) -> Option<RawTensor> {
    let [Some((_, q)), Some((_, k)), Some((_, v))] = parts else {
        return None;
    };
    if q.shape != k.shape || q.shape != v.shape || q.shape.is_empty() {
        return None;
    }
    let (Ok(a), Ok(b), Ok(c)) = (&q.data, &k.data, &v.data) else {
        return None;
    };
    let mut shape = q.shape.clone();
    shape[0] *= 3;
    let mut data = Vec::with_capacity(a.len() * 3);
    data.extend_from_slice(a);
    data.extend_from_slice(b);
    data.extend_from_slice(c);
    Some(RawTensor {
        shape,
        data: Ok(data),
    })
}

/// The layout's name of a target Linear (as the user's checkpoint names the module).
pub fn target_name(layout: Layout, t: TargetLayer) -> String {
    let n = t.block;
    match (layout, t.site) {
        (Layout::Dino | Layout::Timm, _) => t.to_string(),
        (Layout::Torchvision, site) => format!(
            "encoder.layers.encoder_layer_{n}.{}",
            match site {
                Site::Qkv => "self_attention.in_proj",
                Site::Proj => "self_attention.out_proj",
                Site::Fc1 => "mlp.0",
                Site::Fc2 => "mlp.3",
            }
        ),
        (Layout::HfDinov2 | Layout::HfVit, site) => format!(
            "encoder.layer.{n}.{}",
            match (layout, site) {
                (_, Site::Qkv) => "attention.attention",
                (_, Site::Proj) => "attention.output.dense",
                (Layout::HfDinov2, Site::Fc1) => "mlp.fc1",
                (Layout::HfDinov2, _) => "mlp.fc2",
                (_, Site::Fc1) => "intermediate.dense",
                _ => "output.dense",
            }
        ),
    }
}

/// Other spellings of a target in the layout (transformers 5's in-memory module names).
fn target_aliases(layout: Layout, t: TargetLayer) -> Vec<String> {
    let n = t.block;
    let tail = match t.site {
        Site::Qkv => return Vec::new(),
        Site::Proj => "attention.o_proj",
        Site::Fc1 => "mlp.fc1",
        Site::Fc2 => "mlp.fc2",
    };
    match layout {
        Layout::HfDinov2 => vec![format!("encoder.layer.{n}.{tail}")],
        Layout::HfVit => vec![
            format!("layers.{n}.{tail}"),
            format!("encoder.layer.{n}.{tail}"),
        ],
        _ => Vec::new(),
    }
}

/// Parses a target named the model's way (`blocks.11.attn.proj`) or the layout's way
/// (`encoder.layers.encoder_layer_11.self_attention.out_proj`), with an optional `backbone.`
/// prefix (the paper's scripts wrap the model as `model.backbone`).
///
/// # Errors
/// [`crate::Error::UnknownLayer`] listing both spellings.
pub fn parse_target(layout: Layout, path: &str, depth: usize) -> crate::Result<TargetLayer> {
    let p = path.strip_prefix("backbone.").unwrap_or(path);
    if let Ok(t) = TargetLayer::parse(p, depth) {
        return Ok(t);
    }
    TargetLayer::all(depth)
        .into_iter()
        .find(|t| target_name(layout, *t) == p || target_aliases(layout, *t).iter().any(|a| a == p))
        .ok_or_else(|| crate::Error::UnknownLayer {
            path: path.to_string(),
            depth,
            layout,
        })
}
