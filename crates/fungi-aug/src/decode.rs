//! Decoding files to 8-bit RGB exactly like `PIL.Image.open(path).convert("RGB")`.

use std::io::Cursor;
use std::path::Path;

use image::{DynamicImage, ImageReader, RgbImage};

use crate::error::{Error, Result};

/// Decoder settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeOptions {
    /// Largest accepted width or height in pixels.
    pub max_side: u32,
    /// Largest accepted allocation in bytes for the decoded image.
    pub max_alloc: u64,
    /// Apply the EXIF orientation tag (PIL, torchvision and fungivision do NOT; default off).
    pub apply_exif_orientation: bool,
}

impl Default for DecodeOptions {
    fn default() -> Self {
        Self {
            max_side: 16_384,
            max_alloc: 1 << 30,
            apply_exif_orientation: false,
        }
    }
}

/// Decodes an image file to RGB.
///
/// Mode conversions follow Pillow's `convert("RGB")`: grey (L/LA) is replicated to the three
/// channels, alpha is dropped (not composited), palette images are expanded through the palette.
/// 16-bit and float images are reduced by the `image` crate (not PIL-exact, see docs/parity.md).
pub fn decode_rgb(path: impl AsRef<Path>, opts: &DecodeOptions) -> Result<RgbImage> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    decode_rgb_bytes(&bytes, path, opts)
}

/// Decodes in-memory bytes; `path` is only used in messages.
pub fn decode_rgb_bytes(bytes: &[u8], path: &Path, opts: &DecodeOptions) -> Result<RgbImage> {
    let derr = |reason: String| Error::Decode {
        path: path.to_path_buf(),
        reason,
    };
    let mut reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| derr(e.to_string()))?;
    if reader.format().is_none() {
        return Err(derr(
            "unknown or unsupported format (expected PNG, JPEG, WebP, BMP, TIFF or PNM)".into(),
        ));
    }
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(opts.max_side);
    limits.max_image_height = Some(opts.max_side);
    limits.max_alloc = Some(opts.max_alloc);
    reader.limits(limits);
    let mut decoder = reader.into_decoder().map_err(|e| classify(e, path))?;
    let orientation = if opts.apply_exif_orientation {
        use image::ImageDecoder;
        decoder.orientation().ok()
    } else {
        None
    };
    let mut img = DynamicImage::from_decoder(decoder).map_err(|e| classify(e, path))?;
    if let Some(o) = orientation {
        img.apply_orientation(o);
    }
    if img.width() == 0 || img.height() == 0 {
        return Err(Error::Empty {
            path: path.to_path_buf(),
            width: img.width(),
            height: img.height(),
        });
    }
    Ok(to_rgb(img))
}

fn classify(e: image::ImageError, path: &Path) -> Error {
    match e {
        image::ImageError::Limits(l) => Error::TooLarge {
            path: path.to_path_buf(),
            reason: l.to_string(),
        },
        other => Error::Decode {
            path: path.to_path_buf(),
            reason: other.to_string(),
        },
    }
}

/// PIL `convert("RGB")` for 8-bit modes: replicate grey, drop alpha.
fn to_rgb(img: DynamicImage) -> RgbImage {
    match img {
        DynamicImage::ImageRgb8(i) => i,
        DynamicImage::ImageRgba8(i) => {
            let (w, h) = i.dimensions();
            let data = i
                .into_raw()
                .chunks_exact(4)
                .flat_map(|p| [p[0], p[1], p[2]])
                .collect();
            RgbImage::from_raw(w, h, data).expect("sizes agree")
        }
        DynamicImage::ImageLuma8(i) => {
            let (w, h) = i.dimensions();
            let data = i.into_raw().into_iter().flat_map(|v| [v, v, v]).collect();
            RgbImage::from_raw(w, h, data).expect("sizes agree")
        }
        DynamicImage::ImageLumaA8(i) => {
            let (w, h) = i.dimensions();
            let data = i
                .into_raw()
                .chunks_exact(2)
                .flat_map(|p| [p[0], p[0], p[0]])
                .collect();
            RgbImage::from_raw(w, h, data).expect("sizes agree")
        }
        other => other.to_rgb8(),
    }
}
