//! Exact nearest-neighbour search of the support bank by dot product: one GEMM per chunk of
//! support rows (`queries · chunkᵀ`, the chunks stored transposed) and a per-row top-`n` merge on the host. Neighbour `k` of a
//! query is its `k`-th best row (ties: the lower row index first) — the paper's ScaNN search is
//! approximate, and its reshape then mixed the rows (see `docs/dense.md`).

use burn::prelude::*;
use fungi_core::{Error, Result};
use rayon::prelude::*;

/// Default budget for one chunk of scores `[R, chunk]` (4 MiB: a block of 256 queries against
/// a 4 096-row chunk, whose scores stay in cache for the top-k merge; 64 MiB blocks took the
/// search from 0.58 s to 1.0 s per 512-px image on a Zen 3, docs/dense.md).
pub const DEFAULT_SEARCH_BUDGET: usize = 4 << 20;

/// Support rows per stored chunk of a [`SupportIndex`].
pub const SUPPORT_CHUNK_ROWS: usize = 4_096;

/// A support bank `[M, E]` kept for exact search: transposed chunks `[E, ≤ 4 096]`, so that
/// every score block is one plain GEMM `[R, E] × [E, w]`.
#[derive(Debug, Clone)]
pub struct SupportIndex<B: Backend> {
    chunks: Vec<(usize, Tensor<B, 2>)>,
    rows: usize,
    width: usize,
}

impl<B: Backend> SupportIndex<B> {
    /// The index of `support` `[M, E]`.
    pub fn new(support: &Tensor<B, 2>) -> Self {
        Self::with_chunk_rows(support, SUPPORT_CHUNK_ROWS)
    }
    /// [`SupportIndex::new`] with another chunk size (at least 1 row).
    pub fn with_chunk_rows(support: &Tensor<B, 2>, chunk_rows: usize) -> Self {
        let [m, e] = support.dims();
        let step = chunk_rows.max(1);
        let chunks = (0..m)
            .step_by(step)
            .map(|c0| {
                let w = step.min(m - c0);
                let t = support.clone().slice([c0..c0 + w, 0..e]).transpose();
                // A contiguous copy of the transposed chunk.
                (c0, Tensor::from_data(t.into_data(), &support.device()))
            })
            .collect();
        Self {
            chunks,
            rows: m,
            width: e,
        }
    }
    /// Rows `M`.
    pub fn rows(&self) -> usize {
        self.rows
    }
}

/// The `n` best rows of the support for every query, best first: `[R, n]` row indices. Queries
/// are taken in blocks so that one block of scores fits `budget_bytes` (at least one row).
///
/// # Shapes
/// - `queries`: `[R, E]`; `n <= M`.
///
/// # Errors
/// [`Error::Mismatch`] when the widths differ or `n` exceeds `M`; [`Error::ReadBack`] when the
/// scores cannot be read.
pub fn nearest<B: Backend>(
    queries: Tensor<B, 2>,
    support: &SupportIndex<B>,
    n: usize,
    budget_bytes: usize,
) -> Result<Vec<u32>> {
    let [r, e] = queries.dims();
    let m = support.rows;
    if e != support.width {
        return Err(Error::Mismatch {
            what: "support bank width".into(),
            expected: format!("{e} (the token size)"),
            found: support.width.to_string(),
        });
    }
    if n > m || n == 0 {
        return Err(Error::Mismatch {
            what: "dense.neighbours".into(),
            expected: format!("between 1 and the {m} rows of the support bank"),
            found: n.to_string(),
        });
    }
    let widest = support
        .chunks
        .iter()
        .map(|(_, c)| c.dims()[1])
        .max()
        .unwrap_or(1);
    let block = (budget_bytes / (4 * widest)).clamp(1, r.max(1));
    // Per query: (score, index), best first.
    let mut best: Vec<Vec<(f32, u32)>> = vec![Vec::with_capacity(n + 1); r];
    for q0 in (0..r).step_by(block) {
        let qb = block.min(r - q0);
        let q = queries.clone().slice([q0..q0 + qb, 0..e]);
        for (c0, chunk) in &support.chunks {
            let w = chunk.dims()[1];
            let data = q.clone().matmul(chunk.clone()).into_data();
            let data = if data.dtype == burn::tensor::DType::F32 {
                data
            } else {
                data.convert::<f32>()
            };
            let s = data.as_slice::<f32>().map_err(|err| Error::ReadBack {
                what: "support scores".into(),
                reason: format!("{err:?}"),
            })?;
            best[q0..q0 + qb]
                .par_iter_mut()
                .with_min_len(32)
                .zip(s.par_chunks(w).with_min_len(32))
                .for_each(|(list, row)| merge(list, row, *c0, n));
        }
    }
    let mut out = Vec::with_capacity(r * n);
    for (q, list) in best.into_iter().enumerate() {
        if list.len() != n {
            return Err(Error::Mismatch {
                what: format!("neighbours of token row {q}"),
                expected: n.to_string(),
                found: format!("{} (non-finite scores)", list.len()),
            });
        }
        out.extend(list.into_iter().map(|(_, i)| i));
    }
    Ok(out)
}

/// Merges one row of scores (support rows `c0..`) into a query's best-`n` list.
fn merge(list: &mut Vec<(f32, u32)>, row: &[f32], c0: usize, n: usize) {
    // A score must beat the worst kept one strictly (equal scores keep the lower row, which
    // came first); NaN never does (scores of finite tokens are finite).
    let mut worst = if list.len() == n {
        list[n - 1].0
    } else {
        f32::NEG_INFINITY
    };
    for (j, &v) in row.iter().enumerate() {
        if v > worst || (list.len() < n && v == f32::NEG_INFINITY) {
            let pos = list.partition_point(|&(b, _)| b >= v);
            list.insert(pos, (v, (c0 + j) as u32));
            list.truncate(n);
            if list.len() == n {
                worst = list[n - 1].0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    type B = burn::backend::Flex;

    #[test]
    fn exact_top_n_best_first_with_ties_to_the_lower_row() {
        let d = Default::default();
        let support = Tensor::<B, 2>::from_data(
            TensorData::new(
                vec![1.0f32, 0.0, 0.0, 1.0, 0.7, 0.7, 1.0, 0.0, -1.0, 0.0],
                [5, 2],
            ),
            &d,
        );
        let q = Tensor::<B, 2>::from_data(TensorData::new(vec![1.0f32, 0.0, 0.0, 2.0], [2, 2]), &d);
        // Query 0: rows 0 and 3 tie at 1.0 (lower first), then row 2 (0.7).
        // Query 1: row 1 (2.0), row 2 (1.4), then rows 0/3/4 at 0.0 -> row 0.
        for (rows, budget) in [(1, 4), (2, 8), (5, DEFAULT_SEARCH_BUDGET)] {
            let index = SupportIndex::with_chunk_rows(&support, rows);
            let got = nearest(q.clone(), &index, 3, budget).unwrap();
            assert_eq!(
                got,
                vec![0, 3, 2, 1, 2, 0],
                "chunks of {rows}, budget {budget}"
            );
        }
        let index = SupportIndex::new(&support);
        assert!(nearest(q.clone(), &index, 6, 1 << 20).is_err());
        let narrow = SupportIndex::new(&support.slice([0..5, 0..1]));
        assert!(nearest(q, &narrow, 1, 1 << 20).is_err());
    }
}
