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
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, Error>;
