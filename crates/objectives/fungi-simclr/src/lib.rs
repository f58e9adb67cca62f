//! # fungi-simclr
//!
//! The SimCLR objective of FUNGI (fungivision `gradients/simclr`): an image's `Patchify` views
//! (49 overlapping 112-px patches upsampled to 224) are positives for each other; the latents of a
//! fixed set of training images' views ("comparison batch", drawn once in
//! [`Objective::setup`]) are the negatives. A random head (no pre-normalisation) maps embeddings to
//! latents; with `F` the L2-normalised latents and `C` their cosine similarities (self-similarity
//! masked to `c = self_similarity_constant`), per view `i`:
//!
//! - `loss = "fungivision"` (default, the library's code): `−Σ_j (C_ij − C_jj)/T / (V−1) + logsumexp_j C_ij`
//!   over positives `j` and all columns — its log-sum-exp ignores the temperature, and
//!   subtracting the diagonal by broadcasting adds the constant `c/T` (values near −142 857);
//! - `loss = "paper"` (`no-train-all-gain/src/utils/simclr.py`): `−Σ_{j≠i} C_ij/T / (V−1) + logsumexp_j (C_ij / T)`
//!   (computed in f32; the paper casts the features to f16 first).
//!
//! Per image: the mean over its views.
#![warn(missing_docs)]

use std::collections::BTreeMap;

use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use fungi_aug::{Patchify, RgbImage};
use fungi_core::{l2_normalize, Error, Head, Objective, Result, SetupContext, StateTensor};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// Which InfoNCE formula.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SimclrLoss {
    /// fungivision's (log-sum-exp without temperature).
    #[default]
    Fungivision,
    /// The paper code's (whole similarity matrix divided by the temperature).
    Paper,
}

fn d_t() -> f64 {
    0.07
}
fn d_c() -> f64 {
    -10_000.0
}
fn d_m() -> usize {
    64
}
fn d_enc() -> usize {
    32
}
fn d_latent() -> usize {
    96
}
fn d_np() -> usize {
    4
}
fn d_ss() -> f64 {
    6.0
}

/// Configuration (fungivision's field names).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimclrConfig {
    /// Temperature `T`.
    #[serde(default = "d_t")]
    pub temperature: f64,
    /// Value written on the self-similarity diagonal.
    #[serde(default = "d_c")]
    pub self_similarity_constant: f64,
    /// Number of training images whose views are the negatives (fungivision 64, paper 256).
    #[serde(default = "d_m")]
    pub comparison_batch_size: usize,
    /// Views per forward pass when encoding the negatives.
    #[serde(default = "d_enc")]
    pub comparison_batch_encoding_batch_size: usize,
    /// Head output size.
    #[serde(default = "d_latent")]
    pub latent_dim: usize,
    /// `Patchify` number of patches.
    #[serde(default = "d_np")]
    pub num_patches: usize,
    /// `Patchify` stride scale.
    #[serde(default = "d_ss")]
    pub stride_scale: f64,
    /// Loss formula.
    #[serde(default)]
    pub loss: SimclrLoss,
}

impl Default for SimclrConfig {
    fn default() -> Self {
        Self {
            temperature: d_t(),
            self_similarity_constant: d_c(),
            comparison_batch_size: d_m(),
            comparison_batch_encoding_batch_size: d_enc(),
            latent_dim: d_latent(),
            num_patches: d_np(),
            stride_scale: d_ss(),
            loss: SimclrLoss::Fungivision,
        }
    }
}

impl SimclrConfig {
    /// fungivision's defaults.
    pub fn fungivision() -> Self {
        Self::default()
    }
    /// The paper's runs: 256 negative images, the paper's loss.
    pub fn paper() -> Self {
        Self {
            comparison_batch_size: 256,
            loss: SimclrLoss::Paper,
            ..Self::default()
        }
    }
    fn patchify(&self) -> Patchify {
        Patchify {
            num_patches: self.num_patches,
            stride_scale: self.stride_scale,
            image_size: 224,
        }
    }
    /// Checks the values; errors name the key.
    pub fn validate(&self) -> Result<()> {
        let bad = |k: &str, v: String, e: &str| Error::Config {
            key: format!("simclr.{k}"),
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
        if !self.self_similarity_constant.is_finite() {
            return Err(bad(
                "self_similarity_constant",
                self.self_similarity_constant.to_string(),
                "a finite number",
            ));
        }
        for (k, v) in [
            ("comparison_batch_size", self.comparison_batch_size),
            (
                "comparison_batch_encoding_batch_size",
                self.comparison_batch_encoding_batch_size,
            ),
            ("latent_dim", self.latent_dim),
        ] {
            if v == 0 {
                return Err(bad(k, "0".into(), "a positive integer"));
            }
        }
        let views = self.patchify().views().map_err(|e| {
            bad(
                "num_patches/stride_scale",
                format!("{}/{}", self.num_patches, self.stride_scale),
                &e.to_string(),
            )
        })?;
        if views < 2 {
            return Err(bad(
                "num_patches/stride_scale",
                format!("{}/{}", self.num_patches, self.stride_scale),
                "at least 2 views (positives need a partner)",
            ));
        }
        Ok(())
    }
}

/// The SimCLR objective.
#[derive(Debug, Clone)]
pub struct SimclrObjective<B: Backend> {
    config: SimclrConfig,
    patchify: Patchify,
    views: usize,
    head: Head<B>,
    /// Raw (unnormalised) negative latents `[M·V, L]` and their L2-normalised copy.
    negatives: Option<(StateTensor, Tensor<B, 2>)>,
}

impl<B: Backend> SimclrObjective<B> {
    /// Random head from the stream `(seed, "simclr.head")`; negatives come from `setup` (or a state).
    pub fn new(
        config: SimclrConfig,
        embed_dim: usize,
        seed: u64,
        device: &B::Device,
    ) -> Result<Self> {
        config.validate()?;
        let patchify = config.patchify();
        let views = patchify.views()?;
        Ok(Self {
            head: Head::random("simclr.head", embed_dim, config.latent_dim, seed, device),
            config,
            patchify,
            views,
            negatives: None,
        })
    }
    /// Replaces the head.
    pub fn with_head(mut self, head: Head<B>) -> Result<Self> {
        if head.dims() != self.head.dims() {
            return Err(Error::Mismatch {
                what: "simclr head [L, E]".into(),
                expected: format!("{:?}", self.head.dims()),
                found: format!("{:?}", head.dims()),
            });
        }
        self.head = head;
        Ok(self)
    }
    /// Sets the negative latents `[M·V, L]` (raw head outputs), e.g. fungivision's comparison batch.
    pub fn with_negatives(mut self, negatives: StateTensor) -> Result<Self> {
        self.set_negatives(negatives)?;
        Ok(self)
    }
    fn set_negatives(&mut self, n: StateTensor) -> Result<()> {
        let l = self.config.latent_dim;
        if n.shape.len() != 2 || n.shape[1] != l || n.shape[0] == 0 {
            return Err(Error::Mismatch {
                what: "simclr.negatives".into(),
                expected: format!("shape [M·V, {l}]"),
                found: format!("{:?}", n.shape),
            });
        }
        let t = Tensor::<B, 2>::from_data(
            TensorData::new(n.data.clone(), n.shape.clone()),
            &self.head.device(),
        );
        self.negatives = Some((n, l2_normalize(t)));
        Ok(())
    }
    /// The Patchify transform.
    pub fn patchify(&self) -> &Patchify {
        &self.patchify
    }
}

fn logsumexp<B: Backend>(x: Tensor<B, 2>) -> Tensor<B, 1> {
    let m = x.clone().max_dim(1).detach(); // [V, 1]
    let s = (x - m.clone()).exp().sum_dim(1).log() + m;
    s.squeeze_dim(1)
}

/// The InfoNCE of SimCLR per positive row: `f` `[V, L]` are L2-normalised latents that are
/// mutual positives, `negatives` `[M, L]` L2-normalised negatives; the self-similarities are
/// replaced by `self_similarity`, and `loss` picks the formula (see the crate docs: with
/// [`SimclrLoss::Fungivision`] the temperature divides only the positive term). Returns the
/// `[V]` per-row losses (their mean is the image's loss). Dense FUNGI uses it with an image's
/// tokens as the positives.
pub fn info_nce<B: Backend>(
    f: Tensor<B, 2>,
    negatives: Tensor<B, 2>,
    self_similarity: f64,
    temperature: f64,
    loss: SimclrLoss,
) -> Tensor<B, 1> {
    let v = f.dims()[0];
    let device = f.device();
    let (c, t) = (self_similarity, temperature);
    let eye = Tensor::<B, 2>::eye(v, &device);
    let pos = f.clone().matmul(f.clone().transpose()) * (eye.clone().neg() + 1.0) + eye.clone() * c; // masked [V, V]
    let negs = f.matmul(negatives.transpose()); // [V, M]
    let all = Tensor::cat(vec![negs, pos.clone()], 1);
    match loss {
        SimclrLoss::Fungivision => {
            // -(Σ_j pos[i,j]/T − Σ_j pos[j,j]/T) / (V−1) + lse_j C[i,j]
            let row = pos.clone().div_scalar(t).sum_dim(1).squeeze_dim::<1>(1);
            let diag = (pos * eye).div_scalar(t).sum();
            (row - diag.unsqueeze()).div_scalar(-((v - 1) as f64)) + logsumexp(all)
        }
        SimclrLoss::Paper => {
            let off = (pos * (eye.neg() + 1.0))
                .div_scalar(t)
                .sum_dim(1)
                .squeeze_dim::<1>(1);
            off.div_scalar(-((v - 1) as f64)) + logsumexp(all.div_scalar(t))
        }
    }
}

impl<B: AutodiffBackend> Objective<B> for SimclrObjective<B> {
    fn name(&self) -> &str {
        "simclr"
    }
    fn views_per_image(&self) -> usize {
        self.views
    }
    fn views_setting(&self) -> Option<String> {
        Some(format!(
            "simclr.num_patches = {}, simclr.stride_scale = {}",
            self.config.num_patches, self.config.stride_scale
        ))
    }
    fn views(&self, image: &RgbImage, _rng: &mut ChaCha8Rng) -> Vec<f32> {
        self.patchify
            .apply(image)
            .expect("geometry validated at construction")
    }

    /// Draws `comparison_batch_size` training images with the stream `(seed, "simclr.negatives")`
    /// and encodes all their views once (forward only) into the negative latents.
    fn setup(&mut self, ctx: &dyn SetupContext<B>) -> Result<()> {
        if ctx.is_empty() {
            return Err(Error::NoTrainingImages {
                objective: "simclr".into(),
                listed: 0,
            });
        }
        let want = self.config.comparison_batch_size;
        if want > ctx.len() {
            tracing::warn!(
                "simclr: comparison_batch_size = {want} but the training set has only {} images: \
                 using all {} as negatives",
                ctx.len(),
                ctx.len()
            );
        }
        let mut rng = fungi_core::rng::stream(ctx.seed(), "simclr.negatives", 0);
        // A full permutation: its first `want` entries are exactly `sample(len, want)` (the
        // Fisher-Yates prefix), and an unreadable pick is replaced by the next one when the
        // context skips unreadable images.
        let order = fungi_core::rng::sample_without_replacement(ctx.len(), ctx.len(), &mut rng);
        let side = self.patchify.image_size;
        let (v, per) = (self.views, 3 * side * side);
        let chunk_views = self.config.comparison_batch_encoding_batch_size.max(1);
        let target = want.min(ctx.len());
        let mut latents: Vec<f32> = Vec::with_capacity(target * v * self.config.latent_dim);
        let mut done = 0;
        for &i in &order {
            if done == target {
                break;
            }
            let Some(img) = fungi_core::objective::setup_image(ctx, i)? else {
                continue;
            };
            let views = self.patchify.apply(&img)?;
            for start in (0..v).step_by(chunk_views) {
                let n = chunk_views.min(v - start);
                let x = Tensor::<B::InnerBackend, 4>::from_data(
                    TensorData::new(
                        views[start * per..(start + n) * per].to_vec(),
                        [n, 3, side, side],
                    ),
                    &ctx.device(),
                );
                let z = self.head.apply_inner(ctx.embed(x));
                latents.extend(z.into_data().convert::<f32>().iter::<f32>());
            }
            done += 1;
            ctx.progress("simclr negatives", done, target);
        }
        if done == 0 {
            return Err(Error::NoTrainingImages {
                objective: "simclr".into(),
                listed: ctx.len(),
            });
        }
        if done < target {
            tracing::warn!(
                "simclr: only {done} readable training images for comparison_batch_size = {want}"
            );
        }
        let rows = latents.len() / self.config.latent_dim;
        self.set_negatives(StateTensor {
            shape: vec![rows, self.config.latent_dim],
            data: latents,
        })
    }

    fn ready(&self) -> Result<()> {
        match self.negatives {
            Some(_) => Ok(()),
            None => Err(Error::NotReady {
                objective: "simclr".into(),
                missing: "negatives".into(),
            }),
        }
    }

    fn image_loss(&self, embeddings: Tensor<B, 2>) -> Result<Tensor<B, 1>> {
        self.ready()?;
        let Some((_, neg)) = self.negatives.as_ref() else {
            return Err(Error::NotReady {
                objective: "simclr".into(),
                missing: "negatives".into(),
            });
        };
        let f = l2_normalize(self.head.apply(embeddings)); // [V, L]
        let nll = info_nce(
            f,
            neg.clone(),
            self.config.self_similarity_constant,
            self.config.temperature,
            self.config.loss,
        );
        Ok(nll.mean().reshape([1]))
    }
    fn grad_scale(&self) -> f32 {
        self.views as f32
    }
    fn state(&self) -> BTreeMap<String, StateTensor> {
        let mut m = BTreeMap::from(self.head.state_entries("head"));
        if let Some((n, _)) = &self.negatives {
            m.insert("negatives".into(), n.clone());
        }
        m
    }
    fn load_state(&mut self, state: &BTreeMap<String, StateTensor>) -> Result<()> {
        let l = self.head.dims().0;
        self.head = self.head.loaded(state, "simclr", "head")?;
        let n = state.get("negatives").ok_or_else(|| Error::Mismatch {
            what: "state tensor `simclr.negatives`".into(),
            expected: format!(
                "shape [M·V, {l}] (run setup on the training set and save the state)"
            ),
            found: "nothing".into(),
        })?;
        self.set_negatives(n.clone())
    }
    fn config_json(&self) -> serde_json::Value {
        serde_json::to_value(&self.config).expect("serialisable")
    }
}
