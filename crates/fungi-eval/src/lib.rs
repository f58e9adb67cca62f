//! # fungi-eval
//!
//! The paper's evaluation protocols on in-memory `f64` features: kNN ([`evaluate`], [`knn`]),
//! the linear probe ([`evaluate_linear_probe`], [`LogisticRegression`], [`linear_probe`]) and
//! revisited Oxford / Paris retrieval ([`retrieval_map`], [`compute_map`], [`GroundTruth`]) and
//! the pieces of HummingBird in-context segmentation ([`segmentation`]: patch labels, label
//! transfer from a memory bank, upsampling, mIoU).
//!
//! The kNN protocol of the paper (`no-train-all-gain/train_knn_concat_grads.py` as run by
//! `jobs/concat.job`): every block L2-normalised per row, blocks concatenated in order, PCA fitted
//! on the training rows (only when `pca_dim < n_train` and `pca_dim < dim`), Euclidean kNN with
//! `k` neighbours and a uniform majority vote (ties → smallest label), accuracy and mean
//! per-class accuracy, for every non-empty combination of blocks. PCA runs in `f64` (covariance +
//! faer's symmetric eigen-solver); the neighbour search runs on a Burn backend, with the best
//! candidates re-ranked in `f64`.
#![warn(missing_docs)]

mod error;
mod gnd;
mod knn;
mod lbfgs;
mod logreg;
mod matrix;
mod metrics;
mod probe;
mod retrieval;
pub mod segmentation;
mod split;

use burn::prelude::*;
use serde::{Deserialize, Serialize};

pub use error::{EvalError, GndList, RetrievalProtocol, SplitKind, Subset};
pub use gnd::{GroundTruth, QueryGnd};
pub use knn::{knn, knn_neighbors, vote};
pub use logreg::{linear_probe, logistic_objective, LogisticRegression, SolverOptions};
pub use matrix::{Matrix, Pca};
pub use metrics::{accuracy, few_shot_indices, mean_per_class_accuracy};
pub use probe::{
    default_lambdas, evaluate_linear_probe, LambdaScore, ProbeResult, ProbeSettings, Validation,
    FEW_SHOT_LAMBDA, SPLIT_SEED, VALIDATION_FRACTION,
};
pub use retrieval::{
    compute_ap, compute_map, rank_database, retrieval_map, revisited_map, ApGnd, MapScores,
    RetrievalBlock, RetrievalResult, RevisitedScores, RETRIEVAL_KS,
};
pub use split::{stratified_split, RandomState};

/// Result of `fungi-eval`'s fallible functions.
pub type Result<T, E = EvalError> = std::result::Result<T, E>;

/// Settings of [`evaluate`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KnnSettings {
    /// Neighbours (at least 1).
    pub k: usize,
    /// PCA output size (skipped when not below both the train size and the feature size); at
    /// least 1, `None` for no PCA.
    pub pca_dim: Option<usize>,
    /// Evaluate only on this many training examples per class (first ones in order); at least 1.
    pub few_shot: Option<usize>,
}

/// Result for one block combination.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ComboResult {
    /// Block names joined by `+`.
    pub combination: String,
    /// Accuracy.
    pub accuracy: f64,
    /// Mean per-class accuracy.
    pub mean_per_class_accuracy: f64,
    /// Whether PCA was applied.
    pub pca: bool,
    /// Predictions for the test rows.
    pub predictions: Vec<i64>,
}

/// One named block of train and test features.
#[derive(Debug, Clone)]
pub struct ClassificationBlock {
    /// Name (`embedding`, `kl`, ...).
    pub name: String,
    /// `[n_train, d]`.
    pub train: Matrix,
    /// `[n_test, d]`.
    pub test: Matrix,
}

/// Every check of [`evaluate`] that does not need the data beyond one pass: settings, shapes,
/// label counts, finiteness. Returns the training rows to use.
fn validate(
    blocks: &[ClassificationBlock],
    train_labels: &[i64],
    test_labels: &[i64],
    s: &KnnSettings,
) -> Result<Vec<usize>> {
    if s.k == 0 {
        return Err(EvalError::ZeroK);
    }
    if s.few_shot == Some(0) {
        return Err(EvalError::ZeroFewShot);
    }
    if s.pca_dim == Some(0) {
        return Err(EvalError::ZeroPcaDim);
    }
    check_blocks(blocks, train_labels, test_labels)?;
    few_shot_rows(train_labels, s.few_shot)
}

/// The training rows to use: all, or the first `few_shot` of every class (never none).
pub(crate) fn few_shot_rows(train_labels: &[i64], few_shot: Option<usize>) -> Result<Vec<usize>> {
    let rows: Vec<usize> = match few_shot {
        Some(n) => few_shot_indices(train_labels, n),
        None => (0..train_labels.len()).collect(),
    };
    if rows.is_empty() {
        return Err(EvalError::EmptyFewShot {
            shots: few_shot.unwrap_or(0),
        });
    }
    Ok(rows)
}

/// The block checks of [`evaluate`] (shared with the linear probe): at least one block, train and
/// test labels, and for every block consistent matrices with as many rows as labels, at least one
/// column, equal train and test widths and finite values.
pub(crate) fn check_blocks(
    blocks: &[ClassificationBlock],
    train_labels: &[i64],
    test_labels: &[i64],
) -> Result<()> {
    if blocks.is_empty() {
        return Err(EvalError::NoBlocks);
    }
    for (split, labels) in [
        (SplitKind::Train, train_labels),
        (SplitKind::Test, test_labels),
    ] {
        if labels.is_empty() {
            return Err(EvalError::EmptySplit { split });
        }
    }
    for b in blocks {
        for (split, m, labels) in [
            (SplitKind::Train, &b.train, train_labels),
            (SplitKind::Test, &b.test, test_labels),
        ] {
            if m.check().is_err() {
                return Err(EvalError::BlockSize {
                    block: b.name.clone(),
                    split,
                    rows: m.rows,
                    cols: m.cols,
                    len: m.data.len(),
                });
            }
            if m.rows != labels.len() {
                return Err(EvalError::LabelCount {
                    block: b.name.clone(),
                    split,
                    rows: m.rows,
                    labels: labels.len(),
                });
            }
            if m.cols == 0 {
                return Err(EvalError::ZeroWidth {
                    block: b.name.clone(),
                    split,
                });
            }
        }
        if b.train.cols != b.test.cols {
            return Err(EvalError::WidthMismatch {
                block: b.name.clone(),
                train: b.train.cols,
                test: b.test.cols,
            });
        }
        for (split, m) in [(SplitKind::Train, &b.train), (SplitKind::Test, &b.test)] {
            if let Some((row, col, value)) = m.first_non_finite() {
                return Err(EvalError::NonFinite {
                    block: b.name.clone(),
                    split,
                    row,
                    col,
                    value,
                });
            }
        }
    }
    Ok(())
}

/// Every non-empty combination of blocks (in the paper's enumeration order: by size, then
/// lexicographic in block order), evaluated with the protocol above.
///
/// Everything is validated before any work: `k >= 1`, `few_shot >= 1` and `pca_dim >= 1` when
/// given, at least one block, train and test rows (also after the few-shot selection), every
/// block's rows equal to its split's labels, at least one column, equal train and test widths,
/// finite values. Errors name the block, the split and the first bad row.
pub fn evaluate<B: Backend>(
    blocks: &[ClassificationBlock],
    train_labels: &[i64],
    test_labels: &[i64],
    s: &KnnSettings,
    device: &B::Device,
) -> Result<Vec<ComboResult>> {
    let rows = validate(blocks, train_labels, test_labels, s)?;
    let labels: Vec<i64> = rows.iter().map(|&r| train_labels[r]).collect();
    let normed: Vec<(Matrix, Matrix)> = blocks
        .iter()
        .map(|b| {
            Ok((
                b.train.select_rows(&rows)?.l2_normalized(),
                b.test.l2_normalized(),
            ))
        })
        .collect::<Result<_>>()?;
    let nb = blocks.len();
    let mut combos: Vec<Vec<usize>> = Vec::new();
    for size in 1..=nb {
        combinations(nb, size, &mut vec![], 0, &mut combos);
    }
    combos
        .into_iter()
        .map(|c| {
            let tr = Matrix::hcat(&c.iter().map(|&i| &normed[i].0).collect::<Vec<_>>())?;
            let te = Matrix::hcat(&c.iter().map(|&i| &normed[i].1).collect::<Vec<_>>())?;
            let pca_dim = s.pca_dim.filter(|&p| p < tr.rows && p < tr.cols);
            let (tr, te) = match pca_dim {
                Some(p) => {
                    let pca = Pca::fit(&tr, p)?;
                    (pca.transform(&tr)?, pca.transform(&te)?)
                }
                None => (tr, te),
            };
            let preds = vote(&knn_neighbors::<B>(&tr, &te, s.k, device)?, &labels)?;
            Ok(ComboResult {
                combination: c
                    .iter()
                    .map(|&i| blocks[i].name.as_str())
                    .collect::<Vec<_>>()
                    .join("+"),
                accuracy: accuracy(&preds, test_labels)?,
                mean_per_class_accuracy: mean_per_class_accuracy(&preds, test_labels)?,
                pca: pca_dim.is_some(),
                predictions: preds,
            })
        })
        .collect()
}

/// Every non-empty combination of `n` blocks, in the paper's order (by size, then
/// lexicographic).
fn all_combinations(n: usize) -> Vec<Vec<usize>> {
    let mut out = Vec::new();
    for size in 1..=n {
        combinations(n, size, &mut vec![], 0, &mut out);
    }
    out
}

/// The name of a combination: the block names joined by `+`.
fn combination_name<'a>(combo: &[usize], name: impl Fn(usize) -> &'a str) -> String {
    combo.iter().map(|&i| name(i)).collect::<Vec<_>>().join("+")
}

fn combinations(
    n: usize,
    size: usize,
    cur: &mut Vec<usize>,
    start: usize,
    out: &mut Vec<Vec<usize>>,
) {
    if cur.len() == size {
        out.push(cur.clone());
        return;
    }
    for i in start..n {
        cur.push(i);
        combinations(n, size, cur, i + 1, out);
        cur.pop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type B = burn::backend::Flex;

    fn m(rows: usize, cols: usize, data: &[f64]) -> Matrix {
        Matrix::new(rows, cols, data.to_vec()).unwrap()
    }

    /// Two well separated classes: train rows 0,1 → label 0, rows 2,3 → label 1.
    fn good() -> (Vec<ClassificationBlock>, Vec<i64>, Vec<i64>) {
        let block = ClassificationBlock {
            name: "a".into(),
            train: m(4, 2, &[1.0, 0.0, 0.9, 0.1, 0.0, 1.0, 0.1, 0.9]),
            test: m(2, 2, &[0.95, 0.05, 0.05, 0.95]),
        };
        (vec![block], vec![0, 0, 1, 1], vec![0, 1])
    }

    fn settings() -> KnnSettings {
        KnnSettings {
            k: 1,
            pca_dim: None,
            few_shot: None,
        }
    }

    fn eval(
        blocks: &[ClassificationBlock],
        tr: &[i64],
        te: &[i64],
        s: &KnnSettings,
    ) -> Result<Vec<ComboResult>> {
        evaluate::<B>(blocks, tr, te, s, &Default::default())
    }

    #[test]
    fn metrics_ported_from_the_reference_tests() {
        // tests/test_metrics.py of the paper repo.
        let mpca = |p: &[i64], t: &[i64]| mean_per_class_accuracy(p, t).unwrap();
        assert_eq!(mpca(&[1, 2, 3, 4], &[4, 1, 2, 3]), 0.0);
        assert!((mpca(&[1, 1, 4, 3], &[1, 1, 3, 4]) - 1.0 / 3.0).abs() < 0.01);
        assert_eq!(mpca(&[1, 2, 3], &[1, 2, 3]), 1.0);
        assert_eq!(mpca(&[1, 2, 2, 1], &[1, 1, 2, 2]), 0.5);
        assert_eq!(accuracy(&[1, 2, 2, 1], &[1, 1, 2, 2]).unwrap(), 0.5);
    }

    #[test]
    fn metrics_reject_mismatched_or_empty_inputs() {
        let e = EvalError::PredictionCount {
            predictions: 1,
            targets: 2,
        };
        assert_eq!(accuracy(&[1], &[1, 2]), Err(e.clone()));
        assert_eq!(mean_per_class_accuracy(&[1], &[1, 2]), Err(e));
        assert_eq!(accuracy(&[], &[]), Err(EvalError::NoTargets));
        assert_eq!(mean_per_class_accuracy(&[], &[]), Err(EvalError::NoTargets));
    }

    #[test]
    fn votes_break_ties_to_the_smallest_label() {
        assert_eq!(vote(&[vec![0, 1, 2, 3]], &[5, 3, 5, 3]).unwrap(), vec![3]);
        assert_eq!(vote(&[vec![0, 1, 2]], &[5, 3, 5]).unwrap(), vec![5]);
        assert_eq!(vote(&[vec![2, 0, 1]], &[-1, 7, 7]).unwrap(), vec![7]);
    }

    #[test]
    fn vote_never_invents_a_label() {
        assert_eq!(
            vote(&[vec![0], vec![]], &[4]),
            Err(EvalError::NoNeighbors { row: 1 })
        );
        assert_eq!(
            vote(&[vec![0, 3]], &[4, 5]),
            Err(EvalError::NeighborIndex {
                row: 0,
                index: 3,
                labels: 2
            })
        );
    }

    #[test]
    fn few_shot_takes_the_first_per_class() {
        assert_eq!(
            few_shot_indices(&[0, 1, 0, 0, 1, 2, 1], 2),
            vec![0, 1, 2, 4, 5]
        );
    }

    #[test]
    fn matrix_constructors_check_sizes() {
        assert_eq!(
            Matrix::new(2, 3, vec![0.0; 5]),
            Err(EvalError::MatrixSize {
                rows: 2,
                cols: 3,
                len: 5
            })
        );
        // rows * cols overflows: an error, not a panic or a wrap-around match.
        assert!(matches!(
            Matrix::new(usize::MAX, 2, vec![0.0; 2]),
            Err(EvalError::MatrixSize { .. })
        ));
        let a = m(2, 1, &[1.0, 2.0]);
        assert_eq!(
            a.select_rows(&[1, 2]),
            Err(EvalError::RowIndex { index: 2, rows: 2 })
        );
        assert_eq!(a.select_rows(&[1, 0]).unwrap(), m(2, 1, &[2.0, 1.0]));
        let bad = Matrix {
            rows: 3,
            cols: 1,
            data: vec![1.0],
        };
        assert!(matches!(
            bad.select_rows(&[2]),
            Err(EvalError::MatrixSize { .. })
        ));
        assert_eq!(Matrix::hcat(&[]), Err(EvalError::NothingToConcatenate));
        let b = m(1, 1, &[3.0]);
        assert_eq!(
            Matrix::hcat(&[&a, &b]),
            Err(EvalError::ConcatRows {
                part: 1,
                found: 1,
                expected: 2
            })
        );
        assert_eq!(
            Matrix::hcat(&[&a, &a]).unwrap(),
            m(2, 2, &[1.0, 1.0, 2.0, 2.0])
        );
    }

    #[test]
    fn pca_checks_its_inputs() {
        let x = m(3, 2, &[1.0, 0.0, 0.0, 1.0, 1.0, 1.0]);
        for p in [0, 3] {
            assert_eq!(
                Pca::fit(&x, p),
                Err(EvalError::PcaShape {
                    components: p,
                    rows: 3,
                    cols: 2
                })
            );
        }
        assert!(matches!(
            Pca::fit(&m(0, 2, &[]), 1),
            Err(EvalError::PcaShape { rows: 0, .. })
        ));
        let pca = Pca::fit(&x, 1).unwrap();
        assert_eq!(pca.transform(&x).unwrap().cols, 1);
        assert_eq!(
            pca.transform(&m(1, 3, &[0.0; 3])),
            Err(EvalError::PcaDims {
                fitted: 2,
                found: 3
            })
        );
    }

    #[test]
    fn knn_neighbors_checks_its_inputs() {
        let dev = Default::default();
        let tr = m(2, 2, &[0.0, 0.0, 1.0, 1.0]);
        let te = m(1, 2, &[0.9, 0.9]);
        assert_eq!(
            knn_neighbors::<B>(&tr, &te, 5, &dev).unwrap(),
            vec![vec![1, 0]]
        );
        assert_eq!(knn_neighbors::<B>(&tr, &te, 0, &dev), Err(EvalError::ZeroK));
        assert_eq!(
            knn_neighbors::<B>(&tr, &m(1, 1, &[0.0]), 1, &dev),
            Err(EvalError::KnnDims { train: 2, test: 1 })
        );
        assert_eq!(
            knn_neighbors::<B>(&m(0, 2, &[]), &te, 1, &dev),
            Err(EvalError::EmptySplit {
                split: SplitKind::Train
            })
        );
        assert_eq!(
            knn_neighbors::<B>(&m(2, 0, &[]), &m(1, 0, &[]), 1, &dev),
            Err(EvalError::ZeroColumns)
        );
        let nan = m(1, 2, &[0.0, f64::NAN]);
        assert!(matches!(
            knn_neighbors::<B>(&tr, &nan, 1, &dev),
            Err(EvalError::KnnNonFinite {
                split: SplitKind::Test,
                row: 0,
                col: 1,
                ..
            })
        ));
        assert_eq!(
            knn_neighbors::<B>(&tr, &m(0, 2, &[]), 1, &dev).unwrap(),
            Vec::<Vec<usize>>::new()
        );
    }

    #[test]
    fn evaluate_works_on_separated_classes() {
        let (b, tr, te) = good();
        let r = eval(&b, &tr, &te, &settings()).unwrap();
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].predictions, vec![0, 1]);
        assert_eq!(r[0].accuracy, 1.0);
        let s = KnnSettings {
            k: 3,
            pca_dim: Some(1),
            few_shot: Some(1),
        };
        let r = eval(&b, &tr, &te, &s).unwrap();
        assert_eq!(r[0].predictions, vec![0, 0]);
        assert!(r[0].pca);
    }

    #[test]
    fn evaluate_rejects_bad_settings() {
        let (b, tr, te) = good();
        let mut s = settings();
        s.k = 0;
        assert_eq!(eval(&b, &tr, &te, &s).unwrap_err(), EvalError::ZeroK);
        let mut s = settings();
        s.few_shot = Some(0);
        assert_eq!(eval(&b, &tr, &te, &s).unwrap_err(), EvalError::ZeroFewShot);
        let mut s = settings();
        s.pca_dim = Some(0);
        assert_eq!(eval(&b, &tr, &te, &s).unwrap_err(), EvalError::ZeroPcaDim);
        assert_eq!(
            eval(&[], &tr, &te, &settings()).unwrap_err(),
            EvalError::NoBlocks
        );
    }

    #[test]
    fn evaluate_rejects_empty_splits() {
        let (mut b, _, te) = good();
        b[0].train = m(0, 2, &[]);
        let e = eval(&b, &[], &te, &settings()).unwrap_err();
        assert_eq!(
            e,
            EvalError::EmptySplit {
                split: SplitKind::Train
            }
        );
        assert_eq!(e.split(), Some(SplitKind::Train));
        let (mut b, tr, _) = good();
        b[0].test = m(0, 2, &[]);
        assert_eq!(
            eval(&b, &tr, &[], &settings()).unwrap_err(),
            EvalError::EmptySplit {
                split: SplitKind::Test
            }
        );
    }

    #[test]
    fn evaluate_rejects_label_count_mismatches() {
        let (b, tr, te) = good();
        assert_eq!(
            eval(&b, &tr[..3], &te, &settings()).unwrap_err(),
            EvalError::LabelCount {
                block: "a".into(),
                split: SplitKind::Train,
                rows: 4,
                labels: 3
            }
        );
        assert_eq!(
            eval(&b, &tr, &[0, 1, 1], &settings()).unwrap_err(),
            EvalError::LabelCount {
                block: "a".into(),
                split: SplitKind::Test,
                rows: 2,
                labels: 3
            }
        );
    }

    #[test]
    fn evaluate_rejects_inconsistent_matrices() {
        let (mut b, tr, te) = good();
        b[0].test.data.pop();
        assert_eq!(
            eval(&b, &tr, &te, &settings()).unwrap_err(),
            EvalError::BlockSize {
                block: "a".into(),
                split: SplitKind::Test,
                rows: 2,
                cols: 2,
                len: 3
            }
        );
    }

    #[test]
    fn evaluate_rejects_zero_width_and_width_mismatch() {
        let (mut b, tr, te) = good();
        b[0].train = m(4, 0, &[]);
        b[0].test = m(2, 0, &[]);
        assert_eq!(
            eval(&b, &tr, &te, &settings()).unwrap_err(),
            EvalError::ZeroWidth {
                block: "a".into(),
                split: SplitKind::Train
            }
        );
        let (mut b, tr, te) = good();
        b[0].test = m(2, 3, &[0.0; 6]);
        assert_eq!(
            eval(&b, &tr, &te, &settings()).unwrap_err(),
            EvalError::WidthMismatch {
                block: "a".into(),
                train: 2,
                test: 3
            }
        );
    }

    #[test]
    fn evaluate_rejects_non_finite_values_naming_block_split_and_row() {
        for (split, v) in [
            (SplitKind::Train, f64::NAN),
            (SplitKind::Test, f64::INFINITY),
        ] {
            let (mut b, tr, te) = good();
            let mat = match split {
                SplitKind::Train => &mut b[0].train,
                SplitKind::Test => &mut b[0].test,
            };
            mat.data[3] = v;
            let e = eval(&b, &tr, &te, &settings()).unwrap_err();
            assert!(
                matches!(&e, EvalError::NonFinite { block, split: s, row: 1, col: 1, .. } if block == "a" && *s == split),
                "{e}"
            );
            assert!(e.to_string().contains(&format!("{split} row 1")), "{e}");
        }
    }

    #[test]
    fn evaluate_rejects_an_empty_few_shot_selection() {
        // Cannot happen with shots >= 1 and >= 1 training row; checked all the same.
        let (b, tr, te) = good();
        let rows = validate(&b, &tr, &te, &settings()).unwrap();
        assert_eq!(rows, vec![0, 1, 2, 3]);
        assert_eq!(
            EvalError::EmptyFewShot { shots: 1 }.split(),
            Some(SplitKind::Train)
        );
    }

    #[test]
    fn combinations_in_paper_order() {
        let mut out = vec![];
        for s in 1..=3 {
            combinations(3, s, &mut vec![], 0, &mut out);
        }
        assert_eq!(
            out,
            vec![
                vec![0],
                vec![1],
                vec![2],
                vec![0, 1],
                vec![0, 2],
                vec![1, 2],
                vec![0, 1, 2]
            ]
        );
    }
}
