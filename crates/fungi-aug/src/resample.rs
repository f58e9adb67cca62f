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

/// Pillow's resampling filters (serialised `"bilinear"` / `"bicubic"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
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

/// The resampling geometry of one axis (Pillow's `precompute_coeffs`, which PyTorch's
/// antialiased kernels share).
struct Axis {
    in_size: usize,
    in0: f64,
    scale: f64,
    filterscale: f64,
    support: f64,
    ksize: usize,
    filter: Filter,
}

impl Axis {
    fn new(in_size: usize, in0: f64, in1: f64, out_size: usize, filter: Filter) -> Self {
        let scale = (in1 - in0) / out_size as f64;
        let filterscale = scale.max(1.0);
        let support = filter.support() * filterscale;
        Self {
            in_size,
            in0,
            scale,
            filterscale,
            support,
            ksize: support.ceil() as usize * 2 + 1,
            filter,
        }
    }

    /// The normalised weights of output index `xx` into `k` (`ksize` long): `(xmin, count)`.
    fn weights(&self, xx: usize, k: &mut [f64]) -> (usize, usize) {
        let center = self.in0 + (xx as f64 + 0.5) * self.scale;
        let ss = 1.0 / self.filterscale;
        // C's (int) truncates toward zero.
        let xmin = ((center - self.support + 0.5) as i64).max(0) as usize;
        let xmax = ((center + self.support + 0.5) as i64).min(self.in_size as i64) as usize;
        let count = xmax.saturating_sub(xmin);
        let mut ww = 0.0;
        for (x, kx) in k.iter_mut().enumerate().take(count) {
            let w = self
                .filter
                .eval((x as f64 + xmin as f64 - center + 0.5) * ss);
            *kx = w;
            ww += w;
        }
        if ww != 0.0 {
            for kx in &mut k[..count] {
                *kx /= ww;
            }
        }
        for kx in &mut k[count..] {
            *kx = 0.0;
        }
        (xmin, count)
    }
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
    precompute_range(in_size, in0, in1, out_size, 0..out_size, filter, fixed)
}

/// [`precompute`] for the output indices `range` only (of `out_size`): the coefficients of one
/// output index do not depend on the others, except PyTorch's int16 precision, which depends on
/// the largest weight of the whole axis (computed over the whole axis here, without storing it).
fn precompute_range(
    in_size: usize,
    in0: f64,
    in1: f64,
    out_size: usize,
    range: std::ops::Range<usize>,
    filter: Filter,
    fixed: Fixed,
) -> Coeffs {
    let axis = Axis::new(in_size, in0, in1, out_size, filter);
    let ksize = axis.ksize;
    let n = range.len();
    let full = range.start == 0 && range.end == out_size;
    let mut bounds = Vec::with_capacity(n);
    let mut weights = vec![0f64; n * ksize];
    for (j, xx) in range.enumerate() {
        let (xmin, count) = axis.weights(xx, &mut weights[j * ksize..(j + 1) * ksize]);
        bounds.push((xmin, count));
    }
    let precision = match fixed {
        Fixed::Pillow => PRECISION_BITS,
        Fixed::TorchInt16 => {
            let wmax = if full {
                weights.iter().copied().fold(f64::MIN, f64::max)
            } else {
                let mut k = vec![0f64; ksize];
                (0..out_size).fold(f64::MIN, |m, xx| {
                    let (_, count) = axis.weights(xx, &mut k);
                    k[..count].iter().copied().fold(m, f64::max)
                })
            };
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
    // A contract on the caller, not on input: decoded images are never empty (`Error::Empty`)
    // and the transforms' output sizes are positive constants of their configuration.
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
    // Cannot fail: both passes allocate exactly `ow * oh * 3` bytes (computed here, not read).
    RgbImage::from_raw(ow as u32, oh as u32, out).expect("sizes agree")
}

/// `resize(src, out_w, out_h, filter)` then `crop(left, top, width, height)`, computing only
/// the pixels of the crop: bit-identical to the two steps (every output pixel of Pillow's
/// separable passes depends only on its own coefficients, and the pass order is decided from
/// the full sizes as Pillow does) with memory bounded by the source and the crop whatever the
/// resized size. DINO's eval transform resizes the short side to 256, so a 100000x1 image
/// (accepted by PIL) would be 25600000x256 (19.7 GB) before its 224x224 centre crop; sizes are
/// `u64` so that no resized size can overflow.
///
/// # Panics
/// If the source, the resized size or the crop is empty, or the crop leaves the resized image
/// (a contract on the caller: `EvalTransform` derives all of them from a non-empty image).
#[allow(clippy::too_many_arguments)]
pub fn resize_crop(
    src: &RgbImage,
    out_w: u64,
    out_h: u64,
    filter: Filter,
    left: u64,
    top: u64,
    width: u32,
    height: u32,
) -> RgbImage {
    resize_crop_impl(
        src,
        out_w,
        out_h,
        filter,
        left,
        top,
        width,
        height,
        Fixed::Pillow,
    )
}

/// [`resize_crop`] with PyTorch's uint8 antialiased kernel (`F.interpolate(x_uint8, size,
/// mode="bilinear" | "bicubic", antialias=True)` on a CPU, the resize of torchvision v2 and of
/// transformers' default image processors on uint8 tensors) instead of Pillow's: int16 weights
/// whose precision follows the largest weight of the whole axis, horizontal pass first.
///
/// # Panics
/// As [`resize_crop`].
#[allow(clippy::too_many_arguments)]
pub fn resize_crop_torch_u8(
    src: &RgbImage,
    out_w: u64,
    out_h: u64,
    filter: Filter,
    left: u64,
    top: u64,
    width: u32,
    height: u32,
) -> RgbImage {
    resize_crop_impl(
        src,
        out_w,
        out_h,
        filter,
        left,
        top,
        width,
        height,
        Fixed::TorchInt16,
    )
}

#[allow(clippy::too_many_arguments)]
fn resize_crop_impl(
    src: &RgbImage,
    out_w: u64,
    out_h: u64,
    filter: Filter,
    left: u64,
    top: u64,
    width: u32,
    height: u32,
    fixed: Fixed,
) -> RgbImage {
    let (w, h) = (src.width() as usize, src.height() as usize);
    let (ow, oh) = (out_w as usize, out_h as usize);
    let (x0, y0, cw, ch) = (left as usize, top as usize, width as usize, height as usize);
    assert!(
        w > 0 && h > 0 && ow > 0 && oh > 0 && cw > 0 && ch > 0,
        "resize of an empty image"
    );
    assert!(
        x0.checked_add(cw).is_some_and(|r| r <= ow) && y0.checked_add(ch).is_some_and(|b| b <= oh),
        "crop box outside the resized image"
    );
    let horiz = precompute_range(w, 0.0, w as f64, ow, x0..x0 + cw, filter, fixed);
    let vert = precompute_range(h, 0.0, h as f64, oh, y0..y0 + ch, filter, fixed);
    let (dh, dw) = (h as i64 - oh as i64, w as i64 - ow as i64);
    let horizontal_first = fixed == Fixed::TorchInt16 || !(dh > 0 && dh > dw * 2);
    let raw = src.as_raw();
    let out = match (ow != w, oh != h, horizontal_first) {
        // Here the crop lies inside `src` (ow == w, oh == h): x0, y0 fit in u32.
        (false, false, _) => return crop(src, x0 as u32, y0 as u32, width, height),
        (true, false, _) => horizontal(raw, w, y0, ch, &horiz),
        (false, true, _) => {
            let cols = crop(src, x0 as u32, 0, width, h as u32);
            vertical(cols.as_raw(), cw, 0, &vert)
        }
        (true, true, true) => {
            let first = vert.bounds[0].0;
            let (lmin, ln) = vert.bounds[ch - 1];
            let tmp = horizontal(raw, w, first, lmin + ln - first, &horiz);
            vertical(&tmp, cw, first, &vert)
        }
        (true, true, false) => {
            let tmp = vertical(raw, w, 0, &vert);
            horizontal(&tmp, w, 0, ch, &horiz)
        }
    };
    // Cannot fail: both passes allocate exactly `cw * ch * 3` bytes (computed here).
    RgbImage::from_raw(width, height, out).expect("sizes agree")
}

/// `PIL.Image.crop((left, top, left + width, top + height))` for a box inside the image.
///
/// # Panics
/// If the box leaves the image.
pub fn crop(src: &RgbImage, left: u32, top: u32, width: u32, height: u32) -> RgbImage {
    // A contract on the caller (boxes come from `RandomResizedCrop::sample_params` or the eval
    // geometry of the same image); u64 so that a huge box cannot wrap around and pass.
    assert!(
        left as u64 + width as u64 <= src.width() as u64
            && top as u64 + height as u64 <= src.height() as u64,
        "crop box outside the image"
    );
    image::imageops::crop_imm(src, left, top, width, height).to_image()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn noise(w: u32, h: u32, seed: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| {
            let v = (x.wrapping_mul(2_654_435_761) ^ y.wrapping_mul(40_503) ^ seed)
                .wrapping_mul(2_246_822_519);
            image::Rgb([(v >> 8) as u8, (v >> 16) as u8, (v >> 24) as u8])
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]
        /// The windowed resize is bit-identical to Pillow's resize followed by the crop, for every
        /// pass order (down/up-scaling in either axis, identity axes).
        #[test]
        fn resize_crop_equals_resize_then_crop(
            w in 1u32..60, h in 1u32..60, ow in 1u32..90, oh in 1u32..90,
            fx in 0.0f64..1.0, fy in 0.0f64..1.0, fw in 0.0f64..1.0, fh in 0.0f64..1.0,
            same_w in any::<bool>(), same_h in any::<bool>(), bicubic in any::<bool>(), seed in any::<u32>(),
        ) {
            let (ow, oh) = (if same_w { w } else { ow }, if same_h { h } else { oh });
            let filter = if bicubic { Filter::Bicubic } else { Filter::Bilinear };
            let src = noise(w, h, seed);
            let cw = 1 + (fw * (ow - 1) as f64) as u32;
            let ch = 1 + (fh * (oh - 1) as f64) as u32;
            let left = (fx * (ow - cw) as f64) as u32;
            let top = (fy * (oh - ch) as f64) as u32;
            let want = crop(&resize(&src, ow, oh, filter), left, top, cw, ch);
            let got = resize_crop(&src, ow as u64, oh as u64, filter, left as u64, top as u64, cw, ch);
            prop_assert_eq!(got.dimensions(), (cw, ch));
            prop_assert!(got.as_raw() == want.as_raw(), "{}x{} -> {}x{}, crop {}+{} {}x{}", w, h, ow, oh, left, top, cw, ch);
        }
    }

    #[test]
    fn resize_crop_of_a_very_elongated_image_is_bounded_and_exact() {
        // 20_000_000 x 1 resized to short side 256 is 5_120_000_000 x 256 (beyond u32, 3.9 TB):
        // only the 224 x 224 centre is computed. A constant image stays constant.
        let src = RgbImage::from_pixel(20_000_000, 1, image::Rgb([7, 100, 250]));
        let out = resize_crop(
            &src,
            5_120_000_000,
            256,
            Filter::Bicubic,
            2_559_999_888,
            16,
            224,
            224,
        );
        assert_eq!(out.dimensions(), (224, 224));
        assert!(out.pixels().all(|p| p.0 == [7, 100, 250]));
    }

    #[test]
    #[should_panic(expected = "crop box outside the image")]
    fn crop_boxes_cannot_wrap_around() {
        let src = RgbImage::new(4, 4);
        crop(&src, u32::MAX, 0, 2, 1);
    }
}
