//! End-to-end `fungi dense` on the golden tiny model: outputs and their shape, states (saved,
//! reloaded, made elsewhere), resume, shards, the skip policy and bad inputs.

use std::path::{Path, PathBuf};
use std::process::Command;

use fungi::layout::npy;

fn golden() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/golden")
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

const CFG: &str = "target_layer = \"blocks.3.attn.proj\"\nbatch_size = 2\n[dense]\nimage_size = 64\nlatent_dim = 16\nneighbours = 2\ndrop = 0.5\nsupport_per_image = 5\n";

/// Five golden images in a plain folder.
fn images(dir: &Path) -> PathBuf {
    let d = dir.join("imgs");
    std::fs::create_dir_all(&d).unwrap();
    for f in [
        "00_chelsea.jpg",
        "01_coffee.png",
        "02_camera_L.png",
        "03_logo_RGBA.png",
        "04_astronaut_P.png",
    ] {
        std::fs::copy(golden().join("images").join(f), d.join(f)).unwrap();
    }
    d
}

fn dense(dir: &Path, cfg: &str, extra: &[&str]) -> std::process::Output {
    let c = dir.join("dense.toml");
    std::fs::write(&c, cfg).unwrap();
    Command::new(env!("CARGO_BIN_EXE_fungi"))
        .current_dir(dir)
        .args(["dense", "--weights"])
        .arg(golden().join("model.safetensors"))
        .arg("--arch")
        .arg(golden().join("model.json"))
        .arg("--config")
        .arg(&c)
        .args(["--chunk-size", "2"])
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
    for n in needles {
        assert!(e.contains(n), "missing {n:?} in: {e}");
    }
}

fn features(out: &Path) -> (Vec<usize>, Vec<f32>) {
    match npy::read(&out.join("features.npy")).unwrap() {
        npy::Array::F32(s, v) => (s, v),
        other => panic!("features.npy is not float32: {other:?}"),
    }
}

#[test]
fn dense_writes_unit_patch_features_and_states_reproduce_them() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    images(d);
    let o = dense(
        d,
        CFG,
        &[
            "--images",
            "imgs",
            "--support",
            "imgs",
            "--out",
            "a",
            "--save-state",
            "s.safetensors",
        ],
    );
    ok(&o);
    let (shape, f) = features(&d.join("a"));
    assert_eq!(shape, [5, 16, 128]);
    for row in f.chunks(128) {
        let n: f32 = row.iter().map(|v| v * v).sum::<f32>().sqrt();
        assert!((n - 1.0).abs() < 1e-5, "patch feature norm {n}");
        let t: f32 = row[..64].iter().map(|v| v * v).sum::<f32>().sqrt();
        assert!(
            (t - std::f32::consts::FRAC_1_SQRT_2).abs() < 1e-5,
            "token part {t}"
        );
    }
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("a/manifest.json")).unwrap()).unwrap();
    assert_eq!(m["shape"], serde_json::json!([5, 16, 128]));
    assert!(!d.join("a/chunks/chunk-000000.safetensors").exists());
    // The saved state gives byte-identical features; so does the run directory's own state.
    ok(&dense(
        d,
        CFG,
        &["--images", "imgs", "--state", "s.safetensors", "--out", "b"],
    ));
    ok(&dense(
        d,
        CFG,
        &[
            "--images",
            "imgs",
            "--state",
            "a/state.safetensors",
            "--out",
            "c",
        ],
    ));
    let fa = std::fs::read(d.join("a/features.npy")).unwrap();
    assert_eq!(fa, std::fs::read(d.join("b/features.npy")).unwrap());
    assert_eq!(fa, std::fs::read(d.join("c/features.npy")).unwrap());
    // A state with other settings is refused, naming the setting.
    let other = CFG.replace("drop = 0.5", "drop = 0.25");
    let o = dense(
        d,
        &other,
        &["--images", "imgs", "--state", "s.safetensors", "--out", "x"],
    );
    refused(&o, &["drop"]);
    // Shards: their rows are the whole run's rows.
    for (i, rows) in [(0, 0..2), (1, 2..5)] {
        let out = format!("sh{i}");
        ok(&dense(
            d,
            CFG,
            &[
                "--images",
                "imgs",
                "--state",
                "s.safetensors",
                "--out",
                &out,
                "--shard",
                &format!("{i}/2"),
            ],
        ));
        let (s, v) = features(&d.join(&out));
        assert_eq!(s, [rows.len(), 16, 128]);
        assert!(
            v == f[rows.start * 2048..rows.end * 2048],
            "shard {i} differs from the whole run"
        );
    }
}

#[test]
fn dense_resumes_byte_identically_and_refuses_a_changed_run() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    images(d);
    let args = [
        "--images",
        "imgs",
        "--support",
        "imgs",
        "--out",
        "r",
        "--keep-chunks",
    ];
    ok(&dense(d, CFG, &args));
    let full = std::fs::read(d.join("r/features.npy")).unwrap();
    // Interrupted after the first chunk: later chunks and the outputs are gone.
    for f in [
        "features.npy",
        "indices.npy",
        "manifest.json",
        "chunks/chunk-000001.safetensors",
        "chunks/chunk-000002.safetensors",
    ] {
        std::fs::remove_file(d.join("r").join(f)).unwrap();
    }
    refused(&dense(d, CFG, &args), &["--resume"]);
    let other = CFG.replace("drop = 0.5", "drop = 0.25");
    let changed = dense(d, &other, &[&args[..], &["--resume"]].concat());
    refused(&changed, &["state.safetensors", "drop", "0.25"]);
    ok(&dense(d, CFG, &[&args[..], &["--resume"]].concat()));
    assert_eq!(full, std::fs::read(d.join("r/features.npy")).unwrap());
    let again = dense(d, CFG, &[&args[..], &["--resume"]].concat());
    ok(&again);
    assert!(String::from_utf8_lossy(&again.stderr).contains("already complete"));
}

#[test]
fn a_state_made_elsewhere_loads_and_unreadable_images_are_skipped_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let imgs = images(d);
    std::fs::write(imgs.join("05_broken.png"), b"not a png").unwrap();
    // tests/fixtures/dense/state.safetensors: only projection (I8 [24, 4160]), scaling, head,
    // support; config {target_layer, target_shape, embed_dim}.
    let cfg = "target_layer = \"blocks.3.attn.proj\"\nbatch_size = 2\n[dense]\nimage_size = 64\nlatent_dim = 16\n";
    let state = fixtures().join("dense/state.safetensors");
    let st = state.to_str().unwrap();
    refused(
        &dense(d, cfg, &["--images", "imgs", "--state", st, "--out", "f"]),
        &["05_broken.png", "--on-error skip"],
    );
    ok(&dense(
        d,
        cfg,
        &[
            "--images",
            "imgs",
            "--state",
            st,
            "--out",
            "g",
            "--on-error",
            "skip",
        ],
    ));
    let (shape, _) = features(&d.join("g"));
    assert_eq!(shape, [5, 16, 64 + 24]);
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("g/manifest.json")).unwrap()).unwrap();
    assert_eq!(m["skipped"][0]["file"], "05_broken.png");
    let (_, idx) = match npy::read(&d.join("g/indices.npy")).unwrap() {
        npy::Array::I64(s, v) => (s, v),
        other => panic!("{other:?}"),
    };
    assert_eq!(idx, [0, 1, 2, 3, 4]);
}

#[test]
fn bad_dense_inputs_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    images(d);
    std::fs::create_dir_all(d.join("empty")).unwrap();
    refused(
        &dense(d, CFG, &["--images", "imgs", "--out", "o"]),
        &["no support bank", "--support"],
    );
    refused(
        &dense(
            d,
            CFG,
            &["--images", "imgs", "--support", "empty", "--out", "o"],
        ),
        &["empty", "support"],
    );
    refused(
        &dense(
            d,
            &CFG.replace("image_size = 64", "image_size = 72"),
            &["--images", "imgs", "--support", "imgs", "--out", "o"],
        ),
        &["image_size = 72", "multiple of the patch size 16"],
    );
    refused(
        &dense(
            d,
            &CFG.replace("neighbours = 2", "neighbours = 0"),
            &["--images", "imgs", "--support", "imgs", "--out", "o"],
        ),
        &["dense.neighbours"],
    );
    refused(
        &dense(
            d,
            CFG,
            &[
                "--images",
                "imgs",
                "--support",
                "imgs",
                "--state",
                "x.safetensors",
                "--out",
                "o",
            ],
        ),
        &["--state", "--support"],
    );
    // More neighbours than support rows.
    refused(
        &dense(
            d,
            &CFG.replace("neighbours = 2", "neighbours = 30")
                .replace("support_per_image = 5", "support_per_image = 1"),
            &["--images", "imgs", "--support", "imgs", "--out", "o"],
        ),
        &["dense.support", "neighbours = 30"],
    );
    assert!(
        !d.join("o/run.json").exists(),
        "a refused command wrote to --out"
    );
}
