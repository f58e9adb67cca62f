//! [`FungiExtractor`]: backbone + target layer + objectives + projection → FUNGI features.

use std::collections::BTreeMap;
use std::path::Path;

use burn::prelude::*;
use fungi_aug::transforms::EvalTransform;
use fungi_aug::RgbImage;
use fungi_backbone::AutodiffVitOps;
use fungi_backbone::{TargetLayer, Vit};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::device_projection::{DeviceProjection, Residency, DEFAULT_DENSE_BUDGET};
use crate::engine::{l2_normalize, GradPath, GradientEngine};
use crate::error::{Error, Result};
use crate::objective::{Objective, SetupContext, StateTensor};
use crate::projection::Projection;
use crate::rng::stream;
use crate::state::{self, Stored, STATE_FORMAT};
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

/// One objective's outputs for a set of images.
#[derive(Debug, Clone)]
pub struct ObjectiveOutput {
    /// `[N]` per-image losses.
    pub losses: Vec<f32>,
    /// `[N, O, I+1]` per-image gradients (times [`Objective::grad_scale`]).
    pub grads: Vec<f32>,
    /// `[N, E]` projected gradients `scaling · P · vec(G)`.
    pub features_raw: Vec<f32>,
    /// `[N, E]` L2-normalised `features_raw`: the objective's feature block.
    pub features: Vec<f32>,
}

/// The host-side inputs of one batch ([`FungiExtractor::prepare`]): every objective's views
/// and, when the embedding block needs its own forward, the eval views.
#[derive(Debug, Clone)]
pub struct PreparedBatch {
    n: usize,
    global_indices: Vec<u64>,
    eval: Option<Vec<f32>>,
    views: Vec<Vec<f32>>,
}

impl PreparedBatch {
    /// Images in the batch.
    pub fn len(&self) -> usize {
        self.n
    }
    /// Whether the batch is empty (never, for a prepared batch).
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }
    /// Bytes of views held.
    pub fn bytes(&self) -> usize {
        4 * (self.eval.as_ref().map_or(0, Vec::len)
            + self.views.iter().map(Vec::len).sum::<usize>())
    }
}

/// The eval views `[n, 3, crop, crop]` of `images` under `t`.
fn eval_inputs(t: &EvalTransform, images: &[RgbImage]) -> Vec<f32> {
    images.par_iter().flat_map_iter(|im| t.apply(im)).collect()
}

/// FUNGI feature extractor.
pub struct FungiExtractor<B: AutodiffVitOps> {
    engine: GradientEngine<B>,
    objectives: Vec<Box<dyn Objective<B>>>,
    projection: Projection,
    config: ExtractorConfig,
    /// The embedding block's eval transform (`config.transform` resolved for the backbone).
    eval_transform: EvalTransform,
    device: B::Device,
    backbone_fingerprint: std::sync::OnceLock<String>,
    residency: Residency,
    dense_budget: u64,
    /// The projection on the device, made at the first projection of a run (after any
    /// `load_state`), reused by every later batch.
    device_projection: std::sync::OnceLock<DeviceProjection<B::InnerBackend>>,
    /// How often a device projection was made (1 per run; reset only by a new projection).
    projection_materialisations: std::sync::atomic::AtomicUsize,
    /// Device-to-host copies made by this extractor (one per batch on the features path).
    host_reads: std::sync::atomic::AtomicUsize,
    /// Prepare batch k+1 while batch k computes; `None`: on backends with their own device.
    prepare_ahead: Option<bool>,
}

impl<B: AutodiffVitOps> std::fmt::Debug for FungiExtractor<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FungiExtractor")
            .field("target", &self.engine.target().to_string())
            .field(
                "objectives",
                &self
                    .objectives
                    .iter()
                    .map(|o| o.name().to_string())
                    .collect::<Vec<_>>(),
            )
            .field("config", &self.config)
            .finish()
    }
}

/// Builder of a [`FungiExtractor`].
pub struct FungiExtractorBuilder<B: AutodiffVitOps> {
    backbone: Vit<B>,
    config: ExtractorConfig,
    objectives: Vec<Box<dyn Objective<B>>>,
    projection: Option<Projection>,
    residency: Residency,
    dense_budget: u64,
}

impl<B: AutodiffVitOps> FungiExtractorBuilder<B> {
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
    pub fn build(self) -> Result<FungiExtractor<B>> {
        let c = &self.config;
        if c.batch_size == 0 {
            return Err(Error::Config {
                key: "batch_size".into(),
                value: "0".into(),
                expected: "at least 1".into(),
            });
        }
        let depth = self.backbone.blocks.len();
        let target = match &c.target_layer {
            Some(p) => fungi_backbone::keys::parse_target(self.backbone.config.layout, p, depth)?,
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
        if self.backbone.config.in_chans != 3 {
            return Err(Error::Config {
                key: "in_chans".into(),
                value: self.backbone.config.in_chans.to_string(),
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
        let eval_transform = c.transform.resolve(&self.backbone.config)?;
        let device = self.backbone.device();
        let e = self.backbone.out_dim();
        let engine = GradientEngine::new(self.backbone, target, c.grad_path)?;
        let (o, i1) = engine.grad_shape();
        for obj in &self.objectives {
            let (h, w) = obj.view_size();
            // The views of one batch, as f32, before the backbone sees them (a lower bound).
            let bytes = (c.batch_size as u64)
                .checked_mul(obj.views_per_image() as u64)
                .and_then(|v| v.checked_mul(3 * h as u64 * w as u64 * 4));
            crate::memory::check(
                &format!(
                    "objective `{}`: {} views of 3x{h}x{w} per image x batch_size {}",
                    obj.name(),
                    obj.views_per_image(),
                    c.batch_size
                ),
                bytes,
                "lower batch_size or the objective's number of views",
            )?;
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
        Ok(FungiExtractor {
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
            prepare_ahead: None,
        })
    }
}

/// Progress callback: `(what, done, total)`.
pub type ProgressFn<'a> = &'a (dyn Fn(&str, usize, usize) + Sync);

/// Callback for training images skipped as unreadable by `setup`: `(index, error)`.
pub type SkipFn<'a> = &'a (dyn Fn(usize, &Error) + Sync);

struct Ctx<'a, B: AutodiffVitOps> {
    progress: Option<ProgressFn<'a>>,
    skip: Option<SkipFn<'a>>,
    len: usize,
    load: &'a (dyn Fn(usize) -> Result<RgbImage> + Sync),
    engine: &'a GradientEngine<B>,
    device: B::Device,
    seed: u64,
}

impl<B: AutodiffVitOps> SetupContext<B> for Ctx<'_, B> {
    fn len(&self) -> usize {
        self.len
    }
    fn image(&self, index: usize) -> Result<RgbImage> {
        let img = (self.load)(index)?;
        fungi_aug::check_not_empty(&img, Path::new(&format!("at training index {index}")))?;
        Ok(img)
    }
    fn embed(&self, views: Tensor<B::InnerBackend, 4>) -> Tensor<B::InnerBackend, 2> {
        self.engine.prefix_model().forward(views)
    }
    fn device(&self) -> B::Device {
        self.device.clone()
    }
    fn seed(&self) -> u64 {
        self.seed
    }
    fn progress(&self, what: &str, done: usize, total: usize) {
        if let Some(p) = self.progress {
            p(what, done, total)
        }
    }
    fn skip_unreadable(&self) -> bool {
        self.skip.is_some()
    }
    fn skipped(&self, index: usize, error: &Error) {
        if let Some(s) = self.skip {
            s(index, error)
        }
    }
}

impl<B: AutodiffVitOps> FungiExtractor<B> {
    /// Starts a builder over a backbone on the autodiff backend.
    pub fn builder(backbone: Vit<B>) -> FungiExtractorBuilder<B> {
        FungiExtractorBuilder {
            backbone,
            config: ExtractorConfig::default(),
            objectives: Vec::new(),
            projection: None,
            residency: Residency::Auto,
            dense_budget: DEFAULT_DENSE_BUDGET,
        }
    }

    /// Settings.
    pub fn config(&self) -> &ExtractorConfig {
        &self.config
    }
    /// Changes the number of images per forward/backward pass (features do not depend on it).
    ///
    /// # Errors
    /// [`Error::Config`] for 0.
    pub fn set_batch_size(&mut self, n: usize) -> Result<()> {
        if n == 0 {
            return Err(Error::Config {
                key: "batch_size".into(),
                value: "0".into(),
                expected: "at least 1".into(),
            });
        }
        self.config.batch_size = n;
        Ok(())
    }
    /// Whether `extract` (and the CLI) prepares batch k+1's views while batch k computes:
    /// `None` (default) does so on backends with their own device (GPUs) and not on the CPU
    /// backends, where both would share the same cores. Features are identical either way.
    pub fn set_prepare_ahead(&mut self, on: Option<bool>) {
        self.prepare_ahead = on;
    }
    /// See [`FungiExtractor::set_prepare_ahead`].
    pub fn prepare_ahead(&self) -> bool {
        self.prepare_ahead
            .unwrap_or(!<B::InnerBackend as fungi_backbone::VitOps>::vit_host_memory())
    }
    /// Precision of the prefix ([`GradientEngine::set_prefix_precision`]; default f32).
    ///
    /// # Errors
    /// When the backend has no tensors of that precision.
    pub fn set_prefix_precision(&mut self, p: fungi_backbone::Precision) -> Result<()> {
        self.engine.set_prefix_precision(p)
    }
    /// Views per prefix pass ([`GradientEngine::set_views_per_pass`]; 0 = automatic).
    pub fn set_views_per_pass(&mut self, n: usize) {
        self.engine.set_views_per_pass(n);
    }
    /// Changes where the projection is kept ([`FungiExtractorBuilder::projection_residency`]);
    /// the device copy is made again at the next projection.
    pub fn set_projection_residency(&mut self, r: Residency) {
        self.residency = r;
        self.device_projection = std::sync::OnceLock::new();
    }
    /// The gradient engine.
    pub fn engine(&self) -> &GradientEngine<B> {
        &self.engine
    }
    /// The projection.
    pub fn projection(&self) -> &Projection {
        &self.projection
    }
    /// The projection as kept on the device for this run, made on first use.
    ///
    /// # Errors
    /// When the requested residency cannot hold this projection.
    pub fn device_projection(&self) -> Result<&DeviceProjection<B::InnerBackend>> {
        if let Some(p) = self.device_projection.get() {
            return Ok(p);
        }
        let p = DeviceProjection::new(
            &self.projection,
            &self.device,
            self.residency,
            self.dense_budget,
        )?;
        // A concurrent caller may have set it first: then ours is dropped and not counted.
        let mut made = false;
        let p = self.device_projection.get_or_init(|| {
            made = true;
            p
        });
        if made {
            self.projection_materialisations
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(p)
    }
    /// How many times a device copy of the projection was made (once per run; again only
    /// after `load_state` replaced the projection).
    pub fn projection_materialisations(&self) -> usize {
        self.projection_materialisations
            .load(std::sync::atomic::Ordering::Relaxed)
    }
    /// How many device-to-host copies this extractor has made ([`FungiExtractor::extract`]:
    /// one per batch of `batch_size` images, the finished `[n, feature_dim]` features).
    pub fn host_reads(&self) -> usize {
        self.host_reads.load(std::sync::atomic::Ordering::Relaxed)
    }
    fn host<const D: usize>(&self, t: Tensor<B::InnerBackend, D>) -> Result<Vec<f32>> {
        self.host_reads
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        host_f32(t)
    }
    /// The objectives, in block order.
    pub fn objectives(&self) -> &[Box<dyn Objective<B>>] {
        &self.objectives
    }
    /// Block names in output order (`embedding` first when included).
    pub fn block_names(&self) -> Vec<String> {
        let mut v: Vec<String> = Vec::new();
        if self.config.include_embedding {
            v.push("embedding".into());
        }
        v.extend(self.objectives.iter().map(|o| o.name().to_string()));
        v
    }
    /// Width of each block, in order.
    pub fn block_dims(&self) -> Vec<usize> {
        let mut v = Vec::new();
        if self.config.include_embedding {
            v.push(self.engine.inner().out_dim());
        }
        v.extend(self.objectives.iter().map(|_| self.projection.out_dim()));
        v
    }
    /// Total feature width.
    pub fn feature_dim(&self) -> usize {
        self.block_dims().iter().sum()
    }

    /// Runs every objective's `setup` on the training set (`load(i)` decodes training image `i`).
    pub fn setup(
        &mut self,
        len: usize,
        load: &(dyn Fn(usize) -> Result<RgbImage> + Sync),
    ) -> Result<()> {
        self.setup_with_progress(len, load, None)
    }

    /// [`FungiExtractor::setup`] with a progress callback `(what, done, total)`.
    pub fn setup_with_progress(
        &mut self,
        len: usize,
        load: &(dyn Fn(usize) -> Result<RgbImage> + Sync),
        progress: Option<ProgressFn<'_>>,
    ) -> Result<()> {
        self.setup_with(len, load, progress, None)
    }

    /// [`FungiExtractor::setup_with_progress`]; with `skip`, training images that cannot be
    /// decoded are skipped (and reported to `skip`) instead of failing the setup.
    pub fn setup_with(
        &mut self,
        len: usize,
        load: &(dyn Fn(usize) -> Result<RgbImage> + Sync),
        progress: Option<ProgressFn<'_>>,
        skip: Option<SkipFn<'_>>,
    ) -> Result<()> {
        let ctx = Ctx {
            progress,
            skip,
            len,
            load,
            engine: &self.engine,
            device: self.device.clone(),
            seed: self.config.seed,
        };
        for o in self.objectives.iter_mut() {
            o.setup(&ctx)?;
        }
        Ok(())
    }

    /// L2-normalised CLS embeddings `[N, E]` of the eval transform of `images`.
    pub fn embeddings(&self, images: &[RgbImage]) -> Result<Vec<f32>> {
        check_images(images, |i| format!("at position {i} of the call"))?;
        let mut out = Vec::new();
        for chunk in images.chunks(self.config.batch_size) {
            out.extend(self.host(self.embedding_tensor(chunk))?);
        }
        Ok(out)
    }

    /// CLS embeddings `[N, E]` of the eval transform of `images`, **not** normalised
    /// (fungivision's `model(eval(image))`), in batches of `batch_size`, on the prefix model
    /// (so in the prefix precision).
    ///
    /// # Errors
    /// When the values cannot be read back.
    pub fn raw_embeddings(&self, images: &[RgbImage]) -> Result<Vec<f32>> {
        check_images(images, |i| format!("at position {i} of the call"))?;
        let mut out = Vec::new();
        for chunk in images.chunks(self.config.batch_size) {
            let x = Tensor::<B::InnerBackend, 4>::from_data(
                TensorData::new(self.eval_inputs(chunk), self.eval_shape(chunk.len())),
                &self.device,
            );
            out.extend(self.host(self.engine.prefix_model().forward(x))?);
        }
        Ok(out)
    }

    /// L2-normalised eval-transform embeddings `[N, E]` of one batch, on the device.
    fn embedding_tensor(&self, images: &[RgbImage]) -> Tensor<B::InnerBackend, 2> {
        self.embedding_from_inputs(self.eval_inputs(images), images.len())
    }

    /// The embedding block's eval transform.
    pub fn eval_transform(&self) -> &EvalTransform {
        &self.eval_transform
    }

    /// The eval views of `images` (`[n, 3, crop, crop]` values).
    fn eval_inputs(&self, images: &[RgbImage]) -> Vec<f32> {
        eval_inputs(&self.eval_transform, images)
    }

    /// Shape of `n` eval views.
    fn eval_shape(&self, n: usize) -> [usize; 4] {
        let c = self.eval_transform.crop as usize;
        [n, 3, c, c]
    }

    /// [`FungiExtractor::embedding_tensor`] from the eval views (`[n, 3, crop, crop]` values).
    fn embedding_from_inputs(&self, data: Vec<f32>, n: usize) -> Tensor<B::InnerBackend, 2> {
        let x = Tensor::<B::InnerBackend, 4>::from_data(
            TensorData::new(data, self.eval_shape(n)),
            &self.device,
        );
        l2_normalize(self.engine.prefix_model().forward(x))
    }

    /// Objective `k`'s scaled per-image gradients `[n, O·(I+1)]`, losses `[n]` and view
    /// embeddings `[n, V, E]` from one batch of views (`[n·V, 3, H, W]` values, image-major), on
    /// the device.
    #[allow(clippy::type_complexity)]
    fn batch_grads(
        &self,
        k: usize,
        views: Vec<f32>,
        n: usize,
    ) -> Result<(
        Tensor<B::InnerBackend, 2>,
        Tensor<B::InnerBackend, 1>,
        Tensor<B::InnerBackend, 3>,
    )> {
        let o = &self.objectives[k];
        let v = o.views_per_image();
        let (h, w) = o.view_size();
        let x = Tensor::<B::InnerBackend, 4>::from_data(
            TensorData::new(views, [n * v, 3, h, w]),
            &self.device,
        );
        let r = self
            .engine
            .per_image_batched(x, n, &|emb| o.batch_losses(emb))?;
        let [_, oo, ii] = r.grads.dims();
        Ok((
            r.grads.mul_scalar(o.grad_scale()).reshape([n, oo * ii]),
            r.losses,
            r.embeddings,
        ))
    }

    /// The FUNGI features `[n, feature_dim()]` of one batch (at most `batch_size` images
    /// keeps the memory bounded), kept on the device: embedding, gradients, projections and
    /// normalisation never leave it. `global_indices` as for [`FungiExtractor::extract`].
    ///
    /// # Errors
    /// When an objective is not ready, the lengths differ, or a loss fails.
    pub fn features_tensor(
        &self,
        images: &[RgbImage],
        global_indices: &[u64],
    ) -> Result<Tensor<B::InnerBackend, 2>> {
        self.features_prepared(self.prepare(images, global_indices)?)
    }

    /// The objective whose view `j` is the eval transform, when the embedding block is on: the
    /// block is then taken from that forward instead of a second one (the paper's KL).
    fn shared_embedding(&self) -> Option<(usize, usize)> {
        if !self.config.include_embedding || self.eval_transform != EvalTransform::default() {
            return None;
        }
        self.objectives
            .iter()
            .enumerate()
            .find_map(|(k, o)| o.eval_view().map(|j| (k, j)))
    }

    /// The host-side work of a batch — every objective's views and the eval views of the
    /// embedding block — ready for [`FungiExtractor::features_prepared`]. Separate so that it
    /// can run (on another thread) while the previous batch computes.
    ///
    /// # Errors
    /// When an objective is not ready, an image has no pixels, or the lengths differ or are 0.
    pub fn prepare(&self, images: &[RgbImage], global_indices: &[u64]) -> Result<PreparedBatch> {
        self.check_batch(images, global_indices, true)?;
        let n = images.len();
        let eval = (self.config.include_embedding && self.shared_embedding().is_none())
            .then(|| self.eval_inputs(images));
        let views = (0..self.objectives.len())
            .map(|k| self.views(k, images, global_indices))
            .collect::<Result<_>>()?;
        Ok(PreparedBatch {
            n,
            global_indices: global_indices.to_vec(),
            eval,
            views,
        })
    }

    /// The features `[n, feature_dim()]` of a prepared batch, on the device (see
    /// [`FungiExtractor::features_tensor`]).
    ///
    /// # Errors
    /// When the batch was prepared by an extractor with other objectives, or a loss fails.
    pub fn features_prepared(&self, batch: PreparedBatch) -> Result<Tensor<B::InnerBackend, 2>> {
        let PreparedBatch { n, eval, views, .. } = batch;
        if views.len() != self.objectives.len() {
            return Err(Error::Mismatch {
                what: "objectives of a prepared batch".into(),
                expected: format!("{} (this extractor's)", self.objectives.len()),
                found: views.len().to_string(),
            });
        }
        let shared = self.shared_embedding();
        let mut embedding = eval.map(|x| self.embedding_from_inputs(x, n));
        let dp = self.device_projection()?;
        let mut blocks = Vec::with_capacity(self.objectives.len() + 1);
        for (k, v) in views.into_iter().enumerate() {
            let (g, _, emb) = self.batch_grads(k, v, n)?;
            if let Some((_, j)) = shared.filter(|&(s, _)| s == k) {
                let e = emb.dims()[2];
                embedding = Some(l2_normalize(
                    emb.slice([0..n, j..j + 1, 0..e]).reshape([n, e]),
                ));
            }
            blocks.push(l2_normalize(dp.project(&self.projection, g)?));
        }
        if let Some(e) = embedding {
            blocks.insert(0, e);
        }
        Ok(Tensor::cat(blocks, 1))
    }

    /// The finished features of a prepared batch on the host (one device-to-host copy),
    /// refusing NaN/Inf with the first image and block that has one.
    ///
    /// # Errors
    /// As [`FungiExtractor::features_prepared`], and [`Error::NonFinite`].
    pub fn extract_prepared(&self, batch: PreparedBatch) -> Result<Vec<f32>> {
        let idx = batch.global_indices.clone();
        let f = self.host(self.features_prepared(batch)?)?;
        let names = self.block_names();
        let dims = self.block_dims();
        let total: usize = dims.iter().sum();
        // Never hand out NaN/Inf: name the first image and block that has one.
        if let Some(p) = f.iter().position(|v| !v.is_finite()) {
            let (row, mut col) = (p / total.max(1), p % total.max(1));
            let mut block = 0;
            while block + 1 < dims.len() && col >= dims[block] {
                col -= dims[block];
                block += 1;
            }
            return Err(Error::NonFinite {
                objective: names[block].clone(),
                index: idx[row],
                value: f[p],
            });
        }
        Ok(f)
    }

    /// The views of `images` for objective `k`, each from the stream `(seed, name, index)`.
    ///
    /// # Errors
    /// When there is no objective `k`, the lengths differ, or an image has no pixels.
    pub fn views(&self, k: usize, images: &[RgbImage], global_indices: &[u64]) -> Result<Vec<f32>> {
        let o = self.objectives.get(k).ok_or_else(|| Error::Mismatch {
            what: "objective index".into(),
            expected: format!("below {} (the number of objectives)", self.objectives.len()),
            found: k.to_string(),
        })?;
        if global_indices.len() != images.len() {
            return Err(Error::Mismatch {
                what: "global indices".into(),
                expected: format!("one per image ({})", images.len()),
                found: global_indices.len().to_string(),
            });
        }
        check_images(images, |i| {
            format!("at dataset index {}", global_indices[i])
        })?;
        Ok(images
            .par_iter()
            .zip(global_indices.par_iter())
            .flat_map_iter(|(im, &idx)| {
                let mut rng = stream(self.config.seed, o.name(), idx);
                o.views(im, &mut rng)
            })
            .collect())
    }

    /// Objective `k` on ready-made views (`[N·V, 3, H, W]` normalised, image-major), in batches.
    pub fn objective_from_views(
        &self,
        k: usize,
        views: &[f32],
        n_images: usize,
    ) -> Result<ObjectiveOutput> {
        let o = &self.objectives[k];
        let v = o.views_per_image();
        let (h, w) = o.view_size();
        let per_image = v * 3 * h * w;
        if views.len() != n_images * per_image {
            return Err(Error::Mismatch {
                what: format!(
                    "objective `{}`: view values for {n_images} images",
                    o.name()
                ),
                expected: format!("{} ({v} views of 3x{h}x{w} each)", n_images * per_image),
                found: views.len().to_string(),
            });
        }
        let mut out = ObjectiveOutput {
            losses: vec![],
            grads: vec![],
            features_raw: vec![],
            features: vec![],
        };
        o.ready()?;
        let dp = self.device_projection()?;
        let bs = self.config.batch_size;
        for start in (0..n_images).step_by(bs) {
            let n = bs.min(n_images - start);
            let chunk = views[start * per_image..(start + n) * per_image].to_vec();
            let (g, losses, _) = self.batch_grads(k, chunk, n)?;
            let raw = dp.project(&self.projection, g.clone())?;
            let feat = l2_normalize(raw.clone());
            out.losses.extend(self.host(losses)?);
            out.grads.extend(self.host(g)?);
            out.features_raw.extend(self.host(raw)?);
            out.features.extend(self.host(feat)?);
        }
        Ok(out)
    }

    /// The checks of a batch before any work: one global index per image (and at least one
    /// image with `at_least_one`), no image without pixels, every objective ready.
    fn check_batch(
        &self,
        images: &[RgbImage],
        global_indices: &[u64],
        at_least_one: bool,
    ) -> Result<()> {
        let n = images.len();
        if global_indices.len() != n || (at_least_one && n == 0) {
            return Err(Error::Mismatch {
                what: "global indices".into(),
                expected: format!(
                    "one per image ({n}){}",
                    if at_least_one { ", at least one" } else { "" }
                ),
                found: global_indices.len().to_string(),
            });
        }
        check_images(images, |i| {
            format!("at dataset index {}", global_indices[i])
        })?;
        for o in &self.objectives {
            o.ready()?;
        }
        Ok(())
    }

    /// FUNGI features `[N, feature_dim()]` of decoded images; `global_indices` (one per image,
    /// the image's index in the whole dataset) select the random streams, so the result for an
    /// image never depends on the batch it is in.
    pub fn extract(&self, images: &[RgbImage], global_indices: &[u64]) -> Result<Vec<f32>> {
        let n = images.len();
        self.check_batch(images, global_indices, false)?;
        let total = self.feature_dim();
        let mut out = Vec::with_capacity(n * total);
        let bs = self.config.batch_size;
        let ranges: Vec<_> = (0..n).step_by(bs).map(|s| s..(s + bs).min(n)).collect();
        let prep = |r: &std::ops::Range<usize>| {
            self.prepare(&images[r.clone()], &global_indices[r.clone()])
        };
        if !self.prepare_ahead() || ranges.len() < 2 {
            // CPU backends: the view transforms and the compute share the same cores.
            for r in &ranges {
                out.extend(self.extract_prepared(prep(r)?)?);
            }
        } else {
            // A separate device: batch k+1's views are made while batch k computes (at most
            // one prepared batch waits).
            let mut current = prep(&ranges[0])?;
            for k in 0..ranges.len() {
                let (f, next) = rayon::join(
                    || self.extract_prepared(current),
                    || ranges.get(k + 1).map(prep),
                );
                out.extend(f?);
                match next.transpose()? {
                    Some(n) => current = n,
                    None => break,
                }
            }
        }
        Ok(out)
    }

    /// SHA-256 of the backbone's parameters (state-dict keys, shapes and `f32` values in key
    /// order): identifies the weights in state files, so a state made with other weights (whose
    /// SimCLR negatives or DeepCluster prototypes came from another model) is refused.
    /// Computed once.
    pub fn backbone_fingerprint(&self) -> String {
        self.backbone_fingerprint
            .get_or_init(|| {
                let sd = self.engine.inner().to_state_dict();
                let mut h = Sha256::new();
                for (k, t) in &sd.tensors {
                    h.update(k.as_bytes());
                    h.update([0]);
                    for d in &t.shape {
                        h.update((*d as u64).to_le_bytes());
                    }
                    if let Ok(v) = &t.data {
                        let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                        h.update(&bytes);
                    }
                }
                format!("{:x}", h.finalize())
            })
            .clone()
    }

    /// The state file's bytes (see [`FungiExtractor::save_state`]): byte-identical for identical
    /// extractors, so runs can compare states by hash. `path` names the file in errors.
    pub fn state_bytes(&self, path: &Path) -> Result<Vec<u8>> {
        let mut tensors = BTreeMap::new();
        let mut meta = BTreeMap::new();
        meta.insert("format".to_string(), STATE_FORMAT.to_string());
        meta.insert("config".to_string(), self.state_config().to_string());
        meta.insert(
            "projection_fingerprint".into(),
            self.projection.fingerprint(),
        );
        meta.insert(
            "projection_out_dim".into(),
            self.projection.out_dim().to_string(),
        );
        meta.insert(
            "projection_in_dim".into(),
            self.projection.in_dim().to_string(),
        );
        meta.insert("backbone_fingerprint".into(), self.backbone_fingerprint());
        match (self.projection.seed(), self.projection.to_i8()) {
            (Some(seed), _) => {
                meta.insert("projection_seed".into(), seed.to_string());
            }
            (None, Some(v)) => {
                tensors.insert(
                    "projection".into(),
                    Stored::I8 {
                        shape: vec![self.projection.out_dim(), self.projection.in_dim()],
                        data: v,
                    },
                );
            }
            (None, None) => {
                return Err(Error::Mismatch {
                    what: "projection of a state file".into(),
                    expected: "a ±1 (bit-packed) projection".into(),
                    found: "a dense projection".into(),
                })
            }
        }
        tensors.insert(
            "projection_scaling".into(),
            Stored::F32(StateTensor {
                shape: vec![],
                data: vec![self.projection.scaling()],
            }),
        );
        for o in &self.objectives {
            for (k, t) in o.state() {
                tensors.insert(format!("{}.{k}", o.name()), Stored::F32(t));
            }
        }
        state::to_bytes(path, &tensors, &meta)
    }

    /// Saves projection, objective states and configuration so a later run (e.g. on the test
    /// split) reproduces this one's random choices exactly. Atomic (temp file + rename) and
    /// byte-reproducible.
    pub fn save_state(&self, path: &Path) -> Result<()> {
        crate::tensor_file::write_bytes_atomic(path, &self.state_bytes(path)?)
    }

    fn state_config(&self) -> serde_json::Value {
        let (o, i1) = self.engine.grad_shape();
        let i = i1 - 1;
        // The choice as it resolved: `model` on an arch with a transform and `eval` on one
        // without are the default (`auto`), so they compare equal to it.
        let mut config = self.config.clone();
        let backbone = &self.engine.inner().config;
        if EmbeddingTransform::Auto.resolve(backbone).ok() == Some(self.eval_transform) {
            config.transform = EmbeddingTransform::Auto;
        }
        serde_json::json!({
            "extractor": config,
            "target_layer": self.engine.target().to_string(),
            "target_shape": [o, i],
            "embed_dim": self.engine.inner().out_dim(),
            "backbone": self.engine.inner().config,
            "objectives": self.objectives.iter().map(|o| serde_json::json!({"name": o.name(), "config": o.config_json()})).collect::<Vec<_>>(),
        })
    }

    /// Loads a state file written by [`FungiExtractor::save_state`]: the projection and every
    /// objective's state. Refuses a state that was made for another setup — target layer,
    /// shapes, objectives and their settings, seed, projection size, architecture, weights
    /// (whatever the file records) — naming what differs. All or nothing: on any error the
    /// extractor is unchanged.
    pub fn load_state(&mut self, path: &Path) -> Result<()> {
        let bytes = std::fs::read(path).map_err(|source| Error::Io {
            path: path.into(),
            source,
        })?;
        self.load_state_bytes(&bytes, path)
    }

    /// [`FungiExtractor::load_state`] from the file's bytes (`path` names it in errors).
    pub fn load_state_bytes(&mut self, bytes: &[u8], path: &Path) -> Result<()> {
        let st = state::parse(bytes, path)?;
        let cfg: serde_json::Value = st
            .metadata
            .get("config")
            .and_then(|c| serde_json::from_str(c).ok())
            .ok_or_else(|| Error::Format {
                path: path.into(),
                reason: "missing `config` metadata".into(),
            })?;
        let mine = self.state_config();
        let mismatch = |what: &str, expected: String, found: String| Error::Mismatch {
            what: format!("{}: {what}", path.display()),
            expected,
            found,
        };
        for key in ["target_layer", "target_shape", "embed_dim"] {
            if cfg[key] != mine[key] {
                return Err(mismatch(
                    &format!("`{key}`"),
                    mine[key].to_string(),
                    cfg[key].to_string(),
                ));
            }
        }
        // Settings the state depends on, where the file records them.
        for key in ["seed", "projection_dim"] {
            let theirs = &cfg["extractor"][key];
            if cfg["extractor"].is_object() && theirs != &mine["extractor"][key] {
                return Err(mismatch(
                    &format!(
                        "`{key}` (the state was made with {key} = {theirs}; use the same {key}, \
                         or make a new state)"
                    ),
                    mine["extractor"][key].to_string(),
                    theirs.to_string(),
                ));
            }
        }
        if cfg["backbone"].is_object() {
            let d = json_differences(&mine["backbone"], &cfg["backbone"]);
            if !d.is_empty() {
                return Err(mismatch(
                    "architecture",
                    "the state's architecture".into(),
                    d.join("; "),
                ));
            }
        }
        if let Some(fp) = st.metadata.get("backbone_fingerprint") {
            if fp != &self.backbone_fingerprint() {
                return Err(mismatch(
                    "weights (backbone fingerprint; the state was made with other weights)",
                    self.backbone_fingerprint(),
                    fp.clone(),
                ));
            }
        }
        let names: Vec<String> = self
            .objectives
            .iter()
            .map(|o| o.name().to_string())
            .collect();
        let theirs: Vec<String> = cfg["objectives"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|o| o["name"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        if names != theirs {
            return Err(mismatch(
                "objectives",
                format!("{names:?}"),
                format!("{theirs:?}"),
            ));
        }
        for (k, o) in self.objectives.iter().enumerate() {
            let recorded = &cfg["objectives"][k]["config"];
            if !recorded.is_null() {
                let d = json_differences(&o.config_json(), recorded);
                if !d.is_empty() {
                    return Err(mismatch(
                        &format!("objective `{}` settings", o.name()),
                        "the same settings as the state".into(),
                        d.join("; "),
                    ));
                }
            }
        }
        let scaling = st
            .f32
            .get("projection_scaling")
            .and_then(|t| t.data.first().copied());
        let (e, g) = (self.projection.out_dim(), self.projection.in_dim());
        let projection = if let Some((shape, data)) = st.i8.get("projection") {
            if shape != &vec![e, g] {
                return Err(mismatch(
                    "`projection` shape",
                    format!("{:?}", [e, g]),
                    format!("{shape:?}"),
                ));
            }
            Projection::from_i8(e, g, data, scaling.unwrap_or(self.projection.scaling()))?
        } else {
            let seed: u64 = st
                .metadata
                .get("projection_seed")
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| Error::Format {
                    path: path.into(),
                    reason: "neither a `projection` tensor nor `projection_seed` metadata".into(),
                })?;
            let dims = (
                st.metadata.get("projection_out_dim"),
                st.metadata.get("projection_in_dim"),
            );
            if dims != (Some(&e.to_string()), Some(&g.to_string())) {
                return Err(mismatch(
                    "projection shape",
                    format!("[{e}, {g}]"),
                    format!("{dims:?}"),
                ));
            }
            let p = Projection::rademacher(e, g, seed);
            match scaling {
                Some(s) => p.with_scaling(s),
                None => p,
            }
        };
        if let Some(fp) = st.metadata.get("projection_fingerprint") {
            if fp != &projection.fingerprint() {
                return Err(mismatch(
                    "projection fingerprint",
                    fp.clone(),
                    projection.fingerprint(),
                ));
            }
        }
        // All or nothing: restore the objectives already loaded if a later one fails.
        let before: Vec<BTreeMap<String, StateTensor>> =
            self.objectives.iter().map(|o| o.state()).collect();
        for k in 0..self.objectives.len() {
            let prefix = format!("{}.", self.objectives[k].name());
            let sub: BTreeMap<String, StateTensor> = st
                .f32
                .iter()
                .filter_map(|(n, v)| n.strip_prefix(&prefix).map(|s| (s.to_string(), v.clone())))
                .collect();
            if let Err(err) = self.objectives[k].load_state(&sub) {
                for (o, s) in self.objectives.iter_mut().zip(&before).take(k + 1) {
                    let _ = o.load_state(s);
                }
                return Err(err);
            }
        }
        self.projection = projection;
        self.device_projection = std::sync::OnceLock::new();
        Ok(())
    }
}

/// A tensor's values on the host as `f32`.
fn host_f32<Bk: Backend, const D: usize>(t: Tensor<Bk, D>) -> Result<Vec<f32>> {
    t.into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .map_err(|e| Error::ReadBack {
            what: "a tensor".into(),
            reason: format!("{e:?}"),
        })
}

/// Refuses an image without pixels, naming it `name(position)`.
fn check_images(images: &[RgbImage], name: impl Fn(usize) -> String) -> Result<()> {
    for (i, img) in images.iter().enumerate() {
        fungi_aug::check_not_empty(img, Path::new(&name(i)))?;
    }
    Ok(())
}

/// The differences between two JSON values, one line per differing leaf (`path: expected X,
/// found Y`); empty when equal. Used to say exactly which setting a state or a run differs in.
pub fn json_differences(expected: &serde_json::Value, found: &serde_json::Value) -> Vec<String> {
    fn walk(path: &str, a: &serde_json::Value, b: &serde_json::Value, out: &mut Vec<String>) {
        use serde_json::Value;
        match (a, b) {
            (Value::Object(x), Value::Object(y)) => {
                let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
                for k in keys {
                    let p = if path.is_empty() {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    };
                    walk(
                        &p,
                        x.get(k).unwrap_or(&Value::Null),
                        y.get(k).unwrap_or(&Value::Null),
                        out,
                    );
                }
            }
            _ if a != b => out.push(format!(
                "`{}`: expected {a}, found {b}",
                if path.is_empty() { "value" } else { path }
            )),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk("", expected, found, &mut out);
    out
}

/// Checks a state tensor's presence and shape (for [`Objective::load_state`] implementations).
pub fn take_state<'a>(
    state: &'a BTreeMap<String, StateTensor>,
    objective: &str,
    key: &str,
    shape: &[usize],
) -> Result<&'a StateTensor> {
    let t = state.get(key).ok_or_else(|| Error::Mismatch {
        what: format!("state tensor `{objective}.{key}`"),
        expected: format!("shape {shape:?}"),
        found: "nothing".into(),
    })?;
    if t.shape != shape {
        return Err(Error::Mismatch {
            what: format!("state tensor `{objective}.{key}`"),
            expected: format!("shape {shape:?}"),
            found: format!("shape {:?}", t.shape),
        });
    }
    Ok(t)
}
