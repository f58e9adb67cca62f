//! End-to-end `fungi extract` / `merge` / `knn` / `inspect` on the golden set.

use std::path::{Path, PathBuf};
use std::process::Command;

fn golden() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/golden")
}

fn fungi() -> Command {
    Command::new(env!("CARGO_BIN_EXE_fungi"))
}

/// An ImageFolder copy of the golden images: one class per image, 2 images each (by copying).
fn image_folder(dir: &Path) -> PathBuf {
    let root = dir.join("data");
    let labels: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(golden().join("images/labels.json")).unwrap(),
    )
    .unwrap();
    for e in labels["images"].as_array().unwrap() {
        let class = root.join(format!(
            "{}_{}",
            e["label"],
            e["class_name"].as_str().unwrap()
        ));
        std::fs::create_dir_all(&class).unwrap();
        let f = e["file"].as_str().unwrap();
        std::fs::copy(golden().join("images").join(f), class.join(f)).unwrap();
    }
    root
}

const KL_ONLY: &str = "seed = 3\ntarget_layer = \"blocks.3.attn.proj\"\nbatch_size = 2\n[[objective]]\ntype = \"kl\"\n[[objective]]\ntype = \"simclr\"\ncomparison_batch_size = 2\n";

fn extract(data: &Path, out: &Path, cfg: &Path, extra: &[&str]) -> std::process::Output {
    fungi()
        .args(["extract", "--weights"])
        .arg(golden().join("model.safetensors"))
        .arg("--arch")
        .arg(golden().join("model.json"))
        .arg("--images")
        .arg(data)
        .arg("--config")
        .arg(cfg)
        .arg("--out")
        .arg(out)
        .args(["--chunk-size", "2"])
        .args(extra)
        .output()
        .unwrap()
}

fn ok(o: &std::process::Output) {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn extract_resume_shards_and_merge_are_byte_identical() {
    let dir = tempfile::tempdir().unwrap();
    let data = image_folder(dir.path());
    let cfg = dir.path().join("fungi.toml");
    std::fs::write(&cfg, KL_ONLY).unwrap();
    let full = dir.path().join("full");
    ok(&extract(&data, &full, &cfg, &[]));
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(full.join("manifest.json")).unwrap())
            .unwrap();
    assert_eq!(m["rows"], 8);
    assert_eq!(
        m["blocks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["name"].as_str().unwrap())
            .collect::<Vec<_>>(),
        vec!["embedding", "kl", "simclr"]
    );
    let feats = std::fs::read(full.join("features.npy")).unwrap();
    let labels = std::fs::read(full.join("labels.npy")).unwrap();

    // Views prepared on the decode thread while the previous batch computes (the GPU default),
    // with the prefix in passes of 3 views: the same bytes.
    let ahead = dir.path().join("ahead");
    ok(&extract(
        &data,
        &ahead,
        &cfg,
        &[
            "--prepare-ahead",
            "--max-views-per-pass",
            "3",
            "--state",
            full.join("state.safetensors").to_str().unwrap(),
        ],
    ));
    assert_eq!(
        std::fs::read(ahead.join("features.npy")).unwrap(),
        feats,
        "--prepare-ahead / --max-views-per-pass changed the features"
    );

    // Shards 0..3 with the state of the full run, then merge.
    let mut shard_dirs = vec![];
    for i in 0..3 {
        let d = dir.path().join(format!("shard{i}"));
        ok(&extract(
            &data,
            &d,
            &cfg,
            &[
                "--shard",
                &format!("{i}/3"),
                "--keep-chunks",
                "--state",
                full.join("state.safetensors").to_str().unwrap(),
            ],
        ));
        shard_dirs.push(d);
    }
    let merged = dir.path().join("merged");
    let mut c = fungi();
    c.args(["merge", "--out"])
        .arg(&merged)
        .args(shard_dirs.iter().rev());
    ok(&c.output().unwrap());
    assert_eq!(
        std::fs::read(merged.join("features.npy")).unwrap(),
        feats,
        "merged shards differ from one run"
    );
    assert_eq!(std::fs::read(merged.join("labels.npy")).unwrap(), labels);
    assert_eq!(
        std::fs::read(merged.join("indices.npy")).unwrap(),
        std::fs::read(full.join("indices.npy")).unwrap()
    );
    // A missing shard is refused.
    let mut c = fungi();
    c.args(["merge", "--out"])
        .arg(dir.path().join("bad"))
        .args(&shard_dirs[..2]);
    let o = c.output().unwrap();
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("missing"));

    // Kill mid-run, then --resume: same bytes.
    let killed = dir.path().join("killed");
    let mut child = fungi()
        .args(["extract", "--weights"])
        .arg(golden().join("model.safetensors"))
        .arg("--arch")
        .arg(golden().join("model.json"))
        .arg("--images")
        .arg(&data)
        .arg("--config")
        .arg(&cfg)
        .arg("--out")
        .arg(&killed)
        .args(["--chunk-size", "2"])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let first_chunk = killed.join("chunks/chunk-000000.safetensors");
    let t0 = std::time::Instant::now();
    while !first_chunk.exists() && t0.elapsed().as_secs() < 120 {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(first_chunk.exists(), "no chunk was written before the kill");
    let o = extract(&data, &killed, &cfg, &[]);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("--resume"));
    ok(&extract(&data, &killed, &cfg, &["--resume"]));
    assert_eq!(
        std::fs::read(killed.join("features.npy")).unwrap(),
        feats,
        "resumed run differs"
    );

    // A resume with other settings is refused.
    std::fs::write(&cfg, KL_ONLY.replace("seed = 3", "seed = 4")).unwrap();
    let o = extract(&data, &killed, &cfg, &["--resume"]);
    assert!(!o.status.success(), "resume with another seed must fail");

    // knn on the extracted features (train = test here) and inspect.
    let report = dir.path().join("knn.json");
    let o = fungi()
        .args(["knn", "--train"])
        .arg(&full)
        .arg("--test")
        .arg(&full)
        .args(["--k", "1", "--pca", "0", "--report"])
        .arg(&report)
        .output()
        .unwrap();
    ok(&o);
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(r["results"].as_array().unwrap().len(), 7);
    assert!(
        r["results"]
            .as_array()
            .unwrap()
            .iter()
            .all(|x| x["accuracy"] == 1.0),
        "1-NN of the training set onto itself"
    );
    let o = fungi().args(["inspect"]).arg(&full).output().unwrap();
    ok(&o);
    assert!(String::from_utf8_lossy(&o.stdout).contains("rows: 8"));
}

#[test]
fn golden_kl_and_simclr_features_from_images_with_a_golden_state() {
    // A state built from the golden heads, projection and negatives: extract on the golden images
    // must give fungivision's KL and SimCLR features.
    let dir = tempfile::tempdir().unwrap();
    let g = |f: &str| std::fs::read(golden().join(f)).unwrap();
    let (w, kl, sim) = (
        g("wrapper.safetensors"),
        g("kl.safetensors"),
        g("simclr.safetensors"),
    );
    let (w, kl, sim) = (
        safetensors::SafeTensors::deserialize(&w).unwrap(),
        safetensors::SafeTensors::deserialize(&kl).unwrap(),
        safetensors::SafeTensors::deserialize(&sim).unwrap(),
    );
    let t = |st: &safetensors::SafeTensors, n: &str| {
        let v = st.tensor(n).unwrap();
        (v.dtype(), v.shape().to_vec(), v.data().to_vec())
    };
    let mut tensors = [
        ("projection".to_string(), t(&w, "projection_i8")),
        (
            "projection_scaling".to_string(),
            t(&w, "projection_scaling"),
        ),
        ("kl.head.weight".to_string(), t(&kl, "head.weight")),
        ("kl.head.bias".to_string(), t(&kl, "head.bias")),
        ("simclr.head.weight".to_string(), t(&sim, "head.weight")),
        ("simclr.head.bias".to_string(), t(&sim, "head.bias")),
        (
            "simclr.negatives".to_string(),
            t(&sim, "comparison_latents"),
        ),
    ];
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    let cfg_text = "target_layer = \"blocks.3.attn.proj\"\nbatch_size = 4\ninclude_embedding = false\n[[objective]]\ntype = \"kl\"\n[[objective]]\ntype = \"simclr\"\n";
    let cfg = dir.path().join("c.toml");
    std::fs::write(&cfg, cfg_text).unwrap();
    let state_cfg = serde_json::json!({
        "target_layer": "blocks.3.attn.proj", "target_shape": [64, 64], "embed_dim": 64,
        "objectives": [{"name": "kl"}, {"name": "simclr"}],
    });
    let meta = std::collections::HashMap::from([
        ("format".to_string(), "fungi-state/1".to_string()),
        ("config".to_string(), state_cfg.to_string()),
    ]);
    let views: Vec<_> = tensors
        .iter()
        .map(|(k, (dt, s, b))| {
            (
                k.clone(),
                safetensors::tensor::TensorView::new(*dt, s.clone(), b).unwrap(),
            )
        })
        .collect();
    let state = dir.path().join("golden_state.safetensors");
    safetensors::serialize_to_file(views, Some(meta), &state).unwrap();
    let out = dir.path().join("out");
    let o = fungi()
        .args(["extract", "--weights"])
        .arg(golden().join("model.safetensors"))
        .arg("--arch")
        .arg(golden().join("model.json"))
        .arg("--images")
        .arg(golden().join("images"))
        .arg("--config")
        .arg(&cfg)
        .arg("--state")
        .arg(&state)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    ok(&o);
    let bytes = std::fs::read(out.join("features.npy")).unwrap();
    let hlen = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    let f: Vec<f32> = bytes[10 + hlen..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(f.len(), 8 * 128);
    let want = |st: &safetensors::SafeTensors| -> Vec<f64> {
        st.tensor("features_f64")
            .unwrap()
            .data()
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
            .collect()
    };
    let (wk, ws) = (want(&kl), want(&sim));
    // Only the JPEG decode differs from Pillow without the turbojpeg feature: cosine >= 0.999
    // (golden README), exact rows elsewhere.
    for r in 0..8 {
        for (b, w) in [(0, &wk), (1, &ws)] {
            let ours = &f[r * 128 + b * 64..r * 128 + b * 64 + 64];
            let want = &w[r * 64..(r + 1) * 64];
            let cos: f64 = ours.iter().zip(want).map(|(a, b)| *a as f64 * b).sum();
            let maxd = ours
                .iter()
                .zip(want)
                .map(|(a, b)| (*a as f64 - b).abs())
                .fold(0.0, f64::max);
            let jpeg = r == 0 || r == 7;
            assert!(
                cos >= 0.999 && (jpeg || maxd < 1e-4),
                "row {r} block {b}: cos {cos}, max diff {maxd}"
            );
        }
    }
}

#[cfg(feature = "hdf5")]
#[test]
fn hdf5_output_has_the_paper_layout() {
    let dir = tempfile::tempdir().unwrap();
    let data = image_folder(dir.path());
    let cfg = dir.path().join("fungi.toml");
    std::fs::write(&cfg, KL_ONLY).unwrap();
    let (npy_out, h5_out) = (dir.path().join("npy"), dir.path().join("h5"));
    ok(&extract(&data, &npy_out, &cfg, &[]));
    ok(&extract(
        &data,
        &h5_out,
        &cfg,
        &[
            "--format",
            "hdf5",
            "--state",
            npy_out.join("state.safetensors").to_str().unwrap(),
        ],
    ));
    let bytes = std::fs::read(npy_out.join("features.npy")).unwrap();
    let hlen = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    let f: Vec<f32> = bytes[10 + hlen..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    let e = hdf5_metno::File::open(h5_out.join("embeddings.h5")).unwrap();
    let emb: ndarray::Array2<f32> = e.dataset("embeddings").unwrap().read_2d().unwrap();
    let targets: Vec<u32> = e.dataset("targets").unwrap().read_raw().unwrap();
    assert_eq!(targets, (0..8u32).collect::<Vec<_>>());
    let kl: ndarray::Array2<f32> = hdf5_metno::File::open(h5_out.join("kl.h5"))
        .unwrap()
        .dataset("attn_proj")
        .unwrap()
        .read_2d()
        .unwrap();
    assert_eq!(emb.shape(), &[8, 64]);
    for r in 0..8 {
        assert_eq!(emb.row(r).to_vec(), f[r * 192..r * 192 + 64].to_vec());
        assert_eq!(kl.row(r).to_vec(), f[r * 192 + 64..r * 192 + 128].to_vec());
    }
    assert!(h5_out.join("simclr.h5").exists());
}

/// One writer per run directory: a second `fungi extract` on an `--out` that a running one
/// writes is refused at once, naming the lock file and the holder's pid, and the first run's
/// outputs are its own (not a mix of two runs with different seeds).
#[test]
fn a_second_writer_on_the_same_out_is_refused_naming_the_lock() {
    let dir = tempfile::tempdir().unwrap();
    // 64 images and DINO's 12 views: the first run lasts seconds, not milliseconds.
    let data = dir.path().join("many");
    let src = image_folder(dir.path());
    for e in std::fs::read_dir(&src).unwrap() {
        let class = e.unwrap().path();
        let to = data.join(class.file_name().unwrap());
        std::fs::create_dir_all(&to).unwrap();
        for f in std::fs::read_dir(&class).unwrap() {
            let f = f.unwrap().path();
            for k in 0..8 {
                let name = format!("{k}_{}", f.file_name().unwrap().to_string_lossy());
                std::fs::copy(&f, to.join(name)).unwrap();
            }
        }
    }
    let cfg = |seed: u64| {
        let p = dir.path().join(format!("s{seed}.toml"));
        std::fs::write(&p, format!("seed = {seed}\ntarget_layer = \"blocks.3.attn.proj\"\nbatch_size = 2\n[[objective]]\ntype = \"kl\"\n[[objective]]\ntype = \"dino\"\n")).unwrap();
        p
    };
    let (cfg3, cfg4) = (cfg(3), cfg(4));
    let out = dir.path().join("out");
    let mut first = fungi()
        .args(["extract", "--weights"])
        .arg(golden().join("model.safetensors"))
        .arg("--arch")
        .arg(golden().join("model.json"))
        .arg("--images")
        .arg(&data)
        .arg("--config")
        .arg(&cfg3)
        .arg("--out")
        .arg(&out)
        .args(["--chunk-size", "2"])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let lock = out.join(".fungi.lock");
    let t0 = std::time::Instant::now();
    while !std::fs::read_to_string(&lock).is_ok_and(|s| !s.trim().is_empty())
        && t0.elapsed().as_secs() < 120
    {
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    let second = extract(&data, &out, &cfg4, &[]);
    let status = first.wait().unwrap();
    assert!(status.success());
    let e = String::from_utf8_lossy(&second.stderr);
    assert!(!second.status.success(), "the second writer ran");
    assert!(
        e.contains(".fungi.lock") && e.contains(&format!("pid {}", first.id())),
        "{e}"
    );
    let run: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("run.json")).unwrap()).unwrap();
    assert_eq!(run["config"]["seed"], 3);
    assert!(
        !lock.exists(),
        "the lock file is removed when the run is done"
    );
    // A resume of a finished run takes the lock again and has nothing to do.
    ok(&extract(&data, &out, &cfg3, &["--resume"]));
}
