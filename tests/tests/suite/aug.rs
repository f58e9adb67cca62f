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
fn golden_jpegs_decode_like_pillow() {
    // With `turbojpeg` (libjpeg-turbo, as Pillow): exact. Without: the pure-Rust decoder (zune-jpeg
    // via `image`), whose difference is reported (docs/parity.md).
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
        if cfg!(feature = "turbojpeg") {
            assert_eq!(max, 0, "jpeg {i} is not bit-exact with libjpeg-turbo");
        } else {
            assert!(max <= 16, "jpeg {i}: max diff {max}");
        }
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

#[test]
fn every_format_and_mode_decodes_like_pil() {
    let dir = fixtures().join("formats");
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    let mut bad = Vec::new();
    for (name, e) in expected.as_object().unwrap() {
        let exact_jpeg = cfg!(feature = "turbojpeg");
        if name.ends_with(".jpg") && !exact_jpeg {
            continue; // lossy: exact only with libjpeg-turbo (feature `turbojpeg`), see below
        }
        let img = fungi_aug::decode_rgb(dir.join(name), &Default::default()).unwrap();
        let sha = format!("{:x}", sha2::Sha256::digest(img.as_raw()));
        let size = [img.width() as u64, img.height() as u64];
        if sha != e["rgb_sha256"].as_str().unwrap() || e["size"] != serde_json::json!(size) {
            bad.push(format!("{name} (PIL mode {})", e["mode"]));
        }
    }
    assert!(bad.is_empty(), "decoded differently from PIL: {bad:?}");
}

#[test]
fn dino_views_replayed_from_crop_params_are_bit_exact() {
    let g = Golden::open("dino.safetensors").unwrap();
    let (_, crops) = g.i64("crop_params").unwrap(); // [N, 12, 4] (top, left, height, width)
    let (vs, views) = g.u8("views_u8").unwrap(); // [2, 6, 3, 224, 224]
    let (_, img_idx) = g.i64("views_image_index").unwrap();
    let imgs = golden_images(true).unwrap();
    let t = fungi_aug::DinoTransform::default();
    let per = 3 * 224 * 224;
    for (k, &i) in img_idx.iter().enumerate() {
        let boxes: Vec<fungi_aug::CropBox> = (0..12)
            .map(|v| {
                let c = &crops[(i as usize * 12 + v) * 4..(i as usize * 12 + v) * 4 + 4];
                fungi_aug::CropBox {
                    top: c[0] as u32,
                    left: c[1] as u32,
                    height: c[2] as u32,
                    width: c[3] as u32,
                }
            })
            .collect();
        let ours = t.apply_u8(&imgs[i as usize], &boxes);
        for v in 0..vs[1] {
            let want = &views[(k * vs[1] + v) * per..(k * vs[1] + v + 1) * per];
            let got = to_chw_u8(&ours[v]);
            let n = got.iter().zip(want).filter(|(a, b)| a != b).count();
            assert_eq!(n, 0, "DINO view {v} of image {i}: {n} values differ");
        }
    }
}

#[test]
fn simclr_base_is_bit_exact_and_views_within_1e6() {
    let g = Golden::open("simclr.safetensors").unwrap();
    let (_, base) = g.u8("base_u8").unwrap();
    let (_, sel) = g.f32("views_sel").unwrap(); // [2, 1, 3, 224, 224]
    let (_, sel_idx) = g.i64("views_sel_index").unwrap();
    let (_, img_idx) = g.i64("views_image_index").unwrap();
    let imgs = golden_images(true).unwrap();
    let p = fungi_aug::Patchify::default();
    assert_eq!(p.views().unwrap(), 49);
    let per = 3 * 224 * 224;
    for (k, &i) in img_idx.iter().enumerate() {
        let b = to_chw_u8(&p.base_u8(&imgs[i as usize]));
        let n = b
            .iter()
            .zip(&base[k * per..(k + 1) * per])
            .filter(|(x, y)| x != y)
            .count();
        assert_eq!(n, 0, "SimCLR base of image {i}: {n} values differ");
        let views = p.apply(&imgs[i as usize]).unwrap();
        assert_eq!(views.len(), 49 * per);
        let v = sel_idx[k] as usize;
        let got = &views[v * per..(v + 1) * per];
        let want: Vec<f64> = sel[k * per..(k + 1) * per]
            .iter()
            .map(|&x| x as f64)
            .collect();
        assert_abs(&format!("SimCLR view {v} of image {i}"), got, &want, 1e-6);
    }
}

#[test]
fn patchify_view_counts_and_invalid_geometry() {
    use fungi_aug::Patchify;
    for (stride_scale, n) in [(1.0, 4), (4.0, 25), (6.0, 49)] {
        assert_eq!(
            Patchify {
                stride_scale,
                ..Default::default()
            }
            .views()
            .unwrap(),
            n
        );
    }
    // Ported from the reference repo's test_patchify: stride_scale 1 -> [4, 3, 224, 224].
    let img = golden_images(true).unwrap().remove(1);
    let v = Patchify {
        stride_scale: 1.0,
        ..Default::default()
    }
    .apply(&img)
    .unwrap();
    assert_eq!(v.len(), 4 * 3 * 224 * 224);
    for (p, key) in [
        (
            Patchify {
                num_patches: 0,
                ..Default::default()
            },
            "num_patches",
        ),
        (
            Patchify {
                stride_scale: 200.0,
                ..Default::default()
            },
            "stride_scale",
        ),
        (
            Patchify {
                stride_scale: -1.0,
                ..Default::default()
            },
            "stride_scale",
        ),
    ] {
        let e = p.views().unwrap_err().to_string();
        assert!(e.contains(key), "{e}");
    }
}

#[test]
fn pillow_resize_matches_on_60_random_geometries() {
    use fungi_aug::resample::{crop, resize, Filter};
    let cases: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("formats/resize_cases.json")).unwrap(),
    )
    .unwrap();
    let src = fungi_aug::decode_rgb(
        golden_dir().join("images/06_large.png"),
        &Default::default(),
    )
    .unwrap();
    let mut bad = vec![];
    for c in cases.as_array().unwrap() {
        let b: Vec<u32> = c["box"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        let o: Vec<u32> = c["out"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        let f = if c["filter"] == "bicubic" {
            Filter::Bicubic
        } else {
            Filter::Bilinear
        };
        let r = resize(&crop(&src, b[0], b[1], b[2], b[3]), o[0], o[1], f);
        if format!("{:x}", sha2::Sha256::digest(r.as_raw())) != c["sha256"].as_str().unwrap() {
            bad.push(c.clone());
        }
    }
    assert!(
        bad.is_empty(),
        "{} of {} differ from Pillow 13: {bad:?}",
        bad.len(),
        cases.as_array().unwrap().len()
    );
}

fn png_header(w: u32, h: u32) -> Vec<u8> {
    // A PNG whose IHDR claims w x h, with an empty IDAT: limits must trip before any allocation.
    fn chunk(t: &[u8], d: &[u8]) -> Vec<u8> {
        let mut c = (d.len() as u32).to_be_bytes().to_vec();
        c.extend_from_slice(t);
        c.extend_from_slice(d);
        let mut crc_in = t.to_vec();
        crc_in.extend_from_slice(d);
        c.extend_from_slice(&crc32(&crc_in).to_be_bytes());
        c
    }
    fn crc32(b: &[u8]) -> u32 {
        let mut c = 0xFFFF_FFFFu32;
        for &x in b {
            c ^= x as u32;
            for _ in 0..8 {
                c = if c & 1 == 1 {
                    0xEDB8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
            }
        }
        !c
    }
    let mut ihdr = w.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    out.extend(chunk(b"IHDR", &ihdr));
    out.extend(chunk(b"IDAT", &[]));
    out.extend(chunk(b"IEND", &[]));
    out
}

#[test]
fn bad_inputs_give_clear_errors_naming_the_file() {
    use fungi_aug::{decode_rgb_bytes, DecodeOptions, Error};
    let o = DecodeOptions::default();
    let p = std::path::Path::new("/data/img.png");
    let png = std::fs::read(golden_dir().join("images/01_coffee.png")).unwrap();
    let jpg = std::fs::read(golden_dir().join("images/00_chelsea.jpg")).unwrap();
    // Truncated PNG and JPEG, corrupt bytes, empty file, unsupported format (GIF).
    let gif = b"GIF89a\x01\x00\x01\x00\x00\x00\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x00;"
        .to_vec();
    for (what, bytes) in [
        ("truncated png", png[..png.len() / 2].to_vec()),
        ("truncated jpeg", jpg[..jpg.len() / 3].to_vec()),
        ("corrupt", vec![0x42; 1000]),
        ("empty", vec![]),
        ("gif", gif),
    ] {
        match decode_rgb_bytes(&bytes, p, &o) {
            Err(e @ Error::Decode { .. }) => {
                assert!(e.to_string().contains("/data/img.png"), "{what}: {e}")
            }
            Ok(img) if what == "truncated jpeg" => {
                // libjpeg-turbo (like Pillow with LOAD_TRUNCATED_IMAGES) may return a partial image;
                // it must still have the header's size.
                assert_eq!((img.width(), img.height()), (451, 300));
            }
            other => panic!("{what}: expected a decode error, got {other:?}"),
        }
    }
    // Decompression bomb: a 20000 x 20000 header.
    let e = decode_rgb_bytes(&png_header(20_000, 20_000), p, &o).unwrap_err();
    assert!(matches!(e, Error::TooLarge { .. }), "{e}");
    assert!(
        e.to_string().contains("/data/img.png") && e.to_string().contains("too large"),
        "{e}"
    );
    // Zero-sized header.
    assert!(decode_rgb_bytes(&png_header(0, 10), p, &o).is_err());
    // A missing file is an I/O error naming it.
    let e = fungi_aug::decode_rgb("/nonexistent/x.png", &o).unwrap_err();
    assert!(matches!(e, Error::Io { .. }) && e.to_string().contains("/nonexistent/x.png"));
}

#[test]
fn one_by_one_image_goes_through_every_transform() {
    let img = fungi_aug::RgbImage::from_pixel(1, 1, image::Rgb([10, 200, 30]));
    assert_eq!(EvalTransform::default().apply(&img).len(), 3 * 224 * 224);
    assert_eq!(
        fungi_aug::KlTransform::default().apply(&img).len(),
        3 * 224 * 224
    );
    assert_eq!(
        fungi_aug::Patchify::default().apply(&img).unwrap().len(),
        49 * 3 * 224 * 224
    );
    let d = fungi_aug::DinoTransform::default();
    let boxes = d.sample_params(
        1,
        1,
        &mut <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(0),
    );
    assert!(boxes.iter().all(|b| b.width == 1 && b.height == 1));
    assert_eq!(d.apply(&img, &boxes).len(), 12 * 3 * 224 * 224);
}
