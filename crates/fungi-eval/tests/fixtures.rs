//! fungi-eval against the reference implementations, on the fixtures of
//! `tests/scripts/make_eval_fixtures.py` (`tests/fixtures/eval/`): scikit-learn's stratified
//! split and logistic regression (+ an exact Newton solve), the linear-probe protocol run with
//! scikit-learn, and DINO's `compute_map` of the revisited retrieval benchmarks.

use std::path::PathBuf;

use fungi_eval::*;
use serde_json::Value;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/eval")
}

fn fixture(name: &str) -> Value {
    let text = std::fs::read_to_string(dir().join(name)).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn f64s(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

/// Floats stored as `repr` strings (exact: serde_json's default float parser may be 1 ulp off,
/// e.g. on numpy's `4.9999999999999996e-06`).
fn exact(v: &Value) -> f64 {
    v.as_str().unwrap().parse().unwrap()
}

fn i64s(v: &Value) -> Vec<i64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_i64().unwrap())
        .collect()
}

fn usizes(v: &Value) -> Vec<usize> {
    i64s(v).into_iter().map(|x| x as usize).collect()
}

fn matrix(v: &Value) -> Matrix {
    let rows = v.as_array().unwrap();
    let cols = rows.first().map_or(0, |r| r.as_array().unwrap().len());
    Matrix::new(rows.len(), cols, rows.iter().flat_map(f64s).collect()).unwrap()
}

fn gnd(v: &Value) -> Vec<QueryGnd> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|g| QueryGnd {
            easy: usizes(&g["easy"]),
            hard: usizes(&g["hard"]),
            junk: usizes(&g["junk"]),
            bbx: None,
        })
        .collect()
}

fn close(a: f64, b: f64, tol: f64, what: &str) {
    assert!((a - b).abs() <= tol, "{what}: {a} vs {b}");
}

#[test]
fn random_state_matches_numpy() {
    let f = fixture("split.json");
    let mut r = RandomState::new(42);
    let raw: Vec<u64> = (0..8).map(|_| u64::from(r.next_u32())).collect();
    let want: Vec<u64> = f["random_raw_seed42"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    assert_eq!(raw, want);
    assert_eq!(
        RandomState::new(42).permutation(10),
        usizes(&f["permutation10_seed42"])
    );
}

#[test]
fn stratified_split_matches_scikit_learn() {
    let f = fixture("split.json");
    let cases = f["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 7);
    for (i, c) in cases.iter().enumerate() {
        let labels = i64s(&c["labels"]);
        let (train, test) = stratified_split(&labels, 0.2, 42).unwrap();
        assert_eq!(train, usizes(&c["train"]), "case {i}: train indices");
        assert_eq!(test, usizes(&c["test"]), "case {i}: held-out indices");
    }
}

#[test]
fn logistic_regression_matches_newton_and_scikit_learn() {
    let f = fixture("logreg.json");
    for c in f["cases"].as_array().unwrap() {
        let name = c["name"].as_str().unwrap();
        let x = matrix(&c["x_train"]);
        let y = i64s(&c["y_train"]);
        let xt = matrix(&c["x_test"]);
        let lambda = c["lambda"].as_f64().unwrap();
        let newton = matrix(&c["coef"]);
        let objective = c["objective"].as_f64().unwrap();
        // Tolerances on |coef − newton|∞ / max(1, |newton|∞) and on the objective (relative).
        for (opts, coef_tol, f_tol) in [
            (SolverOptions::default(), 1e-4, 1e-9),
            (
                SolverOptions {
                    tol: 1e-11,
                    max_iter: 10_000,
                },
                1e-7,
                1e-13,
            ),
        ] {
            let m = LogisticRegression::fit(&x, &y, lambda, &opts).unwrap();
            assert!(m.converged, "{name}: {m:?}");
            assert_eq!(m.classes, i64s(&c["classes"]), "{name}");
            let scale = newton.data.iter().fold(1f64, |a, v| a.max(v.abs()));
            let err = m
                .coef
                .data
                .iter()
                .zip(&newton.data)
                .fold(0f64, |a, (p, q)| a.max((p - q).abs()));
            eprintln!(
                "{name} (tol {:e}): |coef - newton|∞ / max(1, |newton|∞) = {:.2e}, |f - f*| / f* = {:.2e}, {} iterations",
                opts.tol,
                err / scale,
                (m.objective - objective).abs() / objective,
                m.iterations
            );
            assert!(
                err <= coef_tol * scale,
                "{name} (tol {}): {err:e}",
                opts.tol
            );
            close(
                m.objective,
                objective,
                f_tol * objective.abs(),
                &format!("{name}: objective"),
            );
            // The same predictions as scikit-learn (the fixture checks its test rows have a
            // score gap > 1e-6 between the two best classes).
            assert_eq!(
                m.predict(&xt).unwrap(),
                i64s(&c["sklearn_predictions"]),
                "{name}: predictions"
            );
            assert_eq!(
                linear_probe(&x, &y, &xt, lambda, &opts).unwrap(),
                i64s(&c["sklearn_predictions"])
            );
        }
        // scikit-learn's own coefficients are within its (looser) convergence of the optimum.
        let sk = matrix(&c["sklearn_coef"]);
        let err = sk
            .data
            .iter()
            .zip(&newton.data)
            .fold(0f64, |a, (p, q)| a.max((p - q).abs()));
        assert!(err < 1e-4, "{name}: sklearn vs newton {err:e}");
    }
}

fn probe_inputs(f: &Value) -> (Vec<ClassificationBlock>, Vec<i64>, Vec<i64>, Validation) {
    let names = f["block_names"].as_array().unwrap();
    let blocks = names
        .iter()
        .enumerate()
        .map(|(i, n)| ClassificationBlock {
            name: n.as_str().unwrap().to_string(),
            train: matrix(&f["train"][i]),
            test: matrix(&f["test"][i]),
        })
        .collect();
    let val = Validation {
        blocks: (0..names.len()).map(|i| matrix(&f["val"][i])).collect(),
        labels: i64s(&f["val_labels"]),
    };
    (
        blocks,
        i64s(&f["train_labels"]),
        i64s(&f["test_labels"]),
        val,
    )
}

#[test]
fn default_lambdas_are_numpys_logspace() {
    let f = fixture("probe.json");
    let want: Vec<f64> = f["lambdas"].as_array().unwrap().iter().map(exact).collect();
    assert_eq!(default_lambdas(), want);
}

#[test]
fn linear_probe_protocol_matches_scikit_learn() {
    let f = fixture("probe.json");
    let (blocks, train_labels, test_labels, val) = probe_inputs(&f);
    let settings = f["settings"].as_array().unwrap();
    assert_eq!(settings.len(), 5);
    for st in settings {
        let mode = st["mode"].as_str().unwrap();
        let s = ProbeSettings {
            lambdas: f["lambdas"].as_array().unwrap().iter().map(exact).collect(),
            pca_dim: st["pca_dim"].as_u64().map(|v| v as usize),
            few_shot: st["few_shot"].as_u64().map(|v| v as usize),
            solver: SolverOptions::default(),
        };
        let validation = (mode == "val").then_some(&val);
        let got =
            evaluate_linear_probe(&blocks, &train_labels, &test_labels, validation, &s).unwrap();
        let want = st["results"].as_array().unwrap();
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(want) {
            let what = format!(
                "{mode} pca {:?} few {:?} {}",
                s.pca_dim, s.few_shot, g.combination
            );
            assert_eq!(g.combination, w["combination"].as_str().unwrap(), "{what}");
            assert_eq!(
                g.accuracy,
                w["accuracy"].as_f64().unwrap(),
                "{what}: accuracy"
            );
            assert_eq!(g.lambda, exact(&w["lambda"]), "{what}: lambda");
            assert_eq!(g.pca, w["pca"].as_bool().unwrap(), "{what}: pca");
            assert_eq!(
                g.predictions,
                i64s(&w["predictions"]),
                "{what}: predictions"
            );
            assert!(g.converged, "{what}");
            let wv = w["validation"].as_array().unwrap();
            assert_eq!(g.validation.len(), wv.len(), "{what}");
            for (a, b) in g.validation.iter().zip(wv) {
                assert_eq!(a.lambda, exact(&b["lambda"]), "{what}");
                assert_eq!(
                    a.accuracy,
                    b["accuracy"].as_f64().unwrap(),
                    "{what}: validation accuracy of lambda {}",
                    a.lambda
                );
                assert!(a.converged, "{what}");
            }
        }
    }
}

#[test]
fn linear_probe_protocol_rejects_bad_inputs() {
    let f = fixture("probe.json");
    let (blocks, tr, te, val) = probe_inputs(&f);
    let s = ProbeSettings::default();
    let run =
        |blocks: &[ClassificationBlock],
         tr: &[i64],
         te: &[i64],
         v: Option<&Validation>,
         s: &ProbeSettings| { evaluate_linear_probe(blocks, tr, te, v, s).unwrap_err() };
    assert_eq!(
        run(&blocks, &tr[1..], &te, None, &s),
        EvalError::LabelCount {
            block: "emb".into(),
            split: SplitKind::Train,
            rows: 120,
            labels: 119
        }
    );
    assert_eq!(
        run(&blocks, &tr, &te[..59], None, &s),
        EvalError::LabelCount {
            block: "emb".into(),
            split: SplitKind::Test,
            rows: 60,
            labels: 59
        }
    );
    let mut short = val.clone();
    short.labels.pop();
    let e = run(&blocks, &tr, &te, Some(&short), &s);
    assert_eq!(
        e,
        EvalError::BlockLabelRows {
            block: "emb".into(),
            subset: Subset::Validation,
            rows: 40,
            labels: 39
        }
    );
    assert_eq!(e.subset(), Some(Subset::Validation));
    let mut one = val.clone();
    one.blocks.pop();
    assert_eq!(
        run(&blocks, &tr, &te, Some(&one), &s),
        EvalError::ValidationBlocks {
            blocks: 2,
            matrices: 1
        }
    );
    let mut wide = val.clone();
    wide.blocks[1] = Matrix::new(40, 5, vec![0.0; 200]).unwrap();
    assert_eq!(
        run(&blocks, &tr, &te, Some(&wide), &s),
        EvalError::BlockWidth {
            block: "kl".into(),
            subset: Subset::Validation,
            found: 5,
            reference: Subset::Train,
            expected: 4
        }
    );
    let mut nan = val.clone();
    nan.blocks[0].data[7] = f64::NAN;
    assert!(matches!(
        run(&blocks, &tr, &te, Some(&nan), &s),
        EvalError::BlockNonFinite {
            subset: Subset::Validation,
            row: 1,
            col: 1,
            ..
        }
    ));
    // A class with one member cannot be split (scikit-learn refuses it too).
    let mut lonely = tr.clone();
    lonely[17] = 999;
    assert_eq!(
        run(&blocks, &lonely, &te, None, &s),
        EvalError::StratifyClass {
            label: 999,
            count: 1
        }
    );
    // ... but a given validation set or few-shot needs no split.
    assert!(evaluate_linear_probe(&blocks, &lonely, &te, Some(&val), &s).is_ok());
    for (lambdas, e) in [
        (vec![], EvalError::NoLambdas),
        (vec![1e-3, 0.0], EvalError::BadLambda { value: 0.0 }),
    ] {
        let s = ProbeSettings {
            lambdas,
            ..ProbeSettings::default()
        };
        assert_eq!(run(&blocks, &tr, &te, None, &s), e);
    }
    for (few_shot, pca_dim, e) in [
        (Some(0), None, EvalError::ZeroFewShot),
        (None, Some(0), EvalError::ZeroPcaDim),
    ] {
        let s = ProbeSettings {
            few_shot,
            pca_dim,
            ..ProbeSettings::default()
        };
        assert_eq!(run(&blocks, &tr, &te, None, &s), e);
    }
    assert_eq!(run(&[], &tr, &te, None, &s), EvalError::NoBlocks);
}

#[test]
fn in_memory_knn_is_the_protocols_classifier() {
    let f = fixture("probe.json");
    let (blocks, tr, te, _) = probe_inputs(&f);
    let dev = Default::default();
    let s = KnnSettings {
        k: 5,
        pca_dim: None,
        few_shot: None,
    };
    let r = evaluate::<burn::backend::Flex>(&blocks[..1], &tr, &te, &s, &dev).unwrap();
    let p = knn::<burn::backend::Flex>(
        &blocks[0].train.l2_normalized(),
        &tr,
        &blocks[0].test.l2_normalized(),
        5,
        &dev,
    )
    .unwrap();
    assert_eq!(p, r[0].predictions);
    assert_eq!(
        knn::<burn::backend::Flex>(&blocks[0].train, &tr[1..], &blocks[0].test, 5, &dev),
        Err(EvalError::LabelRows {
            subset: Subset::Train,
            rows: 120,
            labels: 119
        })
    );
}

fn check_scores(got: &RevisitedScores, want: &Value, what: &str) {
    let tol = 1e-10;
    close(
        got.map_medium,
        want["map_medium"].as_f64().unwrap(),
        tol,
        &format!("{what}: mAP medium"),
    );
    close(
        got.map_hard,
        want["map_hard"].as_f64().unwrap(),
        tol,
        &format!("{what}: mAP hard"),
    );
    assert_eq!(got.ks, vec![1, 5, 10]);
    for (field, vals) in [
        ("mp_medium", &got.mp_medium),
        ("mp_hard", &got.mp_hard),
        ("ap_medium", &got.ap_medium),
        ("ap_hard", &got.ap_hard),
    ] {
        let w = f64s(&want[field]);
        assert_eq!(vals.len(), w.len(), "{what}: {field}");
        for (a, b) in vals.iter().zip(&w) {
            close(*a, *b, tol, &format!("{what}: {field}"));
        }
    }
}

#[test]
fn compute_map_matches_the_revisited_reference() {
    let f = fixture("retrieval.json");
    for case in ["ranked", "perfect"] {
        let c = &f[case];
        let ranks: Vec<Vec<usize>> = c["ranks"].as_array().unwrap().iter().map(usizes).collect();
        let g = gnd(&c["gnd"]);
        // The fixture has a query with no easy images and one with no junk.
        assert!(g.iter().any(|q| q.easy.is_empty()) && g.iter().any(|q| q.junk.is_empty()));
        let s = revisited_map(&ranks, &g).unwrap();
        check_scores(&s, c, case);
    }
    let perfect = &f["perfect"];
    let ranks: Vec<Vec<usize>> = perfect["ranks"]
        .as_array()
        .unwrap()
        .iter()
        .map(usizes)
        .collect();
    let s = revisited_map(&ranks, &gnd(&perfect["gnd"])).unwrap();
    close(s.map_medium, 100.0, 1e-12, "perfect ranking");
    assert!(s.mp_medium.iter().all(|&p| (p - 100.0).abs() < 1e-12));
    // Hard protocol of the perfect medium ranking: easy images become junk and are removed, so
    // the hard positives still come first.
    close(s.map_hard, 100.0, 1e-12, "perfect ranking, hard");
}

#[test]
fn compute_map_handles_junk_and_easy_as_the_reference() {
    // Database of 6; query 0: easy {0}, hard {1}, junk {2}. Ranking 2, 0, 3, 1, 4, 5.
    let g = vec![QueryGnd {
        easy: vec![0],
        hard: vec![1],
        junk: vec![2],
        bbx: None,
    }];
    let ranks = vec![vec![2, 0, 3, 1, 4, 5]];
    let s = revisited_map(&ranks, &g).unwrap();
    // Medium: positives {0, 1} at positions 1, 3; junk at 0 → shifted to 0, 2.
    // AP = ((1 + 1) + (1/2 + 2/3)) / 2 / 2 = (2 + 7/6) / 4.
    close(
        s.map_medium,
        (2.0 + 7.0 / 6.0) / 4.0 * 100.0,
        1e-12,
        "medium",
    );
    // Hard: positive {1} at 3; junk {2, 0} at 0, 1 → shifted to 1. AP = (0/1 + 1/2) / 2.
    close(s.map_hard, 25.0, 1e-12, "hard");
    // mP@k medium: pos (1-based) = {1, 3}; k=1: kq = 1 → 1/1; k=5, 10: kq = 3 → 2/3.
    assert_eq!(s.mp_medium[0], 100.0);
    close(s.mp_medium[1], 200.0 / 3.0, 1e-12, "mP@5");
    // Hard: pos = {2}; k=1: kq = 1 → 0; k=5: kq = 2 → 1/2.
    assert_eq!(s.mp_hard, vec![0.0, 50.0, 50.0]);
    // The generic port: an index in ok and junk is both (the reference's np.in1d twice).
    let m = compute_map(
        &ranks,
        &[ApGnd {
            ok: vec![3],
            junk: vec![3],
        }],
        &[1],
    )
    .unwrap();
    // Positive at position 2, junk at 2 too: not before it (`pos > junk` is strict), no shift;
    // AP = (0/2 + 1/3) / 2.
    close(m.map, 1.0 / 6.0, 1e-15, "ok == junk");
}

#[test]
fn retrieval_map_on_features_matches_the_reference() {
    let f = fixture("retrieval.json");
    let ff = &f["features"];
    let g = gnd(&ff["gnd"]);
    let blocks: Vec<RetrievalBlock> = ["a", "b"]
        .iter()
        .enumerate()
        .map(|(i, n)| RetrievalBlock {
            name: n.to_string(),
            database: matrix(&ff["database"][i]),
            queries: matrix(&ff["queries"][i]),
        })
        .collect();
    let want = ff["results"].as_array().unwrap();
    for pca_dim in [None, Some(4)] {
        let got = retrieval_map(&blocks, &g, pca_dim).unwrap();
        let w: Vec<&Value> = want
            .iter()
            .filter(|r| r["pca_dim"].as_u64().map(|v| v as usize) == pca_dim)
            .collect();
        assert_eq!(got.len(), 3);
        assert_eq!(w.len(), 3);
        for (r, w) in got.iter().zip(w) {
            assert_eq!(r.combination, w["combination"].as_str().unwrap());
            assert_eq!(r.pca, w["pca"].as_bool().unwrap(), "{}", r.combination);
            check_scores(&r.scores, w, &format!("pca {pca_dim:?} {}", r.combination));
        }
    }
    // The ranking itself (no PCA, both blocks) equals numpy's stable argsort of −similarity.
    let cat = |m: fn(&RetrievalBlock) -> &Matrix| {
        let parts: Vec<Matrix> = blocks.iter().map(|b| m(b).l2_normalized()).collect();
        Matrix::hcat(&parts.iter().collect::<Vec<_>>()).unwrap()
    };
    let ranks = rank_database(&cat(|b| &b.queries), &cat(|b| &b.database)).unwrap();
    let w = want
        .iter()
        .find(|r| r["pca_dim"].is_null() && r["combination"] == "a+b")
        .unwrap();
    let wr: Vec<Vec<usize>> = w["ranks"].as_array().unwrap().iter().map(usizes).collect();
    assert_eq!(ranks, wr);
}

#[test]
fn ranking_breaks_ties_by_database_index() {
    let db = Matrix::new(4, 1, vec![1.0, 2.0, 2.0, 1.0]).unwrap();
    let q = Matrix::new(1, 1, vec![1.0]).unwrap();
    assert_eq!(rank_database(&q, &db).unwrap(), vec![vec![1, 2, 0, 3]]);
}

#[test]
fn retrieval_rejects_bad_inputs() {
    let db = Matrix::new(3, 2, vec![1.0, 0.0, 0.0, 1.0, 1.0, 1.0]).unwrap();
    let q = Matrix::new(2, 2, vec![1.0, 0.1, 0.1, 1.0]).unwrap();
    let blocks = vec![RetrievalBlock {
        name: "a".into(),
        database: db.clone(),
        queries: q.clone(),
    }];
    let good = |easy: Vec<usize>, hard: Vec<usize>, junk: Vec<usize>| QueryGnd {
        easy,
        hard,
        junk,
        bbx: None,
    };
    let g = vec![
        good(vec![0], vec![2], vec![]),
        good(vec![], vec![1], vec![0]),
    ];
    assert_eq!(retrieval_map(&blocks, &g, None).unwrap().len(), 1);
    // An index past the database.
    let bad = vec![
        good(vec![0], vec![2], vec![]),
        good(vec![], vec![1], vec![0, 3]),
    ];
    let e = retrieval_map(&blocks, &bad, None).unwrap_err();
    assert_eq!(
        e,
        EvalError::GndIndex {
            query: 1,
            list: GndList::Junk,
            position: 1,
            index: 3,
            database: 3
        }
    );
    assert!(e.to_string().contains("query 1: junk[1] = 3"), "{e}");
    // No hard positives: the hard protocol has nothing to score.
    let bad = vec![good(vec![0], vec![], vec![]), good(vec![], vec![1], vec![])];
    let e = retrieval_map(&blocks, &bad, None).unwrap_err();
    assert_eq!(
        e,
        EvalError::NoPositives {
            query: 0,
            protocol: Some(RetrievalProtocol::Hard)
        }
    );
    assert!(e
        .to_string()
        .contains("query 0 has no positive images in the hard protocol"));
    let bad = vec![
        good(vec![0], vec![2], vec![]),
        good(vec![], vec![], vec![1]),
    ];
    assert_eq!(
        retrieval_map(&blocks, &bad, None).unwrap_err(),
        EvalError::NoPositives {
            query: 1,
            protocol: Some(RetrievalProtocol::Medium)
        }
    );
    // Query rows vs ground-truth entries.
    assert_eq!(
        retrieval_map(&blocks, &g[..1], None).unwrap_err(),
        EvalError::GndQueries {
            block: "a".into(),
            queries: 2,
            gnd: 1
        }
    );
    // Widths, database sizes across blocks, non-finite values.
    let mut b2 = blocks.clone();
    b2[0].queries = Matrix::new(2, 3, vec![0.0; 6]).unwrap();
    assert!(matches!(
        retrieval_map(&b2, &g, None).unwrap_err(),
        EvalError::BlockWidth {
            subset: Subset::Queries,
            found: 3,
            expected: 2,
            ..
        }
    ));
    let mut b3 = blocks.clone();
    b3.push(RetrievalBlock {
        name: "b".into(),
        database: Matrix::new(4, 1, vec![1.0; 4]).unwrap(),
        queries: Matrix::new(2, 1, vec![1.0; 2]).unwrap(),
    });
    assert_eq!(
        retrieval_map(&b3, &g, None).unwrap_err(),
        EvalError::BlockRows {
            block: "b".into(),
            subset: Subset::Database,
            rows: 4,
            first: "a".into(),
            expected: 3
        }
    );
    let mut b4 = blocks.clone();
    b4[0].database.data[3] = f64::NAN;
    assert!(matches!(
        retrieval_map(&b4, &g, None).unwrap_err(),
        EvalError::BlockNonFinite {
            subset: Subset::Database,
            row: 1,
            col: 1,
            ..
        }
    ));
    assert_eq!(
        retrieval_map(&[], &g, None).unwrap_err(),
        EvalError::NoBlocks
    );
    assert_eq!(
        retrieval_map(&blocks, &g, Some(0)).unwrap_err(),
        EvalError::ZeroPcaDim
    );
    // compute_map on rankings.
    let ranks = [vec![0, 1, 2], vec![2, 1, 0]];
    assert_eq!(
        revisited_map(&ranks[..1], &g).unwrap_err(),
        EvalError::RankingCount {
            rankings: 1,
            queries: 2
        }
    );
    assert_eq!(
        compute_map(
            &[vec![0, 1, 2], vec![2, 1]],
            &[
                g[0].protocol(RetrievalProtocol::Medium),
                g[1].protocol(RetrievalProtocol::Medium)
            ],
            &[1]
        )
        .unwrap_err(),
        EvalError::RankingLength {
            query: 1,
            found: 2,
            expected: 3
        }
    );
    assert_eq!(
        compute_map(
            &[vec![0, 1]],
            &[ApGnd {
                ok: vec![5],
                junk: vec![]
            }],
            &[1]
        )
        .unwrap_err(),
        EvalError::UnrankedPositives {
            query: 0,
            positives: 1,
            ranked: 2
        }
    );
    assert_eq!(
        compute_map(&[vec![0, 1]], &[ApGnd::default()], &[1]).unwrap_err(),
        EvalError::NoPositives {
            query: 0,
            protocol: None
        }
    );
    assert_eq!(
        compute_map(
            &[vec![0, 1]],
            &[ApGnd {
                ok: vec![0],
                junk: vec![]
            }],
            &[0]
        )
        .unwrap_err(),
        EvalError::ZeroKappa
    );
    assert_eq!(
        rank_database(&Matrix::new(1, 3, vec![0.0; 3]).unwrap(), &db).unwrap_err(),
        EvalError::RetrievalDims {
            database: 2,
            queries: 3
        }
    );
}

fn tiny() -> GroundTruth {
    let q = |easy: &[usize], hard: &[usize], junk: &[usize], bbx: [f64; 4]| QueryGnd {
        easy: easy.to_vec(),
        hard: hard.to_vec(),
        junk: junk.to_vec(),
        bbx: Some(bbx),
    };
    GroundTruth {
        imlist: (0..12).map(|i| format!("db_{i:03}")).collect(),
        qimlist: vec!["q_a".into(), "q_b".into(), "q_c".into()],
        gnd: vec![
            q(&[0, 3], &[5], &[7, 8], [10.5, 20.0, 110.25, 220.0]),
            q(&[], &[1, 2], &[], [0.0, 0.0, 50.0, 60.0]),
            q(&[11], &[4, 6, 9], &[10], [1.0, 2.0, 3.0, 4.0]),
        ],
    }
}

#[test]
fn ground_truth_files_read_as_published() {
    for name in ["gnd_tiny.pkl", "gnd_tiny_py2.pkl", "gnd_tiny.json"] {
        assert_eq!(
            GroundTruth::load(&dir().join(name)).unwrap(),
            tiny(),
            "{name}"
        );
    }
    let g = tiny();
    let m = g.gnd[0].protocol(RetrievalProtocol::Medium);
    assert_eq!((m.ok, m.junk), (vec![0, 3, 5], vec![7, 8]));
    let h = g.gnd[0].protocol(RetrievalProtocol::Hard);
    assert_eq!((h.ok, h.junk), (vec![5], vec![7, 8, 0, 3]));
}

#[test]
fn bad_ground_truth_files_name_the_file_and_the_field() {
    let field = |name: &str| match GroundTruth::load(&dir().join(name)).unwrap_err() {
        EvalError::GndField {
            path,
            field,
            reason,
        } => {
            assert!(path.ends_with(name), "{path}");
            (field, reason)
        }
        e => panic!("{name}: {e}"),
    };
    let (f, r) = field("gnd_bad_index.pkl");
    assert_eq!(f, "gnd[2].junk[1]");
    assert!(r.contains("index 12 is outside imlist"), "{r}");
    let (f, r) = field("gnd_bad_bbx.pkl");
    assert_eq!(f, "gnd[1].bbx");
    assert!(r.contains("expected 4 numbers, found 3"), "{r}");
    let err = |text: &str| GroundTruth::from_json_str(text, "x.json").unwrap_err();
    let ok = r#"{"imlist": ["a", "b"], "qimlist": ["q"], "gnd": [{"easy": [0], "hard": [1], "junk": []}]}"#;
    assert_eq!(
        GroundTruth::from_json_str(ok, "x.json").unwrap().gnd[0].bbx,
        None
    );
    assert_eq!(
        err(r#"{"imlist": ["a"], "qimlist": ["q"], "gnd": [{"easy": [0], "junk": []}]}"#),
        EvalError::GndField {
            path: "x.json".into(),
            field: "gnd[0].hard".into(),
            reason: "missing".into()
        }
    );
    assert_eq!(
        err(
            r#"{"imlist": ["a"], "qimlist": ["q"], "gnd": [{"easy": [-1], "hard": [], "junk": []}]}"#
        ),
        EvalError::GndField {
            path: "x.json".into(),
            field: "gnd[0].easy[0]".into(),
            reason: "index -1 is outside imlist (expected 0 <= index < 1)".into()
        }
    );
    assert_eq!(
        err(
            r#"{"imlist": ["a"], "qimlist": ["q"], "gnd": [{"easy": ["0"], "hard": [], "junk": []}]}"#
        ),
        EvalError::GndField {
            path: "x.json".into(),
            field: "gnd[0].easy[0]".into(),
            reason: "expected an integer index, found a string".into()
        }
    );
    assert_eq!(
        err(r#"{"imlist": ["a"], "qimlist": ["q", "r"], "gnd": []}"#),
        EvalError::GndField {
            path: "x.json".into(),
            field: "gnd".into(),
            reason: "0 entries for 2 query names in qimlist (expected equal)".into()
        }
    );
    assert!(
        matches!(err(r#"{"qimlist": [], "gnd": []}"#), EvalError::GndField { field, .. } if field == "imlist")
    );
    assert!(matches!(err("[1, 2]"), EvalError::GndFile { .. }));
    assert!(matches!(err("{"), EvalError::GndFile { .. }));
    let e = GroundTruth::from_pickle_slice(b"not a pickle", "g.pkl").unwrap_err();
    assert!(
        matches!(&e, EvalError::GndFile { path, .. } if path == "g.pkl"),
        "{e}"
    );
    let e = GroundTruth::load(&dir().join("missing.pkl")).unwrap_err();
    assert!(e.to_string().contains("missing.pkl: cannot read"), "{e}");
}
