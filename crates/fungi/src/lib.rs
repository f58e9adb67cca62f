//! # fungi
//!
//! FUNGI ("Features from UNsupervised GradIents") in Rust on Burn: the crate applications depend
//! on. It re-exports the workspace crates and turns a configuration file into a ready
//! [`FungiExtractor`](fungi_core::FungiExtractor).
//!
//! ```toml
//! seed = 0
//! target_layer = "blocks.11.attn.proj"
//! batch_size = 16
//!
//! [[objective]]
//! type = "kl"
//! temperature = 15.0
//!
//! [[objective]]
//! type = "dino"
//!
//! [[objective]]
//! type = "simclr"
//! comparison_batch_size = 256
//! loss = "paper"
//! ```
//!
//! or just `preset = "paper"` / `preset = "fungivision"`. Unknown keys and invalid values are
//! errors naming the key.
#![warn(missing_docs)]

use std::path::Path;

use serde::{Deserialize, Serialize};

pub mod benchmark;
#[cfg(unix)]
pub mod cuda;
pub mod dataset;
pub mod dense;
pub mod embed;
mod facade;
mod features;
pub mod hummingbird;
pub mod layout;
pub mod pipeline;
pub use dataset::{Dataset, ImageSource};
pub use embed::{Embedder, InputChoice, InputTransform};
pub use facade::{Block, Features, Fungi, FungiBuilder, Unprepared};
pub use pipeline::{Rows, Stream};

pub use fungi_aug as aug;
pub use fungi_backbone as backbone;
pub use fungi_core as core;
pub use fungi_deepcluster as deepcluster;
pub use fungi_dino as dino;
pub use fungi_hub as hub;

/// What to do with an image that cannot be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum OnError {
    /// Stop with an error naming the file (what was computed is saved first).
    #[default]
    Fail,
    /// Skip the image, report it, and list it next to the output.
    Skip,
}
pub use fungi_kl as kl;
pub use fungi_simclr as simclr;

use fungi_core::{Error, ExtractorConfig, FungiExtractor, Objective, Result};

/// One objective of the configuration (`type = "kl" | "dino" | "simclr" | "deepcluster"` plus its fields).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ObjectiveConfig {
    /// [`fungi_kl`].
    Kl(fungi_kl::KlConfig),
    /// [`fungi_dino`].
    Dino(fungi_dino::DinoConfig),
    /// [`fungi_simclr`].
    Simclr(fungi_simclr::SimclrConfig),
    /// [`fungi_deepcluster`] (the paper's ablation; needs `setup` on the training set).
    Deepcluster(fungi_deepcluster::DeepClusterConfig),
}

impl ObjectiveConfig {
    /// Builds the objective (random heads from `seed`).
    pub fn build<B: fungi_backbone::AutodiffVitOps>(
        &self,
        embed_dim: usize,
        seed: u64,
        device: &B::Device,
    ) -> fungi_core::Result<Box<dyn Objective<B>>> {
        Ok(match self {
            ObjectiveConfig::Kl(c) => Box::new(fungi_kl::KlObjective::<B>::new(
                c.clone(),
                embed_dim,
                seed,
                device,
            )?),
            ObjectiveConfig::Dino(c) => Box::new(fungi_dino::DinoObjective::<B>::new(
                c.clone(),
                embed_dim,
                seed,
                device,
            )?),
            ObjectiveConfig::Simclr(c) => Box::new(fungi_simclr::SimclrObjective::<B>::new(
                c.clone(),
                embed_dim,
                seed,
                device,
            )?),
            ObjectiveConfig::Deepcluster(c) => Box::new(fungi_deepcluster::DeepClusterObjective::<
                B,
            >::new(
                c.clone(), embed_dim, seed, device
            )?),
        })
    }
    /// The objective's name (`kl`, `dino`, `simclr`, `deepcluster`): its block's name.
    pub fn name(&self) -> &'static str {
        match self {
            ObjectiveConfig::Kl(_) => "kl",
            ObjectiveConfig::Dino(_) => "dino",
            ObjectiveConfig::Simclr(_) => "simclr",
            ObjectiveConfig::Deepcluster(_) => "deepcluster",
        }
    }
    fn validate(&self) -> fungi_core::Result<()> {
        match self {
            ObjectiveConfig::Kl(c) => c.validate(),
            ObjectiveConfig::Dino(c) => c.validate(),
            ObjectiveConfig::Simclr(c) => c.validate(),
            ObjectiveConfig::Deepcluster(c) => c.validate(),
        }
    }
}

/// Named presets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum Preset {
    /// fungivision's defaults: KL (T 1, squash view), DINO, SimCLR (64 negatives, its loss).
    Fungivision,
    /// The paper's runs: KL (T 15, eval view), DINO, SimCLR (256 negatives, the paper's loss).
    Paper,
}

impl Preset {
    /// The preset's objectives, in the paper's order `[kl, dino, simclr]`.
    pub fn objectives(self) -> Vec<ObjectiveConfig> {
        match self {
            Preset::Fungivision => vec![
                ObjectiveConfig::Kl(fungi_kl::KlConfig::fungivision()),
                ObjectiveConfig::Dino(fungi_dino::DinoConfig::fungivision()),
                ObjectiveConfig::Simclr(fungi_simclr::SimclrConfig::fungivision()),
            ],
            Preset::Paper => vec![
                ObjectiveConfig::Kl(fungi_kl::KlConfig::paper()),
                ObjectiveConfig::Dino(fungi_dino::DinoConfig::fungivision()),
                ObjectiveConfig::Simclr(fungi_simclr::SimclrConfig::paper()),
            ],
        }
    }
}

/// The whole configuration: the extractor's settings ([`ExtractorConfig`], declared once there)
/// and the objectives. In a file the settings sit at the top level next to `preset` and the
/// `[[objective]]` tables; unknown keys are errors naming the key.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FungiConfig {
    /// A preset supplying the objectives (not together with `[[objective]]`).
    pub preset: Option<Preset>,
    /// Seed, target layer, batch size, embedding block, gradient path, projection size,
    /// eval transform.
    #[serde(flatten)]
    pub extractor: ExtractorConfig,
    /// Objectives in block order.
    #[serde(rename = "objective")]
    pub objectives: Vec<ObjectiveConfig>,
}

/// `value` as a `T`, an error naming the key path (`prefix` + the path inside `value`).
fn deserialize_at<T: serde::de::DeserializeOwned>(
    value: serde_json::Value,
    prefix: &str,
) -> std::result::Result<T, String> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." { String::new() } else { path };
        let at = format!("{prefix}{path}");
        if at.is_empty() {
            e.inner().to_string()
        } else {
            format!("`{at}`: {}", e.inner())
        }
    })
}

// serde cannot combine `flatten` with `deny_unknown_fields`: the top-level map is split by hand,
// and `ExtractorConfig`'s own `deny_unknown_fields` refuses whatever key is left over.
impl<'de> Deserialize<'de> for FungiConfig {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        use serde::de::Error as _;
        let mut map = serde_json::Map::<String, serde_json::Value>::deserialize(d)?;
        let preset = match map.remove("preset") {
            None | Some(serde_json::Value::Null) => None,
            Some(v) => Some(deserialize_at(v, "preset").map_err(D::Error::custom)?),
        };
        let objectives = match map.remove("objective") {
            None => Vec::new(),
            Some(v) => deserialize_at(v, "objective").map_err(D::Error::custom)?,
        };
        let extractor =
            deserialize_at(serde_json::Value::Object(map), "").map_err(D::Error::custom)?;
        Ok(Self {
            preset,
            extractor,
            objectives,
        })
    }
}

impl FungiConfig {
    /// A preset with default extractor settings.
    pub fn preset(p: Preset) -> Self {
        Self {
            preset: None,
            extractor: ExtractorConfig::default(),
            objectives: p.objectives(),
        }
    }

    /// Parses TOML (or JSON when `source_name` ends in `.json`) and validates every value.
    ///
    /// # Errors
    /// [`Error::Format`] for a syntax error, an unknown key or a wrongly typed value (naming
    /// the key), [`Error::InFile`] for an invalid value.
    pub fn parse(text: &str, source_name: &str) -> Result<Self> {
        let perr = |reason: String| Error::Format {
            path: source_name.into(),
            reason,
        };
        let mut cfg: Self = if source_name.ends_with(".json") {
            serde_json::from_str(text).map_err(|e| perr(e.to_string()))?
        } else {
            toml::from_str(text).map_err(|e| perr(e.to_string()))?
        };
        let invalid = |inner: Error| Error::InFile {
            path: source_name.into(),
            inner: Box::new(inner),
        };
        if let Some(p) = cfg.preset {
            if !cfg.objectives.is_empty() {
                return Err(invalid(Error::Config {
                    key: "preset".into(),
                    value: format!("{p:?}").to_lowercase(),
                    expected: "either `preset` or `[[objective]]` tables, not both".into(),
                }));
            }
            cfg.objectives = p.objectives();
        }
        if cfg.objectives.is_empty() {
            return Err(invalid(Error::Config {
                key: "objective".into(),
                value: "[]".into(),
                expected: "at least one [[objective]] table (type = \"kl\" | \"dino\" | \"simclr\") or a preset".into(),
            }));
        }
        if cfg.extractor.batch_size == 0 {
            return Err(invalid(Error::Config {
                key: "batch_size".into(),
                value: "0".into(),
                expected: "at least 1".into(),
            }));
        }
        for o in &cfg.objectives {
            o.validate().map_err(invalid)?;
        }
        Ok(cfg)
    }

    /// Reads a configuration file (`.toml` or `.json`).
    ///
    /// # Errors
    /// [`Error::Io`] naming the file, or as [`FungiConfig::parse`].
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.into(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Builds the extractor over a backbone.
    pub fn build<B: fungi_backbone::AutodiffVitOps>(
        &self,
        backbone: fungi_backbone::Vit<B>,
    ) -> Result<FungiExtractor<B>> {
        self.extractor_builder(backbone)?.build()
    }

    /// The extractor builder over a backbone with these settings and objectives (made with
    /// the backbone's embedding size, the seed and its device), for adding more before
    /// [`FungiExtractorBuilder::build`](fungi_core::extractor::FungiExtractorBuilder::build).
    pub fn extractor_builder<B: fungi_backbone::AutodiffVitOps>(
        &self,
        backbone: fungi_backbone::Vit<B>,
    ) -> Result<fungi_core::extractor::FungiExtractorBuilder<B>> {
        let device = backbone.device();
        let e = backbone.out_dim();
        let mut b = FungiExtractor::builder(backbone).config(self.extractor.clone());
        for o in &self.objectives {
            b = b.objective(o.build::<B>(e, self.extractor.seed, &device)?);
        }
        Ok(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_and_tables_parse() {
        let c = FungiConfig::parse("preset = \"paper\"\nseed = 7\n", "a.toml").unwrap();
        assert_eq!(c.extractor.seed, 7);
        assert_eq!(c.objectives, Preset::Paper.objectives());
        let c = FungiConfig::parse(
            "target_layer = \"blocks.3.attn.proj\"\n[[objective]]\ntype = \"kl\"\ntemperature = 15\n[[objective]]\ntype = \"simclr\"\nloss = \"paper\"\ncomparison_batch_size = 8\n",
            "b.toml",
        )
        .unwrap();
        assert_eq!(c.objectives.len(), 2);
        assert!(
            matches!(&c.objectives[0], ObjectiveConfig::Kl(k) if k.temperature == 15.0 && k.latent_dim == 768)
        );
        assert!(
            matches!(&c.objectives[1], ObjectiveConfig::Simclr(s) if s.loss == fungi_simclr::SimclrLoss::Paper && s.comparison_batch_size == 8)
        );
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_key() {
        let cases = [
            (
                "[[objective]]\ntype = \"kl\"\ntemprature = 1\n",
                "temprature",
            ),
            ("sed = 1\n[[objective]]\ntype = \"kl\"\n", "sed"),
            ("[[objective]]\ntype = \"byol\"\n", "byol"),
            (
                "[[objective]]\ntype = \"kl\"\ntemperature = -1\n",
                "kl.temperature",
            ),
            (
                "[[objective]]\ntype = \"dino\"\nlocal_crops_scale = [0.5, 0.1]\n",
                "dino.local_crops_scale",
            ),
            (
                "[[objective]]\ntype = \"simclr\"\nstride_scale = 500\n",
                "simclr.num_patches/stride_scale",
            ),
            (
                "[[objective]]\ntype = \"simclr\"\nloss = \"other\"\n",
                "other",
            ),
            ("batch_size = 0\npreset = \"paper\"\n", "batch_size"),
            (
                "preset = \"paper\"\n[[objective]]\ntype = \"kl\"\n",
                "preset",
            ),
            ("seed = 1\n", "objective"),
            ("preset = \"papers\"\n", "papers"),
        ];
        for (text, key) in cases {
            let e = FungiConfig::parse(text, "cfg.toml")
                .unwrap_err()
                .to_string();
            assert!(e.contains("cfg.toml") && e.contains(key), "{text:?}: {e}");
        }
    }

    #[test]
    fn deepcluster_tables_parse() {
        let c = FungiConfig::parse(
            "[[objective]]\ntype = \"deepcluster\"\nnmb_prototypes = [100, 100, 100]\n",
            "d.toml",
        )
        .unwrap();
        assert!(
            matches!(&c.objectives[0], ObjectiveConfig::Deepcluster(d) if d.nmb_prototypes == vec![100, 100, 100] && d.latent_dim == 128)
        );
        let e = FungiConfig::parse(
            "[[objective]]\ntype = \"deepcluster\"\nnmb_prototypes = [0]\n",
            "d.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("deepcluster.nmb_prototypes"), "{e}");
    }

    #[test]
    fn json_configs_work_too() {
        let c = FungiConfig::parse(
            r#"{"seed": 3, "objective": [{"type": "dino", "local_crops_number": 4}]}"#,
            "c.json",
        )
        .unwrap();
        assert!(matches!(&c.objectives[0], ObjectiveConfig::Dino(d) if d.local_crops_number == 4));
        let e = FungiConfig::parse(
            r#"{"objective": [{"type": "dino", "local_crops": 4}]}"#,
            "c.json",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("local_crops"), "{e}");
    }
}
