//! [`VitConfig::validate`]: every field checked, errors naming the key and the value.

use super::VitConfig;
use crate::error::{Error, Result};
use crate::family::Pool;

impl VitConfig {
    /// Checks that every field is usable; errors name the key and the value.
    pub fn validate(&self, source_name: Option<&str>) -> Result<()> {
        let err = |key: &str, value: String, expected: &str| Error::Config {
            source_name: source_name.map(str::to_string),
            key: key.to_string(),
            value,
            expected: expected.to_string(),
        };
        let positive = [
            ("img_size", self.img_size),
            ("patch_size", self.patch_size),
            ("in_chans", self.in_chans),
            ("embed_dim", self.embed_dim),
            ("depth", self.depth),
            ("num_heads", self.num_heads),
        ];
        for (key, v) in positive {
            if v == 0 {
                return Err(err(key, v.to_string(), "a positive integer"));
            }
        }
        if !self.embed_dim.is_multiple_of(self.num_heads) {
            return Err(err(
                "num_heads",
                self.num_heads.to_string(),
                &format!("a divisor of embed_dim = {}", self.embed_dim),
            ));
        }
        if self.img_size < self.patch_size {
            return Err(err(
                "img_size",
                self.img_size.to_string(),
                &format!("at least patch_size = {}", self.patch_size),
            ));
        }
        if !(self.mlp_ratio.is_finite() && self.mlp_hidden_dim() > 0) {
            return Err(err(
                "mlp_ratio",
                self.mlp_ratio.to_string(),
                "a positive number (hidden = int(embed_dim * mlp_ratio) > 0)",
            ));
        }
        if !(self.layer_norm_eps.is_finite() && self.layer_norm_eps > 0.0) {
            return Err(err(
                "layer_norm_eps",
                self.layer_norm_eps.to_string(),
                "a positive number",
            ));
        }
        if !(self.interpolate_offset.is_finite() && (0.0..1.0).contains(&self.interpolate_offset)) {
            return Err(err(
                "interpolate_offset",
                self.interpolate_offset.to_string(),
                "a number in [0, 1)",
            ));
        }
        if !self.class_token && self.global_pool == Pool::Token {
            return Err(err(
                "global_pool",
                "\"token\"".into(),
                "\"avg\", \"max\" or \"avgmax\": token pooling needs the class token",
            ));
        }
        if let Some(t) = &self.transform {
            if t.crop == 0 || t.resize < t.crop {
                return Err(err(
                    "transform",
                    format!("resize {} / crop {}", t.resize, t.crop),
                    "a positive crop no larger than the resized short side",
                ));
            }
            if !t.std.iter().chain(&t.mean).all(|v| v.is_finite()) || t.std.contains(&0.0) {
                return Err(err(
                    "transform",
                    format!("mean {:?} / std {:?}", t.mean, t.std),
                    "finite means and non-zero finite standard deviations",
                ));
            }
        }
        // The weights are held twice while loading (file values + backbone tensors), f32.
        let bytes = self.num_parameters().and_then(|n| n.checked_mul(8));
        if let Some((needed, available)) = crate::memory::exceeds(bytes) {
            return Err(Error::TooLarge {
                source_name: source_name.map(str::to_string),
                what: format!(
                    "{} parameters (embed_dim {}, depth {}, img_size {} / patch_size {})",
                    self.num_parameters()
                        .map_or_else(|| "more than 2^64".to_string(), |n| n.to_string()),
                    self.embed_dim,
                    self.depth,
                    self.img_size,
                    self.patch_size
                ),
                needed,
                available,
            });
        }
        Ok(())
    }
}
