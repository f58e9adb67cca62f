//! Pillow-exact resampling of 8-bit images: a port of `libImaging/Resample.c` (Pillow 13).
//!
//! Separable convolution with the filter's support widened by the downscale factor
//! (antialiasing), coefficients normalised to sum 1, then converted to fixed point with
//! `PRECISION_BITS = 22` and accumulated in `i32` with rounding and clamping. The horizontal pass
//! runs first over only the rows the vertical pass needs, exactly as Pillow does, so results are
//! bit-identical to `Image.resize(size, BILINEAR | BICUBIC)`.
//!
//! [`resize_torch_u8`] is PyTorch's uint8 antialiased kernel (`F.interpolate(uint8, mode="bilinear",
//! antialias=True)`, used by torchvision v2 on tensors, e.g. fungivision's KL view): the same
//! double-precision coefficients, but rounded to `int16` with a per-axis precision: the largest
//! `p < 22` with `int(0.5 + max_weight * 2^(p+1)) < 2^15` (`UpSampleKernel.cpp`,
//! `_compute_index_ranges_int16_weights`, AVX2 path).

use image::RgbImage;

const PRECISION_BITS: u32 = 32 - 8 - 2;

/// Pillow's resampling filters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filter {
    /// `Image.BILINEAR` (triangle, support 1).
    Bilinear,
    /// `Image.BICUBIC` (Keys cubic with `a = -0.5`, support 2).
    Bicubic,
}

impl Filter {
    fn support(self) -> f64 {
        match self {
            Filter::Bilinear => 1.0,
            Filter::Bicubic => 2.0,
        }
    }
    fn eval(self, x: f64) -> f64 {
        let x = x.abs();
        match self {
            Filter::Bilinear => {
                if x < 1.0 {
                    1.0 - x
                } else {
                    0.0
                }
            }
            Filter::Bicubic => {
                const A: f64 = -0.5;
                if x < 1.0 {
                    ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
                } else if x < 2.0 {
                    (((x - 5.0) * x + 8.0) * x - 4.0) * A
                } else {
                    0.0
                }
            }
        }
    }
}

/// How the double-precision coefficients become integers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fixed {
    /// Pillow: `PRECISION_BITS = 22`, `i32` weights.
    Pillow,
    /// PyTorch uint8: `int16` weights, precision from the largest weight.
    TorchInt16,
}

/// Fixed-point coefficients of one axis: per output index `(xmin, count)` and `ksize` weights.
struct Coeffs {
    ksize: usize,
    bounds: Vec<(usize, usize)>,
    kk: Vec<i32>,
    precision: u32,
}

/// `precompute_coeffs` + `normalize_coeffs_8bpc` (or PyTorch's int16 variant).
fn precompute(
    in_size: usize,
    in0: f64,
    in1: f64,
    out_size: usize,
    filter: Filter,
    fixed: Fixed,
) -> Coeffs {
    let scale = (in1 - in0) / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = filter.support() * filterscale;
    let ksize = support.ceil() as usize * 2 + 1;
    let mut bounds = Vec::with_capacity(out_size);
    let mut weights = vec![0f64; out_size * ksize];
    let mut k = vec![0f64; ksize];
    for xx in 0..out_size {
        let center = in0 + (xx as f64 + 0.5) * scale;
        let ss = 1.0 / filterscale;
        // C's (int) truncates toward zero.
        let xmin = ((center - support + 0.5) as i64).max(0) as usize;
        let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
        let count = xmax.saturating_sub(xmin);
        let mut ww = 0.0;
        for (x, kx) in k.iter_mut().enumerate().take(count) {
            let w = filter.eval((x as f64 + xmin as f64 - center + 0.5) * ss);
            *kx = w;
            ww += w;
        }
        for x in 0..count {
            weights[xx * ksize + x] = if ww != 0.0 { k[x] / ww } else { k[x] };
        }
        bounds.push((xmin, count));
    }
    let precision = match fixed {
        Fixed::Pillow => PRECISION_BITS,
        Fixed::TorchInt16 => {
            let wmax = weights.iter().copied().fold(f64::MIN, f64::max);
            let mut p = 0u32;
            while p < 22 {
                if (0.5 + wmax * (1u64 << (p + 1)) as f64) as i64 >= (1 << 15) {
                    break;
                }
                p += 1;
            }
            p
        }
    };
    let scale = (1u64 << precision) as f64;
    let kk = weights
        .iter()
        .map(|&v| {
            if v < 0.0 {
                (-0.5 + v * scale) as i32
            } else {
                (0.5 + v * scale) as i32
            }
        })
        .collect();
    Coeffs {
        ksize,
        bounds,
        kk,
        precision,
    }
}

/// `sum >> precision`, clamped to `0..=255` (Pillow's `clip8`; PyTorch's saturating packs).
#[inline]
fn clip8(v: i32, precision: u32) -> u8 {
    (v >> precision).clamp(0, 255) as u8
}

/// Resizes like `PIL.Image.resize((out_w, out_h), filter)` (no `box`, no `reducing_gap`).
///
/// # Panics
/// If the input or the output size is zero.
pub fn resize(src: &RgbImage, out_w: u32, out_h: u32, filter: Filter) -> RgbImage {
    resize_impl(src, out_w, out_h, filter, Fixed::Pillow)
}

/// Resizes like PyTorch's `F.interpolate(x_uint8, size=(out_h, out_w), mode="bilinear",
/// align_corners=False, antialias=True)` on an AVX2 CPU (the kernel of torchvision v2 `Resize` on
/// uint8 tensors).
///
/// # Panics
/// If the input or the output size is zero.
pub fn resize_torch_u8(src: &RgbImage, out_w: u32, out_h: u32) -> RgbImage {
    resize_impl(src, out_w, out_h, Filter::Bilinear, Fixed::TorchInt16)
}

/// One horizontal pass over `rows` rows of `src` (width `w`) starting at row `row0`.
fn horizontal(src: &[u8], w: usize, row0: usize, rows: usize, c: &Coeffs) -> Vec<u8> {
    let ow = c.bounds.len();
    let mut out = vec![0u8; rows * ow * 3];
    let init = 1i32 << (c.precision - 1);
    for yy in 0..rows {
        let row = &src[(yy + row0) * w * 3..(yy + row0 + 1) * w * 3];
        let orow = &mut out[yy * ow * 3..(yy + 1) * ow * 3];
        for (xx, &(xmin, n)) in c.bounds.iter().enumerate() {
            let k = &c.kk[xx * c.ksize..xx * c.ksize + n];
            let (mut s0, mut s1, mut s2) = (init, init, init);
            for (x, &kx) in k.iter().enumerate() {
                let p = &row[(x + xmin) * 3..(x + xmin) * 3 + 3];
                s0 += p[0] as i32 * kx;
                s1 += p[1] as i32 * kx;
                s2 += p[2] as i32 * kx;
            }
            orow[xx * 3] = clip8(s0, c.precision);
            orow[xx * 3 + 1] = clip8(s1, c.precision);
            orow[xx * 3 + 2] = clip8(s2, c.precision);
        }
    }
    out
}

/// One vertical pass over `src` (width `w`); `row0` is subtracted from the row bounds.
fn vertical(src: &[u8], w: usize, row0: usize, c: &Coeffs) -> Vec<u8> {
    let oh = c.bounds.len();
    let mut out = vec![0u8; oh * w * 3];
    let init = 1i32 << (c.precision - 1);
    for (yy, &(ymin, n)) in c.bounds.iter().enumerate() {
        let k = &c.kk[yy * c.ksize..yy * c.ksize + n];
        let orow = &mut out[yy * w * 3..(yy + 1) * w * 3];
        for (xc, o) in orow.iter_mut().enumerate() {
            let mut s = init;
            for (y, &ky) in k.iter().enumerate() {
                s += src[(y + ymin - row0) * w * 3 + xc] as i32 * ky;
            }
            *o = clip8(s, c.precision);
        }
    }
    out
}

fn resize_impl(src: &RgbImage, out_w: u32, out_h: u32, filter: Filter, fixed: Fixed) -> RgbImage {
    let (w, h) = (src.width() as usize, src.height() as usize);
    let (ow, oh) = (out_w as usize, out_h as usize);
    assert!(
        w > 0 && h > 0 && ow > 0 && oh > 0,
        "resize of an empty image"
    );
    let need_h = ow != w;
    let need_v = oh != h;
    let horiz = precompute(w, 0.0, w as f64, ow, filter, fixed);
    let vert = precompute(h, 0.0, h as f64, oh, filter, fixed);
    // Pillow >= 11: "if height is being scaled down more than twice the amount the width is, run
    // the vertical pass first". PyTorch's kernel always runs the horizontal pass first.
    let (dh, dw) = (h as i64 - oh as i64, w as i64 - ow as i64);
    let horizontal_first = fixed == Fixed::TorchInt16 || !(dh > 0 && dh > dw * 2);
    let raw = src.as_raw();
    let out = match (need_h, need_v, horizontal_first) {
        (false, false, _) => raw.clone(),
        (true, false, _) => horizontal(raw, w, 0, h, &horiz),
        (false, true, _) => vertical(raw, w, 0, &vert),
        (true, true, true) => {
            // Only the rows the vertical pass reads.
            let first = vert.bounds[0].0;
            let (lmin, ln) = vert.bounds[oh - 1];
            let tmp = horizontal(raw, w, first, lmin + ln - first, &horiz);
            vertical(&tmp, ow, first, &vert)
        }
        (true, true, false) => {
            let tmp = vertical(raw, w, 0, &vert);
            horizontal(&tmp, w, 0, oh, &horiz)
        }
    };
    RgbImage::from_raw(ow as u32, oh as u32, out).expect("sizes agree")
}

/// `PIL.Image.crop((left, top, left + width, top + height))` for a box inside the image.
///
/// # Panics
/// If the box leaves the image.
pub fn crop(src: &RgbImage, left: u32, top: u32, width: u32, height: u32) -> RgbImage {
    assert!(
        left + width <= src.width() && top + height <= src.height(),
        "crop box outside the image"
    );
    image::imageops::crop_imm(src, left, top, width, height).to_image()
}
