//! `fungi knn` and `fungi inspect` on bad inputs built in code: every one must exit with status 1
//! (an error, never a panic = 101 or an abort / signal) and name the file, flag or value at
//! fault. One good-path case shows that `knn` still gives the known answer.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn fungi(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fungi"))
        .args(args)
        .output()
        .expect("running fungi")
}

/// Asserts exit status 1 (a signal has no code and fails too) and that stderr holds every needle.
#[track_caller]
fn fails(o: &Output, needles: &[&str]) -> String {
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert_eq!(
        o.status.code(),
        Some(1),
        "expected exit status 1, got {:?}; stderr:\n{err}",
        o.status
    );
    assert!(!err.contains("panicked"), "panic:\n{err}");
    for n in needles {
        assert!(err.contains(n), "stderr lacks {n:?}:\n{err}");
    }
    // One line of the message, for the record (`cargo test -- --nocapture`).
    eprintln!(
        "CASE-ERROR: {}",
        err.split_whitespace().collect::<Vec<_>>().join(" ")
    );
    err
}

/// A `.npy` file written by hand (format 1.0).
fn npy(path: &Path, descr: &str, shape: &[usize], body: &[u8]) {
    let dims = match shape {
        [n] => format!("({n},)"),
        _ => format!(
            "({})",
            shape
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut h = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {dims}, }}");
    h.push_str(&" ".repeat((64 - (10 + h.len() + 1) % 64) % 64));
    h.push('\n');
    let mut b = b"\x93NUMPY\x01\x00".to_vec();
    b.extend((h.len() as u16).to_le_bytes());
    b.extend(h.as_bytes());
    b.extend(body);
    std::fs::write(path, b).unwrap();
}

fn f32_npy(path: &Path, shape: &[usize], data: &[f32]) {
    let body: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
    npy(path, "<f4", shape, &body);
}

fn i64_npy(path: &Path, data: &[i64]) {
    let body: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
    npy(path, "<i8", &[data.len()], &body);
}

/// `embedding` = columns 0..2, `kl` = column 2 (only `blocks` is written: knn reads no more).
const MANIFEST: &str = r#"{"blocks": [{"name": "embedding", "dim": 2, "offset": 0},
                                   {"name": "kl", "dim": 1, "offset": 2}]}"#;

/// Two classes, well apart in both blocks.
const TRAIN: [f32; 12] = [
    1.0, 0.0, 1.0, //
    0.9, 0.1, 1.0, //
    0.0, 1.0, -1.0, //
    0.1, 0.9, -1.0,
];
const TRAIN_LABELS: [i64; 4] = [0, 0, 1, 1];
const TEST: [f32; 6] = [0.95, 0.05, 1.0, 0.05, 0.95, -1.0];
const TEST_LABELS: [i64; 2] = [0, 1];

/// An extract-like directory: manifest.json + features.npy `[rows, width]` + labels.npy.
fn dir_with(
    root: &Path,
    name: &str,
    manifest: &str,
    shape: &[usize],
    feats: &[f32],
    labels: &[i64],
) -> PathBuf {
    let d = root.join(name);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("manifest.json"), manifest).unwrap();
    f32_npy(&d.join("features.npy"), shape, feats);
    i64_npy(&d.join("labels.npy"), labels);
    d
}

fn good_train(root: &Path) -> PathBuf {
    dir_with(root, "train", MANIFEST, &[4, 3], &TRAIN, &TRAIN_LABELS)
}

fn good_test(root: &Path) -> PathBuf {
    dir_with(root, "test", MANIFEST, &[2, 3], &TEST, &TEST_LABELS)
}

fn knn(train: &Path, test: &Path, extra: &[&str]) -> Output {
    let mut a = vec![
        "knn",
        "--train",
        train.to_str().unwrap(),
        "--test",
        test.to_str().unwrap(),
    ];
    a.extend(extra);
    fungi(&a)
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

#[test]
fn good_path_gives_the_known_answer() {
    let t = tempfile::tempdir().unwrap();
    let report = t.path().join("report.json");
    let o = knn(
        &good_train(t.path()),
        &good_test(t.path()),
        &["--k", "3", "--report", report.to_str().unwrap()],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("embedding+kl"), "{out}");
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    let res = r["results"].as_array().unwrap();
    assert_eq!(
        res.iter()
            .map(|c| c["combination"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["embedding", "kl", "embedding+kl"]
    );
    for c in res {
        assert_eq!(c["predictions"], serde_json::json!([0, 1]), "{c}");
        assert_eq!(c["accuracy"], 1.0);
    }
    // Few-shot (1 per class) with k = 1 still finds the right class.
    let o = knn(
        &t.path().join("train"),
        &t.path().join("test"),
        &["--k", "1", "--few-shot", "1", "--pca", "0"],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("1.0000"));
}

#[test]
fn k_zero() {
    let t = tempfile::tempdir().unwrap();
    let o = knn(&good_train(t.path()), &good_test(t.path()), &["--k", "0"]);
    fails(&o, &["--k 0"]);
}

#[test]
fn few_shot_zero() {
    let t = tempfile::tempdir().unwrap();
    let o = knn(
        &good_train(t.path()),
        &good_test(t.path()),
        &["--few-shot", "0"],
    );
    fails(&o, &["--few-shot 0"]);
}

#[test]
fn duplicate_blocks_flag() {
    let t = tempfile::tempdir().unwrap();
    let o = knn(
        &good_train(t.path()),
        &good_test(t.path()),
        &["--blocks", "kl,kl"],
    );
    fails(&o, &["--blocks", "`kl`"]);
}

#[test]
fn zero_rows() {
    let t = tempfile::tempdir().unwrap();
    let tr = dir_with(t.path(), "train", MANIFEST, &[0, 3], &[], &[]);
    let o = knn(&tr, &good_test(t.path()), &[]);
    fails(&o, &[&s(&tr.join("features.npy")), "no rows", "--train"]);
}

#[test]
fn labels_longer_than_rows() {
    let t = tempfile::tempdir().unwrap();
    let tr = dir_with(
        t.path(),
        "train",
        MANIFEST,
        &[4, 3],
        &TRAIN,
        &[0, 0, 1, 1, 1],
    );
    let o = knn(&tr, &good_test(t.path()), &[]);
    fails(
        &o,
        &[&s(&tr.join("features.npy")), "[4, 3]", "expected [5, 3]"],
    );
}

#[test]
fn f32_labels() {
    let t = tempfile::tempdir().unwrap();
    let tr = good_train(t.path());
    f32_npy(&tr.join("labels.npy"), &[4], &[0.0, 0.0, 1.0, 1.0]);
    let o = knn(&tr, &good_test(t.path()), &[]);
    fails(
        &o,
        &[&s(&tr.join("labels.npy")), "int64", "found float32 [4]"],
    );
}

#[test]
fn missing_labels() {
    let t = tempfile::tempdir().unwrap();
    let te = good_test(t.path());
    std::fs::remove_file(te.join("labels.npy")).unwrap();
    let o = knn(&good_train(t.path()), &te, &[]);
    fails(&o, &[&s(&te.join("labels.npy")), "missing", "--test"]);
}

#[test]
fn one_dimensional_features() {
    let t = tempfile::tempdir().unwrap();
    let tr = dir_with(t.path(), "train", MANIFEST, &[12], &TRAIN, &TRAIN_LABELS);
    let o = knn(&tr, &good_test(t.path()), &[]);
    fails(
        &o,
        &[
            &s(&tr.join("features.npy")),
            "float32 [12]",
            "expected a 2-D",
        ],
    );
}

#[test]
fn int64_features() {
    let t = tempfile::tempdir().unwrap();
    let tr = good_train(t.path());
    let body: Vec<u8> = (0..12i64).flat_map(|v| v.to_le_bytes()).collect();
    npy(&tr.join("features.npy"), "<i8", &[4, 3], &body);
    let o = knn(&tr, &good_test(t.path()), &[]);
    fails(&o, &[&s(&tr.join("features.npy")), "found int64 [4, 3]"]);
}

#[test]
fn undersized_features() {
    let t = tempfile::tempdir().unwrap();
    let feats: Vec<f32> = TRAIN.chunks(3).flat_map(|r| [r[0], r[1]]).collect();
    let tr = dir_with(t.path(), "train", MANIFEST, &[4, 2], &feats, &TRAIN_LABELS);
    let o = knn(&tr, &good_test(t.path()), &[]);
    fails(
        &o,
        &[&s(&tr.join("features.npy")), "[4, 2]", "expected [4, 3]"],
    );
}

#[test]
fn block_past_the_width() {
    let t = tempfile::tempdir().unwrap();
    let m = r#"{"blocks": [{"name": "embedding", "dim": 2, "offset": 0},
                           {"name": "kl", "dim": 1, "offset": 3}]}"#;
    let tr = dir_with(t.path(), "train", m, &[4, 3], &TRAIN, &TRAIN_LABELS);
    let o = knn(&tr, &good_test(t.path()), &[]);
    fails(
        &o,
        &[
            &s(&tr.join("manifest.json")),
            "`kl`",
            "[3, 3+1)",
            "3 columns",
        ],
    );
}

#[test]
fn overlapping_blocks() {
    let t = tempfile::tempdir().unwrap();
    let m = r#"{"blocks": [{"name": "embedding", "dim": 2, "offset": 0},
                           {"name": "kl", "dim": 1, "offset": 1}]}"#;
    let tr = dir_with(t.path(), "train", m, &[4, 3], &TRAIN, &TRAIN_LABELS);
    let o = knn(&tr, &good_test(t.path()), &[]);
    fails(&o, &[&s(&tr.join("manifest.json")), "overlap"]);
}

#[test]
fn zero_wide_block() {
    let t = tempfile::tempdir().unwrap();
    let m = r#"{"blocks": [{"name": "embedding", "dim": 3, "offset": 0},
                           {"name": "kl", "dim": 0, "offset": 3}]}"#;
    let tr = dir_with(t.path(), "train", m, &[4, 3], &TRAIN, &TRAIN_LABELS);
    let o = knn(&tr, &good_test(t.path()), &[]);
    fails(&o, &[&s(&tr.join("manifest.json")), "`kl` has dim 0"]);
}

#[test]
fn nan_feature() {
    let t = tempfile::tempdir().unwrap();
    let mut feats = TRAIN;
    feats[2 * 3 + 1] = f32::NAN;
    let tr = dir_with(t.path(), "train", MANIFEST, &[4, 3], &feats, &TRAIN_LABELS);
    let o = knn(&tr, &good_test(t.path()), &[]);
    fails(
        &o,
        &[
            &s(&tr.join("features.npy")),
            "block `embedding`, row 2, column 1: NaN",
        ],
    );
}

#[test]
fn infinite_test_feature() {
    let t = tempfile::tempdir().unwrap();
    let mut feats = TEST;
    feats[3 + 2] = f32::NEG_INFINITY;
    let te = dir_with(t.path(), "test", MANIFEST, &[2, 3], &feats, &TEST_LABELS);
    let o = knn(&good_train(t.path()), &te, &[]);
    fails(
        &o,
        &[
            &s(&te.join("features.npy")),
            "block `kl`, row 1, column 0: -inf",
        ],
    );
}

#[test]
fn mismatched_train_test_widths() {
    let t = tempfile::tempdir().unwrap();
    let m = r#"{"blocks": [{"name": "embedding", "dim": 3, "offset": 0},
                           {"name": "kl", "dim": 1, "offset": 3}]}"#;
    let feats: Vec<f32> = TEST
        .chunks(3)
        .flat_map(|r| [r[0], r[1], 0.0, r[2]])
        .collect();
    let te = dir_with(t.path(), "test", m, &[2, 4], &feats, &TEST_LABELS);
    let tr = good_train(t.path());
    let o = knn(&tr, &te, &[]);
    fails(
        &o,
        &[
            "block `embedding`: 2 columns in --train",
            &s(&tr),
            "3 in --test",
            &s(&te),
        ],
    );
}

#[test]
fn corrupt_manifest_for_knn() {
    let t = tempfile::tempdir().unwrap();
    let tr = dir_with(
        t.path(),
        "train",
        "{\"blocks\": [",
        &[4, 3],
        &TRAIN,
        &TRAIN_LABELS,
    );
    let o = knn(&tr, &good_test(t.path()), &[]);
    fails(&o, &[&s(&tr.join("manifest.json")), "not a valid manifest"]);
}

#[test]
fn not_an_extract_directory() {
    let t = tempfile::tempdir().unwrap();
    let missing = t.path().join("nowhere");
    let o = knn(&missing, &good_test(t.path()), &[]);
    fails(&o, &[&s(&missing.join("manifest.json")), "--train"]);
}

/// A safetensors file with `train.embedding`, `train_labels`, `test.embedding`, `test_labels`.
fn safetensors_file(
    path: &Path,
    train_rows: usize,
    labels_dtype: safetensors::Dtype,
    metadata: Option<std::collections::HashMap<String, String>>,
) {
    use safetensors::tensor::TensorView;
    use safetensors::Dtype;
    let tr: Vec<u8> = TRAIN[..train_rows * 3]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let te: Vec<u8> = TEST.iter().flat_map(|v| v.to_le_bytes()).collect();
    let trl: Vec<u8> = match labels_dtype {
        Dtype::F32 => TRAIN_LABELS
            .iter()
            .flat_map(|&v| (v as f32).to_le_bytes())
            .collect(),
        _ => TRAIN_LABELS.iter().flat_map(|v| v.to_le_bytes()).collect(),
    };
    let tel: Vec<u8> = TEST_LABELS.iter().flat_map(|v| v.to_le_bytes()).collect();
    let views = vec![
        (
            "train.embedding",
            TensorView::new(Dtype::F32, vec![train_rows, 3], &tr).unwrap(),
        ),
        (
            "train_labels",
            TensorView::new(labels_dtype, vec![4], &trl).unwrap(),
        ),
        (
            "test.embedding",
            TensorView::new(Dtype::F32, vec![2, 3], &te).unwrap(),
        ),
        (
            "test_labels",
            TensorView::new(Dtype::I64, vec![2], &tel).unwrap(),
        ),
    ];
    std::fs::write(path, safetensors::serialize(views, metadata).unwrap()).unwrap();
}

fn knn_st(file: &Path) -> Output {
    let (tr, te) = (format!("{}#train", s(file)), format!("{}#test", s(file)));
    fungi(&["knn", "--train", &tr, "--test", &te, "--k", "1"])
}

#[test]
fn safetensors_good_path() {
    let t = tempfile::tempdir().unwrap();
    let f = t.path().join("feats.safetensors");
    safetensors_file(&f, 4, safetensors::Dtype::I64, None);
    let o = knn_st(&f);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("1.0000"));
}

#[test]
fn safetensors_rows_differ_from_labels() {
    let t = tempfile::tempdir().unwrap();
    let f = t.path().join("feats.safetensors");
    safetensors_file(&f, 3, safetensors::Dtype::I64, None);
    let o = knn_st(&f);
    fails(
        &o,
        &[&s(&f), "`train.embedding`", "[3, 3]", "expected [4, 3]"],
    );
}

#[test]
fn safetensors_f32_labels() {
    let t = tempfile::tempdir().unwrap();
    let f = t.path().join("feats.safetensors");
    safetensors_file(&f, 4, safetensors::Dtype::F32, None);
    let o = knn_st(&f);
    fails(&o, &[&s(&f), "`train_labels`", "I64", "found F32"]);
}

#[test]
fn inspect_ten_byte_npy_v2() {
    let t = tempfile::tempdir().unwrap();
    let f = t.path().join("short.npy");
    std::fs::write(&f, b"\x93NUMPY\x02\x00\x10\x00").unwrap();
    let o = fungi(&["inspect", f.to_str().unwrap()]);
    fails(&o, &[&s(&f), "truncated", "10 bytes"]);
}

#[test]
fn inspect_huge_npy_shape() {
    let t = tempfile::tempdir().unwrap();
    let f = t.path().join("huge.npy");
    npy(&f, "<f4", &[99999999999, 99999999999], &[0; 16]);
    let o = fungi(&["inspect", f.to_str().unwrap()]);
    fails(&o, &[&s(&f), "[99999999999, 99999999999]"]);
}

#[test]
fn inspect_non_ascii_metadata_past_byte_300() {
    let t = tempfile::tempdir().unwrap();
    let f = t.path().join("meta.safetensors");
    // 'é' is two bytes at 299..301: byte 300 is inside it.
    let text = format!("{}é{}", "a".repeat(299), "ü".repeat(50));
    let meta = std::collections::HashMap::from([("note".to_string(), text)]);
    safetensors_file(&f, 4, safetensors::Dtype::I64, Some(meta));
    let o = fungi(&["inspect", f.to_str().unwrap()]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{:?}: {}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(out.contains(&s(&f)), "{out}");
    assert!(
        out.contains(&format!("metadata note: {}…", "a".repeat(299))),
        "{out}"
    );
}

#[test]
fn inspect_corrupt_manifest() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path().join("out");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("manifest.json"), "{\"rows\": 3,").unwrap();
    let o = fungi(&["inspect", d.to_str().unwrap()]);
    fails(&o, &[&s(&d.join("manifest.json")), "not valid JSON"]);
}

#[test]
fn inspect_missing_path() {
    let t = tempfile::tempdir().unwrap();
    let f = t.path().join("absent.npy");
    let o = fungi(&["inspect", f.to_str().unwrap()]);
    fails(&o, &[&s(&f), "no such file"]);
}
