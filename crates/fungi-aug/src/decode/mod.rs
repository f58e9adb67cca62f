//! Decoding files to 8-bit RGB exactly like `PIL.Image.open(path).convert("RGB")`.

use std::io::Cursor;
use std::path::Path;

use image::{DynamicImage, ImageDecoder, ImageReader, RgbImage};

use crate::error::{DecodeError, Error, Limit, Result};

/// PIL's `Image.MAX_IMAGE_PIXELS`: above it PIL warns (`DecompressionBombWarning`), above twice
/// it PIL refuses the file (`DecompressionBombError`).
pub const MAX_IMAGE_PIXELS: u64 = 89_478_485;

/// Decoder settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeOptions {
    /// PIL's `Image.MAX_IMAGE_PIXELS` (default [`MAX_IMAGE_PIXELS`]): from the header, before
    /// decoding, an image of more than `max_image_pixels` pixels is decoded with a warning and one
    /// of more than twice as many is refused ([`Error::TooLarge`]). `None` disables the check, like
    /// `Image.MAX_IMAGE_PIXELS = None`.
    pub max_image_pixels: Option<u64>,
    /// Largest accepted width or height in pixels. Default `None`: PIL has no side limit (a
    /// 100000x1 image is accepted), only the pixel count.
    pub max_side: Option<u32>,
    /// Largest decoded buffer in bytes (checked from the header before allocation) and the cap
    /// given to each codec for its internal buffers. Default: 8 bytes (16-bit RGBA, the widest
    /// mode PIL reads) x `2 * MAX_IMAGE_PIXELS` = 1 431 655 760, so it never refuses an image
    /// the pixel limit accepts.
    pub max_alloc: u64,
    /// Apply the EXIF orientation tag (PIL, torchvision and fungivision do NOT; default off).
    pub apply_exif_orientation: bool,
}

impl Default for DecodeOptions {
    fn default() -> Self {
        Self {
            max_image_pixels: Some(MAX_IMAGE_PIXELS),
            max_side: None,
            max_alloc: 8 * 2 * MAX_IMAGE_PIXELS,
            apply_exif_orientation: false,
        }
    }
}

/// Decodes an image file to RGB.
///
/// Mode conversions follow Pillow's `convert("RGB")`: grey (L/LA) is replicated to the three
/// channels, alpha is dropped (not composited), palette images are expanded through the palette.
/// 16-bit and float images are reduced by the `image` crate (not PIL-exact, see docs/parity.md).
///
/// Bad input is an error naming the file, never a panic: truncated files
/// ([`DecodeError::Truncated`], PIL's `image file is truncated`), decompression bombs
/// ([`Error::TooLarge`], checked from the header before any allocation), corrupt data.
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
    guard(path, || decode_unguarded(bytes, path, opts))
}

/// Last-resort guard: a panic inside a third-party codec becomes [`DecodeError::CodecPanic`]
/// instead of taking down a whole extraction run. Every panic found so far is prevented before
/// it can happen (`check_png_palette`; docs/fuzzing.md); this only catches codec bugs nobody has
/// found yet (the panic hook still prints them). It does nothing under `panic = "abort"`, and is
/// compiled out with feature `fuzzing` so that fuzzers see such panics as crashes.
#[cfg(not(feature = "fuzzing"))]
fn guard(path: &Path, f: impl FnOnce() -> Result<RgbImage>) -> Result<RgbImage> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|payload| {
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "(no message)".into());
        Err(Error::Decode {
            path: path.to_path_buf(),
            reason: DecodeError::CodecPanic { message },
        })
    })
}

#[cfg(feature = "fuzzing")]
fn guard(_path: &Path, f: impl FnOnce() -> Result<RgbImage>) -> Result<RgbImage> {
    f()
}

fn decode_unguarded(bytes: &[u8], path: &Path, opts: &DecodeOptions) -> Result<RgbImage> {
    let derr = |reason: DecodeError| Error::Decode {
        path: path.to_path_buf(),
        reason,
    };
    let mut reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| derr(DecodeError::Codec(e.to_string())))?;
    let format = reader
        .format()
        .ok_or_else(|| derr(DecodeError::UnknownFormat))?;
    #[cfg(feature = "turbojpeg")]
    if format == image::ImageFormat::Jpeg {
        return turbo::decode(bytes, path, opts);
    }
    // The codecs' own allocations are capped by max_alloc; the side and pixel limits are checked
    // here from the header (`check_header`), so that their errors say which limit and size.
    let mut limits = image::Limits::default();
    limits.max_alloc = Some(opts.max_alloc);
    reader.limits(limits);
    if format == image::ImageFormat::Png {
        check_png_palette(bytes, path)?;
    }
    let jpeg = format == image::ImageFormat::Jpeg;
    let fail = |e: image::ImageError| {
        // When the container shows the data is cut short, say so rather than the codec's message.
        if let Some(expected) = container_truncation(format, bytes) {
            return truncated(bytes, path, expected);
        }
        classify(e, bytes, path, opts)
    };
    let mut decoder = reader.into_decoder().map_err(fail)?;
    let (w, h) = decoder.dimensions();
    check_header(path, w, h, decoder.total_bytes(), opts)?;
    if jpeg {
        // zune-jpeg decodes a truncated stream to a partly grey image without an error.
        check_jpeg_complete(bytes, path)?;
    }
    let orientation = if opts.apply_exif_orientation {
        decoder.orientation().ok()
    } else {
        None
    };
    let mut img = DynamicImage::from_decoder(decoder).map_err(fail)?;
    if let Some(o) = orientation {
        img.apply_orientation(o);
    }
    check_size(path, img.width(), img.height())?;
    to_rgb(img).ok_or_else(|| internal_size_error(path))
}

/// Refuses a PNG whose PLTE chunk length is not a multiple of 3 (or above 256 entries): the
/// `png` crate 0.18.1 panics on it when expanding the palette (`create_rgba_palette`, slice out
/// of range), found by the `decode` fuzz target (docs/fuzzing.md). Walks the chunks up to the
/// first IDAT (PLTE must precede it); anything else malformed is left to the decoder.
fn check_png_palette(bytes: &[u8], path: &Path) -> Result<()> {
    let mut i = 8; // signature
    while let Some(head) = bytes.get(i..i + 8) {
        let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
        match &head[4..8] {
            b"PLTE" if len % 3 != 0 || len > 768 => {
                return Err(Error::Decode {
                    path: path.to_path_buf(),
                    reason: DecodeError::InvalidPalette { len },
                })
            }
            b"IDAT" | b"IEND" => break,
            _ => {}
        }
        // length + type + data + CRC; stops (the decoder reports it) past the end.
        i = i.saturating_add(12).saturating_add(len as usize);
    }
    Ok(())
}

fn internal_size_error(path: &Path) -> Error {
    Error::Decode {
        path: path.to_path_buf(),
        reason: DecodeError::Codec("the decoder returned a buffer of the wrong size".into()),
    }
}

/// [`Error::Empty`] for a `w`x`h` image with no pixels.
fn check_size(path: &Path, w: u32, h: u32) -> Result<()> {
    if w == 0 || h == 0 {
        return Err(Error::Empty {
            path: path.to_path_buf(),
            width: w,
            height: h,
        });
    }
    Ok(())
}

/// Refuses an image with no pixels, as decoding does ([`Error::Empty`]; `name` names it):
/// every transform needs at least one. For images made in memory rather than decoded.
///
/// # Errors
/// When the width or the height is 0.
pub fn check_not_empty(img: &RgbImage, name: &Path) -> Result<()> {
    check_size(name, img.width(), img.height())
}

/// The checks made from the header, before the pixel buffer is allocated: empty, side limit,
/// PIL's decompression-bomb limit (error above 2x, warning above 1x), decoded size.
fn check_header(path: &Path, w: u32, h: u32, bytes: u64, opts: &DecodeOptions) -> Result<()> {
    check_size(path, w, h)?;
    let limit = |limit: Limit| Error::LimitExceeded {
        path: path.to_path_buf(),
        limit,
    };
    if let Some(max_side) = opts.max_side {
        if w > max_side || h > max_side {
            return Err(limit(Limit::Side {
                width: w,
                height: h,
                max_side,
            }));
        }
    }
    let pixels = w as u64 * h as u64;
    if let Some(max) = opts.max_image_pixels {
        let twice = max.saturating_mul(2);
        if pixels > twice {
            return Err(Error::TooLarge {
                path: path.to_path_buf(),
                width: w,
                height: h,
                pixels,
                limit: twice,
            });
        }
        if pixels > max {
            tracing::warn!(
                path = %path.display(),
                width = w,
                height = h,
                pixels,
                limit = max,
                "image size ({pixels} pixels) exceeds DecodeOptions::max_image_pixels ({max}), \
                 could be a decompression bomb (PIL's DecompressionBombWarning); decoding it"
            );
        }
    }
    if bytes > opts.max_alloc {
        return Err(limit(Limit::Alloc {
            width: w,
            height: h,
            bytes,
            max_alloc: opts.max_alloc,
        }));
    }
    Ok(())
}

/// Whether an `image` error says the data ended early.
fn is_eof(e: &image::ImageError) -> bool {
    use std::error::Error as _;
    let mut cur: Option<&(dyn std::error::Error + 'static)> = e.source();
    if let image::ImageError::IoError(io) = e {
        if io.kind() == std::io::ErrorKind::UnexpectedEof {
            return true;
        }
    }
    while let Some(s) = cur {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::UnexpectedEof {
                return true;
            }
        }
        cur = s.source();
    }
    let msg = e.to_string().to_ascii_lowercase();
    msg.contains("unexpected eof")
        || msg.contains("unexpected end of")
        || msg.contains("end of file")
        || msg.contains("failed to fill whole buffer")
}

fn truncated(bytes: &[u8], path: &Path, expected: &'static str) -> Error {
    Error::Decode {
        path: path.to_path_buf(),
        reason: DecodeError::Truncated {
            size: bytes.len() as u64,
            expected,
        },
    }
}

/// What the container says is missing, for formats whose structure shows truncation: JPEG
/// ([`jpeg_truncation`]) and WebP (the RIFF header's size is larger than the data).
fn container_truncation(format: image::ImageFormat, bytes: &[u8]) -> Option<&'static str> {
    match format {
        image::ImageFormat::Jpeg => jpeg_truncation(bytes),
        image::ImageFormat::WebP => {
            let size = bytes.get(4..8)?;
            let riff = u32::from_le_bytes([size[0], size[1], size[2], size[3]]) as u64;
            (riff + 8 > bytes.len() as u64)
                .then_some("the RIFF container's size from its header (the data ends early)")
        }
        _ => None,
    }
}

fn classify(e: image::ImageError, bytes: &[u8], path: &Path, opts: &DecodeOptions) -> Error {
    if is_eof(&e) {
        return truncated(
            bytes,
            path,
            "more image data (the data ends before the image is complete)",
        );
    }
    match e {
        image::ImageError::Limits(l) => Error::LimitExceeded {
            path: path.to_path_buf(),
            limit: Limit::Codec {
                message: l.to_string(),
                max_alloc: opts.max_alloc,
            },
        },
        other => Error::Decode {
            path: path.to_path_buf(),
            reason: DecodeError::Codec(other.to_string()),
        },
    }
}

/// `Err(Truncated)` when a JPEG stream ends before its end-of-image marker (see
/// [`jpeg_truncation`]).
fn check_jpeg_complete(bytes: &[u8], path: &Path) -> Result<()> {
    match jpeg_truncation(bytes) {
        Some(expected) => Err(truncated(bytes, path, expected)),
        None => Ok(()),
    }
}

/// Whether a JPEG stream is truncated: `Some(what is missing)` when the data ends before an
/// end-of-image marker (FF D9) following the first start-of-scan (FF DA); `None` when it is
/// complete or not a JPEG the marker walk understands (the decoder then decides).
///
/// Walks the marker segments by their lengths (so an FF D9 inside an APP segment, e.g. an EXIF
/// thumbnail, is not taken for the end), and through entropy-coded data as libjpeg does: FF 00
/// is a stuffed 0xFF, FF D0..D7 are restart markers, FF FF is fill, other bytes before a marker
/// are skipped. Bytes after the EOI are ignored, as PIL does.
pub fn jpeg_truncation(b: &[u8]) -> Option<&'static str> {
    const NO_EOI: &str = "an end-of-image marker (FF D9) after the scan data";
    const NO_SCAN: &str = "a start-of-scan marker (FF DA), the scan data and an end-of-image \
                           marker (FF D9)";
    let n = b.len();
    if n < 2 || b[0] != 0xFF || b[1] != 0xD8 {
        return None;
    }
    let mut i = 2;
    let mut seen_sos = false;
    let missing = |seen_sos: bool| Some(if seen_sos { NO_EOI } else { NO_SCAN });
    loop {
        // The next marker, as libjpeg's `next_marker` and its entropy decoder find it.
        let m = loop {
            while i < n && b[i] != 0xFF {
                i += 1;
            }
            while i < n && b[i] == 0xFF {
                i += 1;
            }
            if i >= n {
                return missing(seen_sos);
            }
            let m = b[i];
            i += 1;
            // 00: stuffed byte; D0..D7: restart; 01: TEM (standalone).
            if m != 0x00 && m != 0x01 && !(0xD0..=0xD7).contains(&m) {
                break m;
            }
        };
        match m {
            0xD9 => return None, // EOI (before any scan: no image, the decoder reports it)
            0xD8 => return None, // a second SOI: malformed, the decoder reports it
            _ => {
                if i + 2 > n {
                    return missing(seen_sos);
                }
                let len = u16::from_be_bytes([b[i], b[i + 1]]) as usize;
                if len < 2 {
                    return None; // malformed, the decoder reports it
                }
                if i + len > n {
                    return missing(seen_sos);
                }
                i += len;
                if m == 0xDA {
                    seen_sos = true;
                }
            }
        }
    }
}

fn from_fn16(
    w: u32,
    h: u32,
    data: &[u16],
    channels: usize,
    f: impl Fn(&[u16]) -> [u8; 3],
) -> Option<RgbImage> {
    let out = data.chunks_exact(channels).flat_map(f).collect();
    RgbImage::from_raw(w, h, out)
}

/// Drops every channel but the first three of `channels`-channel pixels.
fn first3(w: u32, h: u32, data: &[u8], channels: usize, grey: bool) -> Option<RgbImage> {
    let out = data
        .chunks_exact(channels)
        .flat_map(|p| {
            if grey {
                [p[0], p[0], p[0]]
            } else {
                [p[0], p[1], p[2]]
            }
        })
        .collect();
    RgbImage::from_raw(w, h, out)
}

/// PIL `convert("RGB")`: replicate grey, drop alpha (not composited). 16-bit data as Pillow reads
/// it: grey (`I;16`) is clipped to 255 (not scaled); colour and grey+alpha keep the high byte
/// (Pillow's `;16B` raw modes). Verified against Pillow 13 (tests/fixtures/formats).
///
/// `None` only if a buffer is shorter than its dimensions say, which `image`'s buffers rule out
/// (`ImageBuffer` checks `len >= w * h * channels`); kept as an error rather than a panic.
fn to_rgb(img: DynamicImage) -> Option<RgbImage> {
    let (w, h) = (img.width(), img.height());
    match img {
        DynamicImage::ImageRgb8(i) => Some(i),
        DynamicImage::ImageRgba8(i) => first3(w, h, i.as_raw(), 4, false),
        DynamicImage::ImageLuma8(i) => first3(w, h, i.as_raw(), 1, true),
        DynamicImage::ImageLumaA8(i) => first3(w, h, i.as_raw(), 2, true),
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
        other => Some(other.to_rgb8()),
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
mod turbo;

#[cfg(test)]
mod tests {
    use super::*;

    /// SOI, a DQT-like segment, SOS, entropy data with a stuffed FF 00, a restart marker and fill,
    /// a DHT-like segment between scans whose payload holds FF D9, a second SOS, data, EOI.
    fn progressive_like() -> Vec<u8> {
        let mut b = vec![0xFF, 0xD8];
        b.extend([0xFF, 0xDB, 0x00, 0x04, 0xFF, 0xD9]); // payload FF D9: not the end
        b.extend([0xFF, 0xDA, 0x00, 0x03, 0x01]);
        b.extend([
            0x12, 0xFF, 0x00, 0x34, 0xFF, 0xD0, 0x56, 0xFF, 0xFF, 0xFF, 0x00,
        ]);
        b.extend([0xFF, 0xC4, 0x00, 0x05, 0xFF, 0xD9, 0x00]);
        b.extend([0xFF, 0xDA, 0x00, 0x02, 0x78, 0xFF, 0x00]);
        b.extend([0xFF, 0xD9]);
        b
    }

    #[test]
    fn jpeg_structure_walk() {
        let b = progressive_like();
        assert_eq!(jpeg_truncation(&b), None);
        let mut trailing = b.clone();
        trailing.extend_from_slice(b"junk after EOI");
        assert_eq!(jpeg_truncation(&trailing), None);
        // Every proper prefix from the SOI on is truncated.
        for cut in 2..b.len() {
            assert!(jpeg_truncation(&b[..cut]).is_some(), "cut {cut}");
        }
        // Before the first scan, the message names the missing scan.
        assert!(jpeg_truncation(&b[..8]).unwrap().contains("start-of-scan"));
        assert!(jpeg_truncation(&b[..b.len() - 1])
            .unwrap()
            .contains("end-of-image"));
        // Not a JPEG, or malformed lengths: the decoder decides.
        assert_eq!(jpeg_truncation(b"\x89PNG"), None);
        assert_eq!(
            jpeg_truncation(&[0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x01, 0x00]),
            None
        );
        assert_eq!(jpeg_truncation(&[0xFF, 0xD8, 0xFF, 0xD8]), None);
    }

    /// Found by `cargo fuzz run decode` (fuzz/artifacts/decode/crash-f743327b…, 175 bytes): a
    /// 37x23 palette PNG whose PLTE chunk has 49 bytes made `png` 0.18.1 panic ("range end index
    /// 3 out of range for slice of length 1" in `create_rgba_palette`). Rebuilt here from the
    /// golden palette fixture with its PLTE shortened by 2 bytes (CRC recomputed).
    #[test]
    fn png_palette_of_a_length_not_a_multiple_of_3_is_an_error_not_a_panic() {
        fn crc32(data: &[u8]) -> u32 {
            let mut c = !0u32;
            for &b in data {
                c ^= b as u32;
                for _ in 0..8 {
                    c = if c & 1 == 1 {
                        0xEDB8_8320 ^ (c >> 1)
                    } else {
                        c >> 1
                    };
                }
            }
            !c
        }
        /// The fixture with PLTE's data changed by `f` (length and CRC kept consistent).
        fn with_palette(f: impl Fn(&mut Vec<u8>)) -> Vec<u8> {
            let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures");
            let b = std::fs::read(fixtures.join("formats/p_transparency.png")).unwrap();
            let mut out = b[..8].to_vec();
            let mut i = 8;
            while i + 12 <= b.len() {
                let len = u32::from_be_bytes(b[i..i + 4].try_into().unwrap()) as usize;
                let (kind, mut data) = (&b[i + 4..i + 8], b[i + 8..i + 8 + len].to_vec());
                if kind == b"PLTE" {
                    f(&mut data);
                }
                let mut typed = kind.to_vec();
                typed.extend_from_slice(&data);
                out.extend_from_slice(&(data.len() as u32).to_be_bytes());
                out.extend_from_slice(&typed);
                out.extend_from_slice(&crc32(&typed).to_be_bytes());
                i += 12 + len;
            }
            out
        }
        let p = Path::new("/data/p.png");
        let o = DecodeOptions::default();
        // Unchanged, the rebuilt file decodes.
        assert!(decode_rgb_bytes(&with_palette(|_| {}), p, &o).is_ok());
        for cut in [1usize, 2, 4] {
            let bytes = with_palette(|d| d.truncate(d.len() - cut));
            let e = decode_rgb_bytes(&bytes, p, &o).unwrap_err();
            assert!(
                matches!(
                    e,
                    Error::Decode {
                        reason: DecodeError::InvalidPalette { .. },
                        ..
                    }
                ),
                "{e}"
            );
            assert!(e.to_string().contains("/data/p.png") && e.to_string().contains("PLTE"));
        }
        // Longer than 256 entries.
        let bytes = with_palette(|d| d.resize(771, 0));
        assert!(decode_rgb_bytes(&bytes, p, &o).is_err());
        // The fuzzer's input itself.
        let crash: &[u8] = &[
            0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48,
            0x44, 0x52, 0x00, 0x00, 0x00, 0x25, 0x00, 0x00, 0x00, 0x17, 0x04, 0x03, 0x00, 0x00,
            0x00, 0x7e, 0x02, 0x9b, 0x96, 0x00, 0x00, 0x00, 0x31, 0x50, 0x4c, 0x54, 0x45, 0xbd,
            0xe2, 0xa3, 0xbd, 0xbb, 0xc1, 0xdd, 0x8f, 0xdf, 0x9a, 0x8f, 0xaf, 0x3c, 0xe2, 0x91,
            0x3c, 0xbb, 0x80, 0x58, 0x8f, 0x80, 0x19, 0x8f, 0x53, 0xdd, 0x53, 0xc3, 0x9a, 0x94,
            0x53, 0x16, 0xdd, 0xa8, 0x9a, 0x16, 0x78, 0x58, 0x53, 0x64, 0x19, 0x53, 0x37, 0x58,
            0x16, 0x49, 0x19, 0x16, 0x1c, 0x0d, 0xf7, 0xe9, 0x07, 0x29, 0x00, 0x00, 0x00, 0x04,
            0x74, 0x52, 0x4e, 0x53, 0xff, 0xff, 0xff, 0x00, 0x40, 0x2a, 0xa9, 0xf4, 0x00, 0x00,
            0x00, 0x98, 0x49, 0x44, 0x41, 0x54, 0x78, 0x9c, 0x95, 0x90, 0xcd, 0x0d, 0xc2, 0x30,
            0x0c, 0x46, 0x5f, 0xa2, 0x0c, 0xd0, 0x4e, 0xcb, 0x2e, 0x91, 0x90, 0xba, 0x10, 0x23,
            0x10, 0xbc, 0x41, 0x72, 0x42, 0x15, 0x02, 0x9b, 0x83, 0x53, 0x7e, 0x5a, 0x40, 0xc2,
            0xc7, 0x67, 0x5b, 0xdf, 0xb3, 0x83, 0x01, 0xd6, 0x80, 0x54, 0x08, 0x43, 0x01, 0x54,
            0x60, 0x44, 0x61, 0x0e, 0xc7, 0x60, 0x82,
        ];
        let e = decode_rgb_bytes(crash, p, &o).unwrap_err();
        assert!(
            matches!(
                e,
                Error::Decode {
                    reason: DecodeError::InvalidPalette { len: 49 },
                    ..
                }
            ),
            "{e}"
        );
    }

    #[cfg(not(feature = "fuzzing"))]
    #[test]
    fn a_codec_panic_becomes_an_error_naming_the_file() {
        let e = guard(Path::new("/data/x.png"), || panic!("boom in a codec")).unwrap_err();
        assert!(
            matches!(&e, Error::Decode { reason: DecodeError::CodecPanic { message }, .. } if message == "boom in a codec"),
            "{e}"
        );
        assert!(e.to_string().contains("/data/x.png"), "{e}");
    }

    #[test]
    fn adobe_marker_scan_handles_short_and_odd_input() {
        assert!(!jpeg_has_adobe_marker(&[]));
        assert!(!jpeg_has_adobe_marker(&[0xFF, 0xD8, 0xFF, 0xEE, 0xFF]));
        assert!(jpeg_has_adobe_marker(b"\xFF\xD8\xFF\xEE\x00\x0EAdobe"));
        assert!(!jpeg_has_adobe_marker(b"\xFF\xD8\xFF\xEE\x00\x0EAdob"));
    }
}
