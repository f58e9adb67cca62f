//! JPEG decoding with libjpeg-turbo, as Pillow does (islow IDCT, fancy upsampling).
use super::*;
use turbojpeg::{Colorspace, Decompressor, Image, PixelFormat};

pub(super) fn decode(bytes: &[u8], path: &Path, opts: &DecodeOptions) -> Result<RgbImage> {
    let derr = |e: turbojpeg::Error| Error::Decode {
        path: path.to_path_buf(),
        reason: DecodeError::Codec(e.to_string()),
    };
    let mut d = Decompressor::new().map_err(derr)?;
    let header = match d.read_header(bytes) {
        Ok(header) => header,
        Err(e) => {
            check_jpeg_complete(bytes, path)?;
            return Err(derr(e));
        }
    };
    let (w, h) = (header.width, header.height);
    let cmyk = matches!(header.colorspace, Colorspace::CMYK | Colorspace::YCCK);
    let (format, bpp) = if cmyk {
        (PixelFormat::CMYK, 4)
    } else {
        (PixelFormat::RGB, 3)
    };
    // JPEG sides are at most 65535, so these fit in u32 and the products in u64/usize.
    let (w32, h32) = (
        u32::try_from(w).unwrap_or(u32::MAX),
        u32::try_from(h).unwrap_or(u32::MAX),
    );
    check_header(path, w32, h32, w as u64 * h as u64 * bpp as u64, opts)?;
    // libjpeg-turbo returns a truncated stream as a partly grey image with a warning only.
    check_jpeg_complete(bytes, path)?;
    let mut px = vec![0u8; w * h * bpp]; // checked against max_alloc above
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
    .map_err(derr)?;
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
    let img = RgbImage::from_raw(w32, h32, rgb).ok_or_else(|| internal_size_error(path))?;
    if opts.apply_exif_orientation {
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
