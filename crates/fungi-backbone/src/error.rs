//! Errors of the backbone crate.

use std::path::PathBuf;

/// One way in which a weights file disagrees with the architecture.
#[derive(Debug, Clone, PartialEq)]
pub enum KeyProblem {
    /// The architecture needs this parameter but the file does not have it.
    Missing {
        /// State-dict key.
        key: String,
        /// Shape the architecture expects.
        expected: Vec<usize>,
    },
    /// The file has a tensor the architecture does not know.
    Unexpected {
        /// State-dict key.
        key: String,
        /// Shape found in the file.
        found: Vec<usize>,
    },
    /// Shapes differ.
    Shape {
        /// State-dict key.
        key: String,
        /// Shape the architecture expects.
        expected: Vec<usize>,
        /// Shape found in the file.
        found: Vec<usize>,
    },
    /// The tensor is not floating point (or a float type we cannot read).
    DType {
        /// State-dict key.
        key: String,
        /// Data type found in the file.
        found: String,
    },
    /// The tensor holds NaN or infinite values (features would be NaN).
    NonFinite {
        /// State-dict key.
        key: String,
        /// How many values are not finite.
        count: usize,
        /// Flat index of the first one.
        first: usize,
        /// That value.
        value: f32,
    },
}

impl KeyProblem {
    /// The problem with its key renamed by `f` (model names back to the checkpoint's). An
    /// unexpected key is the file's own name already and is kept.
    pub fn renamed(self, f: impl Fn(&str) -> String) -> Self {
        match self {
            KeyProblem::Missing { key, expected } => KeyProblem::Missing {
                key: f(&key),
                expected,
            },
            KeyProblem::Shape {
                key,
                expected,
                found,
            } => KeyProblem::Shape {
                key: f(&key),
                expected,
                found,
            },
            KeyProblem::DType { key, found } => KeyProblem::DType {
                key: f(&key),
                found,
            },
            KeyProblem::NonFinite {
                key,
                count,
                first,
                value,
            } => KeyProblem::NonFinite {
                key: f(&key),
                count,
                first,
                value,
            },
            p @ KeyProblem::Unexpected { .. } => p,
        }
    }
}

impl std::fmt::Display for KeyProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyProblem::Missing { key, expected } => {
                write!(f, "missing key `{key}` (expected shape {expected:?})")
            }
            KeyProblem::Unexpected { key, found } => write!(
                f,
                "unexpected key `{key}` (shape {found:?}): the architecture has no such parameter"
            ),
            KeyProblem::Shape {
                key,
                expected,
                found,
            } => write!(
                f,
                "key `{key}`: expected shape {expected:?}, found {found:?}"
            ),
            KeyProblem::DType { key, found } => write!(
                f,
                "key `{key}`: dtype {found} is not supported (expected F32, F16, BF16 or F64)"
            ),
            KeyProblem::NonFinite {
                key,
                count,
                first,
                value,
            } => write!(
                f,
                "key `{key}`: {count} non-finite value(s), the first ({value}) at flat index {first} (expected finite weights)"
            ),
        }
    }
}

/// Errors raised while reading weights or architecture configs.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// File.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a valid weights file of the given format (truncated, corrupt, wrong kind).
    #[error("{path}: not a valid {format} file: {reason}")]
    Format {
        /// File.
        path: PathBuf,
        /// Format that was tried (`safetensors`, `PyTorch .pth`).
        format: &'static str,
        /// What went wrong.
        reason: String,
    },
    /// The file extension does not name a supported weights format.
    #[error("{path}: unsupported weights format (expected a .pth/.pt PyTorch state dict, a .safetensors file or an exported .onnx model)")]
    UnsupportedFormat {
        /// File.
        path: PathBuf,
    },
    /// The weights do not fit the architecture.
    #[error("{path}: weights do not match the architecture ({} problem(s)):\n  {}", problems.len(),
        problems.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("\n  "))]
    Mismatch {
        /// File.
        path: PathBuf,
        /// Every disagreement found (all of them, not only the first).
        problems: Vec<KeyProblem>,
    },
    /// No key of the checkpoint starts with the config's `state_dict_prefix`.
    #[error("{}: no key starts with state_dict_prefix `{prefix}`; the file's keys start with: {}", path.display(), found.join(", "))]
    PrefixNotFound {
        /// File.
        path: PathBuf,
        /// The prefix asked for.
        prefix: String,
        /// The distinct first two dotted segments of the file's keys (at most 20).
        found: Vec<String>,
    },
    /// An architecture config is invalid.
    #[error("invalid architecture config{}: `{key}` = {value}: {expected}",
        source_name.as_ref().map(|s| format!(" {s}")).unwrap_or_default())]
    Config {
        /// Config file or preset name, when known.
        source_name: Option<String>,
        /// Offending key.
        key: String,
        /// Offending value as text.
        value: String,
        /// What was expected.
        expected: String,
    },
    /// An architecture too large for the memory of this machine.
    #[error("architecture config{}: {what} would need {needed} of memory but {available} is available", source_name.as_ref().map(|s| format!(" {s}")).unwrap_or_default())]
    TooLarge {
        /// Config file or preset name, when known.
        source_name: Option<String>,
        /// What is too large (with the settings that make it so).
        what: String,
        /// Bytes needed, as text.
        needed: String,
        /// Bytes available, as text.
        available: String,
    },
    /// A precision the backend cannot store.
    #[error("precision {precision} is not available on the {backend} backend (it has no {precision} tensors); use f32")]
    UnsupportedPrecision {
        /// The requested precision (`bf16`, `f16`).
        precision: String,
        /// The backend's name.
        backend: String,
    },
    /// An architecture config file could not be parsed.
    #[error("cannot parse architecture config {path}: {reason}")]
    ConfigParse {
        /// File.
        path: PathBuf,
        /// Parser message.
        reason: String,
    },
    /// Unknown preset name.
    #[error("unknown architecture `{name}`: expected a JSON config file or one of {}", crate::presets::names().join(", "))]
    UnknownPreset {
        /// The name given.
        name: String,
    },
    /// A target-layer path that the model does not have.
    #[error("unknown layer `{path}`: valid layer paths are blocks.N.attn.qkv, blocks.N.attn.proj, blocks.N.mlp.fc1, blocks.N.mlp.fc2 with N from 0 to {} (e.g. `blocks.{}.attn.proj`){}", depth.saturating_sub(1), depth.saturating_sub(1), layout_names(*layout, *depth))]
    UnknownLayer {
        /// The path given.
        path: String,
        /// Number of blocks of the model.
        depth: usize,
        /// The checkpoint layout (its own names are valid too).
        layout: crate::family::Layout,
    },
    /// A target layer this model cannot tap as asked: a block index past its depth, or the
    /// CLS-only path where it is not valid.
    #[error("target layer {target}: {reason}")]
    InvalidTarget {
        /// The target (`blocks.N.site`).
        target: String,
        /// What is wrong and what is valid.
        reason: String,
    },
    /// The input image size does not fit the patch size.
    #[error("input of {height}x{width} pixels is not a multiple of the patch size {patch_size}")]
    InputSize {
        /// Input height.
        height: usize,
        /// Input width.
        width: usize,
        /// Patch size.
        patch_size: usize,
    },
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, Error>;

/// The valid target names of a checkpoint layout, for [`Error::UnknownLayer`].
fn layout_names(layout: crate::family::Layout, depth: usize) -> String {
    use crate::target::{Site, TargetLayer};
    if matches!(
        layout,
        crate::family::Layout::Dino | crate::family::Layout::Timm
    ) || depth == 0
    {
        return String::new();
    }
    let block = depth - 1;
    let names: Vec<String> = [Site::Qkv, Site::Proj, Site::Fc1, Site::Fc2]
        .into_iter()
        .map(|site| crate::keys::target_name(layout, TargetLayer { block, site }))
        .collect();
    format!(
        ", or as the {} checkpoint names them: {}",
        layout.name(),
        names.join(", ")
    )
}
