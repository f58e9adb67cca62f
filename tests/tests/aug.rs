//! fungi-aug against the golden pipeline: RGB decode and the eval views.

use fungi_aug::normalize::to_chw_u8;
use fungi_aug::transforms::EvalTransform;
use fungi_tests::*;
use sha2::Digest;

fn meta() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(golden_dir().join("meta.json")).unwrap()).unwrap()
}

#[test]
fn png_decode_matches_pil_convert_rgb_exactly() {
    let m = meta();
    let imgs = golden_images(false).unwrap();
    let mut checked = 0;
    for (i, (img, entry)) in imgs.iter().zip(m["images"].as_array().unwrap()).enumerate() {
        let file = entry["file"].as_str().unwrap();
        if file.ends_with(".png") {
            let sha = format!("{:x}", sha2::Sha256::digest(img.as_raw()));
            assert_eq!(
                sha,
                entry["rgb_sha256"].as_str().unwrap(),
                "image {i} {file}"
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 6); // RGB, L, RGBA, P, tiny, large
}

#[test]
fn jpeg_fallback_decoder_difference_is_small_and_reported() {
    // The pure-Rust decoder (zune-jpeg via `image`) is not libjpeg-turbo: report how far off it is.
    let pil = golden_images(true).unwrap();
    let ours = golden_images(false).unwrap();
    for i in [0usize, 7] {
        let (a, b) = (pil[i].as_raw(), ours[i].as_raw());
        assert_eq!(a.len(), b.len());
        let diffs: Vec<i32> = a
            .iter()
            .zip(b)
            .map(|(x, y)| (*x as i32 - *y as i32).abs())
            .collect();
        let max = *diffs.iter().max().unwrap();
        let frac = diffs.iter().filter(|d| **d > 0).count() as f64 / diffs.len() as f64;
        eprintln!(
            "jpeg {i}: max |diff| {max} levels, {:.1}% of values differ",
            frac * 100.0
        );
        assert!(max <= 16, "jpeg {i}: max diff {max}");
    }
}

#[test]
fn eval_views_are_bit_exact() {
    let g = Golden::open("eval.safetensors").unwrap();
    let (_, views) = g.u8("views_u8").unwrap();
    let (_, idx) = g.i64("views_image_index").unwrap();
    let imgs = golden_images(true).unwrap();
    let t = EvalTransform::default();
    for (k, &i) in idx.iter().enumerate() {
        let ours = to_chw_u8(&t.apply_u8(&imgs[i as usize]));
        let want = &views[k * 3 * 224 * 224..(k + 1) * 3 * 224 * 224];
        let n = ours.iter().zip(want).filter(|(a, b)| a != b).count();
        assert_eq!(n, 0, "eval view of image {i}: {n} values differ");
    }
}

#[test]
fn kl_views_are_bit_exact() {
    let g = Golden::open("kl.safetensors").unwrap();
    let (_, views) = g.u8("views_u8").unwrap();
    let imgs = golden_images(true).unwrap();
    let t = fungi_aug::transforms::KlTransform::default();
    for (i, img) in imgs.iter().enumerate() {
        let v = to_chw_u8(&t.apply_u8(img));
        let want = &views[i * 3 * 224 * 224..(i + 1) * 3 * 224 * 224];
        let n = v.iter().zip(want).filter(|(a, b)| a != b).count();
        assert_eq!(n, 0, "KL view of image {i}: {n} values differ");
    }
}

#[test]
fn pillow_bilinear_is_not_torch_uint8() {
    // The two kernels differ by one level in places: using Pillow's for the KL view would be wrong.
    use fungi_aug::resample::{resize, resize_torch_u8, Filter};
    let img = &golden_images(true).unwrap()[1];
    let a = resize(img, 256, 256, Filter::Bilinear);
    let b = resize_torch_u8(img, 256, 256);
    let max = a
        .as_raw()
        .iter()
        .zip(b.as_raw())
        .map(|(x, y)| (*x as i32 - *y as i32).abs())
        .max()
        .unwrap();
    assert_eq!(max, 1);
}
