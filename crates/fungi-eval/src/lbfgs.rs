//! A small L-BFGS minimiser for smooth objectives (the linear probe's), with a strong-Wolfe line
//! search (Nocedal & Wright, *Numerical Optimization*, 2nd ed., algorithms 3.5 / 3.6 and 7.4).
//!
//! Converged means `‖∇f(x)‖∞ <= tol · ‖∇f(x₀)‖∞` (relative to the starting gradient). The
//! sufficient-decrease tests allow a rounding slack of `1e-12 · |f(x₀ of the line search)|`, so
//! that the search keeps making progress on the gradient when the objective's decrease falls
//! below what `f64` can resolve (the last digits of a tight solve); the curvature condition, which
//! works on gradients, is exact. It stops unconverged at the iteration cap, after two failed line
//! searches in a row, or when neither `‖∇f‖∞` nor `f` (by more than `1e-12` relative) has reached
//! a new minimum in 200 iterations (stalled at the rounding level).

/// Outcome of [`minimize`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Status {
    /// `‖∇f‖∞ <= tol · ‖∇f(x₀)‖∞`.
    Converged,
    /// The iteration cap was reached first.
    MaxIterations,
    /// No step satisfying the Wolfe conditions was found (twice in a row, the second time along
    /// the steepest descent): the objective is flat to rounding along it.
    LineSearchFailed,
    /// Neither the gradient norm nor the objective (by more than `1e-12` relative) reached a new
    /// minimum for [`STALL_ITERATIONS`] iterations: the iterates wander at the rounding level,
    /// short of the tolerance.
    Stalled,
}

/// Iterations without a new minimum of `‖∇f‖∞` after which the minimiser gives up.
pub(crate) const STALL_ITERATIONS: usize = 200;

/// Settings of [`minimize`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Options {
    /// Relative gradient tolerance.
    pub tol: f64,
    /// Iteration cap (each iteration is one line search).
    pub max_iter: usize,
    /// Correction pairs kept (scipy's `maxcor`).
    pub memory: usize,
    /// Objective evaluations per line search.
    pub max_line_search: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            tol: 1e-8,
            max_iter: 10_000,
            memory: 10,
            max_line_search: 50,
        }
    }
}

/// The minimiser's result.
#[derive(Debug, Clone)]
pub(crate) struct Minimum {
    /// The last iterate.
    pub x: Vec<f64>,
    /// `f(x)`.
    pub f: f64,
    /// `‖∇f(x)‖∞`.
    pub grad_inf: f64,
    /// `‖∇f(x₀)‖∞`.
    pub grad0_inf: f64,
    /// Iterations done.
    pub iterations: usize,
    /// Objective + gradient evaluations.
    pub evaluations: usize,
    /// Why it stopped.
    pub status: Status,
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn inf_norm(a: &[f64]) -> f64 {
    a.iter().fold(0.0, |m, v| m.max(v.abs()))
}

/// Objective + gradient along `x + α d`, evaluated into scratch buffers.
struct Line<'a, F> {
    f: &'a mut F,
    x: &'a [f64],
    d: &'a [f64],
    xt: Vec<f64>,
    gt: Vec<f64>,
    evaluations: usize,
}

impl<F: FnMut(&[f64], &mut [f64]) -> f64> Line<'_, F> {
    /// `(φ(α), φ'(α))`; the point and gradient stay in `xt` / `gt`.
    fn eval(&mut self, alpha: f64) -> (f64, f64) {
        for ((t, x), d) in self.xt.iter_mut().zip(self.x).zip(self.d) {
            *t = x + alpha * d;
        }
        self.evaluations += 1;
        let phi = (self.f)(&self.xt, &mut self.gt);
        (phi, dot(&self.gt, self.d))
    }
}

/// Minimiser of the cubic interpolating `φ` and `φ'` at `a` and `b`, safeguarded to the middle
/// 80 % of the interval (bisection when the cubic has no usable minimiser).
fn cubic_step(a: f64, fa: f64, da: f64, b: f64, fb: f64, db: f64) -> f64 {
    let (lo, hi) = (a.min(b), a.max(b));
    let margin = 0.1 * (hi - lo);
    let d1 = da + db - 3.0 * (fa - fb) / (a - b);
    let disc = d1 * d1 - da * db;
    let mid = 0.5 * (a + b);
    // NaN or negative: no real minimiser.
    if disc.is_nan() || disc < 0.0 || disc.is_infinite() {
        return mid;
    }
    let d2 = (b - a).signum() * disc.sqrt();
    let denom = db - da + 2.0 * d2;
    if denom == 0.0 {
        return mid;
    }
    let t = b - (b - a) * (db + d2 - d1) / denom;
    if t.is_finite() && t >= lo + margin && t <= hi - margin {
        t
    } else {
        mid
    }
}

/// A step satisfying the strong Wolfe conditions (with the rounding slack on sufficient
/// decrease) along a descent direction, or `None`. Leaves `line.xt` / `line.gt` at the step.
fn line_search<F: FnMut(&[f64], &mut [f64]) -> f64>(
    line: &mut Line<'_, F>,
    phi0: f64,
    dphi0: f64,
    alpha0: f64,
    max_evals: usize,
) -> Option<(f64, f64)> {
    const C1: f64 = 1e-4;
    const C2: f64 = 0.9;
    let slack = 1e-12 * phi0.abs();
    let armijo = |alpha: f64, phi: f64| phi <= phi0 + C1 * alpha * dphi0 + slack;
    let curvature = |dphi: f64| dphi.abs() <= -C2 * dphi0;
    let (mut a_prev, mut f_prev, mut d_prev) = (0.0, phi0, dphi0);
    let mut alpha = alpha0;
    let mut evals = 0;
    // Bracketing phase (algorithm 3.5).
    let (mut lo, mut flo, mut dlo, mut hi, mut fhi, mut dhi);
    loop {
        if evals >= max_evals || !alpha.is_finite() {
            return None;
        }
        let (phi, dphi) = line.eval(alpha);
        evals += 1;
        if !phi.is_finite() || !dphi.is_finite() {
            // Overflow: shrink towards the last good point.
            alpha = a_prev + 0.5 * (alpha - a_prev);
            continue;
        }
        if !armijo(alpha, phi) || (evals > 1 && phi > f_prev + slack) {
            (lo, flo, dlo, hi, fhi, dhi) = (a_prev, f_prev, d_prev, alpha, phi, dphi);
            break;
        }
        if curvature(dphi) {
            return Some((alpha, phi));
        }
        if dphi >= 0.0 {
            (lo, flo, dlo, hi, fhi, dhi) = (alpha, phi, dphi, a_prev, f_prev, d_prev);
            break;
        }
        (a_prev, f_prev, d_prev) = (alpha, phi, dphi);
        alpha *= 4.0;
    }
    // Zoom phase (algorithm 3.6): `lo` satisfies sufficient decrease with the lowest value
    // seen, and φ'(lo) (hi − lo) < 0.
    loop {
        if evals >= max_evals || (hi - lo).abs() <= f64::EPSILON * lo.abs().max(hi.abs()) {
            return None;
        }
        let a = cubic_step(lo, flo, dlo, hi, fhi, dhi);
        let (phi, dphi) = line.eval(a);
        evals += 1;
        if !phi.is_finite() || !dphi.is_finite() || !armijo(a, phi) || phi > flo + slack {
            (hi, fhi, dhi) = (a, phi, dphi);
            if !fhi.is_finite() || !dhi.is_finite() {
                // Keep the interpolation finite: bisect next time.
                (fhi, dhi) = (f64::MAX, f64::NAN);
            }
        } else {
            if curvature(dphi) {
                return Some((a, phi));
            }
            if dphi * (hi - lo) >= 0.0 {
                (hi, fhi, dhi) = (lo, flo, dlo);
            }
            (lo, flo, dlo) = (a, phi, dphi);
        }
    }
}

/// Minimises `f` (which returns the objective and writes the gradient into its second argument)
/// from `x0` by L-BFGS.
pub(crate) fn minimize<F: FnMut(&[f64], &mut [f64]) -> f64>(
    mut f: F,
    x0: Vec<f64>,
    opts: &Options,
) -> Minimum {
    let n = x0.len();
    let mut x = x0;
    let mut g = vec![0.0; n];
    let mut fx = f(&x, &mut g);
    let mut evaluations = 1;
    let grad0_inf = inf_norm(&g);
    let target = opts.tol * grad0_inf;
    let mut s_hist: std::collections::VecDeque<Vec<f64>> = Default::default();
    let mut y_hist: std::collections::VecDeque<Vec<f64>> = Default::default();
    let mut rho: std::collections::VecDeque<f64> = Default::default();
    let mut d = vec![0.0; n];
    let mut alpha_buf = vec![0.0; opts.memory.max(1)];
    let mut iterations = 0;
    let mut failed_once = false;
    let (mut best_g, mut best_f, mut since_best) = (f64::INFINITY, f64::INFINITY, 0);
    let status = loop {
        let gi = inf_norm(&g);
        if gi <= target {
            break Status::Converged;
        }
        if iterations >= opts.max_iter {
            break Status::MaxIterations;
        }
        if gi < best_g || fx < best_f - 1e-12 * best_f.abs() {
            (best_g, best_f, since_best) = (best_g.min(gi), best_f.min(fx), 0);
        } else if since_best >= STALL_ITERATIONS {
            break Status::Stalled;
        }
        // Two-loop recursion: d = −H g.
        d.copy_from_slice(&g);
        let m = s_hist.len();
        for i in (0..m).rev() {
            let a = rho[i] * dot(&s_hist[i], &d);
            alpha_buf[i] = a;
            d.iter_mut().zip(&y_hist[i]).for_each(|(q, y)| *q -= a * y);
        }
        if m > 0 {
            let gamma = dot(&s_hist[m - 1], &y_hist[m - 1]) / dot(&y_hist[m - 1], &y_hist[m - 1]);
            d.iter_mut().for_each(|q| *q *= gamma);
        }
        for i in 0..m {
            let b = rho[i] * dot(&y_hist[i], &d);
            let a = alpha_buf[i];
            d.iter_mut()
                .zip(&s_hist[i])
                .for_each(|(r, s)| *r += s * (a - b));
        }
        d.iter_mut().for_each(|v| *v = -*v);
        let mut dphi0 = dot(&g, &d);
        if dphi0.is_nan() || dphi0 >= 0.0 {
            // Not a descent direction (rounding in the memory): restart from steepest descent.
            s_hist.clear();
            y_hist.clear();
            rho.clear();
            d.iter_mut().zip(&g).for_each(|(d, g)| *d = -g);
            dphi0 = dot(&g, &d);
        }
        let alpha0 = if s_hist.is_empty() {
            (1.0 / dot(&d, &d).sqrt()).min(1.0)
        } else {
            1.0
        };
        let mut line = Line {
            f: &mut f,
            x: &x,
            d: &d,
            xt: vec![0.0; n],
            gt: vec![0.0; n],
            evaluations: 0,
        };
        let found = line_search(&mut line, fx, dphi0, alpha0, opts.max_line_search);
        evaluations += line.evaluations;
        let (xt, gt) = (line.xt, line.gt);
        let Some((_, ft)) = found else {
            if failed_once || s_hist.is_empty() {
                break Status::LineSearchFailed;
            }
            failed_once = true;
            s_hist.clear();
            y_hist.clear();
            rho.clear();
            continue;
        };
        failed_once = false;
        iterations += 1;
        since_best += 1;
        let s: Vec<f64> = xt.iter().zip(&x).map(|(a, b)| a - b).collect();
        let y: Vec<f64> = gt.iter().zip(&g).map(|(a, b)| a - b).collect();
        let sy = dot(&s, &y);
        let yy = dot(&y, &y);
        if sy > f64::EPSILON * yy && sy.is_finite() {
            if s_hist.len() == opts.memory.max(1) {
                s_hist.pop_front();
                y_hist.pop_front();
                rho.pop_front();
            }
            s_hist.push_back(s);
            y_hist.push_back(y);
            rho.push_back(1.0 / sy);
        }
        x = xt;
        g = gt;
        fx = ft;
    };
    Minimum {
        grad_inf: inf_norm(&g),
        x,
        f: fx,
        grad0_inf,
        iterations,
        evaluations,
        status,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rosenbrock in `n` dimensions: minimum 0 at all ones.
    fn rosenbrock(x: &[f64], g: &mut [f64]) -> f64 {
        g.iter_mut().for_each(|v| *v = 0.0);
        let mut f = 0.0;
        for i in 0..x.len() - 1 {
            let a = x[i + 1] - x[i] * x[i];
            let b = 1.0 - x[i];
            f += 100.0 * a * a + b * b;
            g[i] += -400.0 * a * x[i] - 2.0 * b;
            g[i + 1] += 200.0 * a;
        }
        f
    }

    #[test]
    fn minimizes_rosenbrock() {
        let r = minimize(
            rosenbrock,
            vec![-1.2, 1.0, -0.5, 0.8, 1.5],
            &Options::default(),
        );
        assert_eq!(r.status, Status::Converged, "{r:?}");
        for v in &r.x {
            assert!((v - 1.0).abs() < 1e-6, "{:?}", r.x);
        }
        assert!(r.grad_inf <= 1e-8 * r.grad0_inf);
    }

    #[test]
    fn minimizes_an_ill_conditioned_quadratic_exactly() {
        // f = ½ Σ c_i (x_i − i)², condition number 1e6.
        let c: Vec<f64> = (0..20).map(|i| 10f64.powf(6.0 * i as f64 / 19.0)).collect();
        let c2 = c.clone();
        let f = move |x: &[f64], g: &mut [f64]| {
            let mut f = 0.0;
            for i in 0..x.len() {
                let e = x[i] - i as f64;
                f += 0.5 * c2[i] * e * e;
                g[i] = c2[i] * e;
            }
            f
        };
        let opts = Options {
            tol: 1e-12,
            ..Options::default()
        };
        let r = minimize(f, vec![0.0; 20], &opts);
        assert_eq!(r.status, Status::Converged, "{r:?}");
        for (i, v) in r.x.iter().enumerate() {
            // |x_i − i| <= |g_i| / c_i <= tol · g0 / c_i.
            assert!(
                (v - i as f64).abs() <= 1e-12 * r.grad0_inf / c[i] * 1.01,
                "{i}: {v}"
            );
        }
    }

    #[test]
    fn stops_at_the_iteration_cap() {
        let opts = Options {
            max_iter: 3,
            ..Options::default()
        };
        let r = minimize(rosenbrock, vec![-1.2, 1.0], &opts);
        assert_eq!(r.status, Status::MaxIterations);
        assert_eq!(r.iterations, 3);
    }

    #[test]
    fn a_zero_gradient_start_is_converged() {
        let r = minimize(
            |x: &[f64], g: &mut [f64]| {
                g.iter_mut().zip(x).for_each(|(g, x)| *g = 2.0 * x);
                dot(x, x)
            },
            vec![0.0; 3],
            &Options::default(),
        );
        assert_eq!((r.status, r.iterations), (Status::Converged, 0));
    }

    #[test]
    fn line_search_steps_satisfy_the_strong_wolfe_conditions() {
        // φ along d from x for a few functions; the accepted step must satisfy both conditions.
        let funcs: Vec<(Vec<f64>, Vec<f64>)> = vec![
            (vec![-1.2, 1.0], vec![1.0, 0.0]),
            (vec![-1.2, 1.0], vec![0.2, -0.3]),
            (vec![2.0, 2.0], vec![-1.0, -3.0]),
        ];
        for (x, d) in funcs {
            let mut f = rosenbrock;
            let mut g = vec![0.0; 2];
            let phi0 = f(&x, &mut g);
            let dphi0 = dot(&g, &d);
            let d: Vec<f64> = if dphi0 < 0.0 {
                d
            } else {
                d.iter().map(|v| -v).collect()
            };
            let dphi0 = -dphi0.abs();
            for alpha0 in [1e-3, 1.0, 100.0] {
                let mut line = Line {
                    f: &mut f,
                    x: &x,
                    d: &d,
                    xt: vec![0.0; 2],
                    gt: vec![0.0; 2],
                    evaluations: 0,
                };
                let (a, phi) = line_search(&mut line, phi0, dphi0, alpha0, 50).unwrap();
                let dphi = dot(&line.gt, &d);
                assert!(phi <= phi0 + 1e-4 * a * dphi0 + 1e-12 * phi0.abs());
                assert!(dphi.abs() <= 0.9 * dphi0.abs(), "{a} {dphi} {dphi0}");
            }
        }
    }

    #[test]
    fn cubic_step_finds_a_quadratic_minimum() {
        // φ = (α − 0.3)²: φ(0) = 0.09, φ'(0) = −0.6, φ(1) = 0.49, φ'(1) = 1.4.
        let t = cubic_step(0.0, 0.09, -0.6, 1.0, 0.49, 1.4);
        assert!((t - 0.3).abs() < 1e-12, "{t}");
        // No usable minimiser → bisection.
        assert_eq!(cubic_step(0.0, 0.0, 1.0, 1.0, 1.0, 1.0), 0.5);
    }
}
