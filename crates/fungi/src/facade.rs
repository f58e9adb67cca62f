//! [`Fungi`]: the one-stop API (fungivision's `FUNGIWrapper`, in Rust).
//!
//! ```no_run
//! # fn main() -> fungi::core::Result<()> {
//! use burn::backend::{Autodiff, Flex};
//! use fungi::{Fungi, Preset};
//! let images: Vec<fungi::aug::RgbImage> = vec![/* decoded images */];
//! let fungi = Fungi::<Autodiff<Flex>>::builder(&Default::default())
//!     .arch_and_weights("dino_vits16", "dino_deitsmall16_pretrain.pth")
//!     .preset(Preset::Fungivision)
//!     .build()?            // -> Unprepared: SimCLR needs its negatives
//!     .setup(&images)?;    // or .load_state("state.safetensors")?
//! let features = fungi.extract(&images)?;   // [N, D] plus the block layout
//! # Ok(()) }
//! ```
//!
//! The types enforce the order: only a ready [`Fungi`] extracts. [`FungiBuilder::build`]
//! returns an [`Unprepared`] extractor, which becomes ready through [`Unprepared::setup`] on a
//! training set, [`Unprepared::load_state`], or [`Unprepared::ready`] when no objective needs a
//! setup (an error naming the objective otherwise) — never a panic mid-run.

use std::path::{Path, PathBuf};

use fungi_backbone::{AutodiffVitOps, Precision, Vit, VitConfig};
use fungi_core::extractor::{ProgressFn, SkipFn};
use fungi_core::{Error, FungiExtractor, FungiExtractorBuilder, Objective, Residency, Result};

use crate::dataset::ImageSource;
pub use crate::features::{Block, Features};
use crate::{FungiConfig, ObjectiveConfig, Preset};

enum Backbone<B: AutodiffVitOps> {
    Model(Box<Vit<B>>),
    Files { arch: String, weights: PathBuf },
}

/// Builder of a [`Fungi`] (see the module docs): a [`FungiExtractorBuilder`] (which holds every
/// extractor setting) plus where the backbone comes from and the objectives as configurations.
/// Defaults: fungivision's three objectives, seed 0, batch 16, the embedding block first,
/// target `blocks.{depth-1}.attn.proj`, f32.
pub struct FungiBuilder<B: AutodiffVitOps> {
    device: B::Device,
    backbone: Option<Backbone<B>>,
    ex: FungiExtractorBuilder<B>,
    objectives: Vec<ObjectiveConfig>,
    /// Custom objectives, made from `(embed_dim, seed, device)` once the backbone is known.
    #[allow(clippy::type_complexity)]
    custom: Vec<Box<dyn FnOnce(usize, u64, &B::Device) -> Result<Box<dyn Objective<B>>>>>,
}

impl<B: AutodiffVitOps> FungiBuilder<B> {
    /// An already built backbone.
    pub fn backbone(mut self, vit: Vit<B>) -> Self {
        self.backbone = Some(Backbone::Model(Box::new(vit)));
        self
    }
    /// A backbone from an architecture (preset name or JSON file) and a weights file.
    pub fn arch_and_weights(mut self, arch: &str, weights: impl AsRef<Path>) -> Self {
        self.backbone = Some(Backbone::Files {
            arch: arch.to_string(),
            weights: weights.as_ref().to_path_buf(),
        });
        self
    }
    /// The whole configuration (objectives and extractor settings), e.g. from
    /// [`FungiConfig::from_file`].
    pub fn config(mut self, config: FungiConfig) -> Self {
        self.ex = self.ex.config(config.extractor);
        self.objectives = config.objectives;
        self
    }
    /// A preset's objectives.
    pub fn preset(mut self, p: Preset) -> Self {
        self.objectives = p.objectives();
        self
    }
    /// The objectives as configurations (the builder makes them with the backbone's embedding
    /// size, the seed and the device).
    pub fn objectives(mut self, objectives: Vec<ObjectiveConfig>) -> Self {
        self.objectives = objectives;
        self
    }
    /// Adds an objective of your own (an implementation of [`Objective`]) after the configured
    /// ones: `make(embed_dim, seed, device)` builds it once the backbone is known.
    ///
    /// ```no_run
    /// # use burn::backend::{Autodiff, Flex};
    /// # type B = Autodiff<Flex>;
    /// # fn my_objective(e: usize, seed: u64, d: &<B as burn::tensor::backend::BackendTypes>::Device)
    /// #     -> Box<dyn fungi::core::Objective<B>> { unimplemented!() }
    /// let builder = fungi::Fungi::<B>::builder(&Default::default())
    ///     .objectives(vec![])
    ///     .custom_objective(|e, seed, device| Ok(my_objective(e, seed, device)));
    /// ```
    pub fn custom_objective(
        mut self,
        make: impl FnOnce(usize, u64, &B::Device) -> Result<Box<dyn Objective<B>>> + 'static,
    ) -> Self {
        self.custom.push(Box::new(make));
        self
    }
    /// Any extractor setting ([`FungiExtractorBuilder`]'s: target layer, seed, batch size,
    /// embedding block, precision, projection residency, views per pass, prepare-ahead, ...).
    ///
    /// ```no_run
    /// # use burn::backend::{Autodiff, Flex};
    /// let b = fungi::Fungi::<Autodiff<Flex>>::builder(&Default::default())
    ///     .extractor(|x| x.seed(7).batch_size(32).target_layer("blocks.10.attn.proj"));
    /// ```
    pub fn extractor(
        mut self,
        set: impl FnOnce(FungiExtractorBuilder<B>) -> FungiExtractorBuilder<B>,
    ) -> Self {
        self.ex = set(self.ex);
        self
    }
    /// Target layer (`blocks.11.attn.proj`, ...): [`FungiExtractorBuilder::target_layer`].
    pub fn target_layer(self, path: &str) -> Self {
        self.extractor(|x| x.target_layer(path))
    }
    /// Master seed: [`FungiExtractorBuilder::seed`].
    pub fn seed(self, seed: u64) -> Self {
        self.extractor(|x| x.seed(seed))
    }
    /// Images per pass: [`FungiExtractorBuilder::batch_size`].
    pub fn batch_size(self, n: usize) -> Self {
        self.extractor(|x| x.batch_size(n))
    }
    /// Whether the embedding block comes first: [`FungiExtractorBuilder::include_embedding`].
    pub fn include_embedding(self, yes: bool) -> Self {
        self.extractor(|x| x.include_embedding(yes))
    }
    /// Precision of the prefix: [`FungiExtractorBuilder::precision`].
    pub fn precision(self, p: Precision) -> Self {
        self.extractor(|x| x.precision(p))
    }
    /// Where the projection lives: [`FungiExtractorBuilder::projection_residency`].
    pub fn projection_residency(self, r: Residency) -> Self {
        self.extractor(|x| x.projection_residency(r))
    }
    /// Views per prefix pass: [`FungiExtractorBuilder::views_per_pass`].
    pub fn views_per_pass(self, n: usize) -> Self {
        self.extractor(|x| x.views_per_pass(n))
    }
    /// Prepare-ahead: [`FungiExtractorBuilder::prepare_ahead`].
    pub fn prepare_ahead(self, on: bool) -> Self {
        self.extractor(|x| x.prepare_ahead(on))
    }

    /// Loads the backbone, validates everything and builds the objectives.
    ///
    /// # Errors
    /// A missing backbone, an unreadable weights file, an invalid setting (naming it).
    pub fn build(self) -> Result<Unprepared<B>> {
        let vit = match self.backbone {
            None => {
                return Err(Error::Config {
                    key: "backbone".into(),
                    value: "none".into(),
                    expected: "FungiBuilder::backbone(vit) or ::arch_and_weights(arch, weights)"
                        .into(),
                })
            }
            Some(Backbone::Model(v)) => *v,
            Some(Backbone::Files { arch, weights }) => {
                let cfg = VitConfig::from_preset_or_file(&arch)?;
                Vit::from_file(&cfg, &weights, &self.device)?
            }
        };
        if self.objectives.is_empty()
            && self.custom.is_empty()
            && !self.ex.settings().include_embedding
        {
            return Err(Error::Config {
                key: "objectives".into(),
                value: "[]".into(),
                expected: "at least one objective, or the embedding block".into(),
            });
        }
        for o in &self.objectives {
            o.validate()?;
        }
        let (e, seed) = (vit.out_dim(), self.ex.settings().seed);
        let mut b = self.ex.backbone(vit);
        for o in &self.objectives {
            b = b.objective(o.build::<B>(e, seed, &self.device)?);
        }
        for make in self.custom {
            b = b.objective(make(e, seed, &self.device)?);
        }
        Ok(Unprepared { ex: b.build()? })
    }
}

/// A built extractor whose objectives may still need their training-set setup (see the
/// module docs).
pub struct Unprepared<B: AutodiffVitOps> {
    ex: FungiExtractor<B>,
}

impl<B: AutodiffVitOps> Unprepared<B> {
    /// Runs every objective's setup on a training set (SimCLR's negatives, DeepCluster's
    /// k-means; nothing for KL and DINO).
    ///
    /// # Errors
    /// An unreadable image (naming it), an empty set, or a failing objective.
    pub fn setup(self, train: &(impl ImageSource + ?Sized)) -> Result<Fungi<B>> {
        self.setup_with(train, None, None)
    }
    /// [`Unprepared::setup`] with progress reports `(stage, done, total)` and, with `skip`, a
    /// policy for unreadable training images: each is reported to `skip` with its index and
    /// left out instead of failing the setup.
    ///
    /// # Errors
    /// As [`Unprepared::setup`]; with `skip`, only when no image at all is readable.
    pub fn setup_with(
        mut self,
        train: &(impl ImageSource + ?Sized),
        progress: Option<ProgressFn<'_>>,
        skip: Option<SkipFn<'_>>,
    ) -> Result<Fungi<B>> {
        let load = |i: usize| train.image(i);
        self.ex.setup_with(train.len(), &load, progress, skip)?;
        Ok(Fungi { ex: self.ex })
    }
    /// [`Unprepared::setup_with`] in place: on an error the extractor stays here, unprepared,
    /// for another try (a binding or a retry loop keeps its object); on success
    /// [`Unprepared::ready`] then succeeds.
    ///
    /// # Errors
    /// As [`Unprepared::setup_with`].
    pub fn setup_in_place(
        &mut self,
        train: &(impl ImageSource + ?Sized),
        progress: Option<ProgressFn<'_>>,
        skip: Option<SkipFn<'_>>,
    ) -> Result<()> {
        let load = |i: usize| train.image(i);
        self.ex.setup_with(train.len(), &load, progress, skip)
    }
    /// [`Unprepared::load_state`] in place: a refused state changes nothing.
    ///
    /// # Errors
    /// As [`Unprepared::load_state`].
    pub fn load_state_in_place(&mut self, path: impl AsRef<Path>) -> Result<()> {
        self.ex.load_state(path.as_ref())
    }
    /// Whether every objective is ready to extract (set up, restored, or needing neither);
    /// otherwise the error [`Unprepared::ready`] would give, naming the first that is not.
    ///
    /// # Errors
    /// Naming the first objective that needs `setup` or `load_state`.
    pub fn check_ready(&self) -> Result<()> {
        for o in self.ex.objectives() {
            o.ready()?;
        }
        Ok(())
    }
    /// Restores a state saved by [`Fungi::save_state`] (or `fungi extract --save-state`).
    ///
    /// # Errors
    /// As [`FungiExtractor::load_state`]: a state made for other settings or weights is
    /// refused, naming what differs.
    pub fn load_state(mut self, path: impl AsRef<Path>) -> Result<Fungi<B>> {
        self.ex.load_state(path.as_ref())?;
        Ok(Fungi { ex: self.ex })
    }
    /// [`Unprepared::load_state`] from the bytes of a state file (`name` names it in errors).
    ///
    /// # Errors
    /// As [`Unprepared::load_state`]; nothing is changed by a refused state.
    pub fn load_state_bytes(mut self, bytes: &[u8], name: impl AsRef<Path>) -> Result<Fungi<B>> {
        self.ex.load_state_bytes(bytes, name.as_ref())?;
        Ok(Fungi { ex: self.ex })
    }
    /// [`Fungi::embed`]: the embeddings need no setup.
    ///
    /// # Errors
    /// An unreadable image.
    pub fn embed(&self, images: &(impl ImageSource + ?Sized)) -> Result<Vec<f32>> {
        embed_images(&self.ex, images)
    }
    /// The extractor being prepared (settings, block layout, projection).
    pub fn extractor(&self) -> &FungiExtractor<B> {
        &self.ex
    }
    /// Ready without a setup, when no objective needs one.
    ///
    /// # Errors
    /// Naming the first objective that needs `setup` or `load_state`.
    pub fn ready(self) -> Result<Fungi<B>> {
        self.check_ready()?;
        Ok(Fungi { ex: self.ex })
    }
}

/// A ready FUNGI extractor (see the module docs).
pub struct Fungi<B: AutodiffVitOps> {
    ex: FungiExtractor<B>,
}

impl<B: AutodiffVitOps> Fungi<B> {
    /// Starts a builder for `device`.
    pub fn builder(device: &B::Device) -> FungiBuilder<B> {
        FungiBuilder {
            device: device.clone(),
            backbone: None,
            ex: FungiExtractorBuilder::new(),
            objectives: Preset::Fungivision.objectives(),
            custom: Vec::new(),
        }
    }

    /// The blocks of a feature row.
    pub fn blocks(&self) -> Vec<Block> {
        let mut offset = 0;
        self.ex
            .block_names()
            .into_iter()
            .zip(self.ex.block_dims())
            .map(|(name, dim)| {
                let b = Block { name, dim, offset };
                offset += dim;
                b
            })
            .collect()
    }
    /// Width of a feature row.
    pub fn feature_dim(&self) -> usize {
        self.ex.feature_dim()
    }

    /// FUNGI features of `images`; image `i` uses the random streams of dataset index `i`.
    ///
    /// # Errors
    /// An unreadable image, or a non-finite feature (naming the image and block).
    pub fn extract(&self, images: &(impl ImageSource + ?Sized)) -> Result<Features> {
        let idx: Vec<u64> = (0..images.len() as u64).collect();
        self.extract_at(images, &idx)
    }

    /// [`Fungi::extract`] with each image's dataset index given, so that a dataset processed
    /// in pieces gets the same features as in one call.
    ///
    /// # Errors
    /// As [`Fungi::extract`], and when the lengths differ.
    pub fn extract_at(
        &self,
        images: &(impl ImageSource + ?Sized),
        indices: &[u64],
    ) -> Result<Features> {
        if indices.len() != images.len() {
            return Err(Error::Mismatch {
                what: "dataset indices".into(),
                expected: format!("one per image ({})", images.len()),
                found: indices.len().to_string(),
            });
        }
        let mut data = Vec::with_capacity(images.len() * self.feature_dim());
        let stream =
            crate::Stream::all(images.len(), self.ex.config().batch_size).global_indices(indices);
        self.stream(images, stream, |rows| {
            data.extend(rows.features);
            Ok(())
        })?;
        let labels = (0..images.len()).map(|i| images.label(i)).collect();
        Ok(Features {
            data,
            rows: images.len(),
            blocks: self.blocks(),
            labels,
        })
    }

    /// CLS embeddings `[N, E]` (row-major) of the eval transform of `images`, not normalised
    /// (fungivision's `model(eval(image))`).
    ///
    /// # Errors
    /// An unreadable image.
    pub fn embed(&self, images: &(impl ImageSource + ?Sized)) -> Result<Vec<f32>> {
        embed_images(&self.ex, images)
    }

    /// Saves heads, negatives/prototypes, the projection and the settings, for
    /// [`Unprepared::load_state`] on another run (e.g. the test set).
    ///
    /// # Errors
    /// When the file cannot be written.
    pub fn save_state(&self, path: impl AsRef<Path>) -> Result<()> {
        self.ex.save_state(path.as_ref())
    }
    /// The bytes [`Fungi::save_state`] would write (`path` is recorded as the state's name).
    ///
    /// # Errors
    /// When the state cannot be serialised.
    pub fn state_bytes(&self, path: impl AsRef<Path>) -> Result<Vec<u8>> {
        self.ex.state_bytes(path.as_ref())
    }

    /// The underlying extractor (raw gradients, device tensors, per-objective access).
    pub fn extractor(&self) -> &FungiExtractor<B> {
        &self.ex
    }
    /// Back to [`Unprepared`], e.g. to run the setup again on another training set.
    pub fn into_unprepared(self) -> Unprepared<B> {
        Unprepared { ex: self.ex }
    }
}

/// CLS embeddings of the eval transform through the pipeline (decode ahead, in batches).
fn embed_images<B: AutodiffVitOps>(
    ex: &FungiExtractor<B>,
    images: &(impl ImageSource + ?Sized),
) -> Result<Vec<f32>> {
    let mut out = Vec::new();
    crate::pipeline::run(
        images,
        crate::Stream::all(images.len(), ex.config().batch_size),
        None,
        |imgs, _, _: Option<Result<()>>| ex.raw_embeddings(imgs),
        |rows| {
            out.extend(rows.features);
            Ok(())
        },
    )?;
    Ok(out)
}
