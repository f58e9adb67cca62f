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
            let aspect = (lr0 + v * (lr1 - lr0)).exp() as f64;
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
        self.apply_with(img, b, Filter::Bicubic)
    }

    /// Crop then PIL resize to `size x size` with `filter` (torchvision's default is bilinear).
    pub fn apply_with(&self, img: &RgbImage, b: CropBox, filter: Filter) -> RgbImage {
        resize(
            &crop(img, b.left, b.top, b.width, b.height),
            self.size,
            self.size,
            filter,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::SeedableRng;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(400))]
        #[test]
        fn sampled_crops_fit_the_image_and_the_bounds(w in 1u32..2000, h in 1u32..2000, seed in any::<u64>(), global in any::<bool>()) {
            let rrc = RandomResizedCrop {
                size: 224,
                scale: if global { (0.25, 1.0) } else { (0.05, 0.25) },
                ratio: (3.0 / 4.0, 4.0 / 3.0),
            };
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            let b = rrc.sample_params(w, h, &mut rng);
            prop_assert!(b.width >= 1 && b.height >= 1);
            prop_assert!(b.left + b.width <= w && b.top + b.height <= h);
            if b != rrc.fallback(w, h) {
                // w and h are rounded from sqrt(area * r) and sqrt(area / r): allow half a pixel.
                let (bw, bh) = (b.width as f64, b.height as f64);
                let area = (w as f64) * (h as f64);
                prop_assert!((bw + 0.5) * (bh + 0.5) >= rrc.scale.0 * area * 0.999);
                prop_assert!((bw - 0.5).max(0.0) * (bh - 0.5).max(0.0) <= rrc.scale.1 * area * 1.001);
                prop_assert!((bw + 0.5) / (bh - 0.5).max(0.5) >= rrc.ratio.0 * 0.999);
                prop_assert!((bw - 0.5) / (bh + 0.5) <= rrc.ratio.1 * 1.001);
            }
        }
    }

    #[test]
    fn fallback_is_central_and_clamped_to_the_ratio() {
        let rrc = RandomResizedCrop {
            size: 224,
            scale: (0.08, 1.0),
            ratio: (0.75, 4.0 / 3.0),
        };
        assert_eq!(
            rrc.fallback(1000, 100),
            CropBox {
                top: 0,
                left: 433,
                height: 100,
                width: 133
            }
        );
        assert_eq!(
            rrc.fallback(100, 1000),
            CropBox {
                top: 433,
                left: 0,
                height: 133,
                width: 100
            }
        );
        assert_eq!(
            rrc.fallback(300, 300),
            CropBox {
                top: 0,
                left: 0,
                height: 300,
                width: 300
            }
        );
    }

    #[test]
    fn same_seed_same_params() {
        let rrc = RandomResizedCrop {
            size: 224,
            scale: (0.05, 0.25),
            ratio: (0.75, 4.0 / 3.0),
        };
        let a: Vec<CropBox> = (0..5)
            .map(|_| rrc.sample_params(640, 480, &mut rand_chacha::ChaCha8Rng::seed_from_u64(9)))
            .collect();
        assert!(a.windows(2).all(|p| p[0] == p[1]));
    }
}
