//! Hugging Face `config.json` files (`"model_type": "dinov2" | "vit"`) and their image
//! processors (`"preprocessor"`).

use serde_json::{Map, Value};

use super::{Keys, DESCRIPTIVE};
use crate::config::VitConfig;
use crate::error::{Error, Result};
use crate::family::Layout;
use fungi_aug::resample::Filter;
use fungi_aug::transforms::{EvalStyle, EvalTransform};

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
pub(super) fn hugging_face(
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
