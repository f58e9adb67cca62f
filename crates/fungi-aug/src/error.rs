//! Errors of the image pipeline.

use std::path::PathBuf;

/// Errors raised while decoding or transforming an image.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be read.
    #[error("cannot read image {path}: {source}")]
    Io {
        /// File.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a decodable image (corrupt, truncated, unsupported format).
    #[error("cannot decode image {path}: {reason}")]
    Decode {
        /// File.
        path: PathBuf,
        /// Decoder message.
        reason: String,
    },
    /// The image is larger than the configured limits (decompression-bomb guard).
    #[error("image {path} is too large: {reason}")]
    TooLarge {
        /// File.
        path: PathBuf,
        /// What limit was exceeded.
        reason: String,
    },
    /// The image has no pixels.
    #[error("image {path} is empty ({width}x{height})")]
    Empty {
        /// File.
        path: PathBuf,
        /// Width.
        width: u32,
        /// Height.
        height: u32,
    },
    /// An invalid transform parameter.
    #[error("invalid transform parameter `{key}` = {value}: expected {expected}")]
    Config {
        /// Parameter name.
        key: String,
        /// Value given.
        value: String,
        /// What was expected.
        expected: String,
    },
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, Error>;
