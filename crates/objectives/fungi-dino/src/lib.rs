//! # fungi-dino
//!
//! The DINO objective of FUNGI (fungivision `gradients/dino`): 2 global + N local
//! `RandomResizedCrop`s (all 224 px, PIL bicubic), a random **student** head on every view and an
//! independent random frozen **teacher** head on the two global views, both on L2-normalised
//! embeddings; per image
//! `loss = Σ_{g ∈ globals} Σ_{v ∈ all views} −⟨softmax(t_g / τ_t), log_softmax(s_v / τ_s)⟩`
//! (all 2·V cross-entropies summed, same-view pairs included — fungivision's choice; no centering,
//! no EMA). No gradient flows through the teacher.
#![warn(missing_docs)]

use std::collections::BTreeMap;

use burn::prelude::*;
use burn::tensor::activation::{log_softmax, softmax};
use burn::tensor::backend::AutodiffBackend;
use fungi_aug::{DinoTransform, RgbImage};
use fungi_core::{l2_normalize, Error, Head, Objective, Result, StateTensor};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

fn d_tt() -> f64 {
    0.07
}
fn d_ts() -> f64 {
    0.1
}
fn d_latent() -> usize {
    2048
}
fn d_local() -> usize {
    10
}
fn d_gs() -> (f64, f64) {
    (0.25, 1.0)
}
fn d_ls() -> (f64, f64) {
    (0.05, 0.25)
}
fn d_ratio() -> (f64, f64) {
    (3.0 / 4.0, 4.0 / 3.0)
}

/// Configuration (fungivision's field names; crop fields fixed in fungivision, configurable here).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DinoConfig {
    /// Teacher softmax temperature `τ_t`.
    #[serde(default = "d_tt")]
    pub teacher_temperature: f64,
    /// Student softmax temperature `τ_s`.
    #[serde(default = "d_ts")]
    pub student_temperature: f64,
    /// Head output size.
    #[serde(default = "d_latent")]
    pub latent_dim: usize,
    /// Number of local crops.
    #[serde(default = "d_local")]
    pub local_crops_number: usize,
    /// Area range of the global crops.
    #[serde(default = "d_gs")]
    pub global_crops_scale: (f64, f64),
    /// Area range of the local crops.
    #[serde(default = "d_ls")]
    pub local_crops_scale: (f64, f64),
    /// Aspect-ratio range.
    #[serde(default = "d_ratio")]
    pub crop_ratio: (f64, f64),
}

impl Default for DinoConfig {
    fn default() -> Self {
        Self {
            teacher_temperature: d_tt(),
            student_temperature: d_ts(),
            latent_dim: d_latent(),
            local_crops_number: d_local(),
            global_crops_scale: d_gs(),
            local_crops_scale: d_ls(),
            crop_ratio: d_ratio(),
        }
    }
}

impl DinoConfig {
    /// fungivision's defaults (the paper's jobs use the same values).
    pub fn fungivision() -> Self {
        Self::default()
    }
    /// Checks the values; errors name the key.
    pub fn validate(&self) -> Result<()> {
        let bad = |k: &str, v: String, e: &str| Error::Config {
            key: format!("dino.{k}"),
            value: v,
            expected: e.into(),
        };
        for (k, v) in [
            ("teacher_temperature", self.teacher_temperature),
            ("student_temperature", self.student_temperature),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return Err(bad(k, v.to_string(), "a positive number"));
            }
        }
        if self.latent_dim == 0 {
            return Err(bad("latent_dim", "0".into(), "a positive integer"));
        }
        for (k, (a, b)) in [
            ("global_crops_scale", self.global_crops_scale),
            ("local_crops_scale", self.local_crops_scale),
        ] {
            if !(0.0 < a && a <= b && b <= 1.0) {
                return Err(bad(k, format!("[{a}, {b}]"), "0 < min <= max <= 1"));
            }
        }
        let (a, b) = self.crop_ratio;
        if !(0.0 < a && a <= b && b.is_finite()) {
            return Err(bad("crop_ratio", format!("[{a}, {b}]"), "0 < min <= max"));
        }
        Ok(())
    }
    fn transform(&self) -> DinoTransform {
        DinoTransform {
            local_crops_number: self.local_crops_number,
            global_crops_scale: self.global_crops_scale,
            local_crops_scale: self.local_crops_scale,
            crop_ratio: self.crop_ratio,
            ..DinoTransform::default()
        }
    }
}

/// The DINO objective.
#[derive(Debug, Clone)]
pub struct DinoObjective<B: Backend> {
    config: DinoConfig,
    transform: DinoTransform,
    head: Head<B>,
    teacher_head: Head<B>,
}

impl<B: Backend> DinoObjective<B> {
    /// Random student and teacher heads from the streams `(seed, "dino.head")` and
    /// `(seed, "dino.teacher_head")`.
    pub fn new(
        config: DinoConfig,
        embed_dim: usize,
        seed: u64,
        device: &B::Device,
    ) -> Result<Self> {
        config.validate()?;
        Ok(Self {
            transform: config.transform(),
            head: Head::random("dino.head", embed_dim, config.latent_dim, seed, device),
            teacher_head: Head::random(
                "dino.teacher_head",
                embed_dim,
                config.latent_dim,
                seed,
                device,
            ),
            config,
        })
    }
    /// Replaces both heads (e.g. fungivision's, for parity).
    pub fn with_heads(mut self, head: Head<B>, teacher_head: Head<B>) -> Result<Self> {
        for h in [&head, &teacher_head] {
            if h.dims() != self.head.dims() {
                return Err(Error::Mismatch {
                    what: "dino head [L, E]".into(),
                    expected: format!("{:?}", self.head.dims()),
                    found: format!("{:?}", h.dims()),
                });
            }
        }
        self.head = head;
        self.teacher_head = teacher_head;
        Ok(self)
    }
    /// The transform (crop sampling + application).
    pub fn transform(&self) -> &DinoTransform {
        &self.transform
    }
}

impl<B: AutodiffBackend> Objective<B> for DinoObjective<B> {
    fn name(&self) -> &str {
        "dino"
    }
    fn views_per_image(&self) -> usize {
        self.transform.views()
    }
    fn views_setting(&self) -> Option<String> {
        Some(format!(
            "dino.local_crops_number = {}",
            self.config.local_crops_number
        ))
    }
    fn views(&self, image: &RgbImage, rng: &mut ChaCha8Rng) -> Vec<f32> {
        let params = self
            .transform
            .sample_params(image.width(), image.height(), rng);
        self.transform.apply(image, &params)
    }
    fn image_loss(&self, embeddings: Tensor<B, 2>) -> Result<Tensor<B, 1>> {
        let [v, e] = embeddings.dims();
        let x = l2_normalize(embeddings);
        let student = log_softmax(
            self.head
                .apply(x.clone())
                .div_scalar(self.config.student_temperature),
            1,
        ); // [V, L]
        let teacher = softmax(
            self.teacher_head
                .apply(x.slice([0..2.min(v), 0..e]))
                .div_scalar(self.config.teacher_temperature),
            1,
        )
        .detach(); // [2, L], no gradient through the teacher
        Ok(teacher.matmul(student.transpose()).sum().neg().reshape([1]))
    }
    fn grad_scale(&self) -> f32 {
        self.transform.views() as f32
    }
    fn state(&self) -> BTreeMap<String, StateTensor> {
        let head = self.head.state_entries("head");
        head.into_iter()
            .chain(self.teacher_head.state_entries("teacher_head"))
            .collect()
    }
    fn load_state(&mut self, state: &BTreeMap<String, StateTensor>) -> Result<()> {
        let head = self.head.loaded(state, "dino", "head")?;
        let teacher = self.teacher_head.loaded(state, "dino", "teacher_head")?;
        self.head = head;
        self.teacher_head = teacher;
        Ok(())
    }
    fn config_json(&self) -> serde_json::Value {
        serde_json::to_value(&self.config).expect("serialisable")
    }
}
