//! The extension point: a self-supervised objective whose per-image gradient becomes a feature
//! (fungivision's `BaseGradientExtractor`: `input_transform` + `compute_loss`).

use std::collections::BTreeMap;

use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use fungi_aug::RgbImage;
use rand_chacha::ChaCha8Rng;

use crate::error::Result;

/// A named tensor of an objective's state (PyTorch layout), for state files.
#[derive(Debug, Clone, PartialEq)]
pub struct StateTensor {
    /// Shape.
    pub shape: Vec<usize>,
    /// Row-major values.
    pub data: Vec<f32>,
}

/// What an objective's `setup` may use: the training images and the backbone (forward only).
pub trait SetupContext<B: AutodiffBackend> {
    /// Number of training images.
    fn len(&self) -> usize;
    /// Whether there are no training images.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Decodes training image `index`.
    fn image(&self, index: usize) -> Result<RgbImage>;
    /// CLS embeddings `[N, E]` of normalised CHW views `[N, C, H, W]` (no gradient).
    fn embed(&self, views: Tensor<B::InnerBackend, 4>) -> Tensor<B::InnerBackend, 2>;
    /// Device.
    fn device(&self) -> B::Device;
    /// Master seed.
    fn seed(&self) -> u64;
    /// Reports progress of a long setup step (`done` of `total`). Default: nothing.
    fn progress(&self, _what: &str, _done: usize, _total: usize) {}
    /// Whether `setup` should skip a training image that [`SetupContext::image`] cannot decode
    /// (and report it with [`SetupContext::skipped`]) instead of failing. Default: fail.
    fn skip_unreadable(&self) -> bool {
        false
    }
    /// Reports a training image skipped by `setup` (only called when
    /// [`SetupContext::skip_unreadable`] is true). Default: nothing.
    fn skipped(&self, _index: usize, _error: &crate::Error) {}
}

/// Decodes training image `index` for `setup`: `Ok(None)` when it is unreadable and the context
/// skips unreadable images (the skip is reported), the error otherwise.
pub fn setup_image<B: AutodiffBackend>(
    ctx: &dyn SetupContext<B>,
    index: usize,
) -> Result<Option<RgbImage>> {
    match ctx.image(index) {
        Ok(img) => Ok(Some(img)),
        Err(e) if ctx.skip_unreadable() => {
            ctx.skipped(index, &e);
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// A self-supervised objective.
///
/// The engine builds each image's views with [`Objective::views`] (CPU, randomness only from the
/// image's own stream), runs the backbone, and calls [`Objective::image_loss`] **once per
/// image** with that image's view embeddings: an implementation cannot see, and therefore
/// cannot mix, other images (fungivision's README warns that mixing corrupts the gradients).
pub trait Objective<B: AutodiffBackend>: Send + Sync {
    /// Stable id: block name in outputs, state-tensor prefix, RNG domain (`kl`, `dino`, ...).
    fn name(&self) -> &str;
    /// Views per image `V`.
    fn views_per_image(&self) -> usize;
    /// Height and width of every view.
    fn view_size(&self) -> (usize, usize) {
        (224, 224)
    }
    /// The configuration keys that set how many views an image gets, with their values, for
    /// messages (e.g. `simclr.num_patches = 1000, simclr.stride_scale = 6`); `None` when fixed.
    fn views_setting(&self) -> Option<String> {
        None
    }
    /// The `V` views of one image as normalised CHW `f32`, concatenated (`V·3·H·W` values).
    fn views(&self, image: &RgbImage, rng: &mut ChaCha8Rng) -> Vec<f32>;
    /// One-off preparation on the training set (SimCLR's negatives). Default: nothing.
    fn setup(&mut self, _ctx: &dyn SetupContext<B>) -> Result<()> {
        Ok(())
    }
    /// The loss of one image from the CLS embeddings `[V, E]` of its views; returns `[1]`.
    ///
    /// # Errors
    /// When the objective is not ready (e.g. SimCLR without negatives: neither `setup` nor a
    /// loaded state).
    fn image_loss(&self, embeddings: Tensor<B, 2>) -> Result<Tensor<B, 1>>;
    /// The index of a view that is exactly the eval transform of the image
    /// (`fungi_aug::EvalTransform::default()`, e.g. the paper's KL view), if any: the extractor
    /// then takes the embedding block from that view's forward instead of running another one.
    /// Default: none.
    fn eval_view(&self) -> Option<usize> {
        None
    }
    /// The losses `[N]` of a whole batch from the CLS embeddings `[N, V, E]` (image-major).
    /// Row `b` must depend on image `b`'s embeddings only (the engine's per-image gradients
    /// rely on it). The default calls [`Objective::image_loss`] once per image; an objective
    /// overrides it to batch the work — and to keep host round trips out of the loss (e.g.
    /// DeepCluster's targets).
    ///
    /// # Errors
    /// As [`Objective::image_loss`].
    fn batch_losses(&self, embeddings: Tensor<B, 3>) -> Result<Tensor<B, 1>> {
        let [n, v, e] = embeddings.dims();
        let losses = (0..n)
            .map(|b| {
                let x = embeddings
                    .clone()
                    .slice([b..b + 1, 0..v, 0..e])
                    .reshape([v, e]);
                self.image_loss(x).map(|l| l.reshape([1]))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Tensor::cat(losses, 0))
    }
    /// Whether the objective can compute losses now; the extractor checks it before any work,
    /// so that a missing `setup` is an error naming the objective, not a failure mid-run.
    /// Default: ready.
    fn ready(&self) -> Result<()> {
        Ok(())
    }
    /// Factor applied to the gradient to reproduce fungivision's raw values (its autograd hack
    /// multiplies by the number of views in the batch: 1 for KL, `V` for DINO/SimCLR). Positive
    /// factors cancel in the final L2 normalisation.
    fn grad_scale(&self) -> f32 {
        1.0
    }
    /// Tensors that must be shared between train and test runs (heads, negatives), by name
    /// without the objective prefix (`head.weight`).
    fn state(&self) -> BTreeMap<String, StateTensor>;
    /// Restores [`Objective::state`] (shapes are checked, errors name the tensor).
    fn load_state(&mut self, state: &BTreeMap<String, StateTensor>) -> Result<()>;
    /// The objective's configuration (recorded in state files and manifests).
    fn config_json(&self) -> serde_json::Value;
}
