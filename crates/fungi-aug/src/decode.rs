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
    #[cfg(feature = "turbojpeg")]
    if reader.format() == Some(image::ImageFormat::Jpeg) {
        return turbo::decode(bytes, path, opts);
    }
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

fn from_fn16(
    w: u32,
    h: u32,
    data: &[u16],
    channels: usize,
    f: impl Fn(&[u16]) -> [u8; 3],
) -> RgbImage {
    let out = data.chunks_exact(channels).flat_map(f).collect();
    RgbImage::from_raw(w, h, out).expect("sizes agree")
}

/// PIL `convert("RGB")`: replicate grey, drop alpha (not composited). 16-bit data as Pillow reads
/// it: grey (`I;16`) is clipped to 255 (not scaled); colour and grey+alpha keep the high byte
/// (Pillow's `;16B` raw modes). Verified against Pillow 13 (tests/fixtures/formats).
fn to_rgb(img: DynamicImage) -> RgbImage {
    let (w, h) = (img.width(), img.height());
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
        DynamicImage::ImageLuma16(i) => from_fn16(w, h, i.as_raw(), 1, |p| {
            let v = p[0].min(255) as u8;
            [v, v, v]
        }),
        DynamicImage::ImageLumaA16(i) => from_fn16(w, h, i.as_raw(), 2, |p| {
            let v = (p[0] >> 8) as u8;
            [v, v, v]
        }),
        DynamicImage::ImageRgb16(i) => from_fn16(w, h, i.as_raw(), 3, |p| {
            [(p[0] >> 8) as u8, (p[1] >> 8) as u8, (p[2] >> 8) as u8]
        }),
        DynamicImage::ImageRgba16(i) => from_fn16(w, h, i.as_raw(), 4, |p| {
            [(p[0] >> 8) as u8, (p[1] >> 8) as u8, (p[2] >> 8) as u8]
        }),
        // Float images (32-bit TIFF, ...): the `image` crate's conversion, not verified against PIL.
        other => other.to_rgb8(),
    }
}

/// Pillow's `cmyk2rgb` (Convert.c): `nk - nk·c/255` with its fixed-point `MULDIV255`.
pub fn cmyk_to_rgb_pil(c: u8, m: u8, y: u8, k: u8) -> [u8; 3] {
    let nk = 255 - k as i32;
    let muldiv255 = |a: i32, b: i32| {
        let t = a * b + 128;
        ((t >> 8) + t) >> 8
    };
    let f = |v: u8| (nk - muldiv255(v as i32, nk)).clamp(0, 255) as u8;
    [f(c), f(m), f(y)]
}

/// Whether a JPEG stream has an Adobe APP14 segment (its CMYK is stored inverted).
pub fn jpeg_has_adobe_marker(bytes: &[u8]) -> bool {
    let mut i = 2;
    while i + 4 <= bytes.len() && bytes[i] == 0xFF {
        let marker = bytes[i + 1];
        if marker == 0xDA || marker == 0xD9 {
            break; // start of scan / end of image
        }
        let len = u16::from_be_bytes([bytes[i + 2], bytes[i + 3]]) as usize;
        if marker == 0xEE && bytes.get(i + 4..i + 9) == Some(b"Adobe") {
            return true;
        }
        i += 2 + len;
    }
    false
}

#[cfg(feature = "turbojpeg")]
mod turbo {
    //! JPEG decoding with libjpeg-turbo, as Pillow does (islow IDCT, fancy upsampling).
    use super::*;
    use turbojpeg::{Colorspace, Decompressor, Image, PixelFormat};

    pub(super) fn decode(bytes: &[u8], path: &Path, opts: &DecodeOptions) -> Result<RgbImage> {
        let derr = |reason: String| Error::Decode {
            path: path.to_path_buf(),
            reason,
        };
        let mut d = Decompressor::new().map_err(|e| derr(e.to_string()))?;
        let header = d.read_header(bytes).map_err(|e| derr(e.to_string()))?;
        let (w, h) = (header.width, header.height);
        if w == 0 || h == 0 {
            return Err(Error::Empty {
                path: path.to_path_buf(),
                width: w as u32,
                height: h as u32,
            });
        }
        if w > opts.max_side as usize
            || h > opts.max_side as usize
            || (w * h * 4) as u64 > opts.max_alloc
        {
            return Err(Error::TooLarge {
                path: path.to_path_buf(),
                reason: format!(
                    "{w}x{h} exceeds the limits (max side {}, max {} bytes)",
                    opts.max_side, opts.max_alloc
                ),
            });
        }
        let cmyk = matches!(header.colorspace, Colorspace::CMYK | Colorspace::YCCK);
        let (format, bpp) = if cmyk {
            (PixelFormat::CMYK, 4)
        } else {
            (PixelFormat::RGB, 3)
        };
        let mut px = vec![0u8; w * h * bpp];
        d.decompress(
            bytes,
            Image {
                pixels: &mut px[..],
                width: w,
                pitch: w * bpp,
                height: h,
                format,
            },
        )
        .map_err(|e| derr(e.to_string()))?;
        let rgb = if cmyk {
            // Pillow reads Adobe CMYK as "CMYK;I" (inverted), then converts with cmyk2rgb.
            let inv = jpeg_has_adobe_marker(bytes) || matches!(header.colorspace, Colorspace::YCCK);
            px.chunks_exact(4)
                .flat_map(|p| {
                    let q = if inv {
                        [255 - p[0], 255 - p[1], 255 - p[2], 255 - p[3]]
                    } else {
                        [p[0], p[1], p[2], p[3]]
                    };
                    cmyk_to_rgb_pil(q[0], q[1], q[2], q[3])
                })
                .collect()
        } else {
            px
        };
        let img = RgbImage::from_raw(w as u32, h as u32, rgb).expect("sizes agree");
        if opts.apply_exif_orientation {
            use image::ImageDecoder;
            let o = ImageReader::new(Cursor::new(bytes))
                .with_guessed_format()
                .ok()
                .and_then(|r| r.into_decoder().ok())
                .and_then(|mut dec| dec.orientation().ok());
            if let Some(o) = o {
                let mut dynimg = DynamicImage::ImageRgb8(img);
                dynimg.apply_orientation(o);
                return Ok(dynimg.to_rgb8());
            }
        }
        Ok(img)
    }
}
