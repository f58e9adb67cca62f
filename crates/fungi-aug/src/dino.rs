//! fungivision's DINO views: 2 global + N local `RandomResizedCrop`s, all PIL-bicubic to 224.

use image::RgbImage;
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::crop::{CropBox, RandomResizedCrop};
use crate::normalize::{to_chw_normalized, ScaleFormula};

/// The DINO multi-crop transform (fungivision `DINODataAgumentation`: crops only, no flips or
/// colour jitter, local crops also at 224).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DinoTransform {
    /// Output side of every view.
    pub size: u32,
    /// Number of local crops.
    pub local_crops_number: usize,
    /// Area range of the 2 global crops.
    pub global_crops_scale: (f64, f64),
    /// Area range of the local crops.
    pub local_crops_scale: (f64, f64),
    /// Aspect-ratio range of all crops.
    pub crop_ratio: (f64, f64),
}

impl Default for DinoTransform {
    fn default() -> Self {
        Self {
            size: 224,
            local_crops_number: 10,
            global_crops_scale: (0.25, 1.0),
            local_crops_scale: (0.05, 0.25),
            crop_ratio: (3.0 / 4.0, 4.0 / 3.0),
        }
    }
}

impl DinoTransform {
    /// Views per image: `2 + local_crops_number`.
    pub fn views(&self) -> usize {
        2 + self.local_crops_number
    }
    fn rrc(&self, global: bool) -> RandomResizedCrop {
        RandomResizedCrop {
            size: self.size,
            scale: if global {
                self.global_crops_scale
            } else {
                self.local_crops_scale
            },
            ratio: self.crop_ratio,
        }
    }
    /// Crop boxes for `[global1, global2, local1 ..]`.
    pub fn sample_params<R: Rng + ?Sized>(
        &self,
        width: u32,
        height: u32,
        rng: &mut R,
    ) -> Vec<CropBox> {
        (0..self.views())
            .map(|v| self.rrc(v < 2).sample_params(width, height, rng))
            .collect()
    }
    /// The 8-bit views for given crop boxes.
    pub fn apply_u8(&self, img: &RgbImage, params: &[CropBox]) -> Vec<RgbImage> {
        params
            .iter()
            .map(|&b| self.rrc(true).apply(img, b))
            .collect()
    }
    /// Normalised CHW `f32` views, concatenated (`ToTensor` division formula).
    pub fn apply(&self, img: &RgbImage, params: &[CropBox]) -> Vec<f32> {
        self.apply_u8(img, params)
            .iter()
            .flat_map(|v| to_chw_normalized(v, ScaleFormula::Divide))
            .collect()
    }
}
