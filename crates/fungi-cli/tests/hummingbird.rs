//! End-to-end `fungi hummingbird` on generated segmentation data (no VOC here): a Pascal VOC
//! layout of images with a red and a blue rectangle on a grey background, the golden tiny model,
//! both feature kinds, exact and HNSW search, saved predictions, and bad inputs.

use std::path::{Path, PathBuf};
use std::process::Command;

use fungi::aug::image::{GrayImage, Rgb, RgbImage};
use fungi::hummingbird::data::{read_mask, write_palette_png};

fn golden() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/golden")
}

const CFG: &str = "target_layer = \"blocks.3.attn.proj\"\nbatch_size = 4\n[dense]\nimage_size = 128\nlatent_dim = 16\nneighbours = 2\ndrop = 0.5\nsupport_per_image = 8\n";

/// Image `i`: grey noise, a red rectangle (class 1, with a 1-pixel ignored border) and a blue
/// one (class 2) at positions drawn from `i`; sizes vary around 112 x 96.
fn pair(i: u64) -> (RgbImage, GrayImage) {
    let mut s = i
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut next = |n: u32| {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((s >> 33) % n as u64) as u32
    };
    let (w, h) = (96 + next(32), 80 + next(32));
    let mut img = RgbImage::from_fn(w, h, |_, _| {
        let g = 110 + next(30) as u8;
        Rgb([g, g, g])
    });
    let mut mask = GrayImage::new(w, h);
    let (rx, ry, rw, rh) = (next(w / 2), next(h / 2), 24 + next(20), 24 + next(20));
    let (bx, by) = (next(w - 30), next(h - 30));
    for y in 0..h {
        for x in 0..w {
            let in_r = x >= rx && x < rx + rw && y >= ry && y < ry + rh;
            let in_b = x >= bx && x < bx + 30 && y >= by && y < by + 30;
            if in_b {
                img.put_pixel(x, y, Rgb([30, 40, 200 + next(40) as u8]));
                mask.put_pixel(x, y, fungi::aug::image::Luma([2]));
            } else if in_r {
                let edge = x == rx || y == ry || x + 1 == rx + rw || y + 1 == ry + rh;
                img.put_pixel(x, y, Rgb([200 + next(40) as u8, 30, 30]));
                mask.put_pixel(x, y, fungi::aug::image::Luma([if edge { 255 } else { 1 }]));
            }
        }
    }
    (img, mask)
}

/// A VOC folder with `train` (12) and `val` (4) splits.
fn voc(dir: &Path) -> PathBuf {
    let root = dir.join("VOC");
    for sub in ["JPEGImages", "SegmentationClass", "ImageSets/Segmentation"] {
        std::fs::create_dir_all(root.join(sub)).unwrap();
    }
    let mut lists = (String::new(), String::new());
    for i in 0..16u64 {
        let (img, mask) = pair(i);
        let id = format!("2007_{i:06}");
        img.save(root.join("JPEGImages").join(format!("{id}.jpg")))
            .unwrap();
        write_palette_png(
            &root.join("SegmentationClass").join(format!("{id}.png")),
            &mask,
        )
        .unwrap();
        let l = if i < 12 { &mut lists.0 } else { &mut lists.1 };
        l.push_str(&id);
        l.push('\n');
    }
    let sets = root.join("ImageSets/Segmentation");
    std::fs::write(sets.join("train.txt"), lists.0).unwrap();
    std::fs::write(sets.join("val.txt"), lists.1).unwrap();
    root
}

/// `fungi hummingbird` in `dir` on the golden model with [`CFG`] and `settings` (default: a
/// `hb.toml` of 3 classes, `k = 10`, 600 memory rows), then `extra`.
fn hummingbird(dir: &Path, settings: Option<&Path>, extra: &[&str]) -> std::process::Output {
    let c = dir.join("dense.toml");
    std::fs::write(&c, CFG).unwrap();
    let h = match settings {
        Some(s) => s.to_path_buf(),
        None => {
            let h = dir.join("hb.toml");
            std::fs::write(
                &h,
                "num_classes = 3\nk = 10\nmemory_size = 600\n[hnsw]\nef_search = 64\n",
            )
            .unwrap();
            h
        }
    };
    Command::new(env!("CARGO_BIN_EXE_fungi"))
        .current_dir(dir)
        .args(["hummingbird", "--weights"])
        .arg(golden().join("model.safetensors"))
        .arg("--arch")
        .arg(golden().join("model.json"))
        .arg("--config")
        .arg(&c)
        .arg("--settings")
        .arg(&h)
        .args(extra)
        .output()
        .unwrap()
}

fn ok(o: &std::process::Output) {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

fn refused(o: &std::process::Output, needles: &[&str]) {
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "expected a refusal");
    assert!(!e.contains("panicked"), "{e}");
    for n in needles {
        assert!(e.contains(n), "missing {n:?} in: {e}");
    }
}

fn report(p: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

#[test]
fn hummingbird_segments_generated_shapes_with_both_features_and_both_searches() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let root = voc(d);
    let preds = d.join("preds");
    for (features, index, out) in [
        ("fungi", "exact", "fungi.json"),
        ("embedding", "exact", "emb.json"),
        ("fungi", "hnsw", "fungi_hnsw.json"),
    ] {
        let mut args = vec![
            "--voc",
            root.to_str().unwrap(),
            "--features",
            features,
            "--index",
            index,
            "--out",
            out,
        ];
        if out == "fungi.json" {
            args.extend(["--save-predictions", preds.to_str().unwrap()]);
        }
        ok(&hummingbird(d, None, &args));
        let r = report(&d.join(out));
        let miou = r["miou"].as_f64().unwrap();
        eprintln!("{features} {index}: {r}");
        // Three well-separated colours: far above chance (1/3 pixel accuracy, ~0.2 mIoU).
        assert!(miou > 0.6, "{features}/{index}: mIoU {miou}");
        assert_eq!(r["train_images"], 12);
        assert_eq!(r["val_images"], 4);
        // 600 / 12 = 50 patches per image of the 64.
        assert_eq!(r["patches_per_image"], 50);
        assert_eq!(r["memory_rows"], 600);
        assert_eq!(r["index"], index);
        let recall = r["recall"].as_f64().unwrap();
        if index == "hnsw" {
            assert!(r["recall_queries"].as_u64().unwrap() > 0);
            assert!(recall > 0.8, "recall {recall}");
        } else {
            assert_eq!(recall, 1.0);
        }
    }
    // Saved predictions: a palette PNG of class ids at the image's size, and the overlay.
    for i in 12..16 {
        let id = format!("2007_{i:06}");
        let (img, truth) = pair(i);
        let p = read_mask(&preds.join(format!("{id}.png"))).unwrap();
        assert_eq!(p.dimensions(), truth.dimensions());
        assert!(p.as_raw().iter().all(|&v| v < 3));
        let ov = fungi::aug::image::open(preds.join(format!("{id}_overlay.png")))
            .unwrap()
            .to_rgb8();
        assert_eq!(ov.dimensions(), (img.width() * 3, img.height()));
    }
    // Reproducible: the same command gives the same report (timings aside).
    ok(&hummingbird(
        d,
        None,
        &[
            "--voc",
            root.to_str().unwrap(),
            "--index",
            "exact",
            "--out",
            "again.json",
        ],
    ));
    let (a, b) = (report(&d.join("fungi.json")), report(&d.join("again.json")));
    assert_eq!(a["per_class_iou"], b["per_class_iou"]);
}

#[test]
fn bad_segmentation_inputs_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let root = voc(d);
    let r = root.to_str().unwrap();
    let seg = root.join("SegmentationClass");
    // A mask of another size than its image.
    let keep = std::fs::read(seg.join("2007_000003.png")).unwrap();
    write_palette_png(&seg.join("2007_000003.png"), &GrayImage::new(7, 5)).unwrap();
    refused(
        &hummingbird(d, None, &["--voc", r, "--features", "embedding"]),
        &["2007_000003.png", "is 7x5", "expected the same size"],
    );
    // A class id past the classes.
    let (_, mut m) = pair(3);
    m.put_pixel(0, 0, fungi::aug::image::Luma([9]));
    write_palette_png(&seg.join("2007_000003.png"), &m).unwrap();
    refused(
        &hummingbird(d, None, &["--voc", r, "--features", "embedding"]),
        &["2007_000003.png", "class id 9", "3 classes"],
    );
    std::fs::write(seg.join("2007_000003.png"), keep).unwrap();
    // An RGB mask.
    let keep = std::fs::read(seg.join("2007_000004.png")).unwrap();
    RgbImage::new(4, 4)
        .save(seg.join("2007_000004.png"))
        .unwrap();
    refused(
        &hummingbird(d, None, &["--voc", r, "--features", "embedding"]),
        &["2007_000004.png", "class ids"],
    );
    std::fs::write(seg.join("2007_000004.png"), keep).unwrap();
    // An id listed without files, a missing split list.
    std::fs::write(root.join("ImageSets/Segmentation/val.txt"), "nope\n").unwrap();
    refused(
        &hummingbird(d, None, &["--voc", r, "--features", "embedding"]),
        &["val.txt:1", "nope"],
    );
    refused(
        &hummingbird(d, None, &["--voc", r, "--val-split", "test"]),
        &["test.txt"],
    );
    // An empty support folder.
    let empty = d.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    std::fs::write(root.join("ImageSets/Segmentation/val.txt"), "2007_000012\n").unwrap();
    let o = hummingbird(d, None, &["--voc", r, "--support", empty.to_str().unwrap()]);
    refused(&o, &["empty"]);
    // Settings out of range, named.
    refused(
        &hummingbird(d, None, &["--voc", r, "--temperature", "0"]),
        &["temperature = 0"],
    );
    refused(
        &hummingbird(
            d,
            None,
            &[
                "--voc",
                r,
                "--k",
                "100000",
                "--index",
                "exact",
                "--features",
                "embedding",
            ],
        ),
        &["k = 100000", "rows of the memory bank"],
    );
    // A settings file with an unknown key, named.
    std::fs::write(d.join("bad.toml"), "neighbors = 3\n").unwrap();
    refused(
        &hummingbird(d, Some(&d.join("bad.toml")), &["--voc", r]),
        &["bad.toml", "neighbors"],
    );
    // No data at all.
    refused(&hummingbird(d, None, &[]), &["--voc"]);
}
