//! Errors of the image pipeline.

use std::path::PathBuf;

/// Errors raised while decoding or transforming an image. Every decoding error names the file.
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
        /// What is wrong with it.
        reason: DecodeError,
    },
    /// More pixels than twice [`DecodeOptions::max_image_pixels`](crate::DecodeOptions): refused
    /// from the header, before any allocation, like PIL's `DecompressionBombError`.
    #[error(
        "image {path} is too large: {width}x{height} = {pixels} pixels exceeds the limit of \
         {limit} pixels (2 x DecodeOptions::max_image_pixels, as PIL's DecompressionBombError); \
         it could be a decompression bomb. If the file is trusted, raise max_image_pixels or set \
         it to None (PIL: Image.MAX_IMAGE_PIXELS = None)"
    )]
    TooLarge {
        /// File.
        path: PathBuf,
        /// Width from the header.
        width: u32,
        /// Height from the header.
        height: u32,
        /// `width * height`.
        pixels: u64,
        /// The limit exceeded: `2 * max_image_pixels`.
        limit: u64,
    },
    /// A memory or size limit other than the pixel count was exceeded (refused before the
    /// decoded buffer is allocated).
    #[error("image {path} is too large: {limit}")]
    LimitExceeded {
        /// File.
        path: PathBuf,
        /// Which limit.
        limit: Limit,
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

/// Why a file could not be decoded ([`Error::Decode`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The data ends before the image is complete (PIL: `OSError: image file is truncated`).
    #[error("image file is truncated ({size} bytes; expected {expected})")]
    Truncated {
        /// Size of the file in bytes.
        size: u64,
        /// What was missing.
        expected: &'static str,
    },
    /// A PNG palette whose length is not a multiple of 3 (invalid per the PNG specification).
    /// Refused before decoding: the `png` crate (0.18.1) panics on it (docs/fuzzing.md).
    #[error(
        "the PNG palette (PLTE chunk) has {len} bytes, not a whole number of RGB entries \
         (expected a multiple of 3, at most 768)"
    )]
    InvalidPalette {
        /// Length of the PLTE chunk's data.
        len: u32,
    },
    /// A codec panicked on the data (a bug in that codec, turned into an error by the last-resort
    /// guard of [`decode_rgb_bytes`](crate::decode_rgb_bytes); absent with feature `fuzzing`).
    #[error("the decoder panicked on this file (a codec bug; please report it): {message}")]
    CodecPanic {
        /// The panic message.
        message: String,
    },
    /// The format is not recognised from the content.
    #[error("unknown or unsupported format (expected PNG, JPEG, WebP, BMP, TIFF or PNM)")]
    UnknownFormat,
    /// The codec refused the data; its message.
    #[error("{0}")]
    Codec(String),
}

/// The limit behind [`Error::LimitExceeded`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Limit {
    /// The decoded buffer would exceed [`DecodeOptions::max_alloc`](crate::DecodeOptions).
    #[error(
        "{width}x{height} needs {bytes} bytes decoded, more than DecodeOptions::max_alloc = \
         {max_alloc} bytes; raise max_alloc if the file is trusted"
    )]
    Alloc {
        /// Width from the header.
        width: u32,
        /// Height from the header.
        height: u32,
        /// Bytes the decoded buffer needs.
        bytes: u64,
        /// The limit.
        max_alloc: u64,
    },
    /// A side exceeds [`DecodeOptions::max_side`](crate::DecodeOptions).
    #[error("{width}x{height} has a side longer than DecodeOptions::max_side = {max_side} pixels")]
    Side {
        /// Width from the header.
        width: u32,
        /// Height from the header.
        height: u32,
        /// The limit.
        max_side: u32,
    },
    /// The codec's own allocation limit (derived from `max_alloc`) refused the file.
    #[error("{message} (DecodeOptions::max_alloc = {max_alloc} bytes)")]
    Codec {
        /// The codec's message.
        message: String,
        /// The limit given to the codec.
        max_alloc: u64,
    },
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, Error>;
