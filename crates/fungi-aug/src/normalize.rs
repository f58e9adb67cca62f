//! Conversion of 8-bit RGB to normalised CHW `f32`.

use image::RgbImage;

/// ImageNet mean (RGB).
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
/// ImageNet standard deviation (RGB).
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// How `u8` becomes `[0, 1]`; the two differ in the last ulp for 126 of the 256 values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScaleFormula {
    /// `v as f32 / 255.0` (torchvision `ToTensor`; DINO, SimCLR, eval views).
    Divide,
    /// `v as f32 * (1.0 / 255.0)` (torchvision v2 `ToDtype(scale=True)`; fungivision's KL view).
    MultiplyReciprocal,
}

/// Scales one value.
#[inline]
pub fn scale_u8(v: u8, formula: ScaleFormula) -> f32 {
    match formula {
        ScaleFormula::Divide => v as f32 / 255.0,
        ScaleFormula::MultiplyReciprocal => v as f32 * (1.0f32 / 255.0),
    }
}

/// `(scale(v) - mean[c]) / std[c]` into a CHW buffer (ImageNet statistics).
pub fn to_chw_normalized(img: &RgbImage, formula: ScaleFormula) -> Vec<f32> {
    to_chw_normalized_with(img, formula, IMAGENET_MEAN, IMAGENET_STD)
}

/// `(scale(v) - mean[c]) / std[c]` into a CHW buffer with given statistics (e.g. SwAV's
/// `std = [0.228, 0.224, 0.225]` in the paper's DeepCluster transform).
pub fn to_chw_normalized_with(
    img: &RgbImage,
    formula: ScaleFormula,
    mean: [f32; 3],
    std: [f32; 3],
) -> Vec<f32> {
    to_chw_with(img, |c, v| (scale_u8(v, formula) - mean[c]) / std[c])
}

/// HWC `u8` → CHW `f32` through `value(channel, v)` (tabulated: 256 values per channel).
pub fn to_chw_with(img: &RgbImage, value: impl Fn(usize, u8) -> f32) -> Vec<f32> {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let mut out = vec![0f32; 3 * w * h];
    let raw = img.as_raw();
    for c in 0..3 {
        let lut: Vec<f32> = (0..=255u8).map(|v| value(c, v)).collect();
        let plane = &mut out[c * w * h..(c + 1) * w * h];
        for (i, o) in plane.iter_mut().enumerate() {
            *o = lut[raw[i * 3 + c] as usize];
        }
    }
    out
}

/// Normalises a batch of CHW `u8` images (`[..., 3, H, W]` row-major, `hw = H * W`) into `f32`.
pub fn chw_u8_to_normalized(chw: &[u8], hw: usize, formula: ScaleFormula) -> Vec<f32> {
    chw.iter()
        .enumerate()
        .map(|(i, &v)| {
            let c = (i / hw) % 3;
            (scale_u8(v, formula) - IMAGENET_MEAN[c]) / IMAGENET_STD[c]
        })
        .collect()
}

/// HWC RGB image to CHW `u8`.
pub fn to_chw_u8(img: &RgbImage) -> Vec<u8> {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let raw = img.as_raw();
    let mut out = vec![0u8; 3 * w * h];
    for c in 0..3 {
        for i in 0..w * h {
            out[c * w * h + i] = raw[i * 3 + c];
        }
    }
    out
}
