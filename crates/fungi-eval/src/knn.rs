//! Exact kNN: [`knn_neighbors`] on a Burn backend with `f64` re-ranking, the majority
//! [`vote`], and [`knn`] on in-memory matrices.

use burn::prelude::*;

use crate::{EvalError, Matrix, Result, SplitKind, Subset};

/// Indices of the `k` nearest training rows (Euclidean, nearest first; equal distances in
/// training order) of every test row; `min(k, train.rows)` of them, never none.
///
/// The search runs on backend `B` (distances by one matmul per block of test rows, then a sort);
/// because its float type may be `f32`, the best `k + margin` candidates are re-ranked with exact
/// `f64` distances on the host, so near-ties are resolved as an `f64` implementation would.
///
/// Errors: `k = 0`, no training rows, 0 columns, different train/test widths, an inconsistent
/// matrix, a non-finite value.
pub fn knn_neighbors<B: Backend>(
    train: &Matrix,
    test: &Matrix,
    k: usize,
    device: &B::Device,
) -> Result<Vec<Vec<usize>>> {
    train.check()?;
    test.check()?;
    if k == 0 {
        return Err(EvalError::ZeroK);
    }
    if train.cols != test.cols {
        return Err(EvalError::KnnDims {
            train: train.cols,
            test: test.cols,
        });
    }
    if train.rows == 0 {
        return Err(EvalError::EmptySplit {
            split: SplitKind::Train,
        });
    }
    if train.cols == 0 {
        return Err(EvalError::ZeroColumns);
    }
    for (split, m) in [(SplitKind::Train, train), (SplitKind::Test, test)] {
        if let Some((row, col, value)) = m.first_non_finite() {
            return Err(EvalError::KnnNonFinite {
                split,
                row,
                col,
                value,
            });
        }
    }
    let k = k.min(train.rows);
    let cand = (2 * k).max(k + 16).min(train.rows);
    let d = train.cols;
    let tr = Tensor::<B, 2>::from_data(
        TensorData::new(train.data.clone(), [train.rows, d]).convert::<B::FloatElem>(),
        device,
    );
    let tr_sq = tr.clone().powf_scalar(2.0).sum_dim(1).transpose(); // [1, n]
    let block = ((64 << 20) / train.rows.saturating_mul(8)).clamp(1, 1024);
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
            .map_err(|e| EvalError::Backend {
                reason: format!("{e:?}"),
            })?;
        if idx.len() != m * cand {
            return Err(EvalError::Backend {
                reason: format!("{} indices for {m} rows x {cand} candidates", idx.len()),
            });
        }
        for (r, row) in idx.chunks(cand).enumerate() {
            let q = test.row(start + r);
            let mut c: Vec<(f64, usize)> = Vec::with_capacity(cand);
            for &j in row {
                let index = usize::try_from(j).ok().filter(|&j| j < train.rows).ok_or(
                    EvalError::BackendIndex {
                        index: j,
                        rows: train.rows,
                    },
                )?;
                let t = train.row(index);
                c.push((
                    q.iter().zip(t).map(|(a, b)| (a - b) * (a - b)).sum::<f64>(),
                    index,
                ));
            }
            c.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            out.push(c.into_iter().take(k).map(|x| x.1).collect());
        }
    }
    Ok(out)
}

/// The kNN classifier of the protocol on in-memory matrices: the labels predicted for the rows
/// of `test` by a uniform majority vote over their `k` nearest `train` rows (Euclidean; ties →
/// the smallest label), i.e. [`knn_neighbors`] then [`vote`]. No normalisation, no PCA: the
/// caller applies them ([`Matrix::l2_normalized`], [`Pca`]) as [`evaluate`] does. The protocol
/// votes uniformly (the paper's `train_knn_concat_grads.py`); there is no temperature.
///
/// Errors: `train.rows != train_labels.len()`, and those of [`knn_neighbors`].
pub fn knn<B: Backend>(
    train: &Matrix,
    train_labels: &[i64],
    test: &Matrix,
    k: usize,
    device: &B::Device,
) -> Result<Vec<i64>> {
    train.check()?;
    if train.rows != train_labels.len() {
        return Err(EvalError::LabelRows {
            subset: Subset::Train,
            rows: train.rows,
            labels: train_labels.len(),
        });
    }
    vote(&knn_neighbors::<B>(train, test, k, device)?, train_labels)
}

/// Majority vote over the neighbours' labels; ties go to the smallest label.
///
/// Errors: a test row with no neighbours (no label is invented for it), a neighbour index past
/// `train_labels`.
pub fn vote(neighbors: &[Vec<usize>], train_labels: &[i64]) -> Result<Vec<i64>> {
    neighbors
        .iter()
        .enumerate()
        .map(|(row, nb)| {
            let mut counts = std::collections::BTreeMap::<i64, usize>::new();
            for &j in nb {
                let l = train_labels.get(j).ok_or(EvalError::NeighborIndex {
                    row,
                    index: j,
                    labels: train_labels.len(),
                })?;
                *counts.entry(*l).or_default() += 1;
            }
            // Labels ascending: the first label reaching the top count wins.
            let mut best: Option<(i64, usize)> = None;
            for (l, c) in counts {
                if best.is_none_or(|(_, b)| c > b) {
                    best = Some((l, c));
                }
            }
            best.map(|(l, _)| l).ok_or(EvalError::NoNeighbors { row })
        })
        .collect()
}
