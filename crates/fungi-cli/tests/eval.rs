//! `fungi probe` and `fungi retrieve` on generated feature folders, safetensors files and ground
//! truths: the reports equal `fungi_eval` on the same data, a perfect ranking scores 100, and
//! bad inputs are errors (exit status 1, never a panic) naming the file, key or value.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use fungi_eval::{
    evaluate_linear_probe, retrieval_map, ClassificationBlock, Matrix, ProbeSettings, QueryGnd,
    RetrievalBlock, Validation,
};
use safetensors::Dtype;
use serde_json::{json, Value};

fn fungi(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fungi"))
        .args(args)
        .output()
        .expect("running fungi")
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

/// Asserts success and returns stdout.
#[track_caller]
fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "status {:?}; stderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).to_string()
}

/// Asserts exit status 1 (a signal has no code and fails too), no panic, and every needle in
/// stderr.
#[track_caller]
fn fails(o: &Output, needles: &[&str]) {
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
    eprintln!(
        "CASE-ERROR: {}",
        err.split_whitespace().collect::<Vec<_>>().join(" ")
    );
}

/// Reproducible uniform values in [-1, 1).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % 2_000_000) as f32 / 1_000_000.0 - 1.0
    }
}

/// Features of one set of rows: named blocks (`[rows, dim]`, row-major f32) and labels.
#[derive(Clone)]
struct Set {
    blocks: Vec<(String, usize, Vec<f32>)>,
    labels: Vec<i64>,
}

impl Set {
    fn rows(&self) -> usize {
        self.labels.len()
    }

    /// The library's view of block `b` (the CLI reads f32 and computes in f64).
    fn matrix(&self, b: usize) -> Matrix {
        let (_, d, v) = &self.blocks[b];
        Matrix::new(
            self.rows(),
            *d,
            v.iter().map(|&x| x as f64).collect::<Vec<_>>(),
        )
        .unwrap()
    }
}

/// `per_class` rows of each of `classes` classes (interleaved: 0, 1, 2, 0, 1, 2, ...), blocks
/// `embedding` (5 dims) and `kl` (4 dims): a class-dependent mean plus noise, overlapping enough
/// that the probe does not score 100 %.
fn problem(per_class: usize, classes: usize, seed: u64) -> Set {
    let mut rng = Rng(seed);
    let labels: Vec<i64> = (0..per_class * classes)
        .map(|i| (i % classes) as i64)
        .collect();
    let blocks = [("embedding", 5usize), ("kl", 4usize)]
        .iter()
        .enumerate()
        .map(|(b, &(name, d))| {
            let mut v = Vec::with_capacity(labels.len() * d);
            for &l in &labels {
                for j in 0..d {
                    let mean = if (j + b) % classes == l as usize {
                        0.8
                    } else {
                        0.0
                    };
                    v.push(mean + rng.next());
                }
            }
            (name.to_string(), d, v)
        })
        .collect();
    Set { blocks, labels }
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

/// An extract-like output directory (manifest.json, features.npy, labels.npy when `labels`).
fn write_dir(root: &Path, name: &str, set: &Set, labels: bool) -> PathBuf {
    let d = root.join(name);
    std::fs::create_dir_all(&d).unwrap();
    let width: usize = set.blocks.iter().map(|b| b.1).sum();
    let mut offset = 0;
    let mut manifest = vec![];
    for (n, dim, _) in &set.blocks {
        manifest.push(json!({"name": n, "dim": dim, "offset": offset}));
        offset += dim;
    }
    std::fs::write(
        d.join("manifest.json"),
        json!({ "blocks": manifest }).to_string(),
    )
    .unwrap();
    let mut feats = Vec::with_capacity(set.rows() * width);
    for r in 0..set.rows() {
        for (_, dim, v) in &set.blocks {
            feats.extend_from_slice(&v[r * dim..(r + 1) * dim]);
        }
    }
    let body: Vec<u8> = feats.iter().flat_map(|v| v.to_le_bytes()).collect();
    npy(&d.join("features.npy"), "<f4", &[set.rows(), width], &body);
    if labels {
        let body: Vec<u8> = set.labels.iter().flat_map(|v| v.to_le_bytes()).collect();
        npy(&d.join("labels.npy"), "<i8", &[set.rows()], &body);
    }
    d
}

/// `FILE.safetensors` with tensors `PREFIX.<block>` (and `PREFIX_labels` when `labels`) for
/// every `(prefix, set)`; returns the path.
fn write_st(path: &Path, sets: &[(&str, &Set)], labels: bool) -> PathBuf {
    let mut tensors: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = vec![];
    for (prefix, set) in sets {
        for (n, d, v) in &set.blocks {
            tensors.push((
                format!("{prefix}.{n}"),
                Dtype::F32,
                vec![set.rows(), *d],
                v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            ));
        }
        if labels {
            tensors.push((
                format!("{prefix}_labels"),
                Dtype::I64,
                vec![set.rows()],
                set.labels.iter().flat_map(|x| x.to_le_bytes()).collect(),
            ));
        }
    }
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
        .iter()
        .map(|(n, dt, sh, b)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(*dt, sh.clone(), b).unwrap(),
            )
        })
        .collect();
    std::fs::write(path, safetensors::serialize(views, None).unwrap()).unwrap();
    path.to_path_buf()
}

fn blocks(train: &Set, test: &Set) -> Vec<ClassificationBlock> {
    (0..train.blocks.len())
        .map(|b| ClassificationBlock {
            name: train.blocks[b].0.clone(),
            train: train.matrix(b),
            test: test.matrix(b),
        })
        .collect()
}

fn report(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// `a` equals `b`, numbers within a relative 1e-12: the report is written with every digit,
/// but serde_json's default parser (no `float_roundtrip`) may read the last bit differently.
#[track_caller]
fn assert_close(a: &Value, b: &Value, at: &str) {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            assert!(
                x == y || (x - y).abs() <= 1e-12 * x.abs().max(y.abs()),
                "{at}: {x} vs {y}"
            );
        }
        (Value::Array(x), Value::Array(y)) => {
            assert_eq!(x.len(), y.len(), "{at}: lengths");
            for (i, (x, y)) in x.iter().zip(y).enumerate() {
                assert_close(x, y, &format!("{at}[{i}]"));
            }
        }
        (Value::Object(x), Value::Object(y)) => {
            let keys = |o: &serde_json::Map<String, Value>| o.keys().cloned().collect::<Vec<_>>();
            assert_eq!(keys(x), keys(y), "{at}: keys");
            for (k, v) in x {
                assert_close(v, &y[k], &format!("{at}.{k}"));
            }
        }
        _ => assert_eq!(a, b, "{at}"),
    }
}

/// The report's results equal the library's, field by field.
#[track_caller]
fn assert_same<T: serde::Serialize>(r: &Value, want: &[T]) {
    assert_close(
        &r["results"],
        &serde_json::to_value(want).unwrap(),
        "results",
    );
}

#[test]
fn probe_report_equals_the_library_split_val_and_few_shot() {
    let t = tempfile::tempdir().unwrap();
    let train = problem(20, 3, 1);
    let test = problem(10, 3, 2);
    let val = problem(6, 3, 3);
    let tr = s(&write_dir(t.path(), "train", &train, true));
    let te = format!(
        "{}#test",
        s(&write_st(
            &t.path().join("f.safetensors"),
            &[("test", &test)],
            true
        ))
    );
    let va = s(&write_dir(t.path(), "val", &val, true));
    let rp = t.path().join("r.json");
    let b = blocks(&train, &test);
    let settings = |few_shot| ProbeSettings {
        pca_dim: Some(6),
        few_shot,
        ..ProbeSettings::default()
    };

    // λ on the stratified 80/20 split of train.
    let out = ok(&fungi(&[
        "probe",
        "--train",
        &tr,
        "--test",
        &te,
        "--pca",
        "6",
        "--report",
        &s(&rp),
    ]));
    let want =
        evaluate_linear_probe(&b, &train.labels, &test.labels, None, &settings(None)).unwrap();
    let names: Vec<&str> = want.iter().map(|r| r.combination.as_str()).collect();
    assert_eq!(names, ["embedding", "kl", "embedding+kl"]);
    let r = report(&rp);
    assert_same(&r, &want);
    for w in &want {
        assert!(out.contains(&w.combination), "{out}");
        assert!(out.contains(&format!("{:.4}", w.accuracy)), "{out}");
        assert_eq!(w.validation.len(), 5);
    }
    // PCA 6 applies to the 9-wide combination only; the problem is neither trivial nor hopeless.
    assert_eq!(
        want.iter().map(|r| r.pca).collect::<Vec<_>>(),
        [false, false, true]
    );
    assert!(want.iter().all(|r| r.accuracy > 0.4 && r.accuracy < 1.0));
    assert_eq!(r["n_train"], 60);
    assert_eq!(r["results"][2]["combination"], "embedding+kl");

    // λ on --val, chosen among --lambdas, refitted on train + val.
    ok(&fungi(&[
        "probe",
        "--train",
        &tr,
        "--test",
        &te,
        "--val",
        &va,
        "--pca",
        "6",
        "--lambdas",
        "1e-4,1e-2,1",
        "--report",
        &s(&rp),
    ]));
    let v = Validation {
        blocks: (0..2).map(|i| val.matrix(i)).collect(),
        labels: val.labels.clone(),
    };
    let mut sv = settings(None);
    sv.lambdas = vec![1e-4, 1e-2, 1.0];
    let want = evaluate_linear_probe(&b, &train.labels, &test.labels, Some(&v), &sv).unwrap();
    assert_same(&report(&rp), &want);
    assert!(want.iter().all(|r| r.validation.len() == 3));

    // Few-shot: the first 4 per class, λ = 5e-5, no validation.
    ok(&fungi(&[
        "probe",
        "--train",
        &tr,
        "--test",
        &te,
        "--few-shot",
        "4",
        "--pca",
        "6",
        "--report",
        &s(&rp),
    ]));
    let want =
        evaluate_linear_probe(&b, &train.labels, &test.labels, None, &settings(Some(4))).unwrap();
    assert_same(&report(&rp), &want);
    assert!(want
        .iter()
        .all(|r| r.lambda == 5e-5 && r.validation.is_empty()));
}

#[test]
fn probe_blocks_and_help() {
    let t = tempfile::tempdir().unwrap();
    let train = problem(10, 2, 4);
    let test = problem(5, 2, 5);
    let f = t.path().join("f.safetensors");
    write_st(&f, &[("train", &train), ("test", &test)], true);
    let (tr, te) = (format!("{}#train", s(&f)), format!("{}#test", s(&f)));
    let out = ok(&fungi(&[
        "probe", "--train", &tr, "--test", &te, "--blocks", "kl", "--pca", "0",
    ]));
    assert!(out.contains("kl") && !out.contains("embedding"), "{out}");
    let help = ok(&fungi(&["probe", "--help"]));
    for needle in ["L-BFGS", "1e-8", "--tol", "5e-6", "seed 42", "5e-5"] {
        assert!(help.contains(needle), "help lacks {needle:?}:\n{help}");
    }
}

#[test]
fn an_embeddings_key_is_the_embedding_block() {
    // Other tools write the paper's HDF5 name, `embeddings`; it is read as the one block name.
    let t = tempfile::tempdir().unwrap();
    let (mut train, mut test) = (problem(10, 2, 4), problem(5, 2, 5));
    train.blocks[0].0 = "embeddings".into();
    test.blocks[0].0 = "embeddings".into();
    let f = write_st(
        &t.path().join("f.safetensors"),
        &[("train", &train), ("test", &test)],
        true,
    );
    let (tr, te) = (format!("{}#train", s(&f)), format!("{}#test", s(&f)));
    let r = t.path().join("r.json");
    ok(&fungi(&[
        "knn",
        "--train",
        &tr,
        "--test",
        &te,
        "--k",
        "3",
        "--report",
        &s(&r),
    ]));
    let names: Vec<String> = report(&r)["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["combination"].as_str().unwrap().to_string())
        .collect();
    assert!(names.contains(&"embedding+kl".to_string()), "{names:?}");
    assert!(!names.iter().any(|n| n.contains("embeddings")), "{names:?}");
    // Both names at once: which one is the embedding is ambiguous, and refused.
    let mut both = problem(10, 2, 4);
    both.blocks
        .push(("embeddings".into(), 5, both.blocks[0].2.clone()));
    let g = write_st(
        &t.path().join("g.safetensors"),
        &[("train", &both), ("test", &both)],
        true,
    );
    let o = fungi(&[
        "knn",
        "--train",
        &format!("{}#train", s(&g)),
        "--test",
        &format!("{}#test", s(&g)),
    ]);
    fails(&o, &["train.embedding", "train.embeddings"]);
}

/// A tiny pickle (protocol 2) writer for ground truths.
enum Py {
    Str(String),
    Int(i32),
    List(Vec<Py>),
    Dict(Vec<(String, Py)>),
}

impl Py {
    fn write(&self, out: &mut Vec<u8>) {
        match self {
            Py::Str(s) => {
                out.push(b'X');
                out.extend((s.len() as u32).to_le_bytes());
                out.extend(s.as_bytes());
            }
            Py::Int(i) => {
                out.push(b'J');
                out.extend(i.to_le_bytes());
            }
            Py::List(l) => {
                out.extend(b"](");
                l.iter().for_each(|v| v.write(out));
                out.push(b'e');
            }
            Py::Dict(d) => {
                out.extend(b"}(");
                for (k, v) in d {
                    Py::Str(k.clone()).write(out);
                    v.write(out);
                }
                out.push(b'u');
            }
        }
    }

    fn from_json(v: &Value) -> Py {
        match v {
            Value::String(s) => Py::Str(s.clone()),
            Value::Number(n) => Py::Int(n.as_i64().unwrap() as i32),
            Value::Array(a) => Py::List(a.iter().map(Py::from_json).collect()),
            Value::Object(o) => Py::Dict(
                o.iter()
                    .map(|(k, v)| (k.clone(), Py::from_json(v)))
                    .collect(),
            ),
            other => panic!("not in a ground truth: {other}"),
        }
    }
}

fn write_pickle(path: &Path, gnd: &Value) {
    let mut b = vec![0x80, 2];
    Py::from_json(gnd).write(&mut b);
    b.push(b'.');
    std::fs::write(path, b).unwrap();
}

/// `n` database rows and queries for a retrieval test: block `embedding` (dim 6) and `kl`
/// (dim 3) of arbitrary values.
fn random_set(n: usize, seed: u64) -> Set {
    let mut rng = Rng(seed);
    Set {
        blocks: [("embedding", 6usize), ("kl", 3usize)]
            .iter()
            .map(|&(name, d)| {
                (
                    name.to_string(),
                    d,
                    (0..n * d).map(|_| rng.next()).collect(),
                )
            })
            .collect(),
        labels: vec![0; n],
    }
}

fn gnd_json(db: usize, per_query: &[(Vec<usize>, Vec<usize>, Vec<usize>)]) -> Value {
    json!({
        "imlist": (0..db).map(|i| format!("db{i}")).collect::<Vec<_>>(),
        "qimlist": (0..per_query.len()).map(|i| format!("q{i}")).collect::<Vec<_>>(),
        "gnd": per_query.iter().map(|(e, h, j)| json!({"easy": e, "hard": h, "junk": j, "bbx": [0, 0, 10, 10]})).collect::<Vec<_>>(),
    })
}

fn retrieve(db: &str, q: &str, gnd: &Path, extra: &[&str]) -> Output {
    let mut a = vec!["retrieve", "--db", db, "--queries", q, "--gnd"];
    let g = s(gnd);
    a.push(&g);
    a.extend(extra);
    fungi(&a)
}

#[test]
fn retrieve_perfect_ranking_scores_100_from_json_and_pickle() {
    let t = tempfile::tempdir().unwrap();
    // Database: rows q and q + 3 close to axis q (q < 3), rows 6, 7 elsewhere. Query q = axis q:
    // its hard positive (row q) ranks first, its easy positive (row q + 3) second.
    let row = |axis: usize, extra: f32| {
        let mut r = vec![0.0f32; 8];
        r[axis] = 1.0;
        r[7] += extra;
        r
    };
    let mut db: Vec<f32> = vec![];
    for q in 0..3 {
        db.extend(row(q, 0.0));
    }
    for q in 0..3 {
        db.extend(row(q, 0.2));
    }
    db.extend(row(5, 0.0));
    db.extend(row(6, 0.0));
    let queries: Vec<f32> = (0..3).flat_map(|q| row(q, 0.0)).collect();
    let set = |v: Vec<f32>, n| Set {
        blocks: vec![
            ("embedding".into(), 8, v.clone()),
            ("kl".into(), 8, v.iter().map(|x| 2.0 * x).collect()),
        ],
        labels: vec![0; n],
    };
    let dbs = set(db, 8);
    let qs = set(queries, 3);
    // No labels: retrieval does not need them.
    let d = s(&write_dir(t.path(), "db", &dbs, false));
    let q = format!(
        "{}#q",
        s(&write_st(
            &t.path().join("q.safetensors"),
            &[("q", &qs)],
            false
        ))
    );
    let g = gnd_json(
        8,
        &(0..3)
            .map(|q| (vec![q + 3], vec![q], vec![]))
            .collect::<Vec<_>>(),
    );
    let gj = t.path().join("gnd.json");
    std::fs::write(&gj, g.to_string()).unwrap();
    let gp = t.path().join("gnd_test.pkl");
    write_pickle(&gp, &g);
    let rp = t.path().join("r.json");
    for gnd in [&gj, &gp] {
        let out = ok(&retrieve(&d, &q, gnd, &["--pca", "0", "--report", &s(&rp)]));
        assert!(out.contains("mAP M") && out.contains("mP@10 H"), "{out}");
        let r = report(&rp);
        let res = r["results"].as_array().unwrap();
        let names: Vec<&str> = res
            .iter()
            .map(|x| x["combination"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["embedding", "kl", "embedding+kl"]);
        for x in res {
            assert_eq!(x["map_medium"], 100.0, "{x}");
            assert_eq!(x["map_hard"], 100.0, "{x}");
            assert_eq!(x["mp_medium"], json!([100.0, 100.0, 100.0]), "{x}");
            assert_eq!(x["mp_hard"], json!([100.0, 100.0, 100.0]), "{x}");
            assert_eq!(x["ks"], json!([1, 5, 10]));
        }
        assert_eq!(r["n_database"], 8);
        assert_eq!(r["n_queries"], 3);
    }
}

#[test]
fn retrieve_report_equals_the_library() {
    let t = tempfile::tempdir().unwrap();
    let dbs = random_set(12, 7);
    let qs = random_set(4, 8);
    let f = t.path().join("f.safetensors");
    write_st(&f, &[("db", &dbs), ("q", &qs)], false);
    let per_query: Vec<(Vec<usize>, Vec<usize>, Vec<usize>)> = vec![
        (vec![0, 1], vec![2], vec![3]),
        (vec![], vec![4, 5], vec![]),
        (vec![6], vec![7, 8], vec![9, 10]),
        (vec![11], vec![0], vec![1]),
    ];
    let g = gnd_json(12, &per_query);
    let gj = t.path().join("gnd.json");
    std::fs::write(&gj, g.to_string()).unwrap();
    let rp = t.path().join("r.json");
    ok(&retrieve(
        &format!("{}#db", s(&f)),
        &format!("{}#q", s(&f)),
        &gj,
        &["--pca", "4", "--report", &s(&rp)],
    ));
    let blocks: Vec<RetrievalBlock> = (0..2)
        .map(|b| RetrievalBlock {
            name: dbs.blocks[b].0.clone(),
            database: dbs.matrix(b),
            queries: qs.matrix(b),
        })
        .collect();
    let gnd: Vec<QueryGnd> = per_query
        .iter()
        .map(|(e, h, j)| QueryGnd {
            easy: e.clone(),
            hard: h.clone(),
            junk: j.clone(),
            bbx: Some([0.0, 0.0, 10.0, 10.0]),
        })
        .collect();
    let want = retrieval_map(&blocks, &gnd, Some(4)).unwrap();
    assert_same(&report(&rp), &want);
    // PCA 4 is below the database size (12) and the width except for `kl` (3 columns).
    assert_eq!(
        want.iter().map(|r| r.pca).collect::<Vec<_>>(),
        [true, false, true]
    );
    assert!(want.iter().any(|r| r.scores.map_medium < 100.0));
}

// ---- bad inputs -------------------------------------------------------------------------------

#[test]
fn probe_without_labels_names_the_file() {
    let t = tempfile::tempdir().unwrap();
    let train = problem(5, 2, 1);
    let tr = write_dir(t.path(), "train", &train, false);
    let te = s(&write_dir(t.path(), "test", &train, true));
    let o = fungi(&["probe", "--train", &s(&tr), "--test", &te]);
    fails(&o, &[&s(&tr.join("labels.npy")), "missing", "--train"]);
    let f = write_st(&t.path().join("f.safetensors"), &[("test", &train)], false);
    let o = fungi(&[
        "probe",
        "--train",
        &te,
        "--test",
        &format!("{}#test", s(&f)),
    ]);
    fails(&o, &[&s(&f), "`test_labels`", "--test"]);
}

#[test]
fn probe_bad_settings_name_the_flag() {
    let t = tempfile::tempdir().unwrap();
    let set = problem(5, 2, 1);
    let d = s(&write_dir(t.path(), "d", &set, true));
    for (args, needles) in [
        (vec!["--lambdas", "1e-4,0"], vec!["--lambdas", "0 is not"]),
        (vec!["--lambdas=-1"], vec!["--lambdas", "-1"]),
        (vec!["--few-shot", "0"], vec!["--few-shot 0"]),
        (vec!["--tol=-1"], vec!["--tol -1"]),
        (vec!["--blocks", "kl,kl"], vec!["--blocks", "`kl`"]),
        (vec!["--blocks", "dino"], vec!["`dino`", "--train", &d]),
    ] {
        let mut a = vec!["probe", "--train", &d, "--test", &d];
        a.extend(args);
        fails(&fungi(&a), &needles);
    }
}

#[test]
fn probe_split_and_validation_errors_name_the_input() {
    let t = tempfile::tempdir().unwrap();
    let mut train = problem(5, 3, 1);
    // Class 2 has a single member: no stratified split.
    train.labels = train
        .labels
        .iter()
        .enumerate()
        .map(|(i, &l)| if l == 2 && i > 2 { 1 } else { l })
        .collect();
    let tr = s(&write_dir(t.path(), "train", &train, true));
    let te = s(&write_dir(t.path(), "test", &problem(2, 3, 2), true));
    let o = fungi(&["probe", "--train", &tr, "--test", &te]);
    fails(&o, &["stratified", "class 2 has 1 member", "--train", &tr]);

    // A validation set whose `kl` block is narrower.
    let mut val = problem(3, 3, 3);
    val.blocks[1] = ("kl".into(), 2, vec![0.5; 18]);
    let va = s(&write_dir(t.path(), "val", &val, true));
    let good = s(&write_dir(t.path(), "good", &problem(5, 3, 4), true));
    let o = fungi(&["probe", "--train", &good, "--test", &te, "--val", &va]);
    fails(
        &o,
        &["block `kl`", "4 columns in --train", "2 in --val", &va],
    );

    // Validation labels of another count than its rows.
    let bad = t.path().join("val2");
    write_dir(t.path(), "val2", &problem(3, 3, 5), true);
    let body: Vec<u8> = [0i64, 1].iter().flat_map(|v| v.to_le_bytes()).collect();
    npy(&bad.join("labels.npy"), "<i8", &[2], &body);
    let o = fungi(&["probe", "--train", &good, "--test", &te, "--val", &s(&bad)]);
    fails(&o, &[&s(&bad.join("features.npy")), "2 labels", "--val"]);
}

#[test]
fn retrieve_bad_ground_truths_name_the_file_and_key() {
    let t = tempfile::tempdir().unwrap();
    let dbs = random_set(6, 1);
    let qs = random_set(2, 2);
    let f = t.path().join("f.safetensors");
    write_st(&f, &[("db", &dbs), ("q", &qs)], false);
    let (d, q) = (format!("{}#db", s(&f)), format!("{}#q", s(&f)));
    let write = |name: &str, v: &Value| {
        let p = t.path().join(name);
        std::fs::write(&p, v.to_string()).unwrap();
        p
    };
    let good = || {
        gnd_json(
            6,
            &[(vec![0], vec![1], vec![2]), (vec![3], vec![4], vec![])],
        )
    };

    // An index past the database.
    let mut g = good();
    g["gnd"][1]["hard"] = json!([4, 60]);
    let p = write("past.json", &g);
    fails(
        &retrieve(&d, &q, &p, &[]),
        &[&s(&p), "gnd[1].hard[1]", "60", "--gnd"],
    );

    // A missing key.
    let mut g = good();
    g["gnd"][0].as_object_mut().unwrap().remove("junk");
    let p = write("nojunk.json", &g);
    fails(
        &retrieve(&d, &q, &p, &[]),
        &[&s(&p), "gnd[0].junk", "missing"],
    );

    // imlist longer than the database, qimlist shorter than the queries.
    let mut g = good();
    g["imlist"].as_array_mut().unwrap().push(json!("extra"));
    let p = write("imlist.json", &g);
    fails(
        &retrieve(&d, &q, &p, &[]),
        &["--db", &d, "6 rows", &s(&p), "7 database images", "imlist"],
    );
    let mut g = good();
    g["qimlist"].as_array_mut().unwrap().pop();
    g["gnd"].as_array_mut().unwrap().pop();
    let p = write("qimlist.json", &g);
    fails(
        &retrieve(&d, &q, &p, &[]),
        &["--queries", &q, "2 rows", "1 queries", "qimlist"],
    );

    // gnd and qimlist of different lengths inside the file.
    let mut g = good();
    g["gnd"].as_array_mut().unwrap().pop();
    let p = write("short.json", &g);
    fails(&retrieve(&d, &q, &p, &[]), &[&s(&p), "`gnd`", "1 entries"]);

    // A query with no hard positive.
    let mut g = good();
    g["gnd"][0]["hard"] = json!([]);
    let p = write("nohard.json", &g);
    fails(
        &retrieve(&d, &q, &p, &[]),
        &["query 0", "hard protocol", &s(&p)],
    );

    // Not a pickle, no file, no blocks in common.
    let p = t.path().join("bad.pkl");
    std::fs::write(&p, b"not a pickle").unwrap();
    fails(&retrieve(&d, &q, &p, &[]), &[&s(&p), "pickle"]);
    let p = t.path().join("missing.pkl");
    fails(&retrieve(&d, &q, &p, &[]), &[&s(&p), "cannot read"]);
    let p = write("good.json", &good());
    fails(
        &retrieve(&d, &q, &p, &["--blocks", "dino"]),
        &["`dino`", "--db"],
    );
    let o = retrieve(&d, &format!("{}#nope", s(&f)), &p, &[]);
    fails(&o, &[&s(&f), "`nope.<block>`", "--queries"]);
}
