//! The support bank from images: L2-normalised patch tokens (forward only, the paper's
//! transform), all of each image's patches or a seeded sample of `support_per_image`.

use burn::prelude::*;
use fungi_aug::RgbImage;
use fungi_backbone::AutodiffVitOps;
use fungi_core::rng::{sample_without_replacement, stream};
use fungi_core::{l2_normalize, Error, Result, StateTensor};
use rayon::prelude::*;

use crate::features::host;
use crate::DenseExtractor;

/// Progress of the support bank: `(images done, total)`.
pub type SupportProgress<'a> = &'a (dyn Fn(usize, usize) + Sync);
/// A support image skipped as unreadable: `(index, error)`.
pub type SupportSkip<'a> = &'a (dyn Fn(usize, &Error) + Sync);

impl<B: AutodiffVitOps> DenseExtractor<B> {
    /// The L2-normalised patch tokens `[n·P, E]` of images (forward only).
    ///
    /// # Errors
    /// An image without pixels, or a read-back failure.
    pub fn patch_tokens(&self, images: &[RgbImage]) -> Result<Vec<f32>> {
        let idx: Vec<u64> = (0..images.len() as u64).collect();
        let mut out = Vec::new();
        let bs = self.settings.batch_size;
        let s = self.settings.dense.image_size;
        for (imgs, idx) in images.chunks(bs).zip(idx.chunks(bs)) {
            let n = imgs.len();
            let x = Tensor::<B::InnerBackend, 4>::from_data(
                TensorData::new(self.prepare(imgs, idx)?, [n, 3, s, s]),
                &self.device,
            );
            let t = self.engine.prefix_model().forward_tokens(x);
            let [_, tt, e] = t.dims();
            let pre = self.engine.inner().config.num_prefix_tokens().min(tt);
            let p = tt - pre;
            let t = l2_normalize(t.slice([0..n, pre..tt, 0..e]).reshape([n * p, e]));
            out.extend(host(t, "support tokens")?);
        }
        Ok(out)
    }

    /// Builds the support bank from `len` images (`load(i)` decodes image `i`): each image's
    /// L2-normalised patch tokens, all of them or `support_per_image` sampled from the stream
    /// `(seed, "dense.support", i)` (in patch order). With `skip`, unreadable images are
    /// reported there and left out; without, the first one fails the build. Returns the rows.
    ///
    /// # Errors
    /// An unreadable image (without `skip`), no readable image ([`Error::NoTrainingImages`]),
    /// or a bank that cannot serve `neighbours`.
    pub fn build_support(
        &mut self,
        len: usize,
        load: &(dyn Fn(usize) -> Result<RgbImage> + Sync),
        progress: Option<SupportProgress<'_>>,
        skip: Option<SupportSkip<'_>>,
    ) -> Result<usize> {
        let e = self.width();
        let p = self.patches();
        let per = self
            .settings
            .dense
            .support_per_image
            .map_or(p, |k| k.min(p));
        let bs = self.settings.batch_size;
        let mut rows = Vec::new();
        for start in (0..len).step_by(bs) {
            let end = (start + bs).min(len);
            let loaded: Vec<(usize, Result<RgbImage>)> = (start..end)
                .into_par_iter()
                .map(|i| {
                    let r = load(i).and_then(|img| {
                        fungi_aug::check_not_empty(
                            &img,
                            std::path::Path::new(&format!("support image {i}")),
                        )?;
                        Ok(img)
                    });
                    (i, r)
                })
                .collect();
            let mut imgs = Vec::new();
            let mut which = Vec::new();
            for (i, r) in loaded {
                match (r, skip) {
                    (Ok(img), _) => {
                        imgs.push(img);
                        which.push(i);
                    }
                    (Err(err), Some(s)) => s(i, &err),
                    (Err(err), None) => return Err(err),
                }
            }
            let tokens = self.patch_tokens(&imgs)?;
            for (b, &i) in which.iter().enumerate() {
                let own = &tokens[b * p * e..(b + 1) * p * e];
                if per == p {
                    rows.extend_from_slice(own);
                } else {
                    let mut rng = stream(self.settings.seed, "dense.support", i as u64);
                    let mut pick = sample_without_replacement(p, per, &mut rng);
                    pick.sort_unstable();
                    for r in pick {
                        rows.extend_from_slice(&own[r * e..(r + 1) * e]);
                    }
                }
            }
            if let Some(f) = progress {
                f(end, len);
            }
        }
        if rows.is_empty() {
            return Err(Error::NoTrainingImages {
                objective: "dense support bank".into(),
                listed: len,
            });
        }
        let m = rows.len() / e;
        self.set_support(StateTensor {
            shape: vec![m, e],
            data: rows,
        })?;
        Ok(m)
    }
}
