//! Per-image gradients of one Linear layer of the ViT.
//!
//! Burn has no hooks and no `retain_graph`, and a full autodiff pass over the ViT would track
//! every activation. Instead (the "output-gradient trick"):
//!
//! 1. the network runs on the plain (inner) backend up to the target layer's input `a`
//!    ([`Vit::tap`]); nothing there is tracked;
//! 2. the target's output `y = a·Wᵀ + b` is computed and lifted to the autodiff backend as the
//!    **only** leaf that requires a gradient;
//! 3. the rest of the network ([`Vit::resume`], no parameter tracked) and the objective's
//!    per-image losses run under autodiff, and `Σ_b loss_b` is back-propagated once;
//! 4. `δ = ∂Σloss/∂y` is read back and each image's gradient formed with one batched matmul:
//!    `G_b = Σ_{v,t} δ_{b,v,t} ⊗ [a_{b,v,t}; 1]`, i.e. weight `[O, I]` with the bias gradient as
//!    last column (fungivision's layout).
//!
//! Since image `b`'s loss depends only on its own views, `∂Σloss/∂y_{b,·}` = `∂loss_b/∂y_{b,·}`
//! and `G_b` = `∂loss_b/∂(W, b)` exactly. When the target is an `attn.proj`/`mlp.*` of the last
//! block only the CLS row reaches the output, so the CLS-only path carries one token from there on.

use burn::prelude::*;
use fungi_backbone::{AutodiffVitOps, LinearEpilogue, Precision, TargetLayer, Vit, VitOps};

use crate::error::{Error, Result};

/// Which way the gradient is computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GradPath {
    /// CLS-only when the target allows it, else general.
    #[default]
    Auto,
    /// All tokens (any target layer).
    General,
    /// CLS token only (target in the last block, not `attn.qkv`).
    Cls,
}

/// The per-image gradient engine over a frozen backbone.
#[derive(Debug)]
pub struct GradientEngine<B: AutodiffVitOps> {
    model: Vit<B>,
    inner: Vit<B::InnerBackend>,
    target: TargetLayer,
    cls_only: bool,
    /// `(O, I + 1)` of the target layer's gradient.
    grad_shape: (usize, usize),
    views_per_pass: usize,
    precision: Precision,
    /// The prefix model with half-precision Linear weights, for `precision != F32`.
    half: Option<Vit<B::InnerBackend>>,
}

/// Views per prefix pass when none is set: small passes keep the activations of a pass in
/// cache on the CPU backends (measured in docs/performance.md); large ones fill a GPU.
pub fn default_views_per_pass<B: VitOps>() -> usize {
    if B::vit_host_memory() {
        16
    } else {
        512
    }
}

/// The target Linear's input and the residual stream, `[N·V, T', I]` and `[N·V, T', D]`.
type TapPair<B> = (
    Tensor<<B as burn::tensor::backend::AutodiffBackend>::InnerBackend, 3>,
    Tensor<<B as burn::tensor::backend::AutodiffBackend>::InnerBackend, 3>,
);

/// Output of [`GradientEngine::per_image`].
#[derive(Debug, Clone)]
pub struct PerImage<B: Backend> {
    /// `[N, O, I+1]`: weight gradient with the bias gradient as last column.
    pub grads: Tensor<B, 3>,
    /// `[N]` per-image losses.
    pub losses: Tensor<B, 1>,
    /// `[N, V, E]` CLS embeddings of every view (untracked).
    pub embeddings: Tensor<B, 3>,
}

impl<B: AutodiffVitOps> GradientEngine<B> {
    /// Wraps a backbone (its parameters are frozen: none is tracked).
    ///
    /// # Errors
    /// When `path` is [`GradPath::Cls`] but the target does not allow it.
    pub fn new(model: Vit<B>, target: TargetLayer, path: GradPath) -> crate::Result<Self> {
        let model = model.no_grad();
        let [i, o] = model.linear(target)?.weight.dims();
        let allowed = model.cls_only_allowed(target);
        let cls_only = match path {
            GradPath::Auto => allowed,
            GradPath::General => false,
            GradPath::Cls if allowed => true,
            GradPath::Cls => {
                return Err(crate::Error::Config {
                    key: "grad_path".into(),
                    value: "cls".into(),
                    expected: format!(
                        "`general` or `auto` for {target}: the CLS-only path needs a target in the last block other than attn.qkv"
                    ),
                })
            }
        };
        let inner = burn::module::AutodiffModule::valid(&model);
        Ok(Self {
            model,
            inner,
            target,
            cls_only,
            grad_shape: (o, i + 1),
            views_per_pass: default_views_per_pass::<B::InnerBackend>(),
            precision: Precision::F32,
            half: None,
        })
    }

    /// Views per pass of the (untracked) prefix: a batch's `N·V` views run through the network
    /// up to the target layer in passes of at most this many (0: [`default_views_per_pass`]).
    /// Results do not depend on it beyond float rounding.
    pub fn set_views_per_pass(&mut self, n: usize) {
        self.views_per_pass = if n == 0 {
            default_views_per_pass::<B::InnerBackend>()
        } else {
            n
        };
    }
    /// Precision of the untracked prefix's Linear products (see [`fungi_backbone::precision`]):
    /// with `Bf16`/`F16` the network up to the target layer (and every forward-only pass:
    /// embeddings, SimCLR negatives, DeepCluster's memory bank) multiplies in half precision;
    /// the target layer, the rest of the network under autodiff, the loss, the backward, the
    /// per-image gradients and the projection stay f32.
    ///
    /// # Errors
    /// When the backend has no tensors of that precision (burn-ndarray); nothing changes then.
    pub fn set_prefix_precision(&mut self, p: Precision) -> Result<()> {
        self.half = match p.half_dtype() {
            Some(d) => Some(self.inner.with_half_linears(d)?),
            None => None,
        };
        self.precision = p;
        Ok(())
    }
    /// See [`GradientEngine::set_prefix_precision`].
    pub fn prefix_precision(&self) -> Precision {
        self.precision
    }
    /// The model the untracked passes run on: [`GradientEngine::inner`], or its half-precision
    /// copy.
    pub fn prefix_model(&self) -> &Vit<B::InnerBackend> {
        self.half.as_ref().unwrap_or(&self.inner)
    }
    /// See [`GradientEngine::set_views_per_pass`].
    pub fn views_per_pass(&self) -> usize {
        self.views_per_pass
    }

    /// The prefix over `views` in passes of at most `views_per_pass`: the target Linear's input
    /// and the residual stream, concatenated over the passes.
    fn tap_in_passes(&self, views: Tensor<B::InnerBackend, 4>) -> Result<TapPair<B>> {
        let [nv, c, h, w] = views.dims();
        let step = self.views_per_pass.max(1);
        let model = self.prefix_model();
        if nv <= step {
            let t = model.tap(views, self.target, self.cls_only)?;
            return Ok((t.input, t.residual));
        }
        let (inputs, residuals): (Vec<_>, Vec<_>) = (0..nv)
            .step_by(step)
            .map(|s| {
                let part = views
                    .clone()
                    .slice([s..(s + step).min(nv), 0..c, 0..h, 0..w]);
                let t = model.tap(part, self.target, self.cls_only)?;
                Ok((t.input, t.residual))
            })
            .collect::<Result<Vec<_>>>()?
            .into_iter()
            .unzip();
        Ok((Tensor::cat(inputs, 0), Tensor::cat(residuals, 0)))
    }

    /// The autodiff-side backbone.
    pub fn model(&self) -> &Vit<B> {
        &self.model
    }
    /// The plain backbone (for forward-only work: embeddings, negatives).
    pub fn inner(&self) -> &Vit<B::InnerBackend> {
        &self.inner
    }
    /// The target layer.
    pub fn target(&self) -> TargetLayer {
        self.target
    }
    /// Whether the CLS-only path is used.
    pub fn cls_only(&self) -> bool {
        self.cls_only
    }
    /// `(O, I + 1)` of the target layer's gradient.
    pub fn grad_shape(&self) -> (usize, usize) {
        self.grad_shape
    }

    /// Per-image gradients for `n_images` images whose views are stacked image-major.
    ///
    /// `image_loss(b, embeddings)` receives the CLS embeddings `[V, E]` of image `b`'s views and
    /// returns its scalar loss `[1]`; it is called once per image, so images cannot be mixed.
    ///
    /// # Shapes
    /// - `views`: `[N·V, C, H, W]` (inner backend); output grads `[N, O, I+1]`, losses `[N]`.
    ///
    /// # Errors
    /// When the views are not a whole number per image, or a loss fails.
    pub fn per_image(
        &self,
        views: Tensor<B::InnerBackend, 4>,
        n_images: usize,
        image_loss: &dyn Fn(usize, Tensor<B, 2>) -> Result<Tensor<B, 1>>,
    ) -> Result<PerImage<B::InnerBackend>> {
        self.per_image_batched(views, n_images, &|emb: Tensor<B, 3>| {
            let [n, v, e] = emb.dims();
            let losses = (0..n)
                .map(|b| {
                    let views_b = emb.clone().slice([b..b + 1, 0..v, 0..e]).reshape([v, e]);
                    image_loss(b, views_b).map(|l| l.reshape([1]))
                })
                .collect::<Result<Vec<_>>>()?;
            Ok(Tensor::cat(losses, 0))
        })
    }

    /// [`GradientEngine::per_image`] with the losses of the whole batch at once:
    /// `batch_loss(embeddings)` receives `[N, V, E]` and returns `[N]`, row `b` depending on
    /// image `b` only (e.g. [`Objective::batch_losses`](crate::Objective::batch_losses)).
    ///
    /// # Shapes
    /// - `views`: `[N·V, C, H, W]` (inner backend); output grads `[N, O, I+1]`, losses `[N]`.
    ///
    /// # Errors
    /// When the views are not a whole number per image, the losses are not `[N]`, or a loss
    /// fails.
    pub fn per_image_batched(
        &self,
        views: Tensor<B::InnerBackend, 4>,
        n_images: usize,
        batch_loss: &dyn Fn(Tensor<B, 3>) -> Result<Tensor<B, 1>>,
    ) -> Result<PerImage<B::InnerBackend>> {
        let nv = views.dims()[0];
        if n_images == 0 || !nv.is_multiple_of(n_images) {
            return Err(Error::Mismatch {
                what: format!("views for {n_images} images"),
                expected: "the same whole number of views for each image".into(),
                found: format!("{nv} views"),
            });
        }
        let v = nv / n_images;
        let (tap_input, tap_residual) = self.tap_in_passes(views)?;
        let y = <B::InnerBackend as VitOps>::vit_linear(
            tap_input.clone(),
            self.inner.linear(self.target)?,
            LinearEpilogue::None,
        );
        let y_ad = Tensor::<B, 3>::from_inner(y).require_grad();
        let residual = Tensor::<B, 3>::from_inner(tap_residual);
        let emb = self.model.resume(residual, y_ad.clone(), self.target)?; // [N·V, E]
        let e = emb.dims()[1];
        let emb = emb.reshape([n_images, v, e]);
        let embeddings = emb.clone().inner();
        let losses = batch_loss(emb)?;
        if losses.dims() != [n_images] {
            return Err(Error::Mismatch {
                what: "shape of the batch loss".into(),
                expected: format!("[{n_images}] (one loss per image)"),
                found: format!("{:?}", losses.dims()),
            });
        }
        let grads = losses.clone().sum().backward();
        let delta = y_ad.grad(&grads).ok_or(Error::NoGradient)?; // [N·V, T', O]
        let [_, t, o] = delta.dims();
        let a = tap_input; // [N·V, T', I]
        let i = a.dims()[2];
        let device = a.device();
        let ones = Tensor::<B::InnerBackend, 3>::ones([nv, t, 1], &device);
        let a1 = Tensor::cat(vec![a, ones], 2).reshape([n_images, v * t, i + 1]);
        let delta = delta.reshape([n_images, v * t, o]);
        Ok(PerImage {
            grads: delta.swap_dims(1, 2).matmul(a1),
            losses: losses.inner(),
            embeddings,
        })
    }
}

/// Output of [`GradientEngine::per_token`]: everything needed for per-token gradients, which
/// are never formed (token `t`'s gradient is `delta_t ⊗ [input_t, 1]`).
#[derive(Debug, Clone)]
pub struct PerToken<B: Backend> {
    /// `[N, T, O]`: `∂loss_b/∂y_t` of the target Linear for every token of image `b`.
    pub delta: Tensor<B, 3>,
    /// `[N, T, I]`: the target Linear's input for every token.
    pub input: Tensor<B, 3>,
    /// `[N, T, D]`: every token after the final norm (untracked).
    pub tokens: Tensor<B, 3>,
    /// `[N]` per-image losses.
    pub losses: Tensor<B, 1>,
}

impl<B: AutodiffVitOps> GradientEngine<B> {
    /// The per-token path (dense features): the network runs over all tokens (never the
    /// CLS-only path), `batch_loss` receives the final-norm output of **every** token `[N, T, D]`
    /// (tracked) and returns `[N]`, row `b` depending on image `b` only; the result holds
    /// `∂loss_b/∂y_t` and the target's input `a_t` for every token, so that token `t`'s
    /// gradient `(∂loss_b/∂y_t) ⊗ [a_t, 1]` (its own pass through the Linear) can be projected
    /// without being materialised ([`crate::Projection::project_tokens`]). Summed over the tokens
    /// it is the ordinary per-image gradient.
    ///
    /// # Shapes
    /// - `views`: `[N, C, H, W]` (inner backend), one view per image.
    ///
    /// # Errors
    /// When the losses are not `[N]`, no gradient reaches the target, or a loss fails.
    pub fn per_token(
        &self,
        views: Tensor<B::InnerBackend, 4>,
        batch_loss: &dyn Fn(Tensor<B, 3>) -> Result<Tensor<B, 1>>,
    ) -> Result<PerToken<B::InnerBackend>> {
        let n = views.dims()[0];
        let model = self.prefix_model();
        let tap = model.tap(views, self.target, false)?;
        let y = <B::InnerBackend as VitOps>::vit_linear(
            tap.input.clone(),
            self.inner.linear(self.target)?,
            LinearEpilogue::None,
        );
        let y_ad = Tensor::<B, 3>::from_inner(y).require_grad();
        let residual = Tensor::<B, 3>::from_inner(tap.residual);
        let tokens = self
            .model
            .resume_tokens(residual, y_ad.clone(), self.target)?;
        let tokens_inner = tokens.clone().inner();
        let losses = batch_loss(tokens)?;
        if losses.dims() != [n] {
            return Err(Error::Mismatch {
                what: "shape of the batch loss".into(),
                expected: format!("[{n}] (one loss per image)"),
                found: format!("{:?}", losses.dims()),
            });
        }
        let grads = losses.clone().sum().backward();
        let delta = y_ad.grad(&grads).ok_or(Error::NoGradient)?;
        Ok(PerToken {
            delta,
            input: tap.input,
            tokens: tokens_inner,
            losses: losses.inner(),
        })
    }
}

/// `x / max(‖x‖₂, 1e-12)` per row (PyTorch's `F.normalize`).
pub fn l2_normalize<B: Backend>(x: Tensor<B, 2>) -> Tensor<B, 2> {
    let norm = x
        .clone()
        .powf_scalar(2.0)
        .sum_dim(1)
        .sqrt()
        .clamp_min(1e-12);
    x / norm
}
