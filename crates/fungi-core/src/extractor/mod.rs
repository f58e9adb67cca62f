//! [`FungiExtractor`]: backbone + target layer + objectives + projection → FUNGI features.
//!
//! One concern per file: [`ExtractorConfig`] and [`FungiExtractorBuilder`] (`config.rs`), the
//! objectives' training-set setup (`setup.rs`), the per-batch path — views, forward, per-image
//! gradients, projection, normalisation (`batch.rs`) — and state files (`state.rs`, over the
//! format of [`crate::state`]).

mod batch;
mod config;
mod setup;
mod state;

use std::path::Path;

use burn::prelude::*;
use fungi_aug::transforms::EvalTransform;
use fungi_aug::RgbImage;
use fungi_backbone::AutodiffVitOps;

pub use batch::{ObjectiveOutput, PreparedBatch};
pub use config::{ExtractorConfig, FungiExtractorBuilder};
pub use setup::{ProgressFn, SkipFn};

use crate::device_projection::{DeviceProjection, Residency};
use crate::engine::GradientEngine;
use crate::error::{Error, Result};
use crate::objective::Objective;
use crate::projection::Projection;

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

impl<B: AutodiffVitOps> FungiExtractor<B> {
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
