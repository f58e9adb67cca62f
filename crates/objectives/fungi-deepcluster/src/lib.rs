//! # fungi-deepcluster
//!
//! The DeepCluster objective of the paper's ablation (`no-train-all-gain/grads_deepcluster.py`,
//! `src/utils/deepcluster/*`); fungivision does not have it.
//!
//! - **Views**: 2 global `RandomResizedCrop(224, scale=(0.14, 1))` + 6 local `(0.05, 0.14)`, PIL
//!   **bilinear** (torchvision's default), normalised with SwAV's `std = [0.228, 0.224, 0.225]`
//!   (the reference's constant), then 2 more global crops for the **memory bank** (a separate
//!   draw, as in the reference). All crops come from the image's own stream, so the memory-bank
//!   crops drawn in `setup` and at extraction are the same.
//! - **Head**: `z = normalize(x · Wᵀ)` with `W` `[128, D]` weight-normalised (rows of norm 1,
//!   `weight_g = 1`), no bias, no pre-normalisation of `x`; 3 prototype heads `[K, 128]`.
//! - **Setup** (training set): memory bank `m_i` = latents of the 2 memory crops; for head
//!   `h` (crop `[0, 1, 0][h]`), k-means: centroids initialised from `K` random memory rows, 10
//!   iterations of (assign by largest dot product, mean of non-empty clusters); centroids are
//!   **not** re-normalised (the reference's behaviour; SwAV re-normalises). They become the
//!   prototypes.
//! - **Loss** per image: targets `t_h = argmax_k ⟨m_{[0,1,0][h]}, c_{h,k}⟩` (for a training image
//!   this is its final k-means assignment; for a test image, the assignment to the training
//!   centroids), `mean over 8 crops × 3 heads of CE(scores/T, t_h)` with `T = 0.1`. The memory
//!   crops carry no gradient.
#![warn(missing_docs)]

use std::collections::BTreeMap;

use burn::prelude::*;
use burn::tensor::activation::log_softmax;
use burn::tensor::backend::AutodiffBackend;
use fungi_aug::resample::Filter;
use fungi_aug::{CropBox, MultiCrop, RgbImage};
use fungi_core::{l2_normalize, take_state, Error, Objective, Result, SetupContext, StateTensor};
use rand::RngExt;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// SwAV's normalisation constants as used by the reference (`0.228`, not `0.229`).
pub const SWAV_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
/// See [`SWAV_MEAN`].
pub const SWAV_STD: [f32; 3] = [0.228, 0.224, 0.225];

fn d_latent() -> usize {
    128
}
fn d_protos() -> Vec<usize> {
    vec![3000, 3000, 3000]
}
fn d_t() -> f64 {
    0.1
}
fn d_gs() -> (f64, f64) {
    (0.14, 1.0)
}
fn d_ls() -> (f64, f64) {
    (0.05, 0.14)
}
fn d_global() -> usize {
    2
}
fn d_local() -> usize {
    6
}
fn d_iters() -> usize {
    10
}

/// Configuration (names of the paper repo's arguments where they exist).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeepClusterConfig {
    /// Projection size (128).
    #[serde(default = "d_latent")]
    pub latent_dim: usize,
    /// Prototypes per head (3 heads of 3000).
    #[serde(default = "d_protos")]
    pub nmb_prototypes: Vec<usize>,
    /// Softmax temperature.
    #[serde(default = "d_t")]
    pub temperature: f64,
    /// Global crops (2).
    #[serde(default = "d_global")]
    pub global_crops_number: usize,
    /// Local crops (6).
    #[serde(default = "d_local")]
    pub local_crops_number: usize,
    /// Area range of global crops.
    #[serde(default = "d_gs")]
    pub global_crops_scale: (f64, f64),
    /// Area range of local crops.
    #[serde(default = "d_ls")]
    pub local_crops_scale: (f64, f64),
    /// k-means iterations.
    #[serde(default = "d_iters")]
    pub kmeans_iterations: usize,
}

impl Default for DeepClusterConfig {
    fn default() -> Self {
        Self {
            latent_dim: d_latent(),
            nmb_prototypes: d_protos(),
            temperature: d_t(),
            global_crops_number: d_global(),
            local_crops_number: d_local(),
            global_crops_scale: d_gs(),
            local_crops_scale: d_ls(),
            kmeans_iterations: d_iters(),
        }
    }
}

impl DeepClusterConfig {
    /// Checks the values; errors name the key.
    pub fn validate(&self) -> Result<()> {
        let bad = |k: &str, v: String, e: &str| Error::Config {
            key: format!("deepcluster.{k}"),
            value: v,
            expected: e.into(),
        };
        if self.latent_dim == 0 {
            return Err(bad("latent_dim", "0".into(), "a positive integer"));
        }
        if self.nmb_prototypes.is_empty() || self.nmb_prototypes.contains(&0) {
            return Err(bad(
                "nmb_prototypes",
                format!("{:?}", self.nmb_prototypes),
                "one or more positive sizes",
            ));
        }
        if !(self.temperature.is_finite() && self.temperature > 0.0) {
            return Err(bad(
                "temperature",
                self.temperature.to_string(),
                "a positive number",
            ));
        }
        if self.global_crops_number < 2 {
            return Err(bad(
                "global_crops_number",
                self.global_crops_number.to_string(),
                "at least 2 (the memory bank uses crops 0 and 1)",
            ));
        }
        for (k, (a, b)) in [
            ("global_crops_scale", self.global_crops_scale),
            ("local_crops_scale", self.local_crops_scale),
        ] {
            if !(0.0 < a && a <= b && b <= 1.0) {
                return Err(bad(k, format!("[{a}, {b}]"), "0 < min <= max <= 1"));
            }
        }
        Ok(())
    }
    fn crops(&self) -> usize {
        self.global_crops_number + self.local_crops_number
    }
    /// The multi-crop views: `RandomResizedCrop(224)` with these counts and scales, PIL
    /// bilinear (torchvision's default), SwAV's statistics.
    pub fn transform(&self) -> MultiCrop {
        MultiCrop {
            global_crops_number: self.global_crops_number,
            local_crops_number: self.local_crops_number,
            global_crops_scale: self.global_crops_scale,
            local_crops_scale: self.local_crops_scale,
            filter: Filter::Bilinear,
            mean: SWAV_MEAN,
            std: SWAV_STD,
            ..MultiCrop::default()
        }
    }
}

/// The DeepCluster objective.
#[derive(Debug, Clone)]
pub struct DeepClusterObjective<B: Backend> {
    config: DeepClusterConfig,
    transform: MultiCrop,
    /// Row-normalised projection `[128, D]` (PyTorch layout) and its transpose on the device.
    projection: (StateTensor, Tensor<B, 2>),
    /// Per head: prototypes `[K, 128]` and their transpose; `None` until setup or a state.
    prototypes: Option<Vec<(StateTensor, Tensor<B, 2>)>>,
    /// k-means assignments of the training set per head (after setup), for inspection.
    assignments: Vec<Vec<usize>>,
}

impl<B: Backend> DeepClusterObjective<B> {
    /// A random weight-normalised projection from the stream `(seed, "deepcluster.projection")`
    /// (PyTorch `Linear` init, then rows scaled to norm 1 as `weight_norm` with `weight_g = 1`).
    pub fn new(
        config: DeepClusterConfig,
        embed_dim: usize,
        seed: u64,
        device: &B::Device,
    ) -> Result<Self> {
        config.validate()?;
        let mut rng = fungi_core::rng::stream(seed, "deepcluster.projection", 0);
        let bound = 1.0 / (embed_dim as f32).sqrt();
        let mut w: Vec<f32> = (0..config.latent_dim * embed_dim)
            .map(|_| (rng.random::<f32>() * 2.0 - 1.0) * bound)
            .collect();
        for row in w.chunks_mut(embed_dim) {
            let n = row.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
            row.iter_mut().for_each(|v| *v /= n);
        }
        let proj = StateTensor {
            shape: vec![config.latent_dim, embed_dim],
            data: w,
        };
        let t = Self::device_t(&proj, device);
        Ok(Self {
            transform: config.transform(),
            config,
            projection: (proj, t),
            prototypes: None,
            assignments: vec![],
        })
    }

    fn device_t(s: &StateTensor, device: &B::Device) -> Tensor<B, 2> {
        Tensor::<B, 2>::from_data(TensorData::new(s.data.clone(), s.shape.clone()), device)
            .transpose()
    }

    /// Training-set assignments per head after `setup` (empty before), one per image of the
    /// memory bank in dataset order (images skipped as unreadable during setup are left out).
    pub fn assignments(&self) -> &[Vec<usize>] {
        &self.assignments
    }

    /// Crop boxes of one image: the `2 + 6` gradient crops, then the 2 memory-bank crops.
    pub fn sample_params(&self, width: u32, height: u32, rng: &mut ChaCha8Rng) -> Vec<CropBox> {
        let mut boxes = self.transform.sample_params(width, height, rng);
        boxes.extend((0..2).map(|_| self.transform.sample_global(width, height, rng)));
        boxes
    }

    /// Normalised views for given crop boxes (bilinear, SwAV statistics).
    pub fn apply(&self, image: &RgbImage, boxes: &[CropBox]) -> Vec<f32> {
        self.transform.apply(image, boxes)
    }
}

/// Rows of `x` per step of [`kmeans`]: bounds the `[rows, K]` score and one-hot tiles (with
/// `K = 3000`: 49 MB each), whatever the size of the memory bank.
const KMEANS_ROWS: usize = 4096;

/// k-means as the reference runs it (dot-product assignment, mean update of non-empty clusters,
/// no re-normalisation), as Burn matmuls on `x`'s device; `init` are row indices of `x` used as
/// initial centroids. Returns the centroids `[K, D]` and the final assignments, read back once.
///
/// Assignment is `argmax` of `x · cᵀ` (ties to the lowest index); the update sums each cluster's
/// rows with a one-hot matmul, tile by tile (deterministic on every backend, unlike a scatter-add).
///
/// # Errors
/// When the device's values cannot be read back.
pub fn kmeans<Bk: Backend>(
    x: Tensor<Bk, 2>,
    init: &[usize],
    iterations: usize,
) -> Result<(Vec<f32>, Vec<usize>)> {
    let device = x.device();
    let [n, d] = x.dims();
    let k = init.len();
    let idx: Vec<i64> = init.iter().map(|&i| i as i64).collect();
    let mut c = x.clone().select(
        0,
        Tensor::<Bk, 1, Int>::from_data(TensorData::new(idx, [k]), &device),
    );
    let tiles: Vec<Tensor<Bk, 2>> = (0..n)
        .step_by(KMEANS_ROWS)
        .map(|r0| x.clone().slice([r0..(r0 + KMEANS_ROWS).min(n), 0..d]))
        .collect();
    let assign = |c: &Tensor<Bk, 2>, t: &Tensor<Bk, 2>| -> Tensor<Bk, 1, Int> {
        let rows = t.dims()[0];
        t.clone()
            .matmul(c.clone().transpose())
            .argmax(1)
            .reshape([rows])
    };
    for _ in 0..iterations {
        let mut sums = Tensor::<Bk, 2>::zeros([k, d], &device);
        let mut counts = Tensor::<Bk, 2>::zeros([k, 1], &device);
        for t in &tiles {
            let onehot: Tensor<Bk, 2> = assign(&c, t).one_hot::<2>(k).float(); // [rows, K]
            counts = counts + onehot.clone().sum_dim(0).reshape([k, 1]);
            sums = sums + onehot.transpose().matmul(t.clone());
        }
        let nonempty = counts.clone().greater_elem(0.0).expand([k, d]);
        c = c.mask_where(nonempty, sums / counts.clamp_min(1.0));
    }
    let a: Vec<Tensor<Bk, 1, Int>> = tiles.iter().map(|t| assign(&c, t)).collect();
    let read = |e: burn::tensor::DataError| Error::ReadBack {
        what: "the k-means result".into(),
        reason: format!("{e:?}"),
    };
    let a = Tensor::cat(a, 0)
        .into_data()
        .convert::<i64>()
        .into_vec::<i64>()
        .map_err(read)?
        .into_iter()
        .map(|j| j as usize)
        .collect();
    let c = c
        .into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .map_err(read)?;
    Ok((c, a))
}

impl<B: AutodiffBackend> DeepClusterObjective<B> {
    /// The image's cluster per head, from its memory-bank views (the last 2 of `embeddings`,
    /// `[V, E]`): the index of the prototype with the largest dot product with the memory latent
    /// of crop `[0, 1, 0][h]`.
    ///
    /// # Errors
    /// Without prototypes (neither `setup` nor a loaded state).
    pub fn image_targets(&self, embeddings: Tensor<B, 2>) -> Result<Vec<usize>> {
        let protos = self.prototypes()?;
        let [v, e] = embeddings.dims();
        let mem = l2_normalize(
            embeddings
                .inner()
                .slice([v - 2..v, 0..e])
                .matmul(self.projection.1.clone().inner()),
        );
        let l = mem.dims()[1];
        Ok(protos
            .iter()
            .enumerate()
            .map(|(h, (_, pt))| {
                let crop = h % 2;
                let s = mem
                    .clone()
                    .slice([crop..crop + 1, 0..l])
                    .matmul(pt.clone().inner());
                s.argmax(1)
                    .into_data()
                    .convert::<i64>()
                    .iter::<i64>()
                    .next()
                    .unwrap_or(0) as usize
            })
            .collect())
    }

    #[allow(clippy::type_complexity)]
    fn prototypes(&self) -> Result<&Vec<(StateTensor, Tensor<B, 2>)>> {
        self.prototypes.as_ref().ok_or_else(|| Error::NotReady {
            objective: "deepcluster".into(),
            missing: "prototypes".into(),
        })
    }

    /// Memory-bank latents `[2, L]` of embeddings on the inner backend.
    fn latents_inner(&self, emb: Tensor<B::InnerBackend, 2>) -> Tensor<B::InnerBackend, 2> {
        l2_normalize(emb.matmul(self.projection.1.clone().inner()))
    }
}

impl<B: AutodiffBackend> Objective<B> for DeepClusterObjective<B> {
    fn name(&self) -> &str {
        "deepcluster"
    }
    fn views_per_image(&self) -> usize {
        self.config.crops() + 2
    }
    fn views_setting(&self) -> Option<String> {
        Some(format!(
            "deepcluster.global_crops_number = {}, deepcluster.local_crops_number = {}",
            self.config.global_crops_number, self.config.local_crops_number
        ))
    }
    fn views(&self, image: &RgbImage, rng: &mut ChaCha8Rng) -> Vec<f32> {
        let boxes = self.sample_params(image.width(), image.height(), rng);
        self.apply(image, &boxes)
    }

    /// Memory bank of the training set (the 2 memory crops of every image, forward only), then
    /// k-means per head; the centroids become the prototypes.
    fn setup(&mut self, ctx: &dyn SetupContext<B>) -> Result<()> {
        let n = ctx.len();
        if n == 0 {
            return Err(Error::NoTrainingImages {
                objective: "deepcluster".into(),
                listed: 0,
            });
        }
        let l = self.config.latent_dim;
        let mut memory = [Vec::with_capacity(n * l), Vec::with_capacity(n * l)];
        let mut kept = 0usize;
        for i in 0..n {
            let Some(img) = fungi_core::objective::setup_image(ctx, i)? else {
                continue;
            };
            kept += 1;
            let mut rng = fungi_core::rng::stream(ctx.seed(), "deepcluster", i as u64);
            let boxes = self.sample_params(img.width(), img.height(), &mut rng);
            let views = self.apply(&img, &boxes[self.config.crops()..]);
            let side = self.transform.size as usize;
            let x = Tensor::<B::InnerBackend, 4>::from_data(
                TensorData::new(views, [2, 3, side, side]),
                &ctx.device(),
            );
            let z: Vec<f32> = self
                .latents_inner(ctx.embed(x))
                .into_data()
                .convert::<f32>()
                .iter::<f32>()
                .collect();
            memory[0].extend_from_slice(&z[..l]);
            memory[1].extend_from_slice(&z[l..]);
            ctx.progress("deepcluster memory bank", i + 1, n);
        }
        if kept == 0 {
            return Err(Error::NoTrainingImages {
                objective: "deepcluster".into(),
                listed: ctx.len(),
            });
        }
        let n = kept;
        for (h, &k) in self.config.nmb_prototypes.iter().enumerate() {
            if k > n {
                tracing::warn!(
                    "deepcluster: nmb_prototypes[{h}] = {k} but the memory bank has only {n} \
                     images: using {n} prototypes"
                );
            }
        }
        let mut rng = fungi_core::rng::stream(ctx.seed(), "deepcluster.kmeans", 0);
        let mut protos = Vec::new();
        self.assignments.clear();
        for (h, &k) in self.config.nmb_prototypes.iter().enumerate() {
            let crop = h % 2;
            let k = k.min(n);
            let idx = fungi_core::rng::sample_without_replacement(n, k, &mut rng);
            let x = Tensor::<B::InnerBackend, 2>::from_data(
                TensorData::new(memory[crop].clone(), [n, l]),
                &ctx.device(),
            );
            let (c, a) = kmeans(x, &idx[..k], self.config.kmeans_iterations)?;
            let st = StateTensor {
                shape: vec![k, l],
                data: c,
            };
            let t = Self::device_t(&st, &self.projection.1.device());
            protos.push((st, t));
            self.assignments.push(a);
            ctx.progress(
                "deepcluster k-means",
                h + 1,
                self.config.nmb_prototypes.len(),
            );
        }
        self.prototypes = Some(protos);
        Ok(())
    }

    fn ready(&self) -> Result<()> {
        self.prototypes().map(|_| ())
    }

    fn image_loss(&self, embeddings: Tensor<B, 2>) -> Result<Tensor<B, 1>> {
        let protos = self.prototypes()?;
        let [_, e] = embeddings.dims();
        let c = self.config.crops();
        let targets = self.image_targets(embeddings.clone())?;
        let z = l2_normalize(
            embeddings
                .slice([0..c, 0..e])
                .matmul(self.projection.1.clone()),
        ); // [8, 128]
        let mut terms = Vec::new();
        for ((_, pt), target) in protos.iter().zip(targets) {
            let logp = log_softmax(
                z.clone()
                    .matmul(pt.clone())
                    .div_scalar(self.config.temperature),
                1,
            ); // [8, K]
            terms.push(
                logp.slice([0..c, target..target + 1])
                    .sum()
                    .neg()
                    .reshape([1]),
            );
        }
        let n_terms = (terms.len() * c) as f64;
        Ok(Tensor::cat(terms, 0).sum().div_scalar(n_terms).reshape([1]))
    }
    /// Batched: targets for every image and head as one argmax on the device (no host round
    /// trip before `backward`), the cross-entropy picked with `gather`.
    fn batch_losses(&self, embeddings: Tensor<B, 3>) -> Result<Tensor<B, 1>> {
        let protos = self.prototypes()?;
        let [n, v, e] = embeddings.dims();
        let c = self.config.crops();
        if v != c + 2 {
            return Err(Error::Mismatch {
                what: "deepcluster views per image".into(),
                expected: format!("{} (crops + 2 memory-bank views)", c + 2),
                found: v.to_string(),
            });
        }
        // Memory-bank latents [n, 2, L], outside the graph (the reference's targets carry no
        // gradient).
        let mem = self.latents_inner(
            embeddings
                .clone()
                .inner()
                .slice([0..n, v - 2..v, 0..e])
                .reshape([n * 2, e]),
        );
        let l = mem.dims()[1];
        let mem = mem.reshape([n, 2, l]);
        let z = l2_normalize(
            embeddings
                .slice([0..n, 0..c, 0..e])
                .reshape([n * c, e])
                .matmul(self.projection.1.clone()),
        ); // [n·c, L]
        let mut total: Option<Tensor<B, 1>> = None;
        for (h, (_, pt)) in protos.iter().enumerate() {
            let crop = h % 2;
            let k = pt.dims()[1];
            let target = mem
                .clone()
                .slice([0..n, crop..crop + 1, 0..l])
                .reshape([n, l])
                .matmul(pt.clone().inner())
                .argmax(1); // [n, 1]
            let index = Tensor::<B, 3, Int>::from_inner(target.reshape([n, 1, 1]).repeat_dim(1, c));
            let logp = log_softmax(
                z.clone()
                    .matmul(pt.clone())
                    .div_scalar(self.config.temperature),
                1,
            )
            .reshape([n, c, k]);
            let picked = logp
                .gather(2, index)
                .reshape([n, c])
                .sum_dim(1)
                .reshape([n]);
            total = Some(match total {
                Some(t) => t + picked,
                None => picked,
            });
        }
        let total = total.ok_or_else(|| Error::NotReady {
            objective: "deepcluster".into(),
            missing: "prototype heads".into(),
        })?;
        Ok(total.neg().div_scalar((protos.len() * c) as f64))
    }
    fn grad_scale(&self) -> f32 {
        self.config.crops() as f32
    }
    fn state(&self) -> BTreeMap<String, StateTensor> {
        let mut m = BTreeMap::from([("projection.weight".to_string(), self.projection.0.clone())]);
        if let Some(p) = &self.prototypes {
            for (h, (s, _)) in p.iter().enumerate() {
                m.insert(format!("prototypes.{h}.weight"), s.clone());
            }
        }
        m
    }
    fn load_state(&mut self, state: &BTreeMap<String, StateTensor>) -> Result<()> {
        let dev = self.projection.1.device();
        let shape = self.projection.0.shape.clone();
        let p = take_state(state, "deepcluster", "projection.weight", &shape)?.clone();
        let mut protos = Vec::new();
        for (h, &k) in self.config.nmb_prototypes.iter().enumerate() {
            let key = format!("prototypes.{h}.weight");
            let t = state.get(&key).ok_or_else(|| Error::Mismatch {
                what: format!("state tensor `deepcluster.{key}`"),
                expected: format!(
                    "shape [K <= {k}, {}] (run setup on the training set and save the state)",
                    self.config.latent_dim
                ),
                found: "nothing".into(),
            })?;
            if t.shape.len() != 2
                || t.shape[1] != self.config.latent_dim
                || t.shape[0] > k
                || t.shape[0] == 0
            {
                return Err(Error::Mismatch {
                    what: format!("state tensor `deepcluster.{key}`"),
                    expected: format!("shape [K <= {k}, {}]", self.config.latent_dim),
                    found: format!("{:?}", t.shape),
                });
            }
            protos.push((t.clone(), Self::device_t(t, &dev)));
        }
        self.projection = (p.clone(), Self::device_t(&p, &dev));
        self.prototypes = Some(protos);
        Ok(())
    }
    fn config_json(&self) -> serde_json::Value {
        serde_json::to_value(&self.config).expect("serialisable")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kmeans_finds_separated_clusters() {
        // Two tight groups on the unit circle; init on two points of the same group.
        let x = [
            1.0, 0.0, 0.99, 0.14, 0.98, -0.2, 0.0, 1.0, 0.1, 0.99, -0.14, 0.99,
        ];
        let x = Tensor::<burn::backend::Flex, 2>::from_data(
            TensorData::new(x.to_vec(), [6, 2]),
            &Default::default(),
        );
        let (c, a) = kmeans(x, &[0, 1], 10).unwrap();
        assert_eq!(a[0], a[1]);
        assert_eq!(a[0], a[2]);
        assert_eq!(a[3], a[4]);
        assert_ne!(a[0], a[3]);
        // Centroids are plain means, not re-normalised.
        let n0 = (c[0] * c[0] + c[1] * c[1]).sqrt();
        assert!(n0 < 1.0 && n0 > 0.9, "{n0}");
    }
}
