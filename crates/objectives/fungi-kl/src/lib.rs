//! # fungi-kl
//!
//! The KL objective of FUNGI (fungivision `gradients/kl_extractor.py`): one view per image, a
//! random linear head on the L2-normalised CLS embedding, and the loss
//! `KL(u ‖ softmax(z / T)) = (1/L) Σ_l u (log u − log_softmax(z/T)_l)` with `u = 1/L` (the
//! "uniform" target `softmax(1/L / T)` is exactly uniform for every `T`).
//!
//! Presets: [`KlConfig::fungivision`] (the library's defaults: `T = 1`, latent 768, squash view)
//! and [`KlConfig::paper`] (the paper's runs: `T = 15`, DINO eval view).
#![warn(missing_docs)]

use std::collections::BTreeMap;

use burn::prelude::*;
use burn::tensor::activation::log_softmax;
use burn::tensor::backend::AutodiffBackend;
use fungi_aug::transforms::{EvalTransform, KlTransform};
use fungi_aug::RgbImage;
use fungi_core::{l2_normalize, Error, Head, Objective, Result, StateTensor};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// Which view the KL objective takes of an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KlView {
    /// fungivision: squash to 256×256 (PyTorch uint8 antialiased bilinear), center crop 224.
    #[default]
    Squash,
    /// The paper's scripts: DINO eval transform (short side 256 bicubic, center crop 224).
    Eval,
}

fn default_temperature() -> f64 {
    1.0
}
fn default_latent() -> usize {
    768
}

/// Configuration (fungivision's field names).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KlConfig {
    /// Softmax temperature `T`.
    #[serde(default = "default_temperature")]
    pub temperature: f64,
    /// Head output size `L`.
    #[serde(default = "default_latent")]
    pub latent_dim: usize,
    /// View transform.
    #[serde(default)]
    pub view: KlView,
}

impl Default for KlConfig {
    fn default() -> Self {
        Self::fungivision()
    }
}

impl KlConfig {
    /// fungivision's defaults: `T = 1`, `L = 768`, squash view.
    pub fn fungivision() -> Self {
        Self {
            temperature: 1.0,
            latent_dim: 768,
            view: KlView::Squash,
        }
    }
    /// The paper's setting (`jobs/grads_kl_multi.job`): `T = 15`, `L = 768`, eval view.
    pub fn paper() -> Self {
        Self {
            temperature: 15.0,
            latent_dim: 768,
            view: KlView::Eval,
        }
    }
    /// Checks the values; errors name the key.
    pub fn validate(&self) -> Result<()> {
        if !(self.temperature.is_finite() && self.temperature > 0.0) {
            return Err(Error::Config {
                key: "kl.temperature".into(),
                value: self.temperature.to_string(),
                expected: "a positive number".into(),
            });
        }
        if self.latent_dim == 0 {
            return Err(Error::Config {
                key: "kl.latent_dim".into(),
                value: "0".into(),
                expected: "a positive integer".into(),
            });
        }
        Ok(())
    }
}

/// The KL objective.
#[derive(Debug, Clone)]
pub struct KlObjective<B: Backend> {
    config: KlConfig,
    head: Head<B>,
}

impl<B: Backend> KlObjective<B> {
    /// A KL objective with a random head drawn from the stream `(seed, "kl.head", 0)`.
    pub fn new(config: KlConfig, embed_dim: usize, seed: u64, device: &B::Device) -> Result<Self> {
        config.validate()?;
        let head = Head::random("kl.head", embed_dim, config.latent_dim, seed, device);
        Ok(Self { config, head })
    }
    /// Replaces the head (e.g. fungivision's, for parity).
    pub fn with_head(mut self, head: Head<B>) -> Result<Self> {
        if head.dims() != self.head.dims() {
            return Err(Error::Mismatch {
                what: "kl head [L, E]".into(),
                expected: format!("{:?}", self.head.dims()),
                found: format!("{:?}", head.dims()),
            });
        }
        self.head = head;
        Ok(self)
    }
    /// Configuration.
    pub fn config(&self) -> &KlConfig {
        &self.config
    }
}

impl<B: AutodiffBackend> Objective<B> for KlObjective<B> {
    fn name(&self) -> &str {
        "kl"
    }
    fn views_per_image(&self) -> usize {
        1
    }
    fn eval_view(&self) -> Option<usize> {
        (self.config.view == KlView::Eval).then_some(0)
    }
    fn views(&self, image: &RgbImage, _rng: &mut ChaCha8Rng) -> Vec<f32> {
        match self.config.view {
            KlView::Squash => KlTransform::default().apply(image),
            KlView::Eval => EvalTransform::default().apply(image),
        }
    }
    fn image_loss(&self, embeddings: Tensor<B, 2>) -> Result<Tensor<B, 1>> {
        let z = self.head.apply(l2_normalize(embeddings)); // [1, L]
        let l = self.config.latent_dim as f64;
        let logp = log_softmax(z.div_scalar(self.config.temperature), 1);
        let log_u = (1.0 / l as f32).ln() as f64;
        // kl_div(logp, u, reduction="mean") over this image's L entries: mean_l u (log u - logp_l).
        Ok(logp
            .neg()
            .add_scalar(log_u)
            .mul_scalar(1.0 / l)
            .mean_dim(1)
            .reshape([1]))
    }
    fn state(&self) -> BTreeMap<String, StateTensor> {
        BTreeMap::from(self.head.state_entries("head"))
    }
    fn load_state(&mut self, state: &BTreeMap<String, StateTensor>) -> Result<()> {
        self.head = self.head.loaded(state, "kl", "head")?;
        Ok(())
    }
    fn config_json(&self) -> serde_json::Value {
        serde_json::to_value(&self.config).expect("serialisable")
    }
}
