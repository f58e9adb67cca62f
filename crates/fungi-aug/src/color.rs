//! The HummingBird training transform's colour jitter (`../shared/docs/dense-fungi.md` §C.1):
//! brightness, contrast, saturation and hue, each applied with probability `p` with a factor
//! drawn uniformly in `[1 − s, 1 + s]` (hue: a shift in `[−s, s]` of a turn), as PIL's
//! `ImageEnhance` / torchvision's `adjust_*` compute them, in that fixed order.
//! Split into [`ColorJitter::sample_params`] and [`ColorJitter::apply`].

use image::RgbImage;
use rand::{Rng, RngExt};
use serde::{Deserialize, Serialize};

/// Strengths and probability of the jitter.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ColorJitter {
    /// Brightness factor range `[max(0, 1 − b), 1 + b]`.
    pub brightness: f32,
    /// Contrast factor range `[max(0, 1 − c), 1 + c]`.
    pub contrast: f32,
    /// Saturation factor range `[max(0, 1 − s), 1 + s]`.
    pub saturation: f32,
    /// Hue shift range `[−h, h]` (fraction of a turn, at most 0.5).
    pub hue: f32,
    /// Probability that each of the four is applied.
    pub p: f32,
}

impl ColorJitter {
    /// The paper's: 0.1 for each, each applied with probability 0.5.
    pub const PAPER: Self = Self {
        brightness: 0.1,
        contrast: 0.1,
        saturation: 0.1,
        hue: 0.1,
        p: 0.5,
    };
}

/// The factors drawn for one image (`None`: not applied).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct JitterParams {
    /// Brightness factor.
    pub brightness: Option<f32>,
    /// Contrast factor.
    pub contrast: Option<f32>,
    /// Saturation factor.
    pub saturation: Option<f32>,
    /// Hue shift.
    pub hue: Option<f32>,
}

fn luma(p: [f32; 3]) -> f32 {
    // PIL's "L" conversion: ITU-R 601-2 luma.
    p[0] * 0.299 + p[1] * 0.587 + p[2] * 0.114
}

fn blend(img: &mut [f32], degenerate: impl Fn(usize) -> f32, f: f32) {
    for (i, v) in img.iter_mut().enumerate() {
        let d = degenerate(i);
        *v = (d + f * (*v - d)).clamp(0.0, 255.0);
    }
}

fn rgb_to_hsv([r, g, b]: [f32; 3]) -> [f32; 3] {
    let max = r.max(g).max(b);
    let min = r.min(g).min(b);
    let c = max - min;
    let h = if c == 0.0 {
        0.0
    } else if max == r {
        ((g - b) / c).rem_euclid(6.0)
    } else if max == g {
        (b - r) / c + 2.0
    } else {
        (r - g) / c + 4.0
    } / 6.0;
    let s = if max == 0.0 { 0.0 } else { c / max };
    [h, s, max]
}

fn hsv_to_rgb([h, s, v]: [f32; 3]) -> [f32; 3] {
    let h6 = h.rem_euclid(1.0) * 6.0;
    let i = h6.floor();
    let f = h6 - i;
    let (p, q, t) = (v * (1.0 - s), v * (1.0 - s * f), v * (1.0 - s * (1.0 - f)));
    match i as u32 % 6 {
        0 => [v, t, p],
        1 => [q, v, p],
        2 => [p, v, t],
        3 => [p, q, v],
        4 => [t, p, v],
        _ => [v, p, q],
    }
}

impl ColorJitter {
    /// Draws which adjustments apply and their factors.
    pub fn sample_params<R: Rng + ?Sized>(&self, rng: &mut R) -> JitterParams {
        let factor = |s: f32, centre: f32, rng: &mut R| {
            let apply = rng.random::<f32>() < self.p;
            let u: f32 = rng.random();
            let lo = if centre == 1.0 {
                (1.0 - s).max(0.0)
            } else {
                -s
            };
            (apply && s > 0.0).then_some(lo + u * (centre + s - lo))
        };
        JitterParams {
            brightness: factor(self.brightness, 1.0, rng),
            contrast: factor(self.contrast, 1.0, rng),
            saturation: factor(self.saturation, 1.0, rng),
            hue: factor(self.hue.min(0.5), 0.0, rng),
        }
    }

    /// Applies drawn factors (brightness, contrast, saturation, hue in that order), rounding
    /// back to `u8` once at the end.
    pub fn apply(&self, img: &RgbImage, p: &JitterParams) -> RgbImage {
        if *p == JitterParams::default() {
            return img.clone();
        }
        let mut px: Vec<f32> = img.as_raw().iter().map(|&v| v as f32).collect();
        if let Some(f) = p.brightness {
            blend(&mut px, |_| 0.0, f);
        }
        if let Some(f) = p.contrast {
            let n = (px.len() / 3).max(1) as f32;
            let mean = px
                .chunks_exact(3)
                .map(|c| luma([c[0], c[1], c[2]]))
                .sum::<f32>()
                / n;
            blend(&mut px, |_| mean, f);
        }
        if let Some(f) = p.saturation {
            let grey: Vec<f32> = px
                .chunks_exact(3)
                .map(|c| luma([c[0], c[1], c[2]]))
                .collect();
            blend(&mut px, |i| grey[i / 3], f);
        }
        if let Some(shift) = p.hue {
            for c in px.chunks_exact_mut(3) {
                let [h, s, v] = rgb_to_hsv([c[0] / 255.0, c[1] / 255.0, c[2] / 255.0]);
                let rgb = hsv_to_rgb([h + shift, s, v]);
                for (o, x) in c.iter_mut().zip(rgb) {
                    *o = (x * 255.0).clamp(0.0, 255.0);
                }
            }
        }
        let data = px.iter().map(|v| v.round() as u8).collect();
        RgbImage::from_raw(img.width(), img.height(), data).unwrap_or_else(|| img.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn factors_stay_in_range_and_identity_factors_change_nothing() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let j = ColorJitter::PAPER;
        let mut applied = 0;
        for _ in 0..200 {
            let p = j.sample_params(&mut rng);
            for f in [p.brightness, p.contrast, p.saturation]
                .into_iter()
                .flatten()
            {
                assert!((0.9..=1.1).contains(&f), "{f}");
                applied += 1;
            }
            if let Some(h) = p.hue {
                assert!((-0.1..=0.1).contains(&h), "{h}");
            }
        }
        // About half of 600 draws apply.
        assert!((200..400).contains(&applied), "{applied}");
        let img = RgbImage::from_fn(5, 4, |x, y| image::Rgb([x as u8 * 40, y as u8 * 60, 90]));
        let same = JitterParams {
            brightness: Some(1.0),
            contrast: Some(1.0),
            saturation: Some(1.0),
            hue: Some(0.0),
        };
        let out = j.apply(&img, &same);
        for (a, b) in out.as_raw().iter().zip(img.as_raw()) {
            assert!((*a as i32 - *b as i32).abs() <= 1, "{a} vs {b}");
        }
    }

    #[test]
    fn each_adjustment_does_what_it_says() {
        let img = RgbImage::from_fn(2, 1, |x, _| {
            if x == 0 {
                image::Rgb([200, 100, 50])
            } else {
                image::Rgb([20, 40, 60])
            }
        });
        let j = ColorJitter::PAPER;
        let b = j.apply(
            &img,
            &JitterParams {
                brightness: Some(0.5),
                ..Default::default()
            },
        );
        assert_eq!(b.as_raw(), &vec![100, 50, 25, 10, 20, 30]);
        let s = j.apply(
            &img,
            &JitterParams {
                saturation: Some(0.0),
                ..Default::default()
            },
        );
        // Saturation 0 is the grey image: all channels equal per pixel.
        assert!(s.pixels().all(|p| p[0] == p[1] && p[1] == p[2]));
        // A hue shift of a third of a turn maps red to green.
        let red = RgbImage::from_pixel(1, 1, image::Rgb([255, 0, 0]));
        let h = j.apply(
            &red,
            &JitterParams {
                hue: Some(1.0 / 3.0),
                ..Default::default()
            },
        );
        assert_eq!(h.as_raw(), &vec![0, 255, 0]);
    }
}
