//! Errors of the engine and the extractor.

use std::path::PathBuf;

/// Errors raised by `fungi-core`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Backbone (weights, config, layer path) error.
    #[error(transparent)]
    Backbone(#[from] fungi_backbone::Error),
    /// Image decoding / transform error.
    #[error(transparent)]
    Image(#[from] fungi_aug::Error),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// File.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A projection or state file is malformed.
    #[error("{path}: {reason}")]
    Format {
        /// File.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A state / projection does not fit the model or the configuration.
    #[error("{what}: expected {expected}, found {found}")]
    Mismatch {
        /// What was compared (a tensor name, a config field).
        what: String,
        /// Expected value.
        expected: String,
        /// Found value.
        found: String,
    },
    /// An invalid configuration value.
    #[error("invalid configuration: `{key}` = {value}: {expected}")]
    Config {
        /// Offending key.
        key: String,
        /// Offending value.
        value: String,
        /// What was expected.
        expected: String,
    },
    /// Inputs that do not fit together (lengths, sizes).
    #[error("{0}")]
    Input(String),
    /// A size that cannot fit in memory, found before anything is allocated.
    #[error("{what} would need {needed} of memory but {available} is available: {hint}")]
    Memory {
        /// What needs the memory.
        what: String,
        /// Bytes needed, as text.
        needed: String,
        /// Bytes available, as text.
        available: String,
        /// How to need less.
        hint: String,
    },
    /// An output value that is NaN or infinite: never written.
    #[error("objective `{objective}` produced a non-finite feature ({value}) for image {index} (dataset index): refusing to write NaN/Inf; check the weights, the state and the image")]
    NonFinite {
        /// Block (`embedding` or the objective's name).
        objective: String,
        /// Global (dataset) index of the image.
        index: u64,
        /// The first non-finite value.
        value: f32,
    },
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, Error>;
