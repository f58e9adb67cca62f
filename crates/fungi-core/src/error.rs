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
    /// An invalid value in a file (a configuration file), naming the file.
    #[error("{path}: {inner}")]
    InFile {
        /// File (or `<string>`).
        path: PathBuf,
        /// What is wrong (shown in this error's message, not as its source).
        inner: Box<Error>,
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
    /// Inputs that do not fit together, for objectives written outside this workspace (the
    /// workspace's own code uses the typed variants).
    #[error("{0}")]
    Input(String),
    /// An objective used before it has what its setup makes.
    #[error("objective `{objective}` has no {missing}: run setup on the training set or load a state file first")]
    NotReady {
        /// The objective.
        objective: String,
        /// What it lacks (`negatives`, `prototypes`).
        missing: String,
    },
    /// A setup that found no training image to use.
    #[error("{objective} setup: {}", if *listed == 0 { "the training set is empty".to_string() } else { format!("none of the {listed} training images could be read") })]
    NoTrainingImages {
        /// The objective.
        objective: String,
        /// Images in the training set.
        listed: usize,
    },
    /// The loss does not depend on the target layer's output.
    #[error("the loss does not depend on the target layer's output (no gradient reached it)")]
    NoGradient,
    /// A device tensor could not be read back to the host.
    #[error("reading {what} back to the host: {reason}")]
    ReadBack {
        /// What was read.
        what: String,
        /// The backend's message.
        reason: String,
    },
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
