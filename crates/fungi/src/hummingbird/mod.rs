//! HummingBird in-context segmentation (`../shared/docs/dense-fungi.md` §C; docs/dense.md):
//! a memory bank of the training images' patch features with their soft labels, the `k`
//! nearest memory patches of each validation patch weighted by `softmax(cos / τ)`, bilinear
//! upsampling of the transferred labels, and mIoU.
//!
//! Features are the L2-normalised patch tokens ([`FeatureKind::Embedding`]) or dense FUNGI
//! ([`FeatureKind::Fungi`]), both from a [`DenseExtractor`]. [`evaluate`] runs the protocol on
//! image / mask files; [`evaluate_features`] on features computed elsewhere (Python).

pub mod data;
mod index;
mod memory;

use std::path::PathBuf;
use std::time::Instant;

use burn::prelude::*;
use fungi_aug::image::GrayImage;
use fungi_aug::mask::{crop_resize_nearest, resize_nearest};
use fungi_aug::resample::{resize, Filter};
use fungi_aug::{ColorJitter, DecodeOptions, RandomResizedCrop, RgbImage};
use fungi_backbone::AutodiffVitOps;
use fungi_core::rng::stream;
use fungi_dense::DenseExtractor;
use fungi_eval::segmentation::{patch_labels, upsample_argmax, Confusion, IGNORE};
use fungi_eval::Matrix;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

pub use data::{SegItem, SegSplit};
pub use index::{HnswSettings, IndexChoice, LabelIndex};
pub use memory::MemoryBank;

/// Errors of the HummingBird evaluation.
#[derive(Debug, thiserror::Error)]
pub enum HummingbirdError {
    /// A file or folder that cannot be read or written.
    #[error("{}: {what}: {source}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// What it is.
        what: String,
        /// The cause.
        source: std::io::Error,
    },
    /// A listing (VOC split list, folder) that does not give the pairs.
    #[error("{}{}: {reason}", file.display(), if *line > 0 { format!(":{line}") } else { String::new() })]
    Listing {
        /// The list file or folder.
        file: PathBuf,
        /// 1-based line (0: the whole file).
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// A mask that is not a class-id PNG.
    #[error("mask {}: {reason}", file.display())]
    Mask {
        /// The mask file.
        file: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A mask whose size is not its image's.
    #[error("mask {} is {}x{} but its image {} is {}x{}: expected the same size", mask.display(), mask_size.0, mask_size.1, image.display(), image_size.0, image_size.1)]
    MaskSize {
        /// The mask file.
        mask: PathBuf,
        /// The image file.
        image: PathBuf,
        /// Mask width × height.
        mask_size: (u32, u32),
        /// Image width × height.
        image_size: (u32, u32),
    },
    /// A mask value past the classes.
    #[error("mask {}: class id {id} is past the {num_classes} classes (expected 0..={} or 255 for ignored pixels; set num_classes)", file.display(), num_classes.saturating_sub(1))]
    ClassId {
        /// The mask file (or array name).
        file: PathBuf,
        /// The value found.
        id: u8,
        /// Classes expected.
        num_classes: usize,
    },
    /// A setting out of range.
    #[error("{key} = {value}: expected {expected}")]
    Setting {
        /// The setting's key.
        key: String,
        /// The value given.
        value: String,
        /// What is accepted.
        expected: String,
    },
    /// Sizes that do not agree.
    #[error("{what}: expected {expected}, found {found}")]
    Shape {
        /// What.
        what: String,
        /// Expected size.
        expected: String,
        /// Found size.
        found: String,
    },
    /// A NaN or infinite feature.
    #[error("{what}: non-finite value {value}")]
    NonFinite {
        /// Where.
        what: String,
        /// The value.
        value: f32,
    },
    /// Nothing to evaluate or to remember.
    #[error("{what}: empty")]
    Empty {
        /// What is empty.
        what: String,
    },
    /// A settings file that does not parse.
    #[error("{}: {reason}", file.display())]
    SettingsFile {
        /// The file.
        file: PathBuf,
        /// The parser's message (it names the key).
        reason: String,
    },
    /// Feature extraction or files.
    #[error(transparent)]
    Core(#[from] fungi_core::Error),
    /// Metrics.
    #[error(transparent)]
    Eval(#[from] fungi_eval::EvalError),
}

/// Result of this module.
pub type Result<T, E = HummingbirdError> = std::result::Result<T, E>;

/// Settings of the evaluation (the paper's full setting by default).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HummingbirdSettings {
    /// Classes (21 for Pascal VOC); mask values past them other than 255 are errors.
    pub num_classes: usize,
    /// Neighbours per query patch.
    pub k: usize,
    /// Softmax temperature of the neighbours' cosine similarities.
    pub temperature: f64,
    /// Memory bank budget in patches (`memory_size / (images · epochs)` kept per image).
    pub memory_size: usize,
    /// Passes over the training images (each with new augmentations).
    pub augmentation_epochs: usize,
    /// Apply the training augmentation (colour jitter + shared random resized crop); without
    /// it, training images are resized as validation images are.
    pub augment: bool,
    /// Search: exact, HNSW, or exact while the memory fits `exact_max_bytes`.
    pub index: IndexChoice,
    /// Largest memory (bytes of `f32` rows) searched exactly under `index = "auto"`.
    pub exact_max_bytes: u64,
    /// HNSW parameters.
    pub hnsw: HnswSettings,
    /// Query patches on which an approximate index's recall@k is measured (0: none).
    pub recall_queries: usize,
    /// Master seed of the augmentations and the memory sampling.
    pub seed: u64,
}

impl Default for HummingbirdSettings {
    fn default() -> Self {
        Self {
            num_classes: 21,
            k: 30,
            temperature: 0.02,
            memory_size: 102_400,
            augmentation_epochs: 1,
            augment: true,
            index: IndexChoice::Auto,
            exact_max_bytes: 4 << 30,
            hnsw: HnswSettings::default(),
            recall_queries: 2_048,
            seed: 0,
        }
    }
}

impl HummingbirdSettings {
    /// Reads settings from a TOML file (JSON when the name ends in `.json`); missing keys keep
    /// their defaults, unknown keys are errors.
    ///
    /// # Errors
    /// An unreadable file, a parse error naming the key, or a value [`Self::validate`] refuses.
    pub fn from_file(path: impl AsRef<std::path::Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| HummingbirdError::Io {
            path: path.to_path_buf(),
            what: "evaluation settings".into(),
            source,
        })?;
        let bad = |reason: String| HummingbirdError::SettingsFile {
            file: path.to_path_buf(),
            reason,
        };
        let s: Self = if path.extension().is_some_and(|e| e == "json") {
            let de = &mut serde_json::Deserializer::from_str(&text);
            serde_path_to_error::deserialize(de)
                .map_err(|e| bad(format!("key `{}`: {}", e.path(), e.inner())))?
        } else {
            toml::from_str(&text).map_err(|e| bad(e.to_string()))?
        };
        s.validate()?;
        Ok(s)
    }

    /// Checks every value.
    ///
    /// # Errors
    /// [`HummingbirdError::Setting`] naming the first bad key.
    pub fn validate(&self) -> Result<()> {
        let bad = |key: &str, value: String, expected: &str| {
            Err(HummingbirdError::Setting {
                key: key.into(),
                value,
                expected: expected.into(),
            })
        };
        if !(1..=255).contains(&self.num_classes) {
            return bad(
                "num_classes",
                self.num_classes.to_string(),
                "1 to 255 (255 marks ignored pixels)",
            );
        }
        if self.k == 0 {
            return bad("k", "0".into(), "at least 1 neighbour");
        }
        if !(self.temperature.is_finite() && self.temperature > 0.0) {
            return bad(
                "temperature",
                self.temperature.to_string(),
                "a positive number",
            );
        }
        if self.memory_size == 0 {
            return bad("memory_size", "0".into(), "at least 1 patch");
        }
        if self.augmentation_epochs == 0 {
            return bad("augmentation_epochs", "0".into(), "at least 1 pass");
        }
        if !(2..=256).contains(&self.hnsw.max_connections) {
            return bad(
                "hnsw.max_connections",
                self.hnsw.max_connections.to_string(),
                "2 to 256",
            );
        }
        if !self.augment && self.augmentation_epochs > 1 {
            return bad(
                "augmentation_epochs",
                self.augmentation_epochs.to_string(),
                "1 when augment = false (passes without augmentation repeat the same patches)",
            );
        }
        if self.hnsw.ef_search < self.k && self.index == IndexChoice::Hnsw {
            return bad(
                "hnsw.ef_search",
                self.hnsw.ef_search.to_string(),
                &format!("at least k = {}", self.k),
            );
        }
        Ok(())
    }
}

/// Which patch features are evaluated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum FeatureKind {
    /// The L2-normalised patch tokens (the baseline).
    Embedding,
    /// Dense FUNGI: `L2(concat(L2(token), L2(projected per-token gradient)))`.
    Fungi,
}

/// Per-class and mean IoU of an evaluation, with what it ran on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Features evaluated (`"embedding"`, `"fungi"`, or `"features"` for given ones).
    pub features: String,
    /// mIoU over the classes present in the ground truth or the predictions.
    pub miou: f64,
    /// mIoU over all `num_classes` classes, absent ones counting 0 (the paper's average).
    pub miou_all_classes: f64,
    /// IoU per class (`None`: in neither ground truth nor predictions).
    pub per_class_iou: Vec<Option<f64>>,
    /// Fraction of labelled pixels predicted right.
    pub pixel_accuracy: f64,
    /// Training images (memory).
    pub train_images: usize,
    /// Validation images.
    pub val_images: usize,
    /// Rows in the memory bank.
    pub memory_rows: usize,
    /// Patches kept per training image (and augmentation pass).
    pub patches_per_image: usize,
    /// `"exact"` or `"hnsw"`.
    pub index: String,
    /// Recall@k of the search against the exact one (1 for exact search; `None` for an
    /// approximate search with `recall_queries = 0`).
    pub recall: Option<f64>,
    /// Query patches the recall was measured on (0 for exact search).
    pub recall_queries: usize,
    /// Seconds spent on the memory bank, the index and the validation images.
    pub seconds: [f64; 3],
    /// The settings.
    pub settings: HummingbirdSettings,
}

/// Patch features of square `S × S` images.
pub trait PatchFeaturizer {
    /// `S`.
    fn image_size(&self) -> u32;
    /// Patch grid `(rows, columns)`.
    fn grid(&self) -> (usize, usize);
    /// Feature width `D`.
    fn dim(&self) -> usize;
    /// Images per call.
    fn batch_size(&self) -> usize;
    /// `[n·P, D]` for `n` images of `S × S` pixels; `keys` key each image's random streams.
    ///
    /// # Errors
    /// Extraction errors.
    fn features(&self, images: &[RgbImage], keys: &[u64]) -> fungi_core::Result<Vec<f32>>;
    /// Name of the features (`"embedding"`, `"fungi"`).
    fn name(&self) -> &'static str;
}

/// [`PatchFeaturizer`] over a [`DenseExtractor`].
#[derive(Debug)]
pub struct DenseFeatures<'a, B: AutodiffVitOps> {
    /// The extractor (with a support bank for [`FeatureKind::Fungi`]).
    pub extractor: &'a DenseExtractor<B>,
    /// Which features.
    pub kind: FeatureKind,
}

impl<B: AutodiffVitOps> PatchFeaturizer for DenseFeatures<'_, B> {
    fn image_size(&self) -> u32 {
        self.extractor.settings().dense.image_size as u32
    }
    fn grid(&self) -> (usize, usize) {
        let g = (self.extractor.patches() as f64).sqrt().round() as usize;
        (g, g)
    }
    fn dim(&self) -> usize {
        match self.kind {
            FeatureKind::Embedding => self.extractor.width(),
            FeatureKind::Fungi => self.extractor.feature_dim(),
        }
    }
    fn batch_size(&self) -> usize {
        self.extractor.settings().batch_size
    }
    fn features(&self, images: &[RgbImage], keys: &[u64]) -> fungi_core::Result<Vec<f32>> {
        match self.kind {
            FeatureKind::Embedding => self.extractor.patch_tokens(images),
            FeatureKind::Fungi => self.extractor.extract(images, keys),
        }
    }
    fn name(&self) -> &'static str {
        match self.kind {
            FeatureKind::Embedding => "embedding",
            FeatureKind::Fungi => "fungi",
        }
    }
}

/// Refuses `k` past the rows the memory will hold (`per_image` of `p` patches over `images`),
/// before any feature is computed.
fn check_k(k: usize, per_image: usize, p: usize, images: usize) -> Result<()> {
    let rows = per_image.min(p).saturating_mul(images);
    if k > rows {
        return Err(HummingbirdError::Setting {
            key: "k".into(),
            value: k.to_string(),
            expected: format!(
                "between 1 and the {rows} rows of the memory bank ({} of the {p} patches of each of {images} training image(s)); raise memory_size or lower k",
                per_image.min(p)
            ),
        });
    }
    Ok(())
}

/// Random-stream keys of validation images start here (training images use
/// `epoch · n_train + i`), so that no validation image shares a training image's streams.
pub const VAL_KEY_OFFSET: u64 = 1 << 40;

/// The phases reported to a progress callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Building the memory bank `(images done, total)`.
    Memory,
    /// Building the index `(0, 1)` then `(1, 1)`.
    Index,
    /// Validation images `(done, total)`.
    Evaluate,
}

/// Progress callback.
pub type Progress<'a> = &'a (dyn Fn(Phase, usize, usize) + Sync);

/// Callback seeing each validation image's prediction (e.g. to save it).
pub type OnPrediction<'a> = &'a mut dyn FnMut(Prediction<'_>) -> Result<()>;

/// One validation image's prediction (at the image's own size).
#[derive(Debug)]
pub struct Prediction<'a> {
    /// The pair.
    pub item: &'a SegItem,
    /// The image.
    pub image: &'a RgbImage,
    /// Its ground truth.
    pub truth: &'a GrayImage,
    /// The predicted class ids.
    pub prediction: &'a GrayImage,
}

/// Accumulates validation images against an index.
struct Scorer<'a, B: Backend> {
    index: &'a LabelIndex<B>,
    settings: &'a HummingbirdSettings,
    confusion: Confusion,
    correct: u64,
    labelled: u64,
    recall_rows: Vec<f32>,
    images: usize,
}

impl<'a, B: Backend> Scorer<'a, B> {
    fn new(index: &'a LabelIndex<B>, settings: &'a HummingbirdSettings) -> Self {
        Self {
            index,
            settings,
            confusion: Confusion::new(settings.num_classes),
            correct: 0,
            labelled: 0,
            recall_rows: Vec::new(),
            images: 0,
        }
    }

    /// Predicts one image's `height × width` class ids from its patch features `[P, D]` on a
    /// `grid`, and counts it against `truth`.
    fn image(&mut self, feats: &[f32], grid: (usize, usize), truth: &GrayImage) -> Result<Vec<u8>> {
        let s = self.settings;
        let c = s.num_classes;
        if self.index.kind() != "exact" {
            let want = s.recall_queries * self.index.dim();
            if self.recall_rows.len() < want {
                let take = (want - self.recall_rows.len()).min(feats.len());
                self.recall_rows.extend_from_slice(&feats[..take]);
            }
        }
        let scores = self.index.transfer(feats, s.k, s.temperature)?;
        let scores = Matrix::new(grid.0 * grid.1, c, scores)?;
        let (w, h) = truth.dimensions();
        let pred = upsample_argmax(&scores, grid.0, grid.1, h as usize, w as usize)?;
        self.confusion
            .add(&pred, truth.as_raw(), h as usize, w as usize)?;
        for (&p, &t) in pred.iter().zip(truth.as_raw()) {
            if t != IGNORE {
                self.labelled += 1;
                self.correct += u64::from(p == t);
            }
        }
        self.images += 1;
        Ok(pred)
    }

    fn report(
        self,
        features: &str,
        train_images: usize,
        per_image: usize,
        seconds: [f64; 3],
    ) -> Result<Report> {
        let m = self.confusion.miou();
        let (recall, recall_queries) = if self.index.kind() == "exact" {
            (Some(1.0), 0)
        } else {
            let n = self.recall_rows.len() / self.index.dim().max(1);
            let r = (n > 0)
                .then(|| self.index.recall(&self.recall_rows, self.settings.k))
                .transpose()?;
            (r, n)
        };
        Ok(Report {
            features: features.into(),
            miou: m.miou,
            miou_all_classes: m.miou_all_classes,
            per_class_iou: m.per_class,
            pixel_accuracy: if self.labelled == 0 {
                0.0
            } else {
                self.correct as f64 / self.labelled as f64
            },
            train_images,
            val_images: self.images,
            memory_rows: self.index.len(),
            patches_per_image: per_image,
            index: self.index.kind().into(),
            recall,
            recall_queries,
            seconds,
            settings: self.settings.clone(),
        })
    }
}

/// The paper's training augmentation of one pair to `size × size`: colour jitter (0.1 each,
/// p 0.5) on the image, then one `RandomResizedCrop(size, scale (0.5, 2.0), ratio (3/4, 4/3))`
/// box for both, bilinear for the image and nearest for the mask; random choices from the
/// stream `(seed, "hummingbird.augment", key)`.
pub fn augment_pair(
    image: &RgbImage,
    mask: &GrayImage,
    size: u32,
    seed: u64,
    key: u64,
) -> (RgbImage, GrayImage) {
    let mut rng = stream(seed, "hummingbird.augment", key);
    let jitter = ColorJitter::PAPER;
    let jp = jitter.sample_params(&mut rng);
    let rrc = RandomResizedCrop {
        size,
        scale: (0.5, 2.0),
        ratio: (3.0 / 4.0, 4.0 / 3.0),
    };
    let (w, h) = image.dimensions();
    let b = rrc.sample_params(w, h, &mut rng);
    let img = rrc.apply_with(&jitter.apply(image, &jp), b, Filter::Bilinear);
    (img, crop_resize_nearest(mask, b, size, size))
}

/// The validation transform of one pair: the image resized to `size × size` (bilinear, aspect
/// ratio not kept, as the paper), the mask likewise with nearest.
pub fn resize_pair(image: &RgbImage, mask: &GrayImage, size: u32) -> (RgbImage, GrayImage) {
    let img = if image.dimensions() == (size, size) {
        image.clone()
    } else {
        resize(image, size, size, Filter::Bilinear)
    };
    (img, resize_nearest(mask, size, size))
}

fn timed<T>(t: Instant, v: T) -> (T, f64) {
    (v, t.elapsed().as_secs_f64())
}

/// Runs HummingBird on image / mask files: the memory bank from `train` (augmented
/// `augmentation_epochs` times unless `augment` is off), the index, then every `val` pair;
/// `on_prediction` sees each validation image's prediction (e.g. to save it).
///
/// # Errors
/// Bad settings, unreadable or mismatched pairs (named), extraction errors, an empty split.
#[allow(clippy::too_many_arguments)]
pub fn evaluate<B: Backend>(
    featurizer: &dyn PatchFeaturizer,
    train: &SegSplit,
    val: &SegSplit,
    settings: &HummingbirdSettings,
    decode: &DecodeOptions,
    device: &B::Device,
    progress: Option<Progress<'_>>,
    mut on_prediction: Option<OnPrediction<'_>>,
) -> Result<Report> {
    settings.validate()?;
    for (split, what) in [(train, "the training split"), (val, "the validation split")] {
        if split.items.is_empty() {
            return Err(HummingbirdError::Empty { what: what.into() });
        }
    }
    let s = settings;
    let size = featurizer.image_size();
    let grid = featurizer.grid();
    let patch = size as usize / grid.0.max(1);
    let bs = featurizer.batch_size().max(1);
    let n_train = train.items.len();
    let total = n_train * s.augmentation_epochs;
    let per_image = MemoryBank::per_image_for(s.memory_size, total);
    check_k(s.k, per_image, grid.0 * grid.1, total)?;
    let mut bank = MemoryBank::new(featurizer.dim(), s.num_classes, per_image, s.seed);
    let report = |ph: Phase, d: usize, t: usize| {
        if let Some(f) = progress {
            f(ph, d, t)
        }
    };
    let t0 = Instant::now();
    let keys: Vec<u64> = (0..total as u64).collect();
    for batch in keys.chunks(bs) {
        let (imgs, masks): (Vec<RgbImage>, Vec<GrayImage>) = batch
            .par_iter()
            .map(|&key| {
                let item = &train.items[key as usize % n_train];
                let (img, mask) = data::load_pair(item, s.num_classes, decode)?;
                Ok(if s.augment {
                    augment_pair(&img, &mask, size, s.seed, key)
                } else {
                    resize_pair(&img, &mask, size)
                })
            })
            .collect::<Result<Vec<_>>>()?
            .into_iter()
            .unzip();
        let feats = featurizer.features(&imgs, batch)?;
        let per = feats.len() / batch.len();
        for ((key, mask), f) in batch.iter().zip(&masks).zip(feats.chunks(per)) {
            let labels = patch_labels(
                mask.as_raw(),
                size as usize,
                size as usize,
                patch,
                s.num_classes,
            )?;
            bank.add(*key, f, &labels)?;
        }
        report(Phase::Memory, batch[batch.len() - 1] as usize + 1, total);
    }
    let (_, t_mem) = timed(t0, ());
    report(Phase::Index, 0, 1);
    let t1 = Instant::now();
    let index = LabelIndex::<B>::build(bank, s.index, s.exact_max_bytes, s.hnsw, device)?;
    let (_, t_index) = timed(t1, ());
    report(Phase::Index, 1, 1);
    let t2 = Instant::now();
    let mut scorer = Scorer::new(&index, s);
    let n_val = val.items.len();
    for start in (0..n_val).step_by(bs) {
        let end = (start + bs).min(n_val);
        let pairs: Vec<(RgbImage, GrayImage)> = val.items[start..end]
            .par_iter()
            .map(|item| data::load_pair(item, s.num_classes, decode))
            .collect::<Result<_>>()?;
        let (imgs, truths): (Vec<RgbImage>, Vec<GrayImage>) = pairs
            .par_iter()
            .map(|(i, m)| resize_pair(i, m, size))
            .collect::<Vec<_>>()
            .into_iter()
            .unzip();
        let keys: Vec<u64> = (start..end).map(|j| VAL_KEY_OFFSET + j as u64).collect();
        let feats = featurizer.features(&imgs, &keys)?;
        let per = feats.len() / keys.len();
        for (j, (f, truth)) in feats.chunks(per).zip(&truths).enumerate() {
            let pred = scorer.image(f, grid, truth)?;
            if let Some(cb) = on_prediction.as_mut() {
                let (img, mask) = &pairs[j];
                let (w, h) = img.dimensions();
                let pred = GrayImage::from_raw(size, size, pred).ok_or_else(|| {
                    HummingbirdError::Shape {
                        what: "a prediction".into(),
                        expected: format!("{size}x{size} pixels"),
                        found: "another size".into(),
                    }
                })?;
                cb(Prediction {
                    item: &val.items[start + j],
                    image: img,
                    truth: mask,
                    prediction: &resize_nearest(&pred, w, h),
                })?;
            }
        }
        report(Phase::Evaluate, end, n_val);
    }
    let (_, t_eval) = timed(t2, ());
    scorer.report(
        featurizer.name(),
        n_train,
        per_image,
        [t_mem, t_index, t_eval],
    )
}

/// One split of features computed elsewhere: `features` `[N, gh·gw, D]` and class-id masks
/// `[N, H, W]` with `H = gh·p`, `W = gw·p` for a patch of `p × p` pixels.
#[derive(Debug, Clone, Copy)]
pub struct FeatureSplit<'a> {
    /// Patch features, row-major `[N, P, D]`.
    pub features: &'a [f32],
    /// Masks, row-major `[N, H, W]`.
    pub masks: &'a [u8],
    /// Images `N`.
    pub images: usize,
    /// Mask height and width `(H, W)`.
    pub mask_size: (usize, usize),
}

/// HummingBird on given features (the memory from `train`, predictions for `val`) on a patch
/// grid `grid`: each `val` mask is predicted at its own size.
///
/// # Errors
/// Bad settings; sizes that do not agree (named); a mask size that is not a multiple of the
/// grid; a class id past the classes; non-finite features.
pub fn evaluate_features<B: Backend>(
    train: FeatureSplit<'_>,
    val: FeatureSplit<'_>,
    grid: (usize, usize),
    dim: usize,
    settings: &HummingbirdSettings,
    device: &B::Device,
) -> Result<(Report, Vec<u8>)> {
    settings.validate()?;
    let s = settings;
    let p = grid.0 * grid.1;
    if dim == 0 {
        return Err(HummingbirdError::Shape {
            what: "features".into(),
            expected: "at least 1 value per patch".into(),
            found: "0".into(),
        });
    }
    for (sp, name) in [(&train, "train"), (&val, "val")] {
        if sp.images == 0 {
            return Err(HummingbirdError::Empty {
                what: format!("{name} features"),
            });
        }
        let (h, w) = sp.mask_size;
        if sp.features.len() != sp.images * p * dim {
            return Err(HummingbirdError::Shape {
                what: format!("{name} features"),
                expected: format!("{} x {p} x {dim} values", sp.images),
                found: sp.features.len().to_string(),
            });
        }
        if sp.masks.len() != sp.images * h * w {
            return Err(HummingbirdError::Shape {
                what: format!("{name} masks"),
                expected: format!("{} x {h} x {w} values", sp.images),
                found: sp.masks.len().to_string(),
            });
        }
        if grid.0 == 0
            || grid.1 == 0
            || h < grid.0
            || w < grid.1
            || h % grid.0 != 0
            || w % grid.1 != 0
            || h / grid.0 != w / grid.1
        {
            return Err(HummingbirdError::Shape {
                what: format!("{name} masks"),
                expected: format!(
                    "a size of whole square patches over the {}x{} grid",
                    grid.0, grid.1
                ),
                found: format!("{h}x{w}"),
            });
        }
        if let Some(&id) = sp
            .masks
            .iter()
            .find(|&&v| v != IGNORE && v as usize >= s.num_classes)
        {
            return Err(HummingbirdError::ClassId {
                file: PathBuf::from(format!("{name} masks")),
                id,
                num_classes: s.num_classes,
            });
        }
    }
    let t0 = Instant::now();
    let per_image = MemoryBank::per_image_for(s.memory_size, train.images);
    check_k(s.k, per_image, p, train.images)?;
    let mut bank = MemoryBank::new(dim, s.num_classes, per_image, s.seed);
    let (h, w) = train.mask_size;
    for i in 0..train.images {
        let labels = patch_labels(
            &train.masks[i * h * w..(i + 1) * h * w],
            h,
            w,
            h / grid.0,
            s.num_classes,
        )?;
        bank.add(
            i as u64,
            &train.features[i * p * dim..(i + 1) * p * dim],
            &labels,
        )?;
    }
    let t_mem = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    let index = LabelIndex::<B>::build(bank, s.index, s.exact_max_bytes, s.hnsw, device)?;
    let t_index = t1.elapsed().as_secs_f64();
    let t2 = Instant::now();
    let mut scorer = Scorer::new(&index, s);
    let (vh, vw) = val.mask_size;
    let mut preds = Vec::with_capacity(val.masks.len());
    for j in 0..val.images {
        let truth = GrayImage::from_raw(
            vw as u32,
            vh as u32,
            val.masks[j * vh * vw..(j + 1) * vh * vw].to_vec(),
        )
        .ok_or_else(|| HummingbirdError::Shape {
            what: "val masks".into(),
            expected: format!("{vh}x{vw}"),
            found: "fewer pixels".into(),
        })?;
        preds.extend(scorer.image(&val.features[j * p * dim..(j + 1) * p * dim], grid, &truth)?);
    }
    let t_eval = t2.elapsed().as_secs_f64();
    Ok((
        scorer.report(
            "features",
            train.images,
            per_image,
            [t_mem, t_index, t_eval],
        )?,
        preds,
    ))
}
