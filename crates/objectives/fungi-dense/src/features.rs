//! The per-batch path: views, the tracked tail over every token, neighbours and negatives, the
//! per-image InfoNCE, backward, the per-token projection and the normalisations.

use burn::prelude::*;
use fungi_aug::RgbImage;
use fungi_backbone::AutodiffVitOps;
use fungi_core::rng::{sample_without_replacement, stream};
use fungi_core::{l2_normalize, Error, PerToken, Result};
use fungi_simclr::{info_nce, SimclrLoss};
use rayon::prelude::*;

use crate::{DenseExtractor, SELF_SIMILARITY};

/// Host values of a tensor.
pub(crate) fn host<Bk: Backend, const D: usize>(t: Tensor<Bk, D>, what: &str) -> Result<Vec<f32>> {
    t.into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .map_err(|e| Error::ReadBack {
            what: what.into(),
            reason: format!("{e:?}"),
        })
}

impl<B: AutodiffVitOps> DenseExtractor<B> {
    /// The negatives image `global_index` keeps out of `total` (= `T · neighbours`): a seeded
    /// sample of [`DenseConfig::kept`](crate::DenseConfig::kept) of them from the stream
    /// `(seed, "dense.drop", global_index)`, in increasing order.
    pub fn kept_negatives(&self, global_index: u64, total: usize) -> Vec<usize> {
        let keep = self.settings.dense.kept(total);
        if keep == total {
            return (0..total).collect();
        }
        let mut rng = stream(self.settings.seed, "dense.drop", global_index);
        let mut v = sample_without_replacement(total, keep, &mut rng);
        v.sort_unstable();
        v
    }

    /// The `neighbours` nearest support rows of each token (raw tokens, dot product, exact):
    /// `[R, neighbours]` row indices, best first.
    ///
    /// # Errors
    /// No support bank, or a token of another width.
    pub fn neighbours(&self, tokens: Tensor<B::InnerBackend, 2>) -> Result<Vec<u32>> {
        let s = self.support_bank()?;
        crate::search::nearest(
            tokens,
            &s.index,
            self.settings.dense.neighbours,
            self.search_budget,
        )
    }

    /// One image's negatives: `L2(head(support row))` for each kept (token, neighbour) pair —
    /// row `t · neighbours + k` of the pairs is token `t`'s `k`-th neighbour (no de-duplication:
    /// a row that neighbours several tokens counts once per token). `[kept.len(), L]`.
    ///
    /// # Errors
    /// No support bank, or a kept position past the pairs.
    pub fn negatives(
        &self,
        neighbours: &[u32],
        kept: &[usize],
    ) -> Result<Tensor<B::InnerBackend, 2>> {
        let s = self.support_bank()?;
        if let Some(&bad) = kept.iter().find(|&&i| i >= neighbours.len()) {
            return Err(Error::Mismatch {
                what: "kept negatives".into(),
                expected: format!("positions below {} (tokens x neighbours)", neighbours.len()),
                found: bad.to_string(),
            });
        }
        let rows: Vec<i64> = kept.iter().map(|&i| neighbours[i] as i64).collect();
        let n = rows.len();
        Ok(s.latents.clone().select(
            0,
            Tensor::<B::InnerBackend, 1, Int>::from_data(TensorData::new(rows, [n]), &self.device),
        ))
    }

    /// One image's loss `[1]`: fungivision's InfoNCE ([`fungi_simclr::info_nce`]) of the
    /// L2-normalised head outputs of its tokens `[T, E]` (mutual positives, self-similarity
    /// [`SELF_SIMILARITY`]) against `negatives` `[Nn, L]` (L2-normalised, untracked), mean over
    /// the tokens.
    pub fn image_loss(
        &self,
        tokens: Tensor<B, 2>,
        negatives: Tensor<B::InnerBackend, 2>,
    ) -> Tensor<B, 1> {
        let f = l2_normalize(self.head.apply(tokens));
        info_nce(
            f,
            Tensor::from_inner(negatives),
            SELF_SIMILARITY,
            self.settings.dense.temperature,
            SimclrLoss::Fungivision,
        )
        .mean()
        .reshape([1])
    }

    /// The per-token factors of a batch of views `[n, 3, S, S]`: `∂loss_b/∂y_t`, the target's
    /// inputs and every token (see [`fungi_core::GradientEngine::per_token`]). `kept[b]`
    /// overrides image `b`'s kept negatives (default [`DenseExtractor::kept_negatives`]).
    ///
    /// # Errors
    /// No support bank, lengths that differ, or a failing loss.
    pub fn per_token(
        &self,
        views: Tensor<B::InnerBackend, 4>,
        global_indices: &[u64],
        kept: Option<&[Vec<usize>]>,
    ) -> Result<PerToken<B::InnerBackend>> {
        self.ready()?;
        let n = views.dims()[0];
        if global_indices.len() != n || kept.is_some_and(|k| k.len() != n) {
            return Err(Error::Mismatch {
                what: "global indices / kept negatives of a dense batch".into(),
                expected: format!("one per image ({n})"),
                found: format!("{} / {}", global_indices.len(), kept.map_or(n, |k| k.len())),
            });
        }
        let nn = self.settings.dense.neighbours;
        let batch_loss = |tokens: Tensor<B, 3>| -> Result<Tensor<B, 1>> {
            let [n, t, e] = tokens.dims();
            let nb = self.neighbours(tokens.clone().inner().reshape([n * t, e]))?;
            let losses = (0..n)
                .map(|b| {
                    let own = &nb[b * t * nn..(b + 1) * t * nn];
                    let neg = match kept {
                        Some(k) => self.negatives(own, &k[b])?,
                        None => {
                            self.negatives(own, &self.kept_negatives(global_indices[b], t * nn))?
                        }
                    };
                    let tok = tokens.clone().slice([b..b + 1, 0..t, 0..e]).reshape([t, e]);
                    Ok(self.image_loss(tok, neg))
                })
                .collect::<Result<Vec<_>>>()?;
            Ok(Tensor::cat(losses, 0))
        };
        self.engine.per_token(views, &batch_loss)
    }

    /// The features `[n, P, E+K]` of a batch of views (`[n, 3, S, S]` values, the paper's
    /// transform), on the device: per patch token `L2(concat(L2(token), L2(s · P · vec(δ_t ⊗
    /// [a_t, 1]))))`, CLS (and any register) dropped. `kept` as for [`DenseExtractor::per_token`].
    ///
    /// # Errors
    /// As [`DenseExtractor::per_token`]; no view, or a view count that is not whole.
    pub fn features_from_views(
        &self,
        views: Vec<f32>,
        global_indices: &[u64],
        kept: Option<&[Vec<usize>]>,
    ) -> Result<Tensor<B::InnerBackend, 3>> {
        let s = self.settings.dense.image_size;
        let n = global_indices.len();
        if n == 0 || views.len() != n * 3 * s * s {
            return Err(Error::Mismatch {
                what: "dense view values".into(),
                expected: format!("{} ({n} views of 3x{s}x{s}, at least one)", n * 3 * s * s),
                found: views.len().to_string(),
            });
        }
        let x = Tensor::<B::InnerBackend, 4>::from_data(
            TensorData::new(views, [n, 3, s, s]),
            &self.device,
        );
        let r = self.per_token(x, global_indices, kept)?;
        let [_, t, o] = r.delta.dims();
        let (i, e) = (r.input.dims()[2], r.tokens.dims()[2]);
        let pre = self.engine.inner().config.num_prefix_tokens().min(t);
        let p = t - pre;
        let delta = r.delta.slice([0..n, pre..t, 0..o]).reshape([n * p, o]);
        let a = r.input.slice([0..n, pre..t, 0..i]).reshape([n * p, i]);
        let ones = Tensor::<B::InnerBackend, 2>::ones([n * p, 1], &self.device);
        let a1 = Tensor::cat(vec![a, ones], 1);
        let g = self
            .projection
            .project_tokens(delta, a1, self.token_budget)?;
        let tok = r.tokens.slice([0..n, pre..t, 0..e]).reshape([n * p, e]);
        let f = l2_normalize(Tensor::cat(vec![l2_normalize(tok), l2_normalize(g)], 1));
        let d = f.dims()[1];
        Ok(f.reshape([n, p, d]))
    }

    /// The views of `images` under the paper's transform (`[n, 3, S, S]` values), in parallel.
    ///
    /// # Errors
    /// An image without pixels (named by its global index).
    pub fn prepare(&self, images: &[RgbImage], global_indices: &[u64]) -> Result<Vec<f32>> {
        if images.len() != global_indices.len() {
            return Err(Error::Mismatch {
                what: "global indices".into(),
                expected: format!("one per image ({})", images.len()),
                found: global_indices.len().to_string(),
            });
        }
        for (img, i) in images.iter().zip(global_indices) {
            fungi_aug::check_not_empty(
                img,
                std::path::Path::new(&format!("at dataset index {i}")),
            )?;
        }
        Ok(images
            .par_iter()
            .flat_map_iter(|im| self.transform(im))
            .collect())
    }

    /// The features of prepared views on the host (one read), refusing NaN/Inf.
    ///
    /// # Errors
    /// As [`DenseExtractor::features_from_views`]; [`Error::NonFinite`] naming the image.
    pub fn extract_prepared(&self, views: Vec<f32>, global_indices: &[u64]) -> Result<Vec<f32>> {
        let f = host(
            self.features_from_views(views, global_indices, None)?,
            "dense features",
        )?;
        if let Some(pos) = f.iter().position(|v| !v.is_finite()) {
            return Err(Error::NonFinite {
                objective: "dense".into(),
                index: global_indices[pos / self.image_feature_len().max(1)],
                value: f[pos],
            });
        }
        Ok(f)
    }

    /// Dense features `[N, P, E+K]` (row-major patch order) of decoded images, in batches of
    /// `batch_size`; `global_indices` key each image's random streams, so an image's features
    /// never depend on its batch.
    ///
    /// # Errors
    /// No support bank, lengths that differ, an image without pixels, a failing loss or a
    /// non-finite feature.
    pub fn extract(&self, images: &[RgbImage], global_indices: &[u64]) -> Result<Vec<f32>> {
        self.ready()?;
        if images.len() != global_indices.len() {
            return Err(Error::Mismatch {
                what: "global indices".into(),
                expected: format!("one per image ({})", images.len()),
                found: global_indices.len().to_string(),
            });
        }
        let bs = self.settings.batch_size;
        let mut out = Vec::with_capacity(images.len() * self.image_feature_len());
        for (imgs, idx) in images.chunks(bs).zip(global_indices.chunks(bs)) {
            out.extend(self.extract_prepared(self.prepare(imgs, idx)?, idx)?);
        }
        Ok(out)
    }
}
