//! The objectives' training-set setup (SimCLR's negatives, DeepCluster's k-means).

use std::path::Path;

use burn::prelude::*;
use fungi_aug::RgbImage;
use fungi_backbone::AutodiffVitOps;

use super::FungiExtractor;
use crate::engine::GradientEngine;
use crate::error::{Error, Result};
use crate::objective::SetupContext;

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
}
