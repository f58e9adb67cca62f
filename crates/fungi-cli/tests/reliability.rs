//! The bad-input and run-fault corpus of `fungi extract` / `merge` / `embed`, built in code.
//!
//! Every case asserts: a clean failure (exit code 1, never 101 = panic or a signal), a message
//! naming the file, key or value, and that nothing already computed was lost or changed.
//! Identical runs are byte-identical.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn golden() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/golden")
}

fn fungi() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_fungi"));
    c.env("FUNGI_LOG", "warn");
    c
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn ok(o: &Output) {
    assert!(o.status.success(), "expected success:\n{}", stderr(o));
}

/// Exit code 1 (an error, not a panic or an abort) and every needle in the message.
fn refused(o: &Output, needles: &[&str]) {
    let e = stderr(o);
    assert_eq!(
        o.status.code(),
        Some(1),
        "expected a clean error (exit 1), got {:?}:\n{e}",
        o.status
    );
    assert!(!e.contains("panicked"), "panic:\n{e}");
    for n in needles {
        assert!(e.contains(n), "message lacks {n:?}:\n{e}");
    }
}

const KL: &str = "seed = 3\ntarget_layer = \"blocks.3.attn.proj\"\nbatch_size = 1\n[[objective]]\ntype = \"kl\"\n";
const KL_SIMCLR: &str = "seed = 3\ntarget_layer = \"blocks.3.attn.proj\"\nbatch_size = 2\n[[objective]]\ntype = \"kl\"\n[[objective]]\ntype = \"simclr\"\ncomparison_batch_size = 2\n";

/// An ImageFolder with 2 classes of small golden PNGs.
fn folder(dir: &Path) -> PathBuf {
    let root = dir.join("data");
    for (class, files) in [
        ("a", ["05_tiny.png", "02_camera_L.png"]),
        ("b", ["04_astronaut_P.png", "01_coffee.png"]),
    ] {
        std::fs::create_dir_all(root.join(class)).unwrap();
        for f in files {
            std::fs::copy(golden().join("images").join(f), root.join(class).join(f)).unwrap();
        }
    }
    root
}

fn config(dir: &Path, text: &str, name: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn extract(data: &Path, out: &Path, cfg: &Path, extra: &[&str]) -> Output {
    extract_with(
        &golden().join("model.safetensors"),
        &golden().join("model.json"),
        data,
        out,
        cfg,
        extra,
    )
}

fn extract_with(
    weights: &Path,
    arch: &Path,
    data: &Path,
    out: &Path,
    cfg: &Path,
    extra: &[&str],
) -> Output {
    fungi()
        .args(["extract", "--weights"])
        .arg(weights)
        .arg("--arch")
        .arg(arch)
        .arg("--images")
        .arg(data)
        .arg("--config")
        .arg(cfg)
        .arg("--out")
        .arg(out)
        .args(["--chunk-size", "1"])
        .args(extra)
        .output()
        .unwrap()
}

fn read(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn sha(p: &Path) -> String {
    use sha2::Digest;
    format!("{:x}", sha2::Sha256::digest(read(p)))
}

/// Every file under `dir` with its bytes (for "nothing changed" checks).
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut v: Vec<(PathBuf, Vec<u8>)> = walkdir(dir)
        .into_iter()
        .map(|p| {
            let b = read(&p);
            (p, b)
        })
        .collect();
    v.sort();
    v
}

fn walkdir(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![];
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walkdir(&p));
        } else {
            out.push(p);
        }
    }
    out
}

fn manifest(out: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(out.join("manifest.json")).unwrap()).unwrap()
}

fn golden_json() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(golden().join("model.json")).unwrap()).unwrap()
}

fn arch_file(dir: &Path, name: &str, edit: impl FnOnce(&mut serde_json::Value)) -> PathBuf {
    let mut v = golden_json();
    edit(&mut v);
    let p = dir.join(name);
    std::fs::write(&p, v.to_string()).unwrap();
    p
}

/// The golden weights with one tensor's values changed.
fn weights_with(dir: &Path, name: &str, key: &str, f: impl Fn(usize, f32) -> f32) -> PathBuf {
    let bytes = read(&golden().join("model.safetensors"));
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut bufs: Vec<(String, Vec<usize>, Vec<u8>)> = vec![];
    for (k, t) in st.tensors() {
        let mut b = t.data().to_vec();
        if k == key {
            b = b
                .chunks_exact(4)
                .enumerate()
                .flat_map(|(i, c)| f(i, f32::from_le_bytes([c[0], c[1], c[2], c[3]])).to_le_bytes())
                .collect();
        }
        bufs.push((k, t.shape().to_vec(), b));
    }
    let views: Vec<_> = bufs
        .iter()
        .map(|(k, s, b)| {
            (
                k.clone(),
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b)
                    .unwrap(),
            )
        })
        .collect();
    let p = dir.join(name);
    safetensors::serialize_to_file(views, None, &p).unwrap();
    p
}

// ------------------------------------------------------------------ data loss

#[test]
fn save_state_onto_the_outputs_own_state_keeps_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = folder(dir.path());
    let cfg = config(dir.path(), KL, "kl.toml");
    let out = dir.path().join("out");
    let own = out.join("state.safetensors");
    ok(&extract(
        &data,
        &out,
        &cfg,
        &["--save-state", own.to_str().unwrap()],
    ));
    let run: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("run.json")).unwrap()).unwrap();
    assert!(read(&own).len() > 100, "the state was truncated");
    assert_eq!(run["state_sha256"], sha(&own));
    // --resume --state <out>/state.safetensors: the same file, left whole.
    let before = read(&own);
    ok(&extract(
        &data,
        &out,
        &cfg,
        &["--resume", "--state", own.to_str().unwrap()],
    ));
    assert_eq!(read(&own), before);
    // --state X --save-state X is refused before anything happens.
    let out2 = dir.path().join("out2");
    let o = extract(
        &data,
        &out2,
        &cfg,
        &[
            "--state",
            own.to_str().unwrap(),
            "--save-state",
            own.to_str().unwrap(),
        ],
    );
    refused(&o, &["--save-state", "state.safetensors"]);
    assert_eq!(read(&own), before);
    assert!(!out2.exists());
    // --save-state into a directory: the error names it; the run's own outputs are complete.
    let o = extract(
        &data,
        &dir.path().join("out3"),
        &cfg,
        &["--save-state", dir.path().to_str().unwrap()],
    );
    refused(&o, &[dir.path().to_str().unwrap()]);
}

#[test]
fn refused_resume_changes_nothing_and_the_run_can_still_be_resumed() {
    let dir = tempfile::tempdir().unwrap();
    let data = folder(dir.path());
    let cfg = config(dir.path(), KL, "kl.toml");
    let out = dir.path().join("out");
    ok(&extract(&data, &out, &cfg, &["--keep-chunks"]));
    let feats = read(&out.join("features.npy"));
    // Lose the final outputs and one chunk, as a crash would.
    std::fs::remove_file(out.join("manifest.json")).unwrap();
    std::fs::remove_file(out.join("features.npy")).unwrap();
    std::fs::remove_file(out.join("chunks/chunk-000002.safetensors")).unwrap();
    let before = snapshot(&out);
    // Another state (made with another seed): refused, naming the seed; nothing changed.
    let other = dir.path().join("other");
    let cfg4 = config(dir.path(), &KL.replace("seed = 3", "seed = 4"), "kl4.toml");
    ok(&extract(&data, &other, &cfg4, &[]));
    let o = extract(
        &data,
        &out,
        &cfg,
        &[
            "--resume",
            "--state",
            other.join("state.safetensors").to_str().unwrap(),
        ],
    );
    refused(&o, &["seed"]);
    assert_eq!(snapshot(&out), before, "a refused --resume touched --out");
    // Other settings: the message says which.
    let cfg_b = config(
        dir.path(),
        &KL.replace("batch_size = 1", "batch_size = 2"),
        "kl_b.toml",
    );
    let o = extract(&data, &out, &cfg_b, &["--resume"]);
    refused(&o, &["config.batch_size", "run.json"]);
    assert_eq!(snapshot(&out), before);
    // Without --resume: refused, nothing touched.
    let o = extract(&data, &out, &cfg, &[]);
    refused(&o, &["--resume"]);
    assert_eq!(snapshot(&out), before);
    // The run resumes and gives the same bytes.
    ok(&extract(&data, &out, &cfg, &["--resume"]));
    assert_eq!(read(&out.join("features.npy")), feats);
}

#[test]
fn identical_runs_are_byte_identical_and_shards_without_a_state_merge() {
    let dir = tempfile::tempdir().unwrap();
    let data = folder(dir.path());
    let cfg = config(dir.path(), KL_SIMCLR, "c.toml");
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    ok(&extract(&data, &a, &cfg, &[]));
    ok(&extract(&data, &b, &cfg, &[]));
    for f in [
        "state.safetensors",
        "manifest.json",
        "features.npy",
        "labels.npy",
        "run.json",
    ] {
        assert_eq!(
            read(&a.join(f)),
            read(&b.join(f)),
            "{f} differs between identical runs"
        );
    }
    // Shards, each making its own state: mergeable, and equal to one run.
    let mut shards = vec![];
    for i in 0..2 {
        let d = dir.path().join(format!("s{i}"));
        ok(&extract(
            &data,
            &d,
            &cfg,
            &["--shard", &format!("{i}/2"), "--keep-chunks"],
        ));
        shards.push(d);
    }
    let merged = dir.path().join("merged");
    let o = fungi()
        .args(["merge", "--out"])
        .arg(&merged)
        .args(&shards)
        .output()
        .unwrap();
    ok(&o);
    assert_eq!(
        read(&merged.join("features.npy")),
        read(&a.join("features.npy"))
    );
    assert_eq!(
        read(&merged.join("state.safetensors")),
        read(&a.join("state.safetensors"))
    );
}

#[test]
fn merge_never_overwrites_a_run_or_a_shard() {
    let dir = tempfile::tempdir().unwrap();
    let data = folder(dir.path());
    let cfg = config(dir.path(), KL, "kl.toml");
    let full = dir.path().join("full");
    ok(&extract(&data, &full, &cfg, &[]));
    let mut shards = vec![];
    for i in 0..2 {
        let d = dir.path().join(format!("s{i}"));
        ok(&extract(
            &data,
            &d,
            &cfg,
            &["--shard", &format!("{i}/2"), "--keep-chunks"],
        ));
        shards.push(d);
    }
    let before = snapshot(&full);
    let merge = |out: &Path, extra: &[&str], shards: &[PathBuf]| {
        fungi()
            .args(["merge", "--out"])
            .arg(out)
            .args(extra)
            .args(shards)
            .output()
            .unwrap()
    };
    refused(&merge(&full, &[], &shards), &["not empty", "--force"]);
    assert_eq!(snapshot(&full), before);
    let s0 = snapshot(&shards[0]);
    refused(&merge(&shards[0], &[], &shards), &["one of the shards"]);
    refused(
        &merge(&shards[0], &["--force"], &shards),
        &["one of the shards"],
    );
    assert_eq!(snapshot(&shards[0]), s0);
    // A shard given twice: "covered twice", with the range in order.
    let twice = vec![shards[0].clone(), shards[0].clone(), shards[1].clone()];
    refused(
        &merge(&dir.path().join("m2"), &[], &twice),
        &["covered twice", "chunks 0..2"],
    );
    // --force into a non-empty directory that is not a run works.
    let other = dir.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(other.join("notes.txt"), "x").unwrap();
    ok(&merge(&other, &["--force"], &shards));
    assert_eq!(
        read(&other.join("features.npy")),
        read(&full.join("features.npy"))
    );
}

#[test]
fn a_start_that_died_before_its_first_chunk_does_not_block_the_next_run() {
    let dir = tempfile::tempdir().unwrap();
    let data = folder(dir.path());
    let out = dir.path().join("out");
    // A previous run wrote its identity and state, then died.
    let cfg = config(dir.path(), KL, "kl.toml");
    ok(&extract(&data, &out, &cfg, &["--keep-chunks"]));
    for e in std::fs::read_dir(out.join("chunks")).unwrap() {
        std::fs::remove_file(e.unwrap().path()).unwrap();
    }
    for f in ["manifest.json", "features.npy", "indices.npy", "labels.npy"] {
        std::fs::remove_file(out.join(f)).unwrap();
    }
    let cfg2 = config(dir.path(), &KL.replace("seed = 3", "seed = 5"), "kl5.toml");
    ok(&extract(&data, &out, &cfg2, &[]));
    assert_eq!(manifest(&out)["run"]["config"]["seed"], 5);
}

#[test]
fn a_non_empty_out_that_is_not_a_run_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = folder(dir.path());
    let cfg = config(dir.path(), KL, "kl.toml");
    let out = dir.path().join("mine");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("features.npy"), "precious").unwrap();
    refused(
        &extract(&data, &out, &cfg, &[]),
        &["not empty", "features.npy"],
    );
    assert_eq!(read(&out.join("features.npy")), b"precious");
}

// ------------------------------------------------------------------ skip policy

#[test]
fn skip_covers_setup_and_listing_and_every_skip_is_in_the_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let data = folder(dir.path());
    std::fs::write(data.join("a/broken.png"), b"not a png at all").unwrap();
    #[cfg(unix)]
    {
        std::os::unix::fs::symlink(dir.path().join("nowhere.png"), data.join("b/dangling.png"))
            .unwrap();
        std::os::unix::fs::symlink(&data, data.join("b/loop")).unwrap();
    }
    let cfg = config(
        dir.path(),
        &KL_SIMCLR.replace("comparison_batch_size = 2", "comparison_batch_size = 6"),
        "c.toml",
    );
    let out = dir.path().join("out");
    // Fail policy: the error names the file; nothing is written.
    let o = extract(&data, &out, &cfg, &[]);
    refused(&o, &[]);
    let e = stderr(&o);
    assert!(
        e.contains("broken.png") || e.contains("loop") || e.contains("dangling.png"),
        "{e}"
    );
    assert!(!out.join("run.json").exists());
    // Skip policy: setup and extraction skip, listing goes on, the manifest lists all.
    let o = extract(&data, &out, &cfg, &["--on-error", "skip"]);
    ok(&o);
    assert!(
        stderr(&o).contains("comparison_batch_size = 6"),
        "no warning:\n{}",
        stderr(&o)
    );
    let m = manifest(&out);
    let skipped: Vec<String> = m["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["file"].as_str().unwrap().to_string())
        .collect();
    assert!(skipped.iter().any(|f| f.ends_with("broken.png")), "{m}");
    let setup: Vec<String> = m["setup_skipped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["file"].as_str().unwrap().to_string())
        .collect();
    assert!(setup.iter().any(|f| f.ends_with("broken.png")), "{m}");
    #[cfg(unix)]
    {
        assert!(skipped.iter().any(|f| f.ends_with("dangling.png")), "{m}");
        let nl = m["not_listed"].to_string();
        assert!(nl.contains("loop"), "{m}");
    }
    assert_eq!(m["rows"], 4);
}

#[test]
fn the_fail_mode_advice_works() {
    let dir = tempfile::tempdir().unwrap();
    let data = folder(dir.path());
    // Sorted last in class b: chunks before it finish first.
    let bad = data.join("b/zz_bad.png");
    std::fs::write(&bad, b"garbage").unwrap();
    let cfg = config(dir.path(), KL, "kl.toml");
    let out = dir.path().join("out");
    let o = extract(&data, &out, &cfg, &["--keep-chunks"]);
    refused(&o, &["zz_bad.png", "--resume --on-error skip"]);
    let done = snapshot(&out.join("chunks"));
    assert_eq!(done.len(), 4, "the chunks before the bad image are kept");
    // Advice 1: --resume --on-error skip reuses the finished chunks.
    ok(&extract(
        &data,
        &out,
        &cfg,
        &["--keep-chunks", "--resume", "--on-error", "skip"],
    ));
    let after = snapshot(&out.join("chunks"));
    for (p, b) in &done {
        assert_eq!(
            &after.iter().find(|(q, _)| q == p).unwrap().1,
            b,
            "chunk rewritten"
        );
    }
    assert_eq!(manifest(&out)["skipped"][0]["index"], 4);
    // Advice 2: replace the file and --resume (a fresh run dir, fail mode).
    let out2 = dir.path().join("out2");
    refused(&extract(&data, &out2, &cfg, &[]), &["zz_bad.png"]);
    std::fs::copy(golden().join("images/05_tiny.png"), &bad).unwrap();
    ok(&extract(&data, &out2, &cfg, &["--resume"]));
    assert_eq!(manifest(&out2)["rows"], 5);
}

#[test]
fn stray_top_level_images_in_an_image_folder_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let data = folder(dir.path());
    std::fs::copy(golden().join("images/05_tiny.png"), data.join("stray.png")).unwrap();
    let cfg = config(dir.path(), KL, "kl.toml");
    let o = extract(&data, &dir.path().join("out"), &cfg, &[]);
    refused(&o, &["stray.png", "ImageFolder", "class folder"]);
}

// ------------------------------------------------------------------ silent wrong results

#[test]
fn non_finite_weights_state_and_outputs_never_reach_the_disk() {
    let dir = tempfile::tempdir().unwrap();
    let data = folder(dir.path());
    let cfg = config(dir.path(), KL, "kl.toml");
    let arch = golden().join("model.json");
    // NaN in the weights: named at load.
    let w = weights_with(
        dir.path(),
        "nan.safetensors",
        "blocks.1.attn.qkv.weight",
        |i, v| if i == 7 { f32::NAN } else { v },
    );
    let out = dir.path().join("o1");
    refused(
        &extract_with(&w, &arch, &data, &out, &cfg, &[]),
        &["blocks.1.attn.qkv.weight", "non-finite"],
    );
    assert!(!out.exists());
    let o = fungi()
        .args(["embed", "--weights"])
        .arg(&w)
        .arg("--arch")
        .arg(&arch)
        .arg("--images")
        .arg(&data)
        .arg("--out")
        .arg(dir.path().join("e.npy"))
        .output()
        .unwrap();
    refused(&o, &["blocks.1.attn.qkv.weight"]);
    // Finite weights whose outputs overflow: the image and the block are named, no features.
    let w = weights_with(dir.path(), "huge.safetensors", "norm.weight", |_, _| 3e38);
    let out = dir.path().join("o2");
    let o = extract_with(&w, &arch, &data, &out, &cfg, &[]);
    refused(&o, &["non-finite", "02_camera_L.png", "`embedding`"]);
    assert!(!out.join("features.npy").exists());
    assert_eq!(std::fs::read_dir(out.join("chunks")).unwrap().count(), 0);
    // NaN in a state file: named.
    let good = dir.path().join("good");
    ok(&extract(&data, &good, &cfg, &[]));
    let st = read(&good.join("state.safetensors"));
    let parsed = safetensors::SafeTensors::deserialize(&st).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&st).unwrap();
    let mut bufs = vec![];
    for (k, t) in parsed.tensors() {
        let mut b = t.data().to_vec();
        if k == "kl.head.bias" {
            b[0..4].copy_from_slice(&f32::NAN.to_le_bytes());
        }
        bufs.push((k, t.dtype(), t.shape().to_vec(), b));
    }
    let views: Vec<_> = bufs
        .iter()
        .map(|(k, d, s, b)| {
            (
                k.clone(),
                safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap(),
            )
        })
        .collect();
    let bad_state = dir.path().join("nan_state.safetensors");
    safetensors::serialize_to_file(views, meta.metadata().clone(), &bad_state).unwrap();
    refused(
        &extract(
            &data,
            &dir.path().join("o3"),
            &cfg,
            &["--state", bad_state.to_str().unwrap()],
        ),
        &["kl.head.bias", "non-finite"],
    );
}

#[test]
fn invalid_settings_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let data = folder(dir.path());
    let cfg = config(dir.path(), KL, "kl.toml");
    let out = dir.path().join("out");
    let w = golden().join("model.safetensors");
    // projection_dim = 0.
    let c0 = config(
        dir.path(),
        &KL.replace("batch_size = 1", "batch_size = 1\nprojection_dim = 0"),
        "p0.toml",
    );
    refused(&extract(&data, &out, &c0, &[]), &["projection_dim"]);
    // projection_dim too large for memory: the numbers are given.
    let cbig = config(
        dir.path(),
        &KL.replace(
            "batch_size = 1",
            "batch_size = 1\nprojection_dim = 100000000",
        ),
        "pbig.toml",
    );
    refused(
        &extract(&data, &out, &cbig, &[]),
        &["projection", "would need"],
    );
    // SimCLR with a million patches per image.
    let cp = config(dir.path(), "target_layer = \"blocks.3.attn.proj\"\n[[objective]]\ntype = \"simclr\"\nnum_patches = 1000\n", "np.toml");
    refused(
        &extract(&data, &out, &cp, &[]),
        &["objective `simclr`", "views", "would need", "batch_size"],
    );
    // Arch JSON typos, 1-channel models, absurd depth.
    let typo = arch_file(dir.path(), "typo.json", |v| {
        v["layer_norm_epsilon"] = 1e-5.into()
    });
    refused(
        &extract_with(&w, &typo, &data, &out, &cfg, &[]),
        &["typo.json", "layer_norm_epsilon", "layer_norm_eps"],
    );
    let one = arch_file(dir.path(), "one.json", |v| {
        v["in_chans"] = 1.into();
        v.as_object_mut().unwrap().remove("state_dict");
    });
    refused(
        &extract_with(&w, &one, &data, &out, &cfg, &[]),
        &["in_chans"],
    );
    let o = fungi()
        .args(["embed", "--weights"])
        .arg(&w)
        .arg("--arch")
        .arg(&one)
        .arg("--images")
        .arg(&data)
        .arg("--out")
        .arg(dir.path().join("e.npy"))
        .output()
        .unwrap();
    refused(&o, &["in_chans"]);
    let deep = arch_file(dir.path(), "deep.json", |v| v["depth"] = 100_000_000.into());
    refused(
        &extract_with(&w, &deep, &data, &out, &cfg, &[]),
        &["deep.json", "would need"],
    );
    // --chunk-size extremes.
    let o = fungi()
        .args(["extract", "--weights"])
        .arg(&w)
        .arg("--arch")
        .arg(golden().join("model.json"))
        .arg("--images")
        .arg(&data)
        .arg("--config")
        .arg(&cfg)
        .arg("--out")
        .arg(&out)
        .args(["--chunk-size", &u64::MAX.to_string()])
        .output()
        .unwrap();
    assert_ne!(o.status.code(), Some(101), "{}", stderr(&o));
    let o = fungi()
        .args(["extract", "--weights"])
        .arg(&w)
        .arg("--arch")
        .arg(golden().join("model.json"))
        .arg("--images")
        .arg(&data)
        .arg("--config")
        .arg(&cfg)
        .arg("--out")
        .arg(dir.path().join("z"))
        .args(["--chunk-size", "0"])
        .output()
        .unwrap();
    refused(&o, &["--chunk-size 0"]);
}

#[test]
fn chunk_size_of_u64_max_gives_the_same_features() {
    let dir = tempfile::tempdir().unwrap();
    let data = folder(dir.path());
    let cfg = config(dir.path(), KL, "kl.toml");
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    ok(&extract(&data, &a, &cfg, &[]));
    let o = fungi()
        .args(["extract", "--weights"])
        .arg(golden().join("model.safetensors"))
        .arg("--arch")
        .arg(golden().join("model.json"))
        .arg("--images")
        .arg(&data)
        .arg("--config")
        .arg(&cfg)
        .arg("--out")
        .arg(&b)
        .args(["--chunk-size", &u64::MAX.to_string()])
        .output()
        .unwrap();
    if o.status.success() {
        assert_eq!(read(&a.join("features.npy")), read(&b.join("features.npy")));
    } else {
        refused(&o, &["--chunk-size"]);
    }
}
