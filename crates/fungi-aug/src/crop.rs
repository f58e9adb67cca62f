//! torchvision's `RandomResizedCrop`, split into parameter sampling and application.

use image::RgbImage;
use rand::{Rng, RngExt};
use serde::{Deserialize, Serialize};

use crate::resample::{crop, resize, Filter};

/// A crop box in pixels of the source image: rows `top..top+height`, columns `left..left+width`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CropBox {
    /// First row.
    pub top: u32,
    /// First column.
    pub left: u32,
    /// Rows.
    pub height: u32,
    /// Columns.
    pub width: u32,
}

/// Python's `round()` (half to even).
fn round_half_even(x: f64) -> f64 {
    let r = x.round();
    if (x - x.trunc()).abs() == 0.5 {
        2.0 * (x / 2.0).round()
    } else {
        r
    }
}

/// `RandomResizedCrop(size, scale, ratio)` as in torchvision (`get_params` + `resized_crop`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RandomResizedCrop {
    /// Output side (square output).
    pub size: u32,
    /// Range of the crop area as a fraction of the image area.
    pub scale: (f64, f64),
    /// Range of the crop aspect ratio `w / h`.
    pub ratio: (f64, f64),
}

impl RandomResizedCrop {
    /// torchvision's `get_params`: up to 10 tries of (area, log-uniform ratio), then a central crop
    /// clamped to the ratio range. Uniforms are drawn as `f32` like `torch.empty(1).uniform_()`.
    pub fn sample_params<R: Rng + ?Sized>(&self, width: u32, height: u32, rng: &mut R) -> CropBox {
        let (w_img, h_img) = (width as f64, height as f64);
        let area = w_img * h_img;
        let (lr0, lr1) = ((self.ratio.0 as f32).ln(), (self.ratio.1 as f32).ln());
        for _ in 0..10 {
            let u: f32 = rng.random();
            let target_area = area
                * (self.scale.0 as f32 + u * (self.scale.1 as f32 - self.scale.0 as f32)) as f64;
            let v: f32 = rng.random();
            let aspect = ((lr0 + v * (lr1 - lr0)) as f32).exp() as f64;
            let w = round_half_even((target_area * aspect).sqrt()) as i64;
            let h = round_half_even((target_area / aspect).sqrt()) as i64;
            if 0 < w && w <= width as i64 && 0 < h && h <= height as i64 {
                let top = rng.random_range(0..=(height as i64 - h)) as u32;
                let left = rng.random_range(0..=(width as i64 - w)) as u32;
                return CropBox {
                    top,
                    left,
                    height: h as u32,
                    width: w as u32,
                };
            }
        }
        self.fallback(width, height)
    }

    /// The central crop used when no sample fits.
    pub fn fallback(&self, width: u32, height: u32) -> CropBox {
        let in_ratio = width as f64 / height as f64;
        let (w, h) = if in_ratio < self.ratio.0.min(self.ratio.1) {
            (
                width,
                round_half_even(width as f64 / self.ratio.0.min(self.ratio.1)) as u32,
            )
        } else if in_ratio > self.ratio.0.max(self.ratio.1) {
            (
                round_half_even(height as f64 * self.ratio.0.max(self.ratio.1)) as u32,
                height,
            )
        } else {
            (width, height)
        };
        CropBox {
            top: (height - h) / 2,
            left: (width - w) / 2,
            height: h,
            width: w,
        }
    }

    /// Crop then PIL-bicubic resize to `size x size`.
    pub fn apply(&self, img: &RgbImage, b: CropBox) -> RgbImage {
        resize(
            &crop(img, b.left, b.top, b.width, b.height),
            self.size,
            self.size,
            Filter::Bicubic,
        )
    }
}
