//! [`Matrix`] (row-major `f64`) and [`Pca`].

use serde::{Deserialize, Serialize};

use crate::{EvalError, Result};

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
    /// From row-major values; an error unless `data.len() == rows * cols`.
    pub fn new(rows: usize, cols: usize, data: Vec<f64>) -> Result<Self> {
        let m = Self { rows, cols, data };
        m.check()?;
        Ok(m)
    }
    /// `data.len() == rows * cols` (the fields are public, so a matrix may be built by hand).
    pub(crate) fn check(&self) -> Result<()> {
        if self.rows.checked_mul(self.cols) == Some(self.data.len()) {
            Ok(())
        } else {
            Err(EvalError::MatrixSize {
                rows: self.rows,
                cols: self.cols,
                len: self.data.len(),
            })
        }
    }
    pub(crate) fn row(&self, r: usize) -> &[f64] {
        &self.data[r * self.cols..(r + 1) * self.cols]
    }
    /// The first non-finite value as `(row, col, value)`.
    pub(crate) fn first_non_finite(&self) -> Option<(usize, usize, f64)> {
        let i = self.data.iter().position(|v| !v.is_finite())?;
        let cols = self.cols.max(1);
        Some((i / cols, i % cols, self.data[i]))
    }
    /// The selected rows (an error on an index past the end).
    pub fn select_rows(&self, idx: &[usize]) -> Result<Self> {
        self.check()?;
        if let Some(&index) = idx.iter().find(|&&r| r >= self.rows) {
            return Err(EvalError::RowIndex {
                index,
                rows: self.rows,
            });
        }
        let data = idx
            .iter()
            .flat_map(|&r| self.row(r).iter().copied())
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
    /// Horizontal concatenation (an error on no parts or different row counts).
    pub fn hcat(parts: &[&Matrix]) -> Result<Self> {
        let rows = parts.first().ok_or(EvalError::NothingToConcatenate)?.rows;
        for (part, p) in parts.iter().enumerate() {
            p.check()?;
            if p.rows != rows {
                return Err(EvalError::ConcatRows {
                    part,
                    found: p.rows,
                    expected: rows,
                });
            }
        }
        let cols = parts.iter().map(|p| p.cols).sum();
        let mut data = Vec::with_capacity(rows * cols);
        for r in 0..rows {
            for p in parts {
                data.extend_from_slice(p.row(r));
            }
        }
        Self::new(rows, cols, data)
    }
}

// Serialised as `{rows, cols, data}`; deserialising checks `data.len() == rows * cols`.
impl Serialize for Matrix {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("Matrix", 3)?;
        st.serialize_field("rows", &self.rows)?;
        st.serialize_field("cols", &self.cols)?;
        st.serialize_field("data", &self.data)?;
        st.end()
    }
}

impl<'de> Deserialize<'de> for Matrix {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Raw {
            rows: usize,
            cols: usize,
            data: Vec<f64>,
        }
        let r = Raw::deserialize(d)?;
        Matrix::new(r.rows, r.cols, r.data).map_err(serde::de::Error::custom)
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
    ///
    /// Errors: no rows, `p` outside `1..=cols`, an inconsistent matrix, or an eigen-solver that
    /// does not converge.
    pub fn fit(x: &Matrix, p: usize) -> Result<Self> {
        x.check()?;
        let (n, d) = (x.rows, x.cols);
        if n == 0 || p == 0 || p > d {
            return Err(EvalError::PcaShape {
                components: p,
                rows: n,
                cols: d,
            });
        }
        let mean: Vec<f64> = (0..d)
            .map(|j| (0..n).map(|i| x.data[i * d + j]).sum::<f64>() / n as f64)
            .collect();
        let xc = faer::Mat::<f64>::from_fn(n, d, |i, j| x.data[i * d + j] - mean[j]);
        let cov = xc.transpose() * &xc;
        let eig = cov
            .self_adjoint_eigen(faer::Side::Lower)
            .map_err(|_| EvalError::Eigen { dim: d })?;
        let u = eig.U();
        // Eigenvalues ascending: take the last p columns, largest first.
        let comps: Vec<f64> = (0..p)
            .flat_map(|k| {
                let c = d - 1 - k;
                (0..d).map(move |j| u[(j, c)])
            })
            .collect();
        Ok(Self {
            mean,
            components: Matrix::new(p, d, comps)?,
        })
    }
    /// Projects rows (an error unless `x` has the fitted width).
    pub fn transform(&self, x: &Matrix) -> Result<Matrix> {
        x.check()?;
        self.components.check()?;
        let (p, d) = (self.components.rows, self.components.cols);
        if x.cols != d || self.mean.len() != d {
            return Err(EvalError::PcaDims {
                fitted: d,
                found: if x.cols != d { x.cols } else { self.mean.len() },
            });
        }
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
