//! End-to-end `fungi embed`, `fungi extract` and `fungi fetch` on the backbone-family fixtures
//! (tests/fixtures/backbones: tiny random timm / torchvision / Hugging Face models with their
//! original libraries' outputs on the golden images), the weights of one of them fetched by
//! name from a local HTTP server on 127.0.0.1.

#[allow(dead_code)]
#[path = "../../fungi-hub/tests/server/mod.rs"]
mod server;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use sha2::{Digest, Sha256};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/backbones")
}

fn images() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/golden/images")
}

fn fungi() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_fungi"));
    c.env_remove("FUNGI_MIRROR").env_remove("HF_ENDPOINT");
    c
}

fn ok(o: &Output) -> String {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn read_npy(p: &Path) -> (Vec<usize>, Vec<f32>) {
    let b = std::fs::read(p).unwrap();
    let hlen = u16::from_le_bytes([b[8], b[9]]) as usize;
    let h = std::str::from_utf8(&b[10..10 + hlen]).unwrap();
    let shape = h
        .split("'shape': (")
        .nth(1)
        .unwrap()
        .split(')')
        .next()
        .unwrap();
    let shape = shape
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

/// `<case>.embedding`: the original model's `model(x)` on its own eval views, f64 `[8, E]`.
fn reference(case: &str) -> (usize, Vec<f64>) {
    let file = if case.contains("_proc_") {
        "hf_processors.safetensors"
    } else {
        "reference.safetensors"
    };
    let bytes = std::fs::read(fixtures().join(file)).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let t = st.tensor(&format!("{case}.embedding")).unwrap();
    let v = t
        .data()
        .chunks_exact(8)
        .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
        .collect();
    (t.shape()[1], v)
}

fn embed(weights: &Path, arch: Option<&Path>, out: &Path, extra: &[&str]) -> Output {
    let mut c = fungi();
    c.args(["embed", "--weights"]).arg(weights);
    if let Some(a) = arch {
        c.arg("--arch").arg(a);
    }
    c.arg("--images")
        .arg(images())
        .arg("--out")
        .arg(out)
        .args(["--batch-size", "3"])
        .args(extra);
    c.output().unwrap()
}

/// Max |got - want| of each image, relative to the case's largest |want|.
fn row_errors(got: &[f32], want: &[f64], e: usize) -> Vec<f64> {
    let scale = want.iter().fold(0.0f64, |m, x| m.max(x.abs()));
    got.chunks(e)
        .zip(want.chunks(e))
        .map(|(g, w)| {
            g.iter()
                .zip(w)
                .map(|(a, b)| (*a as f64 - b).abs() / scale)
                .fold(0.0, f64::max)
        })
        .collect()
}

/// PNG rows (1..=6) decode exactly: f32 rounding only (the library tests' 1e-4). The two JPEGs
/// go through the pure-Rust decoder, a few levels off libjpeg-turbo (docs/parity.md).
fn assert_matches(case: &str, got: &[f32], want: &[f64], e: usize) {
    let errs = row_errors(got, want, e);
    eprintln!(
        "{case}: relative error per image {:?}",
        errs.iter().map(|x| format!("{x:.1e}")).collect::<Vec<_>>()
    );
    for (i, err) in errs.iter().enumerate() {
        let tol = if i == 0 || i == 7 { 2e-2 } else { 1e-4 };
        assert!(
            *err <= tol,
            "{case}: image {i}: relative error {err:e} > {tol:e}"
        );
    }
}

/// `(case, its weights)`: the arch JSON `<case>.json` carries the transform.
const TRANSFORM_CASES: &[(&str, &str)] = &[
    ("timm_augreg", "timm_augreg"),
    ("timm_clip", "timm_clip"),
    ("timm_deit3", "timm_deit3"),
    ("timm_mae", "timm_mae"),
    ("timm_reg", "timm_reg"),
    ("timm_misc", "timm_misc"),
    ("tv_vit", "tv_vit"),
    ("tv_vit_head", "tv_vit_head"),
    ("hf_dinov2_proc_torch", "hf_dinov2"),
    ("hf_dinov2_proc_pil", "hf_dinov2"),
    ("hf_vit_proc_torch", "hf_vit"),
    ("hf_vit_proc_pil", "hf_vit"),
];

#[test]
fn embed_reproduces_each_family_with_its_model_transform() {
    let dir = tempfile::tempdir().unwrap();
    for (case, weights) in TRANSFORM_CASES {
        let out = dir.path().join(format!("{case}.npy"));
        let weights = fixtures().join(format!("{weights}.safetensors"));
        let arch = fixtures().join(format!("{case}.json"));
        // `model` is the default for an arch with a pretrained_cfg / transforms.
        ok(&embed(&weights, Some(&arch), &out, &[]));
        let (e, want) = reference(case);
        let (shape, got) = read_npy(&out);
        assert_eq!(shape, vec![8, e], "{case}");
        assert_matches(case, &got, &want, e);
        let explicit = dir.path().join(format!("{case}.model.npy"));
        ok(&embed(
            &weights,
            Some(&arch),
            &explicit,
            &["--transform", "model"],
        ));
        assert_eq!(
            std::fs::read(&explicit).unwrap(),
            std::fs::read(&out).unwrap()
        );
    }
    // fungivision's transform on request: 224 px views, another embedding.
    let out = dir.path().join("eval.npy");
    ok(&embed(
        &fixtures().join("timm_augreg.safetensors"),
        Some(&fixtures().join("timm_augreg.json")),
        &out,
        &["--transform", "eval"],
    ));
    let (e, want) = reference("timm_augreg");
    let errs = row_errors(&read_npy(&out).1, &want, e);
    assert!(errs[1..7].iter().all(|&x| x > 1e-3), "{errs:?}");
}

#[test]
fn onnx_and_pth_weights_embed_like_their_safetensors() {
    let dir = tempfile::tempdir().unwrap();
    for (case, other) in [("timm_augreg", "onnx"), ("timm_deit3", "pth")] {
        let a = dir.path().join(format!("{case}.st.npy"));
        let b = dir.path().join(format!("{case}.{other}.npy"));
        let arch = fixtures().join(format!("{case}.json"));
        let st = fixtures().join(format!("{case}.safetensors"));
        ok(&embed(&st, Some(&arch), &a, &[]));
        let w = fixtures().join(format!("{case}.{other}"));
        ok(&embed(&w, Some(&arch), &b, &[]));
        let same = std::fs::read(a).unwrap() == std::fs::read(b).unwrap();
        assert!(same, "{case}: .{other} and .safetensors embed differently");
    }
}

/// `(case, target as named in its checkpoint)`.
const EXTRACT_CASES: &[(&str, &str)] = &[
    ("timm_clip", "blocks.1.attn.proj"),
    ("timm_mae", "blocks.0.mlp.fc2"),
    (
        "tv_vit",
        "encoder.layers.encoder_layer_1.self_attention.out_proj",
    ),
    ("hf_dinov2", "encoder.layer.1.attention.output.dense"),
];

fn extract(case: &str, target: &str, out: &Path, dir: &Path) -> Output {
    let data = dir.join("data");
    if !data.exists() {
        std::fs::create_dir_all(&data).unwrap();
        for f in ["01_coffee.png", "02_camera_L.png", "04_astronaut_P.png"] {
            std::fs::copy(images().join(f), data.join(f)).unwrap();
        }
    }
    let cfg = dir.join(format!("{case}.toml"));
    std::fs::write(
        &cfg,
        format!(
            "seed = 5\ntarget_layer = \"{target}\"\nbatch_size = 2\n[[objective]]\ntype = \"kl\"\n[[objective]]\ntype = \"dino\"\n"
        ),
    )
    .unwrap();
    fungi()
        .args(["extract", "--weights"])
        .arg(fixtures().join(format!("{case}.safetensors")))
        .arg("--arch")
        .arg(fixtures().join(format!("{case}.json")))
        .arg("--images")
        .arg(&data)
        .arg("--config")
        .arg(&cfg)
        .arg("--out")
        .arg(out)
        .output()
        .unwrap()
}

#[test]
fn extract_runs_each_family_on_its_checkpoint_named_target() {
    let dir = tempfile::tempdir().unwrap();
    for (case, target) in EXTRACT_CASES {
        let out = dir.path().join(format!("{case}.out"));
        ok(&extract(case, target, &out, dir.path()));
        let m: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("manifest.json")).unwrap())
                .unwrap();
        let blocks = m["blocks"].as_array().unwrap();
        let names: Vec<&str> = blocks.iter().map(|b| b["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["embedding", "kl", "dino"], "{case}");
        let (shape, f) = read_npy(&out.join("features.npy"));
        assert_eq!(shape[0], 3, "{case}");
        let width = shape[1];
        for b in blocks {
            let (o, d) = (
                b["offset"].as_u64().unwrap() as usize,
                b["dim"].as_u64().unwrap() as usize,
            );
            for r in 0..3 {
                let row = &f[r * width + o..r * width + o + d];
                let norm = row.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
                assert!(
                    (norm - 1.0).abs() < 1e-5,
                    "{case} {}: row {r} norm {norm}",
                    b["name"]
                );
            }
        }
        // The embedding block is `fungi embed`'s embedding (the same transform), L2-normalised.
        let emb_out = dir.path().join(format!("{case}.emb.npy"));
        let mut c = fungi();
        c.args(["embed", "--weights"])
            .arg(fixtures().join(format!("{case}.safetensors")))
            .arg("--arch")
            .arg(fixtures().join(format!("{case}.json")))
            .arg("--images")
            .arg(dir.path().join("data"))
            .arg("--out")
            .arg(&emb_out);
        if case.starts_with("hf_") {
            c.args(["--transform", "eval"]);
        }
        ok(&c.output().unwrap());
        let (es, emb) = read_npy(&emb_out);
        let e = es[1];
        let o = blocks[0]["offset"].as_u64().unwrap() as usize;
        for r in 0..3 {
            let row = &emb[r * e..(r + 1) * e];
            let n = row.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
            for (j, x) in row.iter().enumerate() {
                let got = f[r * width + o + j] as f64;
                assert!(
                    (got - *x as f64 / n).abs() < 1e-5,
                    "{case}: row {r} col {j}"
                );
            }
        }
    }
    // A target that is not a Linear of the checkpoint names the valid ones.
    let o = extract(
        "tv_vit",
        "encoder.layers.encoder_layer_1.mlp.1",
        &dir.path().join("bad"),
        dir.path(),
    );
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("encoder.layers.encoder_layer_1.mlp.1"),
        "{err}"
    );
    assert!(!dir.path().join("bad/features.npy").exists());
}

fn sha256(b: &[u8]) -> String {
    Sha256::digest(b)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn weights_by_name_are_fetched_once_then_read_from_the_cache() {
    let body = std::fs::read(fixtures().join("timm_mae.safetensors")).unwrap();
    let path = "/timm/vit_base_patch16_224.mae/resolve/main/model.safetensors";
    let server = server::Server::start(vec![(
        path,
        server::Route {
            headers: vec![
                (
                    "X-Repo-Commit".into(),
                    "1111111111111111111111111111111111111111".into(),
                ),
                ("X-Linked-Etag".into(), format!("\"{}\"", sha256(&body))),
            ],
            body,
            ranges: true,
            ..Default::default()
        },
    )]);
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let with_env = |c: &mut Command| {
        c.env("FUNGI_CACHE", &cache)
            .env("FUNGI_MIRROR", &server.base);
    };
    // `--weights <name>`, with the fixture's arch instead of the preset's (the served file is
    // the tiny fixture): downloaded into the cache, then embedded like the local file.
    let out = dir.path().join("mae.npy");
    let mut c = fungi();
    with_env(&mut c);
    c.args(["embed", "--weights", "vit_base_patch16_224.mae", "--arch"])
        .arg(fixtures().join("timm_mae.json"))
        .arg("--images")
        .arg(images())
        .arg("--out")
        .arg(&out);
    ok(&c.output().unwrap());
    let (e, want) = reference("timm_mae");
    assert_matches("timm_mae (fetched)", &read_npy(&out).1, &want, e);
    let requests = server.seen().len();
    assert!(requests >= 1);

    // `fungi fetch` finds it cached (no request) and prints the path; --list shows it.
    let mut c = fungi();
    with_env(&mut c);
    let stdout = ok(&c
        .args(["fetch", "vit_base_patch16_224.mae"])
        .output()
        .unwrap());
    let fetched = PathBuf::from(stdout.trim());
    assert!(fetched.starts_with(&cache), "{stdout}");
    assert_eq!(
        std::fs::read(&fetched).unwrap(),
        std::fs::read(fixtures().join("timm_mae.safetensors")).unwrap()
    );
    assert_eq!(
        server.seen().len(),
        requests,
        "a cached file needs no request"
    );
    let mut c = fungi();
    with_env(&mut c);
    let list = ok(&c.args(["fetch", "--list"]).output().unwrap());
    let line = list
        .lines()
        .find(|l| l.starts_with("vit_base_patch16_224.mae\t"))
        .unwrap();
    assert!(line.contains(&fetched.display().to_string()), "{line}");
    let dino = list
        .lines()
        .find(|l| l.starts_with("dino_vits16\t"))
        .unwrap();
    assert!(
        dino.contains(&format!("{}/dino/dino_deitsmall16_pretrain/", server.base)),
        "{dino}"
    );

    // Offline, nothing cached: a clear error naming the cache path, exit code 1.
    let mut c = fungi();
    c.env("FUNGI_CACHE", &cache).env(
        "FUNGI_MIRROR",
        format!("http://127.0.0.1:{}", server::closed_port()),
    );
    let o = c
        .args(["fetch", "--quiet", "dino_vits16"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("offline"), "{err}");
    assert!(
        err.contains(
            &cache
                .join("checkpoints/dino_deitsmall16_pretrain.pth")
                .display()
                .to_string()
        ),
        "{err}"
    );
    // Unknown names list the catalogue; a file without --arch says what is missing.
    let o = fungi().args(["fetch", "vit_giant"]).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("vit_giant") && err.contains("dinov2_vits14"),
        "{err}"
    );
    let o = embed(
        &fixtures().join("timm_mae.safetensors"),
        None,
        &dir.path().join("x.npy"),
        &[],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("needs --arch"), "{err}");
}
