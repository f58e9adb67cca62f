//! View transforms. Every transform is `sample_params(rng)` (random, cheap) + `apply(image,
//! params)` (deterministic); deterministic transforms have `()` parameters.

use image::RgbImage;

use crate::normalize::{
    to_chw_normalized, to_chw_normalized_with, to_chw_with, ScaleFormula, IMAGENET_MEAN,
    IMAGENET_STD,
};
use crate::resample::{crop, resize_crop, resize_crop_torch_u8, resize_torch_u8, Filter};

/// Python's `round()` (half to even) of a non-negative `x / 2`, as torchvision's `CenterCrop`
/// computes `int(round((h - crop) / 2.0))`.
pub fn round_half_even_div2(x: u32) -> u32 {
    let q = x / 2;
    if !x.is_multiple_of(2) && !q.is_multiple_of(2) {
        q + 1
    } else {
        q
    }
}

/// [`round_half_even_div2`] of a `u64`.
fn round_half_even_div2_u64(x: u64) -> u64 {
    let q = x / 2;
    if !x.is_multiple_of(2) && !q.is_multiple_of(2) {
        q + 1
    } else {
        q
    }
}

/// Geometry of the DINO eval transform for an image of `w x h`: resized size and crop origin.
///
/// `u64`: the resized long side of a very elongated image does not fit in `u32` (a 20000000x1
/// image, 20 M pixels, resizes to 5120000000x256).
///
/// # Panics
/// If `w` or `h` is zero (decoded images never are).
pub fn eval_geometry(w: u32, h: u32, resize_to: u32, crop_size: u32) -> ((u64, u64), (u64, u64)) {
    // torchvision `_compute_resized_output_size` with an int size: short side -> size,
    // long side -> int(size * long / short).
    let r = resize_to as u64;
    let (nw, nh) = if w <= h {
        (r, r * h as u64 / w as u64)
    } else {
        (r * w as u64 / h as u64, r)
    };
    let left = round_half_even_div2_u64(nw.saturating_sub(crop_size as u64));
    let top = round_half_even_div2_u64(nh.saturating_sub(crop_size as u64));
    ((nw, nh), (left, top))
}

/// The conventions of an eval pipeline beyond its numbers (resize kernel, crop rounding,
/// scaling to `[0, 1]`), which differ between the libraries a model's transform comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EvalStyle {
    /// torchvision transforms on PIL images (DINO, timm, torchvision weights): Pillow's resize,
    /// crop offset `round(d / 2)` (half to even), `x / 255`, `(v - mean) / std` in `f32`.
    #[default]
    Torchvision,
    /// transformers' PIL image processors (`BitImageProcessorPil`, `ViTImageProcessorPil`):
    /// Pillow's resize, crop offset `d // 2`, `f32(f64(x) * 0.00392156862745098)`, then
    /// `(v - mean) / std` in `f32`.
    HfPil,
    /// transformers' default image processors (torchvision backend on uint8 tensors): PyTorch's
    /// uint8 antialiased resize, crop offset `int(d / 2)`, and the rescale fused into the
    /// normalisation: `(x - 255·mean) / (255·std)` in `f32`.
    HfTorch,
}

/// An eval transform: resize the short side (PIL, with `filter`), center crop, `ToTensor`,
/// `Normalize(mean, std)`.
///
/// The default is DINO's `eval_knn.py` transform: `Resize(256, BICUBIC)`, `CenterCrop(224)`,
/// ImageNet statistics. A model's own eval transform (timm's `pretrained_cfg`, torchvision's
/// weights transforms) is the same pipeline with its numbers: see [`EvalTransform::timm`] and
/// [`EvalTransform::torchvision`].
///
/// It is also the architecture's own transform in `fungi_backbone::VitConfig::transform`,
/// serialised there (and so in state files and run identities) as `{"resize", "crop",
/// "interpolation", "mean", "std"}` plus `"squash": true` and `"style"` when they are not the
/// defaults.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EvalTransform {
    /// Short side after resizing (256).
    pub resize: u32,
    /// Center-crop size (224).
    pub crop: u32,
    /// Resampling filter of the resize (PIL bicubic).
    #[serde(rename = "interpolation")]
    pub filter: Filter,
    /// Per-channel mean subtracted after scaling to `[0, 1]` (ImageNet).
    pub mean: [f32; 3],
    /// Per-channel standard deviation (ImageNet).
    pub std: [f32; 3],
    /// Resize to `resize x resize` whatever the aspect ratio (transformers' `size: {height,
    /// width}`) instead of the short side to `resize`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub squash: bool,
    /// The library conventions of the pipeline.
    #[serde(default, skip_serializing_if = "EvalStyle::is_torchvision")]
    pub style: EvalStyle,
}

impl EvalStyle {
    /// Whether this is the default, [`EvalStyle::Torchvision`] (left out when serialised).
    pub fn is_torchvision(&self) -> bool {
        *self == EvalStyle::Torchvision
    }
}

impl Default for EvalTransform {
    fn default() -> Self {
        Self {
            resize: 256,
            crop: 224,
            filter: Filter::Bicubic,
            mean: IMAGENET_MEAN,
            std: IMAGENET_STD,
            squash: false,
            style: EvalStyle::Torchvision,
        }
    }
}

impl EvalTransform {
    /// timm's eval transform for `img_size` and `crop_pct` (`transforms_imagenet_eval`,
    /// `crop_mode="center"`): short side to `floor(img_size / crop_pct)`, center crop `img_size`.
    pub fn timm(
        img_size: u32,
        crop_pct: f64,
        filter: Filter,
        mean: [f32; 3],
        std: [f32; 3],
    ) -> Self {
        Self {
            resize: (img_size as f64 / crop_pct).floor() as u32,
            crop: img_size,
            filter,
            mean,
            std,
            ..Self::default()
        }
    }

    /// torchvision's `ImageClassification(crop_size, resize_size, interpolation)` weights
    /// transform (on PIL images: the same resize, crop and normalisation).
    pub fn torchvision(
        crop: u32,
        resize: u32,
        filter: Filter,
        mean: [f32; 3],
        std: [f32; 3],
    ) -> Self {
        Self {
            resize,
            crop,
            filter,
            mean,
            std,
            ..Self::default()
        }
    }

    /// The 8-bit view (before normalisation), `crop x crop` RGB. Only the crop is computed
    /// ([`resize_crop`], bit-identical to resizing then cropping), so memory stays bounded for
    /// any aspect ratio.
    ///
    /// # Panics
    /// If the image is empty (decoded images never are) or `crop > resize`.
    pub fn apply_u8(&self, img: &RgbImage) -> RgbImage {
        let (r, c) = (self.resize as u64, self.crop as u64);
        let ((nw, nh), (left, top)) = if self.squash {
            ((r, r), (0, 0))
        } else {
            eval_geometry(img.width(), img.height(), self.resize, self.crop)
        };
        let (left, top) = match (self.style, self.squash) {
            (EvalStyle::Torchvision, false) => (left, top),
            (EvalStyle::Torchvision, true) => {
                let d = round_half_even_div2_u64(r.saturating_sub(c));
                (d, d)
            }
            // transformers: `(d) // 2` (PIL backend), `int(d / 2.0)` (torchvision backend).
            (EvalStyle::HfPil | EvalStyle::HfTorch, _) => {
                (nw.saturating_sub(c) / 2, nh.saturating_sub(c) / 2)
            }
        };
        match self.style {
            EvalStyle::HfTorch => {
                resize_crop_torch_u8(img, nw, nh, self.filter, left, top, self.crop, self.crop)
            }
            _ => resize_crop(img, nw, nh, self.filter, left, top, self.crop, self.crop),
        }
    }
    /// The normalised CHW `f32` view.
    pub fn apply(&self, img: &RgbImage) -> Vec<f32> {
        let view = self.apply_u8(img);
        let (mean, std) = (self.mean, self.std);
        match self.style {
            EvalStyle::Torchvision => {
                to_chw_normalized_with(&view, ScaleFormula::Divide, mean, std)
            }
            EvalStyle::HfPil => to_chw_with(&view, |c, v| {
                ((v as f64 * 0.003_921_568_627_450_98) as f32 - mean[c]) / std[c]
            }),
            EvalStyle::HfTorch => to_chw_with(&view, |c, v| {
                (v as f32 - mean[c] * 255.0) / (std[c] * 255.0)
            }),
        }
    }
}

/// fungivision's KL view: squash to `resize x resize` with PyTorch's uint8 antialiased bilinear
/// kernel (aspect ratio not kept), center crop, `ToDtype(scale=True)` (`v * (1/255)`), ImageNet
/// normalisation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KlTransform {
    /// Squash size (256).
    pub resize: u32,
    /// Center-crop size (224).
    pub crop: u32,
}

impl Default for KlTransform {
    fn default() -> Self {
        Self {
            resize: 256,
            crop: 224,
        }
    }
}

impl KlTransform {
    /// The 8-bit view (before normalisation).
    pub fn apply_u8(&self, img: &RgbImage) -> RgbImage {
        let r = resize_torch_u8(img, self.resize, self.resize);
        let off = round_half_even_div2(self.resize.saturating_sub(self.crop));
        crop(&r, off, off, self.crop, self.crop)
    }
    /// The normalised CHW `f32` view.
    pub fn apply(&self, img: &RgbImage) -> Vec<f32> {
        to_chw_normalized(&self.apply_u8(img), ScaleFormula::MultiplyReciprocal)
    }
}

/// No geometric transform: the image as is, normalised (the caller guarantees its size).
pub fn identity(img: &RgbImage) -> Vec<f32> {
    to_chw_normalized(img, ScaleFormula::Divide)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_round_half_even() {
        // (393 - 224) / 2 = 84.5 -> 84; (341 - 224) / 2 = 58.5 -> 58; 85.5 -> 86
        assert_eq!(round_half_even_div2(169), 84);
        assert_eq!(round_half_even_div2(117), 58);
        assert_eq!(round_half_even_div2(171), 86);
        assert_eq!(round_half_even_div2(32), 16);
    }

    #[test]
    fn golden_eval_geometry() {
        // ../shared/golden/README.md "Resize / crop geometry per image".
        let cases = [
            ((451, 300), (384, 256), (80, 16)),
            ((320, 240), (341, 256), (58, 16)),
            ((256, 320), (256, 320), (16, 48)),
            ((20, 13), (393, 256), (84, 16)),
            ((900, 600), (384, 256), (80, 16)),
            ((480, 96), (1280, 256), (528, 16)),
        ];
        for ((w, h), size, origin) in cases {
            assert_eq!(eval_geometry(w, h, 256, 224), (size, origin), "{w}x{h}");
        }
    }

    #[test]
    fn very_elongated_images_have_exact_geometry_and_bounded_views() {
        // The long side no longer wraps around u32 (it was `as u32`).
        assert_eq!(
            eval_geometry(20_000_000, 1, 256, 224),
            ((5_120_000_000, 256), (2_559_999_888, 16))
        );
        let img = RgbImage::from_pixel(100_000, 1, image::Rgb([3, 30, 200]));
        let v = EvalTransform::default().apply_u8(&img);
        assert_eq!(v.dimensions(), (224, 224));
        assert!(v.pixels().all(|p| p.0 == [3, 30, 200]));
        let v = EvalTransform::default().apply_u8(&RgbImage::new(1, 3_000_000));
        assert_eq!(v.dimensions(), (224, 224));
    }
}
