//! Which eval transform feeds the embedding block: fungivision's (DINO's) or the backbone's own.

use fungi_aug::transforms::EvalTransform;
use fungi_backbone::VitConfig;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The eval transform of the embedding block (and of [`crate::FungiExtractor::embeddings`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "snake_case")]
pub enum EmbeddingTransform {
    /// The model's own transform when the architecture carries one (timm `pretrained_cfg`,
    /// torchvision weights transforms, a transformers image processor), fungivision's otherwise.
    #[default]
    Auto,
    /// fungivision's: resize 256 (PIL bicubic), center crop 224, ImageNet mean / std.
    Eval,
    /// The architecture's own transform (an error when it carries none).
    Model,
}

impl EmbeddingTransform {
    /// Whether this is [`EmbeddingTransform::Auto`] (left out of serialised settings, so
    /// states of runs made before the choice existed stay byte-identical).
    pub fn is_auto(&self) -> bool {
        *self == EmbeddingTransform::Auto
    }

    /// The transform this choice means for `arch`.
    ///
    /// # Errors
    /// [`EmbeddingTransform::Model`] for an architecture without a transform of its own.
    pub fn resolve(self, arch: &VitConfig) -> Result<EvalTransform> {
        match (self, &arch.transform) {
            (EmbeddingTransform::Eval, _) | (EmbeddingTransform::Auto, None) => {
                Ok(EvalTransform::default())
            }
            (_, Some(t)) => Ok(*t),
            (EmbeddingTransform::Model, None) => Err(Error::Config {
                key: "transform".into(),
                value: "model".into(),
                expected: format!(
                    "`eval` for this {} architecture: it carries no eval transform of its own \
                     (a timm `pretrained_cfg`, torchvision `transforms` or Hugging Face `preprocessor` in the arch JSON)",
                    arch.layout.name()
                ),
            }),
        }
    }
}
