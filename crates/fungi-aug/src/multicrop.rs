//! Multi-crop views: `G` global + `L` local `RandomResizedCrop`s, all resized to one side, as
//! DINO (fungivision's `DINODataAgumentation`) and the paper's DeepCluster (SwAV's multi-crop)
//! make them. One type for both: [`MultiCrop::default`] is DINO's, the DeepCluster objective
//! sets its own counts, scales, filter and statistics.

use image::RgbImage;
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::crop::{CropBox, RandomResizedCrop};
use crate::normalize::{to_chw_normalized_with, ScaleFormula, IMAGENET_MEAN, IMAGENET_STD};
use crate::resample::Filter;

/// A multi-crop transform: crops only (no flips or colour jitter), local crops at the same
/// size as the global ones.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MultiCrop {
    /// Output side of every view.
    pub size: u32,
    /// Number of global crops (DINO: 2).
    pub global_crops_number: usize,
    /// Number of local crops.
    pub local_crops_number: usize,
    /// Area range of the global crops.
    pub global_crops_scale: (f64, f64),
    /// Area range of the local crops.
    pub local_crops_scale: (f64, f64),
    /// Aspect-ratio range of all crops.
    pub crop_ratio: (f64, f64),
    /// Resampling filter of the resize (DINO: PIL bicubic; torchvision's default: bilinear).
    pub filter: Filter,
    /// Per-channel mean of the normalisation.
    pub mean: [f32; 3],
    /// Per-channel standard deviation of the normalisation.
    pub std: [f32; 3],
}

/// fungivision's DINO views: 2 global + 10 local crops, PIL bicubic to 224, ImageNet statistics.
pub type DinoTransform = MultiCrop;

impl Default for MultiCrop {
    fn default() -> Self {
        Self {
            size: 224,
            global_crops_number: 2,
            local_crops_number: 10,
            global_crops_scale: (0.25, 1.0),
            local_crops_scale: (0.05, 0.25),
            crop_ratio: (3.0 / 4.0, 4.0 / 3.0),
            filter: Filter::Bicubic,
            mean: IMAGENET_MEAN,
            std: IMAGENET_STD,
        }
    }
}

impl MultiCrop {
    /// Views per image: `global_crops_number + local_crops_number`.
    pub fn views(&self) -> usize {
        self.global_crops_number + self.local_crops_number
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
    /// One more global crop box (DeepCluster's memory-bank crops), drawn after the views'.
    pub fn sample_global<R: Rng + ?Sized>(&self, width: u32, height: u32, rng: &mut R) -> CropBox {
        self.rrc(true).sample_params(width, height, rng)
    }
    /// Crop boxes for `[global 1 .. G, local 1 .. L]`.
    pub fn sample_params<R: Rng + ?Sized>(
        &self,
        width: u32,
        height: u32,
        rng: &mut R,
    ) -> Vec<CropBox> {
        (0..self.views())
            .map(|v| {
                self.rrc(v < self.global_crops_number)
                    .sample_params(width, height, rng)
            })
            .collect()
    }
    /// The 8-bit views for given crop boxes.
    pub fn apply_u8(&self, img: &RgbImage, params: &[CropBox]) -> Vec<RgbImage> {
        params
            .iter()
            .map(|&b| self.rrc(true).apply_with(img, b, self.filter))
            .collect()
    }
    /// Normalised CHW `f32` views, concatenated (`ToTensor` division formula).
    pub fn apply(&self, img: &RgbImage, params: &[CropBox]) -> Vec<f32> {
        self.apply_u8(img, params)
            .iter()
            .flat_map(|v| to_chw_normalized_with(v, ScaleFormula::Divide, self.mean, self.std))
            .collect()
    }
}
