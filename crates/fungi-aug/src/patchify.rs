//! fungivision's SimCLR `Patchify` and PyTorch's float antialiased bicubic interpolation.

use image::RgbImage;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::normalize::{IMAGENET_MEAN, IMAGENET_STD};
use crate::resample::{resize, Filter};

/// Keys' cubic with `a = -0.5` as PyTorch's `aa_filter` (f32).
fn aa_bicubic(x: f32) -> f32 {
    const A: f32 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        ((A * x - 5.0 * A) * x + 8.0 * A) * x - 4.0 * A
    } else {
        0.0
    }
}

/// Per output index `(xmin, weights)`, as `_compute_indices_min_size_weights_aa` (f32).
fn aa_weights(input: usize, output: usize) -> Vec<(usize, Vec<f32>)> {
    let scale = input as f32 / output as f32;
    let support = if scale >= 1.0 { 2.0 * scale } else { 2.0 };
    let invscale = if scale >= 1.0 { 1.0 / scale } else { 1.0 };
    (0..output)
        .map(|i| {
            let center = scale * (i as f32 + 0.5);
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).min(input as i64) as usize;
            let mut w: Vec<f32> = (xmin..xmax)
                .map(|j| aa_bicubic((j as f32 - center + 0.5) * invscale))
                .collect();
            let total: f32 = w.iter().sum();
            if total != 0.0 {
                w.iter_mut().for_each(|v| *v /= total);
            }
            (xmin, w)
        })
        .collect()
}

#[inline(always)]
fn interp(src: &[f32], stride: usize, xmin: usize, w: &[f32]) -> f32 {
    let mut t = src[xmin * stride] * w[0];
    for (j, wj) in w.iter().enumerate().skip(1) {
        t = src[(xmin + j) * stride].mul_add(*wj, t);
    }
    t
}

/// `F.interpolate(x, size=(oh, ow), mode="bicubic", align_corners=False, antialias=True)` on one
/// `f32` plane (`h x w`, row-major): horizontal pass then vertical, no clamping.
pub fn resize_torch_f32_aa_bicubic(
    plane: &[f32],
    h: usize,
    w: usize,
    oh: usize,
    ow: usize,
) -> Vec<f32> {
    assert_eq!(plane.len(), h * w);
    let wx = aa_weights(w, ow);
    let wy = aa_weights(h, oh);
    let mut tmp = vec![0f32; h * ow];
    let mut out = vec![0f32; oh * ow];
    resample_planes(plane, w, &wx, &wy, &mut tmp, &mut out);
    out
}

fungi_simd::multiversion! {
    /// Both passes of [`resize_torch_f32_aa_bicubic`] (the FMAs as instructions where the CPU
    /// has them; the same correctly rounded results everywhere).
    fn resample_planes(
        plane: &[f32],
        w: usize,
        wx: &[(usize, Vec<f32>)],
        wy: &[(usize, Vec<f32>)],
        tmp: &mut [f32],
        out: &mut [f32],
    ) {
        let ow = wx.len();
        for (y, row) in plane.chunks(w).enumerate() {
            for (x, (xmin, ws)) in wx.iter().enumerate() {
                tmp[y * ow + x] = interp(row, 1, *xmin, ws);
            }
        }
        for (y, (ymin, ws)) in wy.iter().enumerate() {
            for x in 0..ow {
                out[y * ow + x] = interp(&tmp[x..], ow, *ymin, ws);
            }
        }
    }
}

/// fungivision's `Patchify(num_patches, image_size, stride_scale)`: PIL-bicubic squash to
/// `image_size`, `ToTensor`, `unfold` into `patch = int(image_size / sqrt(num_patches))` patches at
/// `stride = int(patch / stride_scale)` (row-major), each upsampled back to `image_size` with
/// PyTorch's antialiased bicubic, then normalised. Deterministic (no parameters to sample).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Patchify {
    /// `num_patches` (4 in fungivision's SimCLR config).
    pub num_patches: usize,
    /// `stride_scale` (fungivision's SimCLR config: 6; `Patchify`'s own default: 4).
    pub stride_scale: f64,
    /// Side of the squashed image and of every view (always 224 in fungivision: its `input_dim`
    /// is silently ignored).
    pub image_size: usize,
}

impl Default for Patchify {
    fn default() -> Self {
        Self {
            num_patches: 4,
            stride_scale: 6.0,
            image_size: 224,
        }
    }
}

impl Patchify {
    /// `(patch, stride, positions per axis)`; invalid geometry is an error naming the field.
    pub fn geometry(&self) -> Result<(usize, usize, usize)> {
        let bad = |key: &str, value: String, expected: &str| Error::Config {
            key: key.into(),
            value,
            expected: expected.into(),
        };
        if self.num_patches == 0 {
            return Err(bad("num_patches", "0".into(), "a positive integer"));
        }
        if !(self.stride_scale.is_finite() && self.stride_scale > 0.0) {
            return Err(bad(
                "stride_scale",
                self.stride_scale.to_string(),
                "a positive number",
            ));
        }
        let patch = (self.image_size as f64 / (self.num_patches as f64).sqrt()) as usize;
        if patch == 0 || patch > self.image_size {
            return Err(bad(
                "num_patches",
                self.num_patches.to_string(),
                "a patch of at least 1 pixel",
            ));
        }
        let stride = (patch as f64 / self.stride_scale) as usize;
        if stride == 0 {
            return Err(bad(
                "stride_scale",
                self.stride_scale.to_string(),
                &format!("at most the patch size {patch} (stride = int(patch / stride_scale) must be >= 1)"),
            ));
        }
        Ok((patch, stride, (self.image_size - patch) / stride + 1))
    }

    /// Number of views: `positions²`.
    pub fn views(&self) -> Result<usize> {
        let (_, _, n) = self.geometry()?;
        Ok(n * n)
    }

    /// The squashed 8-bit base image (before patching).
    pub fn base_u8(&self, img: &RgbImage) -> RgbImage {
        resize(
            img,
            self.image_size as u32,
            self.image_size as u32,
            Filter::Bicubic,
        )
    }

    /// Normalised CHW views, concatenated in row-major patch order.
    pub fn apply(&self, img: &RgbImage) -> Result<Vec<f32>> {
        let (patch, stride, n) = self.geometry()?;
        let s = self.image_size;
        let base = self.base_u8(img);
        let raw = base.as_raw();
        let planes: Vec<Vec<f32>> = (0..3)
            .map(|c| (0..s * s).map(|i| raw[i * 3 + c] as f32 / 255.0).collect())
            .collect();
        let mut out = Vec::with_capacity(n * n * 3 * s * s);
        for r in 0..n {
            for col in 0..n {
                for (c, plane) in planes.iter().enumerate() {
                    let mut p = Vec::with_capacity(patch * patch);
                    for y in 0..patch {
                        let row = (r * stride + y) * s + col * stride;
                        p.extend_from_slice(&plane[row..row + patch]);
                    }
                    let up = resize_torch_f32_aa_bicubic(&p, patch, patch, s, s);
                    out.extend(
                        up.into_iter()
                            .map(|v| (v - IMAGENET_MEAN[c]) / IMAGENET_STD[c]),
                    );
                }
            }
        }
        Ok(out)
    }
}
