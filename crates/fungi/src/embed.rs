//! [`Embedder`]: CLS embeddings of images (the backbone's `model(x)`), through the same pipeline
//! as the FUNGI features ([`crate::pipeline`]): parallel decoding ahead of the compute, the
//! unreadable-image policy, rows handed to a sink.

use burn::prelude::*;
use fungi_aug::normalize::{to_chw_normalized_with, ScaleFormula};
use fungi_aug::transforms::EvalTransform;
use fungi_aug::RgbImage;
use fungi_backbone::{Vit, VitOps};
use fungi_core::{Error, Result};
use rayon::prelude::*;

use crate::dataset::ImageSource;
use crate::pipeline::{run, Rows, Stream};

/// Which input transform to use (`fungi embed --transform`), resolved against an architecture
/// by [`InputTransform::choose`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum InputChoice {
    /// The model's own eval transform (timm `pretrained_cfg`, torchvision weights transforms,
    /// a transformers image processor's `preprocessor`): resize, center crop, its mean / std.
    /// The default when the arch has one.
    Model,
    /// DINO / fungivision eval: short side 256 (PIL bicubic), center crop 224, ImageNet
    /// normalisation. The default for archs without a transform of their own.
    Eval,
    /// The image as is (normalised with the model's mean / std, ImageNet's when it has none);
    /// images of equal size are batched together.
    None,
}

/// How images become network inputs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum InputTransform {
    /// An eval transform (resize, center crop, normalise): every input `crop x crop`.
    Eval(EvalTransform),
    /// The image as it is, normalised with these statistics: any size the model accepts
    /// (consecutive images of equal size go through one forward pass).
    AsIs {
        /// Channel means.
        mean: [f32; 3],
        /// Channel standard deviations.
        std: [f32; 3],
    },
}

impl InputTransform {
    /// The transform `choice` names for an architecture whose own eval transform is `model`
    /// (default choice: [`InputChoice::Model`] when it has one, else [`InputChoice::Eval`]).
    ///
    /// # Errors
    /// [`InputChoice::Model`] for an architecture without a transform of its own (`arch`
    /// names it in the message).
    pub fn choose(
        choice: Option<InputChoice>,
        model: Option<&EvalTransform>,
        arch: &str,
    ) -> Result<Self> {
        let choice = choice.unwrap_or(if model.is_some() {
            InputChoice::Model
        } else {
            InputChoice::Eval
        });
        let eval = match (choice, model) {
            (InputChoice::Model, None) => {
                return Err(Error::Config {
                    key: "transform".into(),
                    value: "model".into(),
                    expected: format!(
                        "an architecture with an eval transform of its own (a timm \
                         `pretrained_cfg`, torchvision `transforms` or Hugging Face \
                         `preprocessor` in its JSON); {arch} has none: use eval"
                    ),
                })
            }
            (InputChoice::Model | InputChoice::None, Some(t)) => *t,
            _ => EvalTransform::default(),
        };
        Ok(match choice {
            InputChoice::None => InputTransform::AsIs {
                mean: eval.mean,
                std: eval.std,
            },
            InputChoice::Eval | InputChoice::Model => InputTransform::Eval(eval),
        })
    }
}

/// Embeds images with a backbone (no objective, no gradient).
#[derive(Debug)]
pub struct Embedder<B: VitOps> {
    vit: Vit<B>,
    input: InputTransform,
}

/// A source whose images are refused when the model cannot take them as they are
/// ([`InputTransform::AsIs`]), so that the refusal follows the stream's policy.
struct Checked<'a, S: ?Sized, B: VitOps> {
    inner: &'a S,
    vit: &'a Vit<B>,
}

impl<S: ImageSource + ?Sized, B: VitOps> ImageSource for Checked<'_, S, B> {
    fn len(&self) -> usize {
        self.inner.len()
    }
    fn image(&self, i: usize) -> Result<RgbImage> {
        let img = self.inner.image(i)?;
        self.vit
            .check_input(img.height() as usize, img.width() as usize)
            .map_err(|e| Error::InFile {
                path: self.inner.name(i).into(),
                inner: Box::new(e.into()),
            })?;
        Ok(img)
    }
    fn label(&self, i: usize) -> Option<i64> {
        self.inner.label(i)
    }
    fn name(&self, i: usize) -> String {
        self.inner.name(i)
    }
}

impl<B: VitOps> Embedder<B> {
    /// An embedder of `vit` with `input`.
    pub fn new(vit: Vit<B>, input: InputTransform) -> Self {
        Self { vit, input }
    }

    /// Embedding width.
    pub fn dim(&self) -> usize {
        self.vit.out_dim()
    }

    /// Runs `stream` over `source`, handing each batch's `[rows, dim]` embeddings (not
    /// normalised) to `sink`, as [`crate::Fungi::stream`] does for features.
    ///
    /// # Errors
    /// As [`crate::Fungi::stream`]; an image the model cannot take as it is
    /// ([`InputTransform::AsIs`]) is an unreadable image for the policy; a non-finite
    /// embedding is [`Error::NonFinite`] (block `embedding`) with the image's global index.
    pub fn stream<S: ImageSource + ?Sized>(
        &self,
        source: &S,
        stream: Stream<'_>,
        sink: impl FnMut(Rows) -> Result<()>,
    ) -> Result<()> {
        let compute =
            |imgs: &[RgbImage], idx: &[u64], _: Option<Result<()>>| self.embed_batch(imgs, idx);
        match self.input {
            InputTransform::Eval(_) => run(source, stream, None, compute, sink),
            InputTransform::AsIs { .. } => {
                let checked = Checked {
                    inner: source,
                    vit: &self.vit,
                };
                run(&checked, stream, None, compute, sink)
            }
        }
    }

    /// The embeddings of one batch (global indices name a non-finite one).
    fn embed_batch(&self, imgs: &[RgbImage], idx: &[u64]) -> Result<Vec<f32>> {
        let device = self.vit.device();
        let forward = |data: Vec<f32>, n: usize, h: usize, w: usize| -> Result<Vec<f32>> {
            let x = Tensor::<B, 4>::from_data(TensorData::new(data, [n, 3, h, w]), &device);
            self.vit
                .forward(x)
                .into_data()
                .convert::<f32>()
                .into_vec::<f32>()
                .map_err(|e| Error::ReadBack {
                    what: "embeddings".into(),
                    reason: format!("{e:?}"),
                })
        };
        let rows = match self.input {
            InputTransform::Eval(t) => {
                let c = t.crop as usize;
                let data: Vec<f32> = imgs.par_iter().flat_map_iter(|im| t.apply(im)).collect();
                forward(data, imgs.len(), c, c)?
            }
            InputTransform::AsIs { mean, std } => {
                let mut rows = Vec::new();
                let mut start = 0;
                while start < imgs.len() {
                    let hw = (imgs[start].height(), imgs[start].width());
                    let end = (start..imgs.len())
                        .find(|&j| (imgs[j].height(), imgs[j].width()) != hw)
                        .unwrap_or(imgs.len());
                    let data: Vec<f32> = imgs[start..end]
                        .par_iter()
                        .flat_map_iter(|im| {
                            to_chw_normalized_with(im, ScaleFormula::Divide, mean, std)
                        })
                        .collect();
                    rows.extend(forward(data, end - start, hw.0 as usize, hw.1 as usize)?);
                    start = end;
                }
                rows
            }
        };
        let e = self.dim();
        if let Some(p) = rows.iter().position(|v| !v.is_finite()) {
            return Err(Error::NonFinite {
                objective: "embedding".into(),
                index: idx[p / e.max(1)],
                value: rows[p],
            });
        }
        Ok(rows)
    }
}
