//! torchvision's `VisionTransformer` (`"family": "torchvision"`).

use serde_json::{Map, Value};

use super::{interpolation, Keys, DESCRIPTIVE};
use crate::config::VitConfig;
use crate::error::Result;
use crate::family::Layout;
use fungi_aug::resample::Filter;
use fungi_aug::transforms::EvalTransform;

/// `{"family": "torchvision", ...}`: torchvision's `VisionTransformer` keyword arguments, plus
/// `transforms` (its weights' `ImageClassification` parameters).
pub(super) fn torchvision(map: Map<String, Value>, source: Option<&str>) -> Result<VitConfig> {
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
