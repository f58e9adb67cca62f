//! Multinomial logistic regression in `f64` with no intercept (the linear probe's model):
//!
//! `min_W (1/n) Σ_i CE(softmax(x_i W), y_i) + (λ/2) ‖W‖²_F`,
//!
//! solved by L-BFGS from `W = 0` ([`crate::lbfgs`]). This is scikit-learn's
//! `LogisticRegression(fit_intercept=False, C=1/(λ·n))` for 3 classes or more (multinomial, one
//! weight vector per class); with 2 classes it is the 2-class softmax, which predicts as
//! scikit-learn's binary model with `C = 2/(λ·n)`. The products `X·W` and `Xᵀ(P − Y)` run
//! through faer on the rayon thread pool.

use faer::linalg::matmul::matmul;
use faer::{Accum, MatMut, MatRef, Par};
use serde::{Deserialize, Serialize};

use crate::lbfgs;
use crate::{EvalError, Matrix, Result, Subset};

/// Settings of the logistic-regression solver.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SolverOptions {
    /// Relative gradient tolerance: the fit has converged when
    /// `‖∇f(W)‖∞ <= tol · ‖∇f(0)‖∞`. Default `1e-8`; finite and `>= 0`.
    pub tol: f64,
    /// L-BFGS iteration cap. Default 10 000.
    pub max_iter: usize,
}

impl Default for SolverOptions {
    fn default() -> Self {
        Self {
            tol: 1e-8,
            max_iter: 10_000,
        }
    }
}

/// A fitted multinomial logistic regression (no intercept).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogisticRegression {
    /// The sorted distinct training labels; row `c` of `coef` scores `classes[c]`.
    pub classes: Vec<i64>,
    /// `[n_classes, d]` (scikit-learn's `coef_`).
    pub coef: Matrix,
    /// The regularisation strength it was fitted with.
    pub lambda: f64,
    /// The objective at `coef`.
    pub objective: f64,
    /// `‖∇f(coef)‖∞`.
    pub grad_inf: f64,
    /// `‖∇f(0)‖∞` (the reference of the relative tolerance).
    pub grad0_inf: f64,
    /// L-BFGS iterations done.
    pub iterations: usize,
    /// Objective + gradient evaluations done (line searches included).
    pub evaluations: usize,
    /// Whether `grad_inf <= tol · grad0_inf` was reached. Otherwise the iteration cap was hit,
    /// the line search could not progress, or the solver stalled at the rounding level (no new
    /// minimum of `‖∇f‖∞` or `f` in 200 iterations); `coef` is then the last iterate.
    pub converged: bool,
}

/// `(X, labels)` checks shared by fitting and the protocols: consistent, non-empty, finite.
fn check_features(x: &Matrix, subset: Subset) -> Result<()> {
    x.check()?;
    if x.cols == 0 {
        return Err(EvalError::NoColumns { subset });
    }
    if let Some((row, col, value)) = x.first_non_finite() {
        return Err(EvalError::NonFiniteValue {
            subset,
            row,
            col,
            value,
        });
    }
    Ok(())
}

pub(crate) fn check_lambda(lambda: f64) -> Result<()> {
    if lambda.is_finite() && lambda > 0.0 {
        Ok(())
    } else {
        Err(EvalError::BadLambda { value: lambda })
    }
}

pub(crate) fn check_options(opts: &SolverOptions) -> Result<()> {
    if opts.tol.is_finite() && opts.tol >= 0.0 {
        Ok(())
    } else {
        Err(EvalError::BadTolerance { value: opts.tol })
    }
}

/// The objective and its gradient on the fixed data.
struct Objective<'a> {
    x: MatRef<'a, f64>,
    y: Vec<usize>,
    classes: usize,
    lambda: f64,
    /// `[n, classes]` row-major scratch: scores, then `P − Y`.
    scratch: Vec<f64>,
}

impl Objective<'_> {
    /// `f(w)`, with `∇f(w)` written into `grad`. `w` and `grad` are `[d, classes]` column-major
    /// (the same memory as `coef`, `[classes, d]` row-major).
    fn eval(&mut self, w: &[f64], grad: &mut [f64]) -> f64 {
        let (n, d, c) = (self.x.nrows(), self.x.ncols(), self.classes);
        let par = Par::rayon(0);
        let wm = MatRef::from_column_major_slice(w, d, c);
        let mut s = MatMut::from_row_major_slice_mut(&mut self.scratch, n, c);
        matmul(s.as_mut(), Accum::Replace, self.x, wm, 1.0, par);
        let mut loss = 0.0;
        for (row, &y) in self.scratch.chunks_mut(c).zip(&self.y) {
            let m = row.iter().fold(f64::NEG_INFINITY, |a, &b| a.max(b));
            let sy = row[y] - m;
            let mut sum = 0.0;
            for v in row.iter_mut() {
                *v = (*v - m).exp();
                sum += *v;
            }
            // CE = log Σ_k exp(s_k) − s_y = log(sum) − (s_y − m), with sum >= 1.
            loss += sum.ln() - sy;
            row.iter_mut().for_each(|v| *v /= sum);
            row[y] -= 1.0;
        }
        loss /= n as f64;
        for (g, w) in grad.iter_mut().zip(w) {
            *g = self.lambda * w;
        }
        let pm = MatRef::from_row_major_slice(&self.scratch, n, c);
        let gm = MatMut::from_column_major_slice_mut(grad, d, c);
        matmul(gm, Accum::Add, self.x.transpose(), pm, 1.0 / n as f64, par);
        loss + 0.5 * self.lambda * w.iter().map(|v| v * v).sum::<f64>()
    }
}

impl LogisticRegression {
    /// Fits the model on `x` (`[n, d]`) with labels `y` (any `i64` values; the classes are the
    /// sorted distinct ones) and regularisation `lambda > 0`.
    ///
    /// Errors: an inconsistent matrix, `x.rows != y.len()`, no rows, no columns, a non-finite
    /// feature, a `lambda` that is not finite and positive, a bad tolerance. Not converging is no
    /// error: see [`LogisticRegression::converged`].
    pub fn fit(x: &Matrix, y: &[i64], lambda: f64, opts: &SolverOptions) -> Result<Self> {
        x.check()?;
        if x.rows != y.len() {
            return Err(EvalError::LabelRows {
                subset: Subset::Train,
                rows: x.rows,
                labels: y.len(),
            });
        }
        if x.rows == 0 {
            return Err(EvalError::EmptySubset {
                subset: Subset::Train,
            });
        }
        check_features(x, Subset::Train)?;
        check_lambda(lambda)?;
        check_options(opts)?;
        let mut classes = y.to_vec();
        classes.sort_unstable();
        classes.dedup();
        let yi: Vec<usize> = y
            .iter()
            .map(|l| classes.binary_search(l).unwrap_or_default())
            .collect();
        let (n, d, c) = (x.rows, x.cols, classes.len());
        let mut obj = Objective {
            x: MatRef::from_row_major_slice(&x.data, n, d),
            y: yi,
            classes: c,
            lambda,
            scratch: vec![0.0; n * c],
        };
        let lopts = lbfgs::Options {
            tol: opts.tol,
            max_iter: opts.max_iter,
            ..lbfgs::Options::default()
        };
        let r = lbfgs::minimize(|w, g| obj.eval(w, g), vec![0.0; d * c], &lopts);
        Ok(Self {
            classes,
            coef: Matrix::new(c, d, r.x)?,
            lambda,
            objective: r.f,
            grad_inf: r.grad_inf,
            grad0_inf: r.grad0_inf,
            iterations: r.iterations,
            evaluations: r.evaluations,
            converged: r.status == lbfgs::Status::Converged,
        })
    }

    /// Scores `x · coefᵀ` (`[n, n_classes]`). Errors: an inconsistent matrix, another width than
    /// the fitted one, a non-finite value, a hand-built model whose `classes` do not match `coef`.
    pub fn decision_function(&self, x: &Matrix) -> Result<Matrix> {
        x.check()?;
        self.coef.check()?;
        let (c, d) = (self.coef.rows, self.coef.cols);
        if self.classes.len() != c || c == 0 {
            return Err(EvalError::ProbeClasses {
                classes: self.classes.len(),
                rows: c,
            });
        }
        if x.cols != d {
            return Err(EvalError::ProbeDims {
                fitted: d,
                found: x.cols,
            });
        }
        if let Some((row, col, value)) = x.first_non_finite() {
            return Err(EvalError::NonFiniteValue {
                subset: Subset::Test,
                row,
                col,
                value,
            });
        }
        let mut out = vec![0.0; x.rows * c];
        if x.rows > 0 && c > 0 {
            matmul(
                MatMut::from_row_major_slice_mut(&mut out, x.rows, c),
                Accum::Replace,
                MatRef::from_row_major_slice(&x.data, x.rows, d),
                MatRef::from_row_major_slice(&self.coef.data, c, d).transpose(),
                1.0,
                Par::rayon(0),
            );
        }
        Matrix::new(x.rows, c, out)
    }

    /// The label of the highest score of every row (ties → the smallest label). Errors as
    /// [`LogisticRegression::decision_function`].
    pub fn predict(&self, x: &Matrix) -> Result<Vec<i64>> {
        let s = self.decision_function(x)?;
        Ok(s.data
            .chunks(s.cols.max(1))
            .take(s.rows)
            .map(|row| {
                let mut best = 0;
                for (k, v) in row.iter().enumerate() {
                    if *v > row[best] {
                        best = k;
                    }
                }
                self.classes.get(best).copied().unwrap_or_default()
            })
            .collect())
    }
}

/// Fits [`LogisticRegression`] on `(train, train_labels)` with `lambda` and predicts the labels
/// of `test` (the in-memory linear probe).
pub fn linear_probe(
    train: &Matrix,
    train_labels: &[i64],
    test: &Matrix,
    lambda: f64,
    opts: &SolverOptions,
) -> Result<Vec<i64>> {
    LogisticRegression::fit(train, train_labels, lambda, opts)?.predict(test)
}

/// The objective `(1/n) Σ_i CE(softmax(x_i W), y_i) + (λ/2) ‖W‖²_F` and its gradient at `coef`
/// (`[n_classes, d]`), for labels given as class indices. Used by the tests and by callers that
/// want to check a solution.
pub fn logistic_objective(
    x: &Matrix,
    class_index: &[usize],
    coef: &Matrix,
    lambda: f64,
) -> Result<(f64, Matrix)> {
    x.check()?;
    coef.check()?;
    if x.rows != class_index.len() {
        return Err(EvalError::LabelRows {
            subset: Subset::Train,
            rows: x.rows,
            labels: class_index.len(),
        });
    }
    if x.rows == 0 {
        return Err(EvalError::EmptySubset {
            subset: Subset::Train,
        });
    }
    check_features(x, Subset::Train)?;
    if coef.cols != x.cols {
        return Err(EvalError::ProbeDims {
            fitted: coef.cols,
            found: x.cols,
        });
    }
    let c = coef.rows;
    if let Some(&index) = class_index.iter().find(|&&k| k >= c) {
        return Err(EvalError::RowIndex { index, rows: c });
    }
    let mut obj = Objective {
        x: MatRef::from_row_major_slice(&x.data, x.rows, x.cols),
        y: class_index.to_vec(),
        classes: c,
        lambda,
        scratch: vec![0.0; x.rows * c],
    };
    let mut g = vec![0.0; coef.data.len()];
    let f = obj.eval(&coef.data, &mut g);
    Ok((f, Matrix::new(c, x.cols, g)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small reproducible problem: `n` rows of `d` features, labels in `classes`.
    fn problem(n: usize, d: usize, classes: &[i64], seed: u64) -> (Matrix, Vec<i64>) {
        let mut s = seed;
        let mut next = move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s % 2_000_001) as f64 / 1_000_000.0 - 1.0
        };
        let mut data = Vec::with_capacity(n * d);
        let mut y = Vec::with_capacity(n);
        for i in 0..n {
            let c = i % classes.len();
            for j in 0..d {
                data.push(next() + if j % classes.len() == c { 0.8 } else { 0.0 });
            }
            y.push(classes[c]);
        }
        (Matrix::new(n, d, data).unwrap(), y)
    }

    #[test]
    fn gradient_matches_central_differences() {
        let (x, _) = problem(30, 4, &[0, 1, 2], 7);
        let yi: Vec<usize> = (0..30).map(|i| (i * 7 + 1) % 3).collect();
        let coef = Matrix::new(
            3,
            4,
            (0..12)
                .map(|i| ((i * 37) % 11) as f64 / 5.0 - 1.0)
                .collect(),
        )
        .unwrap();
        let lambda = 0.03;
        let (_, g) = logistic_objective(&x, &yi, &coef, lambda).unwrap();
        let h = 1e-6;
        for k in 0..12 {
            let mut p = coef.clone();
            p.data[k] += h;
            let mut m = coef.clone();
            m.data[k] -= h;
            let fp = logistic_objective(&x, &yi, &p, lambda).unwrap().0;
            let fm = logistic_objective(&x, &yi, &m, lambda).unwrap().0;
            let fd = (fp - fm) / (2.0 * h);
            assert!((fd - g.data[k]).abs() < 1e-8, "{k}: {fd} vs {}", g.data[k]);
        }
    }

    #[test]
    fn objective_matches_a_direct_computation() {
        // Two rows, two classes, W = [[1, 0], [0, 2]] (coef rows = classes).
        let x = Matrix::new(2, 2, vec![1.0, 1.0, 0.5, -1.0]).unwrap();
        let coef = Matrix::new(2, 2, vec![1.0, 0.0, 0.0, 2.0]).unwrap();
        let (f, g) = logistic_objective(&x, &[0, 1], &coef, 0.5).unwrap();
        // Scores: row 0 → (1, 2), row 1 → (0.5, −2).
        let ce0 = (1f64.exp() + 2f64.exp()).ln() - 1.0;
        let ce1 = (0.5f64.exp() + (-2f64).exp()).ln() + 2.0;
        let want = (ce0 + ce1) / 2.0 + 0.25 * 5.0;
        assert!((f - want).abs() < 1e-15, "{f} vs {want}");
        // Gradient of class 0, feature 0: (1/n) Σ x_i0 (p_i0 − y_i0) + λ W_00.
        let p00 = 1f64.exp() / (1f64.exp() + 2f64.exp());
        let p10 = 0.5f64.exp() / (0.5f64.exp() + (-2f64).exp());
        let want = ((p00 - 1.0) + 0.5 * p10) / 2.0 + 0.5;
        assert!((g.data[0] - want).abs() < 1e-15);
    }

    #[test]
    fn fit_reaches_a_stationary_point() {
        let (x, y) = problem(90, 6, &[-4, 2, 17], 3);
        for lambda in [5e-6, 5e-4, 0.1] {
            let m = LogisticRegression::fit(&x, &y, lambda, &SolverOptions::default()).unwrap();
            assert!(m.converged, "{m:?}");
            assert_eq!(m.classes, vec![-4, 2, 17]);
            assert!(m.grad_inf <= 1e-8 * m.grad0_inf);
            let yi: Vec<usize> = y
                .iter()
                .map(|l| m.classes.binary_search(l).unwrap())
                .collect();
            let (f, g) = logistic_objective(&x, &yi, &m.coef, lambda).unwrap();
            assert!((f - m.objective).abs() <= 1e-14 * f.abs());
            assert!(g.data.iter().all(|v| v.abs() <= m.grad_inf * (1.0 + 1e-6)));
            // Separable-ish blobs: the training accuracy is high.
            let acc = crate::accuracy(&m.predict(&x).unwrap(), &y).unwrap();
            assert!(acc > 0.8, "{acc}");
        }
    }

    #[test]
    fn an_unreachable_tolerance_stops_with_a_flag() {
        let (x, y) = problem(60, 5, &[0, 1, 2], 5);
        let tight = SolverOptions {
            tol: 0.0,
            max_iter: 100_000,
        };
        let m = LogisticRegression::fit(&x, &y, 1e-3, &tight).unwrap();
        assert!(!m.converged);
        assert!(
            m.iterations < 2_000,
            "stopped when stalled, not by the cap: {m:?}"
        );
        let r = LogisticRegression::fit(&x, &y, 1e-3, &SolverOptions::default()).unwrap();
        // The last iterate is as good as the converged one, to rounding.
        assert!((m.objective - r.objective).abs() <= 1e-12 * r.objective.abs());
        assert!(m.grad_inf <= 1e-8 * m.grad0_inf, "{m:?}");
        let capped = SolverOptions {
            tol: 1e-8,
            max_iter: 2,
        };
        let c = LogisticRegression::fit(&x, &y, 1e-3, &capped).unwrap();
        assert!(!c.converged);
        assert_eq!(c.iterations, 2);
    }

    #[test]
    fn models_round_trip_through_json() {
        let (x, y) = problem(30, 3, &[5, 6], 9);
        let m = LogisticRegression::fit(&x, &y, 1e-3, &SolverOptions::default()).unwrap();
        let text = serde_json::to_string(&m).unwrap();
        let back: LogisticRegression = serde_json::from_str(&text).unwrap();
        assert_eq!(back.predict(&x).unwrap(), m.predict(&x).unwrap());
        assert_eq!(back.classes, m.classes);
        // A matrix whose values do not fill rows x cols is refused.
        let bad = r#"{"rows": 2, "cols": 2, "data": [1.0]}"#;
        assert!(serde_json::from_str::<Matrix>(bad).is_err());
    }

    #[test]
    fn a_single_class_predicts_it() {
        let x = Matrix::new(3, 2, vec![1.0, 0.0, 0.0, 1.0, 1.0, 1.0]).unwrap();
        let m = LogisticRegression::fit(&x, &[9, 9, 9], 1e-3, &SolverOptions::default()).unwrap();
        assert!(m.converged);
        assert_eq!(m.predict(&x).unwrap(), vec![9, 9, 9]);
    }

    #[test]
    fn fit_and_predict_reject_bad_inputs() {
        let x = Matrix::new(2, 2, vec![1.0, 0.0, 0.0, 1.0]).unwrap();
        let o = SolverOptions::default();
        assert_eq!(
            LogisticRegression::fit(&x, &[1], 1e-3, &o),
            Err(EvalError::LabelRows {
                subset: Subset::Train,
                rows: 2,
                labels: 1
            })
        );
        assert_eq!(
            LogisticRegression::fit(&Matrix::new(0, 2, vec![]).unwrap(), &[], 1e-3, &o),
            Err(EvalError::EmptySubset {
                subset: Subset::Train
            })
        );
        assert_eq!(
            LogisticRegression::fit(&Matrix::new(2, 0, vec![]).unwrap(), &[1, 2], 1e-3, &o),
            Err(EvalError::NoColumns {
                subset: Subset::Train
            })
        );
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert!(matches!(
                LogisticRegression::fit(&x, &[1, 2], bad, &o),
                Err(EvalError::BadLambda { .. })
            ));
        }
        let nan_tol = SolverOptions {
            tol: f64::NAN,
            max_iter: 10,
        };
        assert!(matches!(
            LogisticRegression::fit(&x, &[1, 2], 1e-3, &nan_tol),
            Err(EvalError::BadTolerance { .. })
        ));
        let mut inf = x.clone();
        inf.data[3] = f64::INFINITY;
        assert!(matches!(
            LogisticRegression::fit(&inf, &[1, 2], 1e-3, &o),
            Err(EvalError::NonFiniteValue {
                subset: Subset::Train,
                row: 1,
                col: 1,
                ..
            })
        ));
        let m = LogisticRegression::fit(&x, &[1, 2], 1e-3, &o).unwrap();
        assert_eq!(m.predict(&x).unwrap(), vec![1, 2]);
        assert_eq!(
            m.predict(&Matrix::new(1, 3, vec![0.0; 3]).unwrap()),
            Err(EvalError::ProbeDims {
                fitted: 2,
                found: 3
            })
        );
        assert_eq!(
            m.predict(&Matrix::new(0, 2, vec![]).unwrap()).unwrap(),
            Vec::<i64>::new()
        );
        let mut broken = m.clone();
        broken.classes.pop();
        assert_eq!(
            broken.predict(&x),
            Err(EvalError::ProbeClasses {
                classes: 1,
                rows: 2
            })
        );
        assert_eq!(linear_probe(&x, &[1, 2], &x, 1e-3, &o).unwrap(), vec![1, 2]);
    }
}
