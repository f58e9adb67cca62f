//! # fungi-dense
//!
//! Dense FUNGI: a feature per **patch token** (the paper's HummingBird features,
//! `../shared/docs/dense-fungi.md` §A, with the paper code's bugs fixed; `docs/dense.md`).
//! For an image resized to `S × S`:
//!
//! 1. `tokens` = the last block's output after the final norm, every token (CLS included);
//! 2. `latent = head(tokens)` (a random `nn.Linear(E, L)`, never trained);
//! 3. each token's `neighbours` nearest rows of the support bank (L2-normalised patch tokens of
//!    support images) by dot product with the raw token — exact search, neighbour `k` is the
//!    `k`-th best row; their head outputs are the negatives, one per (token, neighbour), a
//!    seeded `drop` fraction of them left out per image;
//! 4. the image's loss: SimCLR's InfoNCE in fungivision's form
//!    ([`fungi_simclr::info_nce`]) with the image's tokens as mutual positives, mean over tokens;
//! 5. token `t`'s gradient of its image's loss w.r.t. the target Linear through its own pass,
//!    `(∂L/∂y_t) ⊗ [a_t, 1]`, projected by the ±1 projection without ever being formed
//!    ([`fungi_core::Projection::project_tokens`]);
//! 6. per patch token (CLS dropped): `L2(concat(L2(token), L2(projected gradient)))`, `[P, E+K]`
//!    in row-major patch order.
//!
//! Every random choice comes from a stream keyed by `(seed, domain, index)` (head
//! `"dense.head"`, dropped negatives `("dense.drop", global image index)`, support sampling
//! `("dense.support", support image index)`, projection as `fungi extract`'s), so an image's
//! features never depend on the batch it is in.
#![warn(missing_docs)]

mod config;
mod features;
pub mod search;
mod state;
mod support;

use burn::prelude::*;
use fungi_aug::normalize::{to_chw_normalized_with, ScaleFormula};
use fungi_aug::resample::{resize, Filter};
use fungi_aug::RgbImage;
use fungi_backbone::{AutodiffVitOps, TargetLayer, Vit};
use fungi_core::token_projection::DEFAULT_TOKEN_BUDGET;
use fungi_core::StateTensor;
use fungi_core::{l2_normalize, Error, GradPath, GradientEngine, Head, Projection, Result};

pub use config::{DenseConfig, DenseSettings, SELF_SIMILARITY};
pub use search::DEFAULT_SEARCH_BUDGET;
pub use support::{SupportProgress, SupportSkip};

/// The paper code's normalisation mean (ImageNet's).
pub const PAPER_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
/// The paper code's normalisation std: `0.255` for blue is its typo for `0.225`, kept so that
/// features match the paper's.
pub const PAPER_STD: [f32; 3] = [0.229, 0.224, 0.255];

/// The paper's image transform: Pillow bilinear resize to `size × size` (aspect ratio not
/// kept), `ToTensor`, normalisation with [`PAPER_MEAN`] / [`PAPER_STD`]; CHW `f32`.
pub fn paper_transform(img: &RgbImage, size: u32) -> Vec<f32> {
    let resized;
    let img = if img.dimensions() == (size, size) {
        img
    } else {
        resized = resize(img, size, size, Filter::Bilinear);
        &resized
    };
    to_chw_normalized_with(img, ScaleFormula::Divide, PAPER_MEAN, PAPER_STD)
}

/// The support bank: `[M, E]` L2-normalised rows, on the device, with their negatives'
/// latents `L2(head(row))` `[M, L]`.
#[derive(Debug, Clone)]
struct Support<B: AutodiffVitOps> {
    rows: StateTensor,
    index: search::SupportIndex<B::InnerBackend>,
    latents: Tensor<B::InnerBackend, 2>,
}

/// The dense FUNGI extractor over a frozen backbone.
#[derive(Debug)]
pub struct DenseExtractor<B: AutodiffVitOps> {
    engine: GradientEngine<B>,
    settings: DenseSettings,
    projection: Projection,
    head: Head<B>,
    support: Option<Support<B>>,
    device: B::Device,
    token_budget: usize,
    search_budget: usize,
}

impl<B: AutodiffVitOps> DenseExtractor<B> {
    /// A dense extractor over `backbone` with a seeded projection (`[K, O·(I+1)]`, the stream of
    /// `fungi extract`'s) and a seeded head; the support bank comes from
    /// [`DenseExtractor::build_support`], [`DenseExtractor::set_support`] or a state.
    ///
    /// # Errors
    /// Invalid settings, an `image_size` that is not a multiple of the patch size, an unknown
    /// target layer, or a backbone that does not take RGB.
    pub fn new(backbone: Vit<B>, settings: DenseSettings) -> Result<Self> {
        settings.validate()?;
        let c = &backbone.config;
        settings.dense.check_patch_size(c.patch_size)?;
        if c.in_chans != 3 {
            return Err(Error::Config {
                key: "arch.in_chans".into(),
                value: c.in_chans.to_string(),
                expected: "3 (images are fed as RGB)".into(),
            });
        }
        backbone.check_input(settings.dense.image_size, settings.dense.image_size)?;
        let depth = backbone.blocks.len();
        let target = match &settings.target_layer {
            Some(p) => fungi_backbone::keys::parse_target(c.layout, p, depth)?,
            None => TargetLayer::last_attn_proj(depth),
        };
        let device = backbone.device();
        let e = backbone.width();
        let engine = GradientEngine::new(backbone, target, GradPath::General)?;
        let (o, j) = engine.grad_shape();
        let k = settings.projection_dim.unwrap_or(e);
        let projection = Projection::rademacher(k, o * j, settings.seed);
        let head = Head::random(
            "dense.head",
            e,
            settings.dense.latent_dim,
            settings.seed,
            &device,
        );
        Ok(Self {
            engine,
            settings,
            projection,
            head,
            support: None,
            device,
            token_budget: DEFAULT_TOKEN_BUDGET,
            search_budget: DEFAULT_SEARCH_BUDGET,
        })
    }

    /// The settings.
    pub fn settings(&self) -> &DenseSettings {
        &self.settings
    }
    /// Changes the images per pass (features do not depend on it).
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
        self.settings.batch_size = n;
        Ok(())
    }
    /// Memory budgets (bytes) of one chunk of the per-token projection's product and of one
    /// chunk of support scores; results do not depend on them beyond float rounding.
    pub fn set_budgets(&mut self, token_bytes: usize, search_bytes: usize) {
        self.token_budget = token_bytes.max(1);
        self.search_budget = search_bytes.max(1);
    }
    /// Precision of the untracked prefix ([`GradientEngine::set_prefix_precision`]; f32 by
    /// default): the support bank's forward and the network up to the target layer.
    ///
    /// # Errors
    /// When the backend has no tensors of that precision.
    pub fn set_prefix_precision(&mut self, p: fungi_backbone::Precision) -> Result<()> {
        self.engine.set_prefix_precision(p)
    }
    /// The gradient engine (general path).
    pub fn engine(&self) -> &GradientEngine<B> {
        &self.engine
    }
    /// The projection.
    pub fn projection(&self) -> &Projection {
        &self.projection
    }
    /// Replaces the projection (`[K, O·(I+1)]`).
    ///
    /// # Errors
    /// [`Error::Mismatch`] when its input size is not the target's gradient size.
    pub fn set_projection(&mut self, p: Projection) -> Result<()> {
        let (o, j) = self.engine.grad_shape();
        if p.in_dim() != o * j {
            return Err(Error::Mismatch {
                what: "dense projection input size".into(),
                expected: format!("{} (= {o} x {j})", o * j),
                found: p.in_dim().to_string(),
            });
        }
        self.projection = p;
        Ok(())
    }
    /// The head.
    pub fn head(&self) -> &Head<B> {
        &self.head
    }
    /// Replaces the head (`[L, E]` with `L = latent_dim`); the support's latents are redone.
    ///
    /// # Errors
    /// [`Error::Mismatch`] for another shape.
    pub fn set_head(&mut self, head: Head<B>) -> Result<()> {
        let want = (self.settings.dense.latent_dim, self.width());
        if head.dims() != want {
            return Err(Error::Mismatch {
                what: "dense.head.weight".into(),
                expected: format!(
                    "shape [{}, {}] ([dense] latent_dim, token size)",
                    want.0, want.1
                ),
                found: format!("shape [{}, {}]", head.dims().0, head.dims().1),
            });
        }
        self.head = head;
        if let Some(s) = self.support.take() {
            self.install_support(s.rows, false)?;
        }
        Ok(())
    }
    /// Token size `E`.
    pub fn width(&self) -> usize {
        self.engine.inner().width()
    }
    /// Patch tokens per image `P` (the grid of `image_size`).
    pub fn patches(&self) -> usize {
        let g = self.settings.dense.image_size / self.engine.inner().config.patch_size;
        g * g
    }
    /// Width of a patch feature, `E + K`.
    pub fn feature_dim(&self) -> usize {
        self.width() + self.projection.out_dim()
    }
    /// Values of one image's features, `P · (E + K)`.
    pub fn image_feature_len(&self) -> usize {
        self.patches() * self.feature_dim()
    }
    /// The support bank `[M, E]` (L2-normalised rows), when set.
    pub fn support(&self) -> Option<&StateTensor> {
        self.support.as_ref().map(|s| &s.rows)
    }
    /// The paper's transform of an image for this extractor's `image_size`.
    pub fn transform(&self, img: &RgbImage) -> Vec<f32> {
        paper_transform(img, self.settings.dense.image_size as u32)
    }

    /// Sets the support bank from rows `[M, E]` (each is L2-normalised here).
    ///
    /// # Errors
    /// [`Error::Mismatch`] for an empty bank, another width, fewer rows than `neighbours`, or a
    /// non-finite value.
    pub fn set_support(&mut self, rows: StateTensor) -> Result<()> {
        self.install_support(rows, true)
    }

    /// [`DenseExtractor::set_support`]; rows normalised here only with `normalise` (a state's
    /// rows are used as stored, so that a saved and reloaded state gives identical features).
    pub(crate) fn install_support(&mut self, rows: StateTensor, normalise: bool) -> Result<()> {
        let e = self.width();
        let n = self.settings.dense.neighbours;
        if rows.shape.len() != 2 || rows.shape[1] != e || rows.data.len() != rows.shape[0] * e {
            return Err(Error::Mismatch {
                what: "dense.support".into(),
                expected: format!("shape [M, {e}] (token size {e})"),
                found: format!("shape {:?}", rows.shape),
            });
        }
        let m = rows.shape[0];
        if m == 0 {
            return Err(Error::Mismatch {
                what: "dense.support".into(),
                expected:
                    "at least one row (an empty support bank has no negatives: pass support images)"
                        .into(),
                found: "0 rows".into(),
            });
        }
        if m < n {
            return Err(Error::Mismatch {
                what: "dense.support".into(),
                expected: format!("at least [dense] neighbours = {n} rows"),
                found: format!("{m} rows"),
            });
        }
        if let Some(i) = rows.data.iter().position(|v| !v.is_finite()) {
            return Err(Error::Mismatch {
                what: "dense.support".into(),
                expected: "finite values".into(),
                found: format!("{} at row {}", rows.data[i], i / e),
            });
        }
        let bank = Tensor::<B::InnerBackend, 2>::from_data(
            TensorData::new(rows.data, [m, e]),
            &self.device,
        );
        let bank = if normalise { l2_normalize(bank) } else { bank };
        let data = bank
            .clone()
            .into_data()
            .convert::<f32>()
            .into_vec::<f32>()
            .map_err(|err| Error::ReadBack {
                what: "the support bank".into(),
                reason: format!("{err:?}"),
            })?;
        let latents = l2_normalize(self.head.apply_inner(bank.clone()));
        self.support = Some(Support {
            rows: StateTensor {
                shape: vec![m, e],
                data,
            },
            index: search::SupportIndex::new(&bank),
            latents,
        });
        Ok(())
    }

    /// Fails unless a support bank is set.
    ///
    /// # Errors
    /// [`Error::NotReady`].
    pub fn ready(&self) -> Result<()> {
        self.support_bank().map(|_| ())
    }

    /// The support bank, or [`Error::NotReady`].
    fn support_bank(&self) -> Result<&Support<B>> {
        self.support.as_ref().ok_or_else(|| Error::NotReady {
            objective: "dense".into(),
            missing: "support bank (build it from support images or load a state)".into(),
        })
    }
}
