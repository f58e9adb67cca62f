//! [`ExtractorConfig`] (the settings that are not per objective) and [`FungiExtractorBuilder`].

use fungi_backbone::{AutodiffVitOps, TargetLayer, Vit};
use serde::{Deserialize, Serialize};

use super::FungiExtractor;
use crate::device_projection::{Residency, DEFAULT_DENSE_BUDGET};
use crate::engine::{GradPath, GradientEngine};
use crate::error::{Error, Result};
use crate::objective::Objective;
use crate::projection::Projection;
use crate::transform::EmbeddingTransform;

fn default_batch() -> usize {
    16
}
fn default_true() -> bool {
    true
}

/// Extractor settings (the part of the TOML/JSON config that is not per objective).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtractorConfig {
    /// Master seed: projection, heads, every view's randomness.
    #[serde(default)]
    pub seed: u64,
    /// Target layer dot path; default `blocks.{depth-1}.attn.proj`.
    #[serde(default)]
    pub target_layer: Option<String>,
    /// Images per forward/backward pass.
    #[serde(default = "default_batch")]
    pub batch_size: usize,
    /// Prepend the L2-normalised embedding (eval transform) block: the paper's layout
    /// `[embedding, kl, dino, simclr]`.
    #[serde(default = "default_true")]
    pub include_embedding: bool,
    /// Gradient path.
    #[serde(default)]
    pub grad_path: GradPath,
    /// Projection output size; default the embedding size `E`.
    #[serde(default)]
    pub projection_dim: Option<usize>,
    /// Eval transform of the embedding block (default: the model's own when the architecture
    /// carries one, fungivision's otherwise).
    #[serde(default, skip_serializing_if = "EmbeddingTransform::is_auto")]
    pub transform: EmbeddingTransform,
}

impl Default for ExtractorConfig {
    fn default() -> Self {
        Self {
            seed: 0,
            target_layer: None,
            batch_size: default_batch(),
            include_embedding: true,
            grad_path: GradPath::Auto,
            projection_dim: None,
            transform: EmbeddingTransform::Auto,
        }
    }
}

/// Builder of a [`FungiExtractor`].
pub struct FungiExtractorBuilder<B: AutodiffVitOps> {
    backbone: Option<Vit<B>>,
    config: ExtractorConfig,
    objectives: Vec<Box<dyn Objective<B>>>,
    projection: Option<Projection>,
    residency: Residency,
    dense_budget: u64,
    precision: fungi_backbone::Precision,
    views_per_pass: Option<usize>,
    prepare_ahead: Option<bool>,
}

impl<B: AutodiffVitOps> Default for FungiExtractorBuilder<B> {
    fn default() -> Self {
        Self {
            backbone: None,
            config: ExtractorConfig::default(),
            objectives: Vec::new(),
            projection: None,
            residency: Residency::Auto,
            dense_budget: DEFAULT_DENSE_BUDGET,
            precision: fungi_backbone::Precision::F32,
            views_per_pass: None,
            prepare_ahead: None,
        }
    }
}

impl<B: AutodiffVitOps> FungiExtractorBuilder<B> {
    /// A builder with no backbone yet ([`FungiExtractorBuilder::backbone`] before `build`), the
    /// default settings and no objective.
    pub fn new() -> Self {
        Self::default()
    }
    /// The backbone (on the autodiff backend).
    pub fn backbone(mut self, vit: Vit<B>) -> Self {
        self.backbone = Some(vit);
        self
    }
    /// The settings so far.
    pub fn settings(&self) -> &ExtractorConfig {
        &self.config
    }
    /// Precision of the prefix (GPUs: `Bf16` is fungivision's `use_fp16`; see
    /// [`FungiExtractor::set_prefix_precision`]).
    pub fn precision(mut self, p: fungi_backbone::Precision) -> Self {
        self.precision = p;
        self
    }
    /// At most this many views per forward pass of the untracked prefix (0: the backend's
    /// choice; see [`FungiExtractor::set_views_per_pass`]).
    pub fn views_per_pass(mut self, n: usize) -> Self {
        self.views_per_pass = Some(n);
        self
    }
    /// Whether the views of the next batch are made while the current one computes (see
    /// [`FungiExtractor::set_prepare_ahead`]; default: on for devices whose memory is not the
    /// host's).
    pub fn prepare_ahead(mut self, on: bool) -> Self {
        self.prepare_ahead = Some(on);
        self
    }
    /// Where the projection is kept during a run (default [`Residency::Auto`]); a runtime
    /// choice that does not change the features beyond float rounding and is not stored in
    /// states.
    pub fn projection_residency(mut self, r: Residency) -> Self {
        self.residency = r;
        self
    }
    /// Bytes `Residency::Auto` may spend on a dense device copy of the projection (default
    /// [`DEFAULT_DENSE_BUDGET`]).
    pub fn projection_dense_budget(mut self, bytes: u64) -> Self {
        self.dense_budget = bytes;
        self
    }
    /// Settings at once.
    pub fn config(mut self, config: ExtractorConfig) -> Self {
        self.config = config;
        self
    }
    /// Target layer dot path (`blocks.11.attn.proj`).
    pub fn target_layer(mut self, path: &str) -> Self {
        self.config.target_layer = Some(path.to_string());
        self
    }
    /// Master seed.
    pub fn seed(mut self, seed: u64) -> Self {
        self.config.seed = seed;
        self
    }
    /// Images per pass.
    pub fn batch_size(mut self, n: usize) -> Self {
        self.config.batch_size = n;
        self
    }
    /// Whether to prepend the embedding block.
    pub fn include_embedding(mut self, yes: bool) -> Self {
        self.config.include_embedding = yes;
        self
    }
    /// Gradient path.
    pub fn grad_path(mut self, path: GradPath) -> Self {
        self.config.grad_path = path;
        self
    }
    /// Eval transform of the embedding block.
    pub fn transform(mut self, t: EmbeddingTransform) -> Self {
        self.config.transform = t;
        self
    }
    /// Adds an objective (blocks follow the order of the calls).
    pub fn objective(mut self, o: Box<dyn Objective<B>>) -> Self {
        self.objectives.push(o);
        self
    }
    /// Uses an explicit projection instead of the seeded one.
    pub fn projection(mut self, p: Projection) -> Self {
        self.projection = Some(p);
        self
    }
    /// Builds, checking the target layer, the objectives and the projection.
    ///
    /// # Errors
    /// No backbone, a batch size of 0, an unknown target layer, duplicate objective names, a
    /// projection of the wrong size, or sizes that cannot fit in memory (naming the setting).
    pub fn build(self) -> Result<FungiExtractor<B>> {
        let Some(backbone) = self.backbone else {
            return Err(Error::Config {
                key: "backbone".into(),
                value: "none".into(),
                expected: "a backbone (FungiExtractorBuilder::backbone)".into(),
            });
        };
        let c = &self.config;
        if c.batch_size == 0 {
            return Err(Error::Config {
                key: "batch_size".into(),
                value: "0".into(),
                expected: "at least 1".into(),
            });
        }
        let depth = backbone.blocks.len();
        let target = match &c.target_layer {
            Some(p) => fungi_backbone::keys::parse_target(backbone.config.layout, p, depth)?,
            None => TargetLayer::last_attn_proj(depth),
        };
        let mut names = std::collections::HashSet::new();
        for o in &self.objectives {
            if !names.insert(o.name().to_string()) || o.name() == "embedding" {
                return Err(Error::Config {
                    key: "objective".into(),
                    value: o.name().into(),
                    expected: "unique objective names other than `embedding`".into(),
                });
            }
        }
        if backbone.config.in_chans != 3 {
            return Err(Error::Config {
                key: "in_chans".into(),
                value: backbone.config.in_chans.to_string(),
                expected:
                    "3: every view is an RGB image (the architecture must take 3 input channels)"
                        .into(),
            });
        }
        if c.projection_dim == Some(0) {
            return Err(Error::Config {
                key: "projection_dim".into(),
                value: "0".into(),
                expected: "at least 1 (omit it for the embedding size)".into(),
            });
        }
        let eval_transform = c.transform.resolve(&backbone.config)?;
        let device = backbone.device();
        let e = backbone.out_dim();
        let engine = GradientEngine::new(backbone, target, c.grad_path)?;
        let (o, i1) = engine.grad_shape();
        for obj in &self.objectives {
            let (h, w) = obj.view_size();
            // The views of one batch, as f32, before the backbone sees them (a lower bound).
            let bytes = (c.batch_size as u64)
                .checked_mul(obj.views_per_image() as u64)
                .and_then(|v| v.checked_mul(3 * h as u64 * w as u64 * 4));
            let (what, hint) = match obj.views_setting() {
                Some(s) => (
                    format!(
                        "objective `{}`: {s} gives {} views of 3x{h}x{w} per image, x batch_size {}",
                        obj.name(),
                        obj.views_per_image(),
                        c.batch_size
                    ),
                    format!("lower batch_size or {s}"),
                ),
                None => (
                    format!(
                        "objective `{}`: {} views of 3x{h}x{w} per image x batch_size {}",
                        obj.name(),
                        obj.views_per_image(),
                        c.batch_size
                    ),
                    "lower batch_size".to_string(),
                ),
            };
            crate::memory::check(&what, bytes, &hint)?;
        }
        let projection = match self.projection {
            Some(p) => p,
            None => {
                let out = c.projection_dim.unwrap_or(e);
                crate::memory::check(
                    &format!("the bit-packed projection [{out}, {}]", o * i1),
                    Projection::packed_bytes(out, o * i1),
                    "lower projection_dim",
                )?;
                Projection::rademacher(out, o * i1, c.seed)
            }
        };
        if projection.in_dim() != o * i1 {
            return Err(Error::Mismatch {
                what: format!("projection input size for {target} ([{o}, {i1}])"),
                expected: (o * i1).to_string(),
                found: projection.in_dim().to_string(),
            });
        }
        let mut ex = FungiExtractor {
            engine,
            objectives: self.objectives,
            projection,
            config: self.config,
            eval_transform,
            device,
            backbone_fingerprint: std::sync::OnceLock::new(),
            residency: self.residency,
            dense_budget: self.dense_budget,
            device_projection: std::sync::OnceLock::new(),
            projection_materialisations: Default::default(),
            host_reads: Default::default(),
            prepare_ahead: self.prepare_ahead,
        };
        ex.set_prefix_precision(self.precision)?;
        if let Some(n) = self.views_per_pass {
            ex.set_views_per_pass(n);
        }
        Ok(ex)
    }
}

impl<B: AutodiffVitOps> FungiExtractor<B> {
    /// Starts a builder over a backbone on the autodiff backend.
    pub fn builder(backbone: Vit<B>) -> FungiExtractorBuilder<B> {
        FungiExtractorBuilder::new().backbone(backbone)
    }
}
