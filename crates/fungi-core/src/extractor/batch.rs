//! The per-batch path: every objective's views, the untracked prefix, the autodiff tail and
//! backward, the per-image gradients, the projection and the normalisation, with the embedding
//! block; host-side preparation split from device work so that they can overlap.

use burn::prelude::*;
use fungi_aug::transforms::EvalTransform;
use fungi_aug::RgbImage;
use fungi_backbone::AutodiffVitOps;
use rayon::prelude::*;

use super::{check_images, FungiExtractor};
use crate::engine::l2_normalize;
use crate::error::{Error, Result};
use crate::rng::stream;

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

impl<B: AutodiffVitOps> FungiExtractor<B> {
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
}
