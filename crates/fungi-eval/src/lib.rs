//! # fungi-eval
//!
//! The kNN protocol of the paper (`no-train-all-gain/train_knn_concat_grads.py` as run by
//! `jobs/concat.job`): every block L2-normalised per row, blocks concatenated in order, PCA fitted
//! on the training rows (only when `pca_dim < n_train` and `pca_dim < dim`), Euclidean kNN with
//! `k` neighbours and a uniform majority vote (ties → smallest label), accuracy and mean
//! per-class accuracy, for every non-empty combination of blocks. PCA runs in `f64` (covariance +
//! faer's symmetric eigen-solver); the neighbour search runs on a Burn backend, with the best
//! candidates re-ranked in `f64`.
#![warn(missing_docs)]

use burn::prelude::*;
use serde::{Deserialize, Serialize};

/// Row-major `n x d` matrix of `f64`.
#[derive(Debug, Clone, PartialEq)]
pub struct Matrix {
    /// Rows.
    pub rows: usize,
    /// Columns.
    pub cols: usize,
    /// Values.
    pub data: Vec<f64>,
}

impl Matrix {
    /// From row-major values.
    pub fn new(rows: usize, cols: usize, data: Vec<f64>) -> Self {
        assert_eq!(rows * cols, data.len(), "matrix size");
        Self { rows, cols, data }
    }
    /// The selected rows.
    pub fn select_rows(&self, idx: &[usize]) -> Self {
        let data = idx
            .iter()
            .flat_map(|&r| {
                self.data[r * self.cols..(r + 1) * self.cols]
                    .iter()
                    .copied()
            })
            .collect();
        Self::new(idx.len(), self.cols, data)
    }
    /// Each row divided by `max(‖row‖₂, 1e-12)` (`F.normalize`).
    pub fn l2_normalized(&self) -> Self {
        let mut out = self.clone();
        for r in out.data.chunks_mut(self.cols.max(1)) {
            let n = r.iter().map(|v| v * v).sum::<f64>().sqrt().max(1e-12);
            r.iter_mut().for_each(|v| *v /= n);
        }
        out
    }
    /// Horizontal concatenation.
    pub fn hcat(parts: &[&Matrix]) -> Self {
        let rows = parts[0].rows;
        assert!(parts.iter().all(|p| p.rows == rows), "row counts differ");
        let cols = parts.iter().map(|p| p.cols).sum();
        let mut data = Vec::with_capacity(rows * cols);
        for r in 0..rows {
            for p in parts {
                data.extend_from_slice(&p.data[r * p.cols..(r + 1) * p.cols]);
            }
        }
        Self::new(rows, cols, data)
    }
}

/// A fitted PCA: `transform(x) = (x − mean) · componentsᵀ`.
#[derive(Debug, Clone, PartialEq)]
pub struct Pca {
    /// `[D]`.
    pub mean: Vec<f64>,
    /// `[P, D]`, by decreasing explained variance.
    pub components: Matrix,
}

impl Pca {
    /// Fits `p` components on `x` (covariance eigen-decomposition; same subspace as sklearn's
    /// `PCA(svd_solver="full")`, component signs may differ, which no distance sees).
    pub fn fit(x: &Matrix, p: usize) -> Self {
        let (n, d) = (x.rows, x.cols);
        let mean: Vec<f64> = (0..d)
            .map(|j| (0..n).map(|i| x.data[i * d + j]).sum::<f64>() / n as f64)
            .collect();
        let xc = faer::Mat::<f64>::from_fn(n, d, |i, j| x.data[i * d + j] - mean[j]);
        let cov = xc.transpose() * &xc;
        let eig = cov
            .self_adjoint_eigen(faer::Side::Lower)
            .expect("symmetric eigen-decomposition");
        let u = eig.U();
        // Eigenvalues ascending: take the last p columns, largest first.
        let comps: Vec<f64> = (0..p)
            .flat_map(|k| {
                let c = d - 1 - k;
                (0..d).map(move |j| u[(j, c)])
            })
            .collect();
        Self {
            mean,
            components: Matrix::new(p, d, comps),
        }
    }
    /// Projects rows.
    pub fn transform(&self, x: &Matrix) -> Matrix {
        let (p, d) = (self.components.rows, self.components.cols);
        let mut out = vec![0.0; x.rows * p];
        for i in 0..x.rows {
            let row = &x.data[i * d..(i + 1) * d];
            for k in 0..p {
                let c = &self.components.data[k * d..(k + 1) * d];
                out[i * p + k] = row
                    .iter()
                    .zip(&self.mean)
                    .zip(c)
                    .map(|((v, m), w)| (v - m) * w)
                    .sum();
            }
        }
        Matrix::new(x.rows, p, out)
    }
}

/// Indices of the `k` nearest training rows (Euclidean, nearest first; equal distances in
/// training order) of every test row.
///
/// The search runs on backend `B` (distances by one matmul per block of test rows, then a sort);
/// because its float type may be `f32`, the best `k + margin` candidates are re-ranked with exact
/// `f64` distances on the host, so near-ties are resolved as an `f64` implementation would.
pub fn knn_neighbors<B: Backend>(
    train: &Matrix,
    test: &Matrix,
    k: usize,
    device: &B::Device,
) -> Vec<Vec<usize>> {
    assert_eq!(train.cols, test.cols, "feature dims differ");
    let k = k.min(train.rows);
    let cand = (2 * k).max(k + 16).min(train.rows);
    let d = train.cols;
    let tr = Tensor::<B, 2>::from_data(
        TensorData::new(train.data.clone(), [train.rows, d]).convert::<B::FloatElem>(),
        device,
    );
    let tr_sq = tr.clone().powf_scalar(2.0).sum_dim(1).transpose(); // [1, n]
    let block = ((64 << 20) / (8 * train.rows.max(1))).clamp(1, 1024);
    let mut out = Vec::with_capacity(test.rows);
    for start in (0..test.rows).step_by(block) {
        let m = block.min(test.rows - start);
        let te = Tensor::<B, 2>::from_data(
            TensorData::new(test.data[start * d..(start + m) * d].to_vec(), [m, d])
                .convert::<B::FloatElem>(),
            device,
        );
        let te_sq = te.clone().powf_scalar(2.0).sum_dim(1); // [m, 1]
        let dist = te_sq + tr_sq.clone() - te.matmul(tr.clone().transpose()).mul_scalar(2.0);
        let (_, idx) = dist.sort_with_indices(1);
        let idx: Vec<i64> = idx
            .slice([0..m, 0..cand])
            .into_data()
            .convert::<i64>()
            .into_vec()
            .expect("int indices");
        for (r, row) in idx.chunks(cand).enumerate() {
            let q = &test.data[(start + r) * d..(start + r + 1) * d];
            let mut c: Vec<(f64, usize)> = row
                .iter()
                .map(|&j| {
                    let j = j as usize;
                    let t = &train.data[j * d..(j + 1) * d];
                    (
                        q.iter().zip(t).map(|(a, b)| (a - b) * (a - b)).sum::<f64>(),
                        j,
                    )
                })
                .collect();
            c.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            out.push(c.into_iter().take(k).map(|x| x.1).collect());
        }
    }
    out
}

/// Majority vote over the neighbours' labels; ties go to the smallest label.
pub fn vote(neighbors: &[Vec<usize>], train_labels: &[i64]) -> Vec<i64> {
    neighbors
        .iter()
        .map(|nb| {
            let mut counts = std::collections::BTreeMap::<i64, usize>::new();
            for &j in nb {
                *counts.entry(train_labels[j]).or_default() += 1;
            }
            let best = counts.values().copied().max().unwrap_or(0);
            counts
                .into_iter()
                .find(|&(_, c)| c == best)
                .map(|(l, _)| l)
                .unwrap_or(0)
        })
        .collect()
}

/// Fraction of correct predictions.
pub fn accuracy(preds: &[i64], targets: &[i64]) -> f64 {
    preds.iter().zip(targets).filter(|(p, t)| p == t).count() as f64 / targets.len().max(1) as f64
}

/// Mean over the classes present in `targets` of the per-class recall (the paper's
/// `confusion_matrix(preds, targets)` diagonal over column sums).
pub fn mean_per_class_accuracy(preds: &[i64], targets: &[i64]) -> f64 {
    let mut per: std::collections::BTreeMap<i64, (usize, usize)> = Default::default();
    for (p, t) in preds.iter().zip(targets) {
        let e = per.entry(*t).or_default();
        e.1 += 1;
        if p == t {
            e.0 += 1;
        }
    }
    per.values()
        .map(|(c, n)| *c as f64 / *n as f64)
        .sum::<f64>()
        / per.len().max(1) as f64
}

/// The first `shots` indices of every class in dataset order, sorted (`sample_balanced(..,
/// shuffle=False)`).
pub fn few_shot_indices(labels: &[i64], shots: usize) -> Vec<usize> {
    let mut seen: std::collections::HashMap<i64, usize> = Default::default();
    let mut out = Vec::new();
    for (i, l) in labels.iter().enumerate() {
        let c = seen.entry(*l).or_default();
        if *c < shots {
            *c += 1;
            out.push(i);
        }
    }
    out
}

/// Settings of [`evaluate`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KnnSettings {
    /// Neighbours.
    pub k: usize,
    /// PCA output size (skipped when not below both the train size and the feature size).
    pub pca_dim: Option<usize>,
    /// Evaluate only on this many training examples per class (first ones in order).
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
pub struct Block {
    /// Name (`embeddings`, `kl`, ...).
    pub name: String,
    /// `[n_train, d]`.
    pub train: Matrix,
    /// `[n_test, d]`.
    pub test: Matrix,
}

/// Every non-empty combination of blocks (in the paper's enumeration order: by size, then
/// lexicographic in block order), evaluated with the protocol above.
pub fn evaluate<B: Backend>(
    blocks: &[Block],
    train_labels: &[i64],
    test_labels: &[i64],
    s: &KnnSettings,
    device: &B::Device,
) -> Vec<ComboResult> {
    let rows: Vec<usize> = match s.few_shot {
        Some(n) => few_shot_indices(train_labels, n),
        None => (0..train_labels.len()).collect(),
    };
    let labels: Vec<i64> = rows.iter().map(|&r| train_labels[r]).collect();
    let normed: Vec<(Matrix, Matrix)> = blocks
        .iter()
        .map(|b| {
            (
                b.train.select_rows(&rows).l2_normalized(),
                b.test.l2_normalized(),
            )
        })
        .collect();
    let nb = blocks.len();
    let mut combos: Vec<Vec<usize>> = Vec::new();
    for size in 1..=nb {
        combinations(nb, size, &mut vec![], 0, &mut combos);
    }
    combos
        .into_iter()
        .map(|c| {
            let tr = Matrix::hcat(&c.iter().map(|&i| &normed[i].0).collect::<Vec<_>>());
            let te = Matrix::hcat(&c.iter().map(|&i| &normed[i].1).collect::<Vec<_>>());
            let use_pca = matches!(s.pca_dim, Some(p) if p < tr.rows && p < tr.cols);
            let (tr, te) = if use_pca {
                let pca = Pca::fit(&tr, s.pca_dim.unwrap());
                (pca.transform(&tr), pca.transform(&te))
            } else {
                (tr, te)
            };
            let preds = vote(&knn_neighbors::<B>(&tr, &te, s.k, device), &labels);
            ComboResult {
                combination: c
                    .iter()
                    .map(|&i| blocks[i].name.as_str())
                    .collect::<Vec<_>>()
                    .join("+"),
                accuracy: accuracy(&preds, test_labels),
                mean_per_class_accuracy: mean_per_class_accuracy(&preds, test_labels),
                pca: use_pca,
                predictions: preds,
            }
        })
        .collect()
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

    #[test]
    fn metrics_ported_from_the_reference_tests() {
        // tests/test_metrics.py of the paper repo.
        assert_eq!(mean_per_class_accuracy(&[1, 2, 3, 4], &[4, 1, 2, 3]), 0.0);
        assert!((mean_per_class_accuracy(&[1, 1, 4, 3], &[1, 1, 3, 4]) - 1.0 / 3.0).abs() < 0.01);
        assert_eq!(mean_per_class_accuracy(&[1, 2, 3], &[1, 2, 3]), 1.0);
        assert_eq!(mean_per_class_accuracy(&[1, 2, 2, 1], &[1, 1, 2, 2]), 0.5);
    }

    #[test]
    fn votes_break_ties_to_the_smallest_label() {
        assert_eq!(vote(&[vec![0, 1, 2, 3]], &[5, 3, 5, 3]), vec![3]);
        assert_eq!(vote(&[vec![0, 1, 2]], &[5, 3, 5]), vec![5]);
    }

    #[test]
    fn few_shot_takes_the_first_per_class() {
        assert_eq!(
            few_shot_indices(&[0, 1, 0, 0, 1, 2, 1], 2),
            vec![0, 1, 2, 4, 5]
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
