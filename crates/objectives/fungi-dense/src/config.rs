//! Settings of dense FUNGI: the `[dense]` table ([`DenseConfig`]) and the whole file
//! ([`DenseSettings`]: seed, target layer, batch size, projection size and the table).

use std::path::Path;

use fungi_core::{Error, Result};
use serde::{Deserialize, Serialize};

fn d_size() -> usize {
    512
}
fn d_latent() -> usize {
    96
}
fn d_t() -> f64 {
    0.07
}
fn d_neighbours() -> usize {
    2
}
fn d_drop() -> f64 {
    0.5
}
fn d_batch() -> usize {
    4
}

/// Value written on the self-similarity diagonal of the InfoNCE (fungivision's and the
/// paper's `-10e3`).
pub const SELF_SIMILARITY: f64 = -10_000.0;

/// The `[dense]` table (the paper's full setting by default).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DenseConfig {
    /// Side `S` of the square input (images are resized to `S × S`); a multiple of the patch
    /// size. The position embedding is interpolated as DINO does.
    #[serde(default = "d_size")]
    pub image_size: usize,
    /// Output size `L` of the random head.
    #[serde(default = "d_latent")]
    pub latent_dim: usize,
    /// InfoNCE temperature (divides the positive term only, fungivision's form).
    #[serde(default = "d_t")]
    pub temperature: f64,
    /// Negatives per token: its nearest support rows by dot product.
    #[serde(default = "d_neighbours")]
    pub neighbours: usize,
    /// Fraction of an image's `T·neighbours` negatives dropped at random (seeded per image:
    /// exactly `floor(drop · T·neighbours)` of them).
    #[serde(default = "d_drop")]
    pub drop: f64,
    /// Patch tokens sampled (seeded, without replacement) from each support image when the
    /// support bank is built from images; all of them when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub support_per_image: Option<usize>,
}

impl Default for DenseConfig {
    fn default() -> Self {
        Self {
            image_size: d_size(),
            latent_dim: d_latent(),
            temperature: d_t(),
            neighbours: d_neighbours(),
            drop: d_drop(),
            support_per_image: None,
        }
    }
}

impl DenseConfig {
    /// Checks the values that do not depend on the backbone; errors name the key.
    ///
    /// # Errors
    /// [`Error::Config`] naming `dense.<key>`.
    pub fn validate(&self) -> Result<()> {
        let bad = |k: &str, v: String, e: &str| Error::Config {
            key: format!("dense.{k}"),
            value: v,
            expected: e.into(),
        };
        if !(self.temperature.is_finite() && self.temperature > 0.0) {
            return Err(bad(
                "temperature",
                self.temperature.to_string(),
                "a positive number",
            ));
        }
        if !(self.drop.is_finite() && (0.0..1.0).contains(&self.drop)) {
            return Err(bad(
                "drop",
                self.drop.to_string(),
                "a fraction in [0, 1) (1 would drop every negative)",
            ));
        }
        for (k, v) in [
            ("image_size", self.image_size),
            ("latent_dim", self.latent_dim),
            ("neighbours", self.neighbours),
        ] {
            if v == 0 {
                return Err(bad(k, "0".into(), "a positive integer"));
            }
        }
        if self.support_per_image == Some(0) {
            return Err(bad(
                "support_per_image",
                "0".into(),
                "a positive integer (or leave it out for every patch)",
            ));
        }
        Ok(())
    }

    /// Checks the values against the backbone's patch size.
    ///
    /// # Errors
    /// [`Error::Config`] when `image_size` is not a positive multiple of `patch_size`.
    pub fn check_patch_size(&self, patch_size: usize) -> Result<()> {
        if patch_size == 0 || !self.image_size.is_multiple_of(patch_size) {
            return Err(Error::Config {
                key: "dense.image_size".into(),
                value: self.image_size.to_string(),
                expected: format!("a multiple of the backbone's patch size {patch_size}"),
            });
        }
        Ok(())
    }

    /// How many of `total` negatives an image keeps: `total − floor(drop · total)` (at least 1).
    pub fn kept(&self, total: usize) -> usize {
        let dropped = (self.drop * total as f64).floor() as usize;
        total.saturating_sub(dropped).max(1).min(total)
    }
}

/// A `dense.toml` / `dense.json` file: the extractor's settings and the `[dense]` table.
///
/// ```toml
/// seed = 0
/// target_layer = "blocks.11.attn.proj"
/// batch_size = 4
/// [dense]
/// image_size = 512
/// latent_dim = 96
/// temperature = 0.07
/// neighbours = 2
/// drop = 0.5
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DenseSettings {
    /// Master seed: projection, head, dropped negatives, support sampling.
    #[serde(default)]
    pub seed: u64,
    /// Target layer dot path; default `blocks.{depth-1}.attn.proj`.
    #[serde(default)]
    pub target_layer: Option<String>,
    /// Images per forward/backward pass (features do not depend on it).
    #[serde(default = "d_batch")]
    pub batch_size: usize,
    /// Projection output size `K`; default the token size `E`.
    #[serde(default)]
    pub projection_dim: Option<usize>,
    /// The dense settings.
    #[serde(default)]
    pub dense: DenseConfig,
}

impl Default for DenseSettings {
    fn default() -> Self {
        Self {
            seed: 0,
            target_layer: None,
            batch_size: d_batch(),
            projection_dim: None,
            dense: DenseConfig::default(),
        }
    }
}

impl DenseSettings {
    /// Parses TOML (or JSON when `source_name` ends in `.json`) and validates it.
    ///
    /// # Errors
    /// [`Error::Format`] for a malformed file or an unknown key, [`Error::InFile`] wrapping the
    /// [`Error::Config`] of an invalid value.
    pub fn parse(text: &str, source_name: &str) -> Result<Self> {
        let perr = |reason: String| Error::Format {
            path: source_name.into(),
            reason,
        };
        let s: Self = if source_name.ends_with(".json") {
            serde_json::from_str(text).map_err(|e| perr(e.to_string()))?
        } else {
            toml::from_str(text).map_err(|e| perr(e.to_string()))?
        };
        s.validate().map_err(|inner| Error::InFile {
            path: source_name.into(),
            inner: Box::new(inner),
        })?;
        Ok(s)
    }

    /// Reads and parses a file ([`DenseSettings::parse`]).
    ///
    /// # Errors
    /// [`Error::Io`] when it cannot be read; as [`DenseSettings::parse`].
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.into(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Checks the values; errors name the key.
    ///
    /// # Errors
    /// [`Error::Config`].
    pub fn validate(&self) -> Result<()> {
        if self.batch_size == 0 {
            return Err(Error::Config {
                key: "batch_size".into(),
                value: "0".into(),
                expected: "at least 1".into(),
            });
        }
        if self.projection_dim == Some(0) {
            return Err(Error::Config {
                key: "projection_dim".into(),
                value: "0".into(),
                expected: "a positive integer (or leave it out for the token size)".into(),
            });
        }
        self.dense.validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_issue_s_file_parses_and_bad_values_name_their_key() {
        let s = DenseSettings::parse(
            "target_layer = \"blocks.11.attn.proj\"\n[dense]\nimage_size = 512\nlatent_dim = 96\n\
             temperature = 0.07\nneighbours = 2\ndrop = 0.5\n",
            "dense.toml",
        )
        .unwrap();
        assert_eq!(s.dense, DenseConfig::default());
        assert_eq!(s.target_layer.as_deref(), Some("blocks.11.attn.proj"));
        for (text, key) in [
            ("[dense]\ndrop = 1.0\n", "dense.drop"),
            ("[dense]\ntemperature = 0\n", "dense.temperature"),
            ("[dense]\nneighbours = 0\n", "dense.neighbours"),
            ("batch_size = 0\n", "batch_size"),
        ] {
            let e = DenseSettings::parse(text, "d.toml")
                .unwrap_err()
                .to_string();
            assert!(e.contains(key) && e.contains("d.toml"), "{e}");
        }
        let e = DenseSettings::parse("[dense]\nneighbors = 2\n", "d.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("neighbors"), "{e}");
        let e = DenseConfig::default().check_patch_size(14).unwrap_err();
        assert!(e.to_string().contains("multiple of"), "{e}");
    }

    #[test]
    fn dropping_keeps_an_exact_count() {
        let c = DenseConfig::default();
        assert_eq!(c.kept(2050), 1025);
        assert_eq!(c.kept(3), 2);
        let none = DenseConfig {
            drop: 0.0,
            ..c.clone()
        };
        assert_eq!(none.kept(7), 7);
        let most = DenseConfig { drop: 0.99, ..c };
        assert_eq!(most.kept(10), 1);
    }
}
