//! Exact nearest-neighbour search of the support bank by dot product: one GEMM per chunk of
//! support rows (`queries · chunkᵀ`) and a per-row top-`n` merge on the host. Neighbour `k` of a
//! query is its `k`-th best row (ties: the lower row index first) — the paper's ScaNN search is
//! approximate, and its reshape then mixed the rows (see `docs/dense.md`).

use burn::prelude::*;
use fungi_core::{Error, Result};
use rayon::prelude::*;

/// Default budget for one chunk of scores `[R, chunk]` (64 MiB).
pub const DEFAULT_SEARCH_BUDGET: usize = 64 << 20;

/// The `n` best rows of `support` for every query, best first: `[R, n]` row indices.
///
/// # Shapes
/// - `queries`: `[R, E]`, `support`: `[M, E]`; `n <= M`.
///
/// # Errors
/// [`Error::Mismatch`] when the widths differ or `n` exceeds `M`; [`Error::ReadBack`] when the
/// scores cannot be read.
pub fn nearest<B: Backend>(
    queries: Tensor<B, 2>,
    support: &Tensor<B, 2>,
    n: usize,
    budget_bytes: usize,
) -> Result<Vec<u32>> {
    let [r, e] = queries.dims();
    let [m, e2] = support.dims();
    if e != e2 {
        return Err(Error::Mismatch {
            what: "support bank width".into(),
            expected: format!("{e} (the token size)"),
            found: e2.to_string(),
        });
    }
    if n > m || n == 0 {
        return Err(Error::Mismatch {
            what: "dense.neighbours".into(),
            expected: format!("between 1 and the {m} rows of the support bank"),
            found: n.to_string(),
        });
    }
    // Per query: (score, index), best first.
    let mut best: Vec<Vec<(f32, u32)>> = vec![Vec::with_capacity(n + 1); r];
    let chunk = (budget_bytes / (4 * r.max(1))).clamp(1, m);
    for c0 in (0..m).step_by(chunk) {
        let w = chunk.min(m - c0);
        let s = queries
            .clone()
            .matmul(support.clone().slice([c0..c0 + w, 0..e]).transpose());
        let s: Vec<f32> = s
            .into_data()
            .convert::<f32>()
            .into_vec::<f32>()
            .map_err(|err| Error::ReadBack {
                what: "support scores".into(),
                reason: format!("{err:?}"),
            })?;
        best.par_iter_mut()
            .zip(s.par_chunks(w))
            .for_each(|(list, row)| {
                for (j, &v) in row.iter().enumerate() {
                    // NaN never ranks (scores of finite tokens are finite).
                    if v.is_nan() {
                        continue;
                    }
                    if list.len() == n && v <= list[n - 1].0 {
                        continue;
                    }
                    // Strictly better than the worst kept (equal scores keep the lower index,
                    // which came first); insert after every row at least as good.
                    let pos = list.partition_point(|&(b, _)| b >= v);
                    list.insert(pos, (v, (c0 + j) as u32));
                    list.truncate(n);
                }
            });
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
        for budget in [8, DEFAULT_SEARCH_BUDGET] {
            let got = nearest(q.clone(), &support, 3, budget).unwrap();
            assert_eq!(got, vec![0, 3, 2, 1, 2, 0], "budget {budget}");
        }
        assert!(nearest(q.clone(), &support, 6, 1 << 20).is_err());
        assert!(nearest(q, &support.slice([0..5, 0..1]), 1, 1 << 20).is_err());
    }
}
