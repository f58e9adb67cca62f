//! End-to-end tests of `fungi embed` on the golden images.

use std::path::{Path, PathBuf};
use std::process::Command;

fn golden() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/golden")
}

fn fungi() -> Command {
    Command::new(env!("CARGO_BIN_EXE_fungi"))
}

fn read_npy(p: &Path) -> (Vec<usize>, Vec<f32>) {
    let b = std::fs::read(p).unwrap();
    let hlen = u16::from_le_bytes([b[8], b[9]]) as usize;
    let h = std::str::from_utf8(&b[10..10 + hlen]).unwrap();
    let shape: Vec<usize> = h
        .split("'shape': (")
        .nth(1)
        .unwrap()
        .split(')')
        .next()
        .unwrap()
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.trim().parse().unwrap())
        .collect();
    let v = b[10 + hlen..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    (shape, v)
}

fn f64_reference() -> Vec<f64> {
    let bytes = std::fs::read(golden().join("eval.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensor("embeddings_f64")
        .unwrap()
        .data()
        .chunks_exact(8)
        .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

#[test]
fn embed_golden_images_matches_reference() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("emb.npy");
    let st = fungi()
        .args(["embed", "--weights"])
        .arg(golden().join("model.safetensors"))
        .arg("--arch")
        .arg(golden().join("model.json"))
        .arg("--images")
        .arg(golden().join("images"))
        .arg("--out")
        .arg(&out)
        .args(["--batch-size", "3"])
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    let (shape, emb) = read_npy(&out);
    assert_eq!(shape, vec![8, 64]);
    let files = std::fs::read_to_string(dir.path().join("emb.npy.files.txt")).unwrap();
    assert_eq!(files.lines().count(), 8);
    assert!(files.lines().next().unwrap().ends_with("00_chelsea.jpg"));
    let r = f64_reference();
    for i in 0..8 {
        let (a, b) = (&emb[i * 64..(i + 1) * 64], &r[i * 64..(i + 1) * 64]);
        let d = a
            .iter()
            .zip(b)
            .map(|(x, y)| (*x as f64 - y).abs())
            .fold(0.0, f64::max);
        // PNGs decode exactly (Pillow-exact resize): f32 rounding only. JPEGs go through the
        // pure-Rust decoder, which differs from libjpeg-turbo by a few levels (docs/parity.md).
        let jpeg = i == 0 || i == 7;
        let tol = if jpeg { 2e-2 } else { 1e-4 * 2.8 };
        assert!(d <= tol, "image {i}: max diff {d:e}");
    }
}

#[test]
fn bad_image_fails_naming_the_file_and_keeps_computed_rows() {
    let dir = tempfile::tempdir().unwrap();
    let imgs = dir.path().join("imgs");
    std::fs::create_dir(&imgs).unwrap();
    std::fs::copy(golden().join("images/01_coffee.png"), imgs.join("a.png")).unwrap();
    let png = std::fs::read(golden().join("images/02_camera_L.png")).unwrap();
    std::fs::write(imgs.join("b_truncated.png"), &png[..png.len() / 3]).unwrap();
    std::fs::copy(golden().join("images/05_tiny.png"), imgs.join("c.png")).unwrap();
    let out = dir.path().join("emb.npy");
    let base = |on_error: &str| {
        let mut c = fungi();
        c.args(["embed", "--weights"])
            .arg(golden().join("model.pth"))
            .arg("--arch")
            .arg(golden().join("model.json"))
            .arg("--images")
            .arg(&imgs)
            .arg("--out")
            .arg(&out)
            .args(["--on-error", on_error, "--batch-size", "8"]);
        c.output().unwrap()
    };
    let r = base("fail");
    assert!(!r.status.success());
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(err.contains("b_truncated.png"), "{err}");
    let (shape, _) = read_npy(&dir.path().join("emb.npy.partial.npy"));
    assert_eq!(shape, vec![1, 64]);
    let r = base("skip");
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let (shape, _) = read_npy(&out);
    assert_eq!(shape, vec![2, 64]);
    let skipped = std::fs::read_to_string(dir.path().join("emb.npy.skipped.tsv")).unwrap();
    assert!(skipped.contains("b_truncated.png"), "{skipped}");
}

#[test]
fn bad_arguments_are_clear_errors() {
    // Half precision is for GPUs: on the CPU backends a clear error, not a silent f32 run.
    let r = fungi()
        .args([
            "--device",
            "flex",
            "--precision",
            "bf16",
            "bench",
            "--batch",
            "1",
        ])
        .output()
        .unwrap();
    assert!(!r.status.success());
    let e = String::from_utf8_lossy(&r.stderr);
    assert!(e.contains("--precision bf16") && e.contains("GPU"), "{e}");
    // It names the instructions a fast bf16 GEMM needs (or that this CPU has them).
    assert!(
        e.to_lowercase().contains("avx512") && e.contains("bf16"),
        "{e}"
    );
    let r = fungi()
        .args(["--precision", "fp8", "bench"])
        .output()
        .unwrap();
    assert!(!r.status.success());
    assert!(String::from_utf8_lossy(&r.stderr).contains("expected f32, bf16 or f16"));
    let r = fungi()
        .args([
            "embed",
            "--weights",
            "nope.pth",
            "--arch",
            "dino_vits16",
            "--images",
            ".",
            "--out",
            "/tmp/x.npy",
        ])
        .output()
        .unwrap();
    assert!(!r.status.success());
    assert!(String::from_utf8_lossy(&r.stderr).contains("nope.pth"));
    let r = fungi()
        .args([
            "embed",
            "--weights",
            "w.pth",
            "--arch",
            "vit_huge",
            "--images",
            ".",
            "--out",
            "/tmp/x.npy",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(
        err.contains("unknown architecture `vit_huge`") && err.contains("dino_vitb16"),
        "{err}"
    );
    let r = fungi()
        .args([
            "--device",
            "tpu",
            "embed",
            "--weights",
            "w.pth",
            "--arch",
            "dino_vits16",
            "--images",
            ".",
            "--out",
            "/tmp/x.npy",
        ])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&r.stderr).contains("device `tpu` is not available"));
}

/// `fungi bench --json` writes one self-contained JSON line per row as soon as it is timed (the
/// GPU check reads them back even when a step is cut short).
#[test]
fn bench_json_writes_one_line_per_row_with_the_setup() {
    let r = fungi()
        .args(["--device", "flex", "bench", "--arch"])
        .arg(golden().join("model.json"))
        .args([
            "--objectives",
            "kl",
            "--batch",
            "1,2",
            "--iters",
            "1",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let out = String::from_utf8(r.stdout).unwrap();
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{out}");
    for (l, b) in lines.iter().zip([1, 2]) {
        assert_eq!(l["batch"], b);
        assert!(l["images_per_s"].as_f64().unwrap() > 0.0);
        assert_eq!(l["precision"], "f32");
        assert_eq!(l["objectives"][0], "kl");
        assert_eq!(l["projection"], "host");
    }
}

/// `fungi synthetic-weights` writes the same bytes every time for a seed, and they load.
#[test]
fn synthetic_weights_are_deterministic_and_load() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, seed: &str| {
        let p = dir.path().join(name);
        let r = fungi()
            .args(["synthetic-weights", "--arch"])
            .arg(golden().join("model.json"))
            .args(["--seed", seed, "--out"])
            .arg(&p)
            .output()
            .unwrap();
        assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
        std::fs::read(p).unwrap()
    };
    let (a, b, c) = (
        write("a.safetensors", "3"),
        write("b.safetensors", "3"),
        write("c.safetensors", "4"),
    );
    assert_eq!(a, b);
    assert_ne!(a, c);
    let out = dir.path().join("e.npy");
    let r = fungi()
        .args(["--device", "flex", "embed", "--weights"])
        .arg(dir.path().join("a.safetensors"))
        .arg("--arch")
        .arg(golden().join("model.json"))
        .arg("--images")
        .arg(golden().join("images"))
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let (shape, v) = read_npy(&out);
    assert_eq!(shape, vec![8, 64]);
    assert!(v.iter().all(|x| x.is_finite()) && v.iter().any(|x| *x != 0.0));
}
