//! Nearest memory patches: exact (one GEMM per block of queries and memory, then a top-k, on the
//! backend: [`fungi_dense::search`]) or approximate (an HNSW graph from `hnsw_rs`),
//! and the label transfer of HummingBird (softmax over the `k` neighbours of `cos / τ`).

use burn::prelude::*;
use fungi_dense::search::{nearest, SupportIndex, DEFAULT_SEARCH_BUDGET};
use hnsw_rs::prelude::{Distance, Hnsw};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::{HummingbirdError, MemoryBank, Result};

/// Which search to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum IndexChoice {
    /// Exact while the memory fits `exact_max_bytes`, HNSW beyond.
    #[default]
    Auto,
    /// Exact search by GEMM.
    Exact,
    /// Approximate search on an HNSW graph.
    Hnsw,
}

/// HNSW parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HnswSettings {
    /// Links per point and layer (`M`, at most 256).
    pub max_connections: usize,
    /// Candidates kept while building.
    pub ef_construction: usize,
    /// Candidates kept while searching (at least `k`).
    pub ef_search: usize,
}

impl Default for HnswSettings {
    fn default() -> Self {
        Self {
            max_connections: 16,
            ef_construction: 100,
            ef_search: 128,
        }
    }
}

/// Dot product with 8 independent partial sums, so that the compiler vectorises it.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// `max(0, 1 − a·b)`: on unit rows it orders as the cosine does (anndists' `DistDot` asserts
/// instead of clamping the rounding of nearly equal rows).
#[derive(Debug, Clone, Copy, Default)]
struct UnitCosine;

impl Distance<f32> for UnitCosine {
    fn eval(&self, a: &[f32], b: &[f32]) -> f32 {
        let d = 1.0 - dot(a, b);
        // NaN stays NaN (`f32::max` would turn it into 0, a perfect match).
        if d < 0.0 {
            0.0
        } else {
            d
        }
    }
}

enum Search_<B: Backend> {
    Exact(SupportIndex<B>),
    Hnsw {
        graph: Box<Hnsw<'static, f32, UnitCosine>>,
        ef_search: usize,
    },
}

/// The memory bank, searchable.
pub struct LabelIndex<B: Backend> {
    search: Search_<B>,
    rows: Vec<f32>,
    labels: Vec<f32>,
    dim: usize,
    classes: usize,
    device: B::Device,
}

impl<B: Backend> std::fmt::Debug for LabelIndex<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LabelIndex")
            .field("kind", &self.kind())
            .field("rows", &self.len())
            .field("dim", &self.dim)
            .finish()
    }
}

fn upload<B: Backend>(rows: &[f32], dim: usize, device: &B::Device) -> Tensor<B, 2> {
    Tensor::from_data(
        TensorData::new(rows.to_vec(), [rows.len() / dim.max(1), dim]),
        device,
    )
}

impl<B: Backend> LabelIndex<B> {
    /// Indexes `bank`: exact, or HNSW (`choice` Auto picks exact while the rows take at most
    /// `exact_max_bytes`). The HNSW graph is built in parallel, so its links (and an
    /// approximate search's results) may differ from run to run; the exact search does not.
    ///
    /// # Errors
    /// An empty bank.
    pub fn build(
        bank: MemoryBank,
        choice: IndexChoice,
        exact_max_bytes: u64,
        hnsw: HnswSettings,
        device: &B::Device,
    ) -> Result<Self> {
        if bank.is_empty() {
            return Err(HummingbirdError::Empty {
                what: "the memory bank (no training patch was kept)".into(),
            });
        }
        let (dim, classes) = (bank.dim(), bank.num_classes());
        let (rows, labels) = bank.into_parts();
        let exact = match choice {
            IndexChoice::Exact => true,
            IndexChoice::Hnsw => false,
            IndexChoice::Auto => (rows.len() as u64) * 4 <= exact_max_bytes,
        };
        let search = if exact {
            Search_::Exact(SupportIndex::new(&upload::<B>(&rows, dim, device)))
        } else {
            let m = hnsw.max_connections;
            if !(2..=256).contains(&m) {
                return Err(HummingbirdError::Setting {
                    key: "hnsw.max_connections".into(),
                    value: m.to_string(),
                    expected: "2 to 256".into(),
                });
            }
            let n = rows.len() / dim.max(1);
            let mut graph =
                Hnsw::<f32, UnitCosine>::new(m, n, 16, hnsw.ef_construction.max(1), UnitCosine);
            let items: Vec<(&[f32], usize)> = rows.chunks(dim).zip(0..).collect();
            graph.parallel_insert_slice(&items);
            graph.set_searching_mode(true);
            Search_::Hnsw {
                graph: Box::new(graph),
                ef_search: hnsw.ef_search,
            }
        };
        Ok(Self {
            search,
            rows,
            labels,
            dim,
            classes,
            device: device.clone(),
        })
    }

    /// Rows in the memory.
    pub fn len(&self) -> usize {
        self.rows.len() / self.dim.max(1)
    }

    /// Width of a row.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Whether the memory is empty (never, once built).
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// `"exact"` or `"hnsw"`.
    pub fn kind(&self) -> &'static str {
        match self.search {
            Search_::Exact(_) => "exact",
            Search_::Hnsw { .. } => "hnsw",
        }
    }

    fn check(&self, queries: &[f32], k: usize) -> Result<usize> {
        if k == 0 || k > self.len() {
            return Err(HummingbirdError::Setting {
                key: "k".into(),
                value: k.to_string(),
                expected: format!("between 1 and the {} rows of the memory bank", self.len()),
            });
        }
        if !queries.len().is_multiple_of(self.dim.max(1)) {
            return Err(HummingbirdError::Shape {
                what: "queries".into(),
                expected: format!("rows of {} features", self.dim),
                found: format!("{} values", queries.len()),
            });
        }
        let d = self.dim.max(1);
        if let Some(i) = queries.iter().position(|v| !v.is_finite()) {
            return Err(HummingbirdError::NonFinite {
                what: format!("query patch {} (value {})", i / d, i % d),
                value: queries[i],
            });
        }
        Ok(queries.len() / d)
    }

    /// The exact `k` nearest memory rows (by dot product, best first) of each query row,
    /// `[Q·k]`.
    ///
    /// # Errors
    /// `k` past the memory, a query width that differs, a backend read-back failure.
    pub fn exact_neighbours(&self, queries: &[f32], k: usize) -> Result<Vec<u32>> {
        self.check(queries, k)?;
        let q = upload::<B>(queries, self.dim, &self.device);
        let built;
        let idx = match &self.search {
            Search_::Exact(i) => i,
            Search_::Hnsw { .. } => {
                built = SupportIndex::new(&upload::<B>(&self.rows, self.dim, &self.device));
                &built
            }
        };
        Ok(nearest(q, idx, k, DEFAULT_SEARCH_BUDGET)?)
    }

    /// The `k` nearest memory rows of each query row with this index's search, `[Q·k]`.
    ///
    /// # Errors
    /// As [`LabelIndex::exact_neighbours`]; an HNSW search returning fewer than `k` rows
    /// (raise `ef_search`).
    pub fn neighbours(&self, queries: &[f32], k: usize) -> Result<Vec<u32>> {
        let n = self.check(queries, k)?;
        match &self.search {
            Search_::Exact(_) => self.exact_neighbours(queries, k),
            Search_::Hnsw { graph, ef_search } => {
                if *ef_search < k {
                    return Err(HummingbirdError::Setting {
                        key: "hnsw.ef_search".into(),
                        value: ef_search.to_string(),
                        expected: format!("at least k = {k}"),
                    });
                }
                let lists: Vec<Result<Vec<u32>>> = queries
                    .par_chunks(self.dim)
                    .map(|q| {
                        // The graph's distance is `1 − q·r` clamped at 0: the query must be a
                        // unit row for it to order the rows by cosine.
                        let n = dot(q, q).sqrt().max(1e-12);
                        let unit: Vec<f32> = q.iter().map(|v| v / n).collect();
                        let found: Vec<u32> = graph
                            .search(&unit, k, *ef_search)
                            .into_iter()
                            .take(k)
                            .map(|nb| nb.d_id as u32)
                            .collect();
                        if found.len() < k {
                            return Err(HummingbirdError::Setting {
                                key: "hnsw.ef_search".into(),
                                value: ef_search.to_string(),
                                expected: format!(
                                    "a search that returns k = {k} rows (it returned {})",
                                    found.len()
                                ),
                            });
                        }
                        Ok(found)
                    })
                    .collect();
                let mut out = Vec::with_capacity(n * k);
                for l in lists {
                    out.extend(l?);
                }
                Ok(out)
            }
        }
    }

    /// HummingBird's label transfer: each query row's `k` neighbours weighted by
    /// `softmax(cos / temperature)`, the weighted sum of their soft labels, `[Q, C]`.
    ///
    /// # Errors
    /// As [`LabelIndex::neighbours`].
    pub fn transfer(&self, queries: &[f32], k: usize, temperature: f64) -> Result<Vec<f64>> {
        let nbrs = self.neighbours(queries, k)?;
        let (d, c) = (self.dim, self.classes);
        let mut out = vec![0f64; nbrs.len() / k * c];
        out.par_chunks_mut(c)
            .zip(queries.par_chunks(d))
            .zip(nbrs.par_chunks(k))
            .for_each(|((o, q), list)| {
                let qn = q.iter().map(|v| (*v as f64).powi(2)).sum::<f64>().sqrt();
                let cos: Vec<f64> = list
                    .iter()
                    .map(|&j| {
                        let r = &self.rows[j as usize * d..(j as usize + 1) * d];
                        let dot: f64 = q.iter().zip(r).map(|(a, b)| *a as f64 * *b as f64).sum();
                        dot / qn.max(1e-12) / temperature
                    })
                    .collect();
                let top = cos.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let w: Vec<f64> = cos.iter().map(|v| (v - top).exp()).collect();
                let z: f64 = w.iter().sum();
                for (&j, wj) in list.iter().zip(&w) {
                    let l = &self.labels[j as usize * c..(j as usize + 1) * c];
                    for (o, l) in o.iter_mut().zip(l) {
                        *o += wj / z * *l as f64;
                    }
                }
            });
        Ok(out)
    }

    /// Recall@k of this index's search against the exact search on `queries`: the mean fraction
    /// of each query's exact `k` neighbours that it finds (1 for the exact index; 1 on no
    /// queries, which the evaluation reports as not measured).
    ///
    /// # Errors
    /// As [`LabelIndex::neighbours`].
    pub fn recall(&self, queries: &[f32], k: usize) -> Result<f64> {
        let n = self.check(queries, k)?;
        if n == 0 {
            return Ok(1.0);
        }
        let got = self.neighbours(queries, k)?;
        let want = self.exact_neighbours(queries, k)?;
        let mut hits = 0usize;
        for (g, w) in got.chunks(k).zip(want.chunks(k)) {
            hits += w.iter().filter(|x| g.contains(x)).count();
        }
        Ok(hits as f64 / (n * k) as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    type B = burn::backend::Flex;

    fn unit_rows(n: usize, d: usize, seed: u64) -> Vec<f32> {
        let mut rng = fungi_core::rng::stream(seed, "test", 0);
        let mut v: Vec<f32> = (0..n * d)
            .map(|_| rand::RngExt::random::<f32>(&mut rng) - 0.5)
            .collect();
        for r in v.chunks_mut(d) {
            let s = r.iter().map(|x| x * x).sum::<f32>().sqrt();
            r.iter_mut().for_each(|x| *x /= s);
        }
        v
    }

    #[test]
    fn hnsw_finds_most_exact_neighbours_and_transfer_is_a_softmax() {
        let (n, d, c) = (2000, 16, 3);
        let rows = unit_rows(n, d, 1);
        let mut bank = MemoryBank::new(d, c, 1, 0);
        for (i, r) in rows.chunks(d).enumerate() {
            let mut l = vec![0.0; c];
            l[i % c] = 1.0;
            bank.add(i as u64, r, &fungi_eval::Matrix::new(1, c, l).unwrap())
                .unwrap();
        }
        let dev = Default::default();
        let q = unit_rows(200, d, 2);
        let exact = LabelIndex::<B>::build(
            bank.clone(),
            IndexChoice::Auto,
            1 << 30,
            HnswSettings::default(),
            &dev,
        )
        .unwrap();
        assert_eq!(exact.kind(), "exact");
        assert_eq!(exact.recall(&q, 10).unwrap(), 1.0);
        let approx =
            LabelIndex::<B>::build(bank, IndexChoice::Auto, 0, HnswSettings::default(), &dev)
                .unwrap();
        assert_eq!(approx.kind(), "hnsw");
        let r = approx.recall(&q, 10).unwrap();
        assert!(r > 0.9, "recall {r}");
        // Queries need not be unit rows (the search normalises them).
        let scaled: Vec<f32> = q.iter().map(|v| v * 3.0).collect();
        let r = approx.recall(&scaled, 10).unwrap();
        assert!(r > 0.9, "recall of scaled queries {r}");
        // Transfer on the exact index: weights are a softmax of cos / τ over the neighbours.
        let t = exact.transfer(&q[..d], 3, 0.1).unwrap();
        assert!((t.iter().sum::<f64>() - 1.0).abs() < 1e-9);
        let nb = exact.exact_neighbours(&q[..d], 3).unwrap();
        let cos = |j: u32| -> f64 {
            q[..d]
                .iter()
                .zip(&rows[j as usize * d..(j as usize + 1) * d])
                .map(|(a, b)| *a as f64 * *b as f64)
                .sum()
        };
        let w: Vec<f64> = nb.iter().map(|&j| (cos(j) / 0.1).exp()).collect();
        let z: f64 = w.iter().sum();
        let mut want = vec![0.0; c];
        for (&j, wj) in nb.iter().zip(&w) {
            want[j as usize % c] += wj / z;
        }
        for (a, b) in t.iter().zip(&want) {
            // The bank stores its rows renormalised in f32.
            assert!((a - b).abs() < 1e-5, "{t:?} vs {want:?}");
        }
        let e = exact.neighbours(&q[..d], 0).unwrap_err().to_string();
        assert!(e.contains("k = 0"), "{e}");
    }
}
