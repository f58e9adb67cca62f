//! Branch-free, auto-vectorisable `exp` and exact-GELU (`erf`) in f32.
//!
//! Both are written as straight-line arithmetic on `f32` (clamps via `min`/`max`, the power of
//! two built from the exponent bits) so that LLVM vectorises the loops that call them. The
//! slice kernels below are compiled for AVX-512 and AVX2+FMA and chosen at run time
//! ([`fungi_simd::multiversion!`]); `mul_add` is a true fused multiply-add on every path (a single
//! instruction there, libm's correctly rounded `fmaf` on the generic path), so results are
//! bit-identical on every x86 CPU.

use fungi_simd::multiversion;

/// Lanes of the vectorised reductions (one AVX-512 register of f32).
const LANES: usize = 16;

/// `Σ f(x)` with [`LANES`] partial sums (vectorisable; fixed order, so deterministic).
#[inline(always)]
fn lane_sum(xs: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut acc = [0.0f32; LANES];
    let chunks = xs.chunks_exact(LANES);
    let rem = chunks.remainder();
    for c in chunks {
        for i in 0..LANES {
            acc[i] += f(c[i]);
        }
    }
    let mut s = 0.0f32;
    for &r in rem {
        s += f(r);
    }
    acc.iter().sum::<f32>() + s
}

/// `max(xs)` with [`LANES`] partial maxima.
#[inline(always)]
fn lane_max(xs: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let chunks = xs.chunks_exact(LANES);
    let rem = chunks.remainder();
    for c in chunks {
        for i in 0..LANES {
            acc[i] = acc[i].max(c[i]);
        }
    }
    rem.iter()
        .chain(acc.iter())
        .copied()
        .fold(f32::NEG_INFINITY, f32::max)
}

/// `x ← exp(x - max)` in place, returning `Σ x` ([`LANES`] partial sums).
#[inline(always)]
fn exp_shifted_sum(xs: &mut [f32], max: f32) -> f32 {
    let mut acc = [0.0f32; LANES];
    let mut chunks = xs.chunks_exact_mut(LANES);
    for c in &mut chunks {
        for i in 0..LANES {
            c[i] = exp(c[i] - max);
            acc[i] += c[i];
        }
    }
    let mut s = 0.0f32;
    for r in chunks.into_remainder() {
        *r = exp(*r - max);
        s += *r;
    }
    acc.iter().sum::<f32>() + s
}

multiversion! {
    /// Exact GELU in place.
    pub fn gelu_in_place(xs: &mut [f32]) {
        for v in xs.iter_mut() {
            *v = gelu(*v);
        }
    }
}

multiversion! {
    /// Row-wise softmax in place over rows of `width` (max-subtracted; `exp` then `· 1/sum`).
    pub fn softmax_rows(xs: &mut [f32], width: usize) {
        for s in xs.chunks_mut(width) {
            let max = lane_max(s);
            let sum = exp_shifted_sum(s, max);
            let inv = 1.0 / sum;
            for v in s.iter_mut() {
                *v *= inv;
            }
        }
    }
}

multiversion! {
    /// LayerNorm of rows of `weight.len()`: `(x - mean) / sqrt(var + eps) · w + b`.
    pub fn layer_norm_rows(x: &[f32], out: &mut [f32], weight: &[f32], bias: &[f32], eps: f32) {
        let d = weight.len();
        for (xr, row) in x.chunks(d).zip(out.chunks_mut(d)) {
            let mean = lane_sum(xr, |v| v) / d as f32;
            let var = lane_sum(xr, |v| (v - mean) * (v - mean)) / d as f32;
            let denom = (var + eps).sqrt();
            for (((o, &v), &w), &b) in row.iter_mut().zip(xr).zip(weight).zip(bias) {
                *o = (v - mean) / denom * w + b;
            }
        }
    }
}

multiversion! {
    /// `out = res + gamma ⊙ out` over rows of `gamma.len()`.
    pub fn residual_scaled(out: &mut [f32], res: &[f32], gamma: &[f32]) {
        let n = gamma.len();
        for (row, r) in out.chunks_mut(n).zip(res.chunks(n)) {
            for ((o, &x), &g) in row.iter_mut().zip(r).zip(gamma) {
                *o = x + g * *o;
            }
        }
    }
}

multiversion! {
    /// Writes rows of `bias.len()` with `res + bias` (or `bias` when `res` is empty) into
    /// not-yet-initialised memory.
    pub fn fill_bias(out: &mut [std::mem::MaybeUninit<f32>], res: &[f32], bias: &[f32]) {
        let n = bias.len();
        if res.is_empty() {
            for row in out.chunks_mut(n) {
                for (o, &b) in row.iter_mut().zip(bias) {
                    o.write(b);
                }
            }
        } else {
            for (row, r) in out.chunks_mut(n).zip(res.chunks(n)) {
                for ((o, &x), &b) in row.iter_mut().zip(r).zip(bias) {
                    o.write(x + b);
                }
            }
        }
    }
}

multiversion! {
    /// `acc[l] += Σ ±g[k]` over the `k ≡ l (mod 16)` of the block: `+g` where the bit of
    /// `bits` is set, `-g` where it is clear (bit `k % 64` of word `k / 64`).
    pub fn sign_dot_acc(bits: &[u64], g: &[f32], acc: &mut [f32; 16]) {
        for (&w, chunk) in bits.iter().zip(g.chunks(64)) {
            let flip = !w;
            if chunk.len() == 64 {
                for q in 0..4 {
                    let h = ((flip >> (q * 16)) & 0xFFFF) as u32;
                    for l in 0..16 {
                        let m = (h >> l) & 1;
                        acc[l] += f32::from_bits(chunk[q * 16 + l].to_bits() ^ (m << 31));
                    }
                }
            } else {
                for (k, &x) in chunk.iter().enumerate() {
                    let m = ((flip >> k) & 1) as u32;
                    acc[k % 16] += f32::from_bits(x.to_bits() ^ (m << 31));
                }
            }
        }
    }
}

/// `e^x` to ~1 ulp for `x` in `[-87.3, 88.7]` (Cephes `expf`: Cody–Waite range reduction
/// `x = n·ln2 + r`, degree-6 polynomial on `r`, `2^n` from the exponent bits). Inputs below
/// the range give ~1e-38 instead of 0 (irrelevant after a max-subtracted softmax).
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Round to nearest (even) with the 1.5·2^23 trick: branch-free, no libm call.
    const MAGIC: f32 = 12_582_912.0;
    let x = x.clamp(-87.336_54, 88.376_26);
    let n = (x * LOG2E + MAGIC) - MAGIC;
    let r = n.mul_add(-LN2_LO, n.mul_add(-LN2_HI, x));
    let mut p = 1.987_569_1e-4_f32;
    p = p.mul_add(r, 1.398_199_9e-3);
    p = p.mul_add(r, 8.333_452e-3);
    p = p.mul_add(r, 4.166_579_6e-2);
    p = p.mul_add(r, 1.666_666_5e-1);
    p = p.mul_add(r, 0.5);
    let y = p.mul_add(r * r, r) + 1.0;
    // 2^n for n in [-126, 127]: exponent bits.
    let bits = ((n as i32 + 127) as u32) << 23;
    y * f32::from_bits(bits)
}

/// `erf(x)` in f32, absolute error below 1e-6 (the rational approximation used by Eigen and
/// XLA for f32: odd degree-13 numerator over even degree-8 denominator, on `x` clamped to ±4,
/// where `erf` is 1 to f32 precision).
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = -2.726_142_3e-10_f32;
    p = p.mul_add(x2, 2.770_681_4e-8);
    p = p.mul_add(x2, -2.101_024e-6);
    p = p.mul_add(x2, -5.692_506_4e-5);
    p = p.mul_add(x2, -7.349_906_3e-4);
    p = p.mul_add(x2, -2.954_6e-3);
    p = p.mul_add(x2, -1.609_603_3e-2);
    let p = x * p;
    let mut q = -1.456_607_2e-5_f32;
    q = q.mul_add(x2, -2.133_740_6e-4);
    q = q.mul_add(x2, -1.682_827e-3);
    q = q.mul_add(x2, -7.373_329e-3);
    q = q.mul_add(x2, -1.426_474e-2);
    p / q
}

/// Exact (erf) GELU: `x · ½ · (1 + erf(x / √2))`, as PyTorch's `gelu(approximate="none")`.
#[inline(always)]
pub fn gelu(x: f32) -> f32 {
    x * 0.5 * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// erf in f64 by its Maclaurin series (|x| < 3) or the continued fraction of erfc.
    fn erf64(x: f64) -> f64 {
        if x.abs() < 3.0 {
            let (mut term, mut sum, mut n) = (x, x, 0.0);
            while term.abs() > 1e-18 * sum.abs().max(1e-300) {
                n += 1.0;
                term *= -x * x / n;
                sum += term / (2.0 * n + 1.0);
            }
            sum * 2.0 / std::f64::consts::PI.sqrt()
        } else {
            // erfc(x) = exp(-x²)/√π · 1/(x + 1/2/(x + 1/(x + 3/2/(x + ...))))
            let a = x.abs();
            let mut f = 0.0;
            for k in (1..60).rev() {
                f = (k as f64 / 2.0) / (a + f);
            }
            let erfc = (-a * a).exp() / std::f64::consts::PI.sqrt() / (a + f);
            (1.0 - erfc) * x.signum()
        }
    }

    #[test]
    fn exp_is_within_two_ulp_on_the_softmax_range() {
        let mut worst: f64 = 0.0;
        for i in 0..=200_000 {
            let x = -87.0 + 87.0 * 1.02 * (i as f32 / 200_000.0);
            let got = exp(x) as f64;
            let want = (x as f64).exp();
            worst = worst.max(((got - want) / want).abs());
        }
        assert!(worst < 2.5e-7, "max relative error {worst:e}");
        assert_eq!(exp(0.0), 1.0);
    }

    #[test]
    fn erf_and_gelu_match_f64() {
        let (mut e_worst, mut g_worst): (f64, f64) = (0.0, 0.0);
        for i in 0..=100_000 {
            let x = -10.0 + 20.0 * (i as f32 / 100_000.0);
            let want = erf64(x as f64);
            e_worst = e_worst.max((erf(x) as f64 - want).abs());
            let gw = x as f64 * 0.5 * (1.0 + erf64(x as f64 / std::f64::consts::SQRT_2));
            g_worst = g_worst.max((gelu(x) as f64 - gw).abs() / (1.0 + gw.abs()));
        }
        assert!(e_worst < 1e-6, "erf max abs error {e_worst:e}");
        assert!(g_worst < 1e-6, "gelu max error {g_worst:e}");
        assert_eq!(erf(0.0), 0.0);
    }

    #[test]
    fn slice_kernels_agree_with_the_scalar_definitions() {
        let xs: Vec<f32> = (0..1000).map(|i| (i as f32 * 0.37).sin() * 6.0).collect();
        let mut g = xs.clone();
        gelu_in_place(&mut g);
        for (a, &x) in g.iter().zip(&xs) {
            assert_eq!(*a, gelu(x));
        }
        let mut s = xs.clone();
        softmax_rows(&mut s, 100);
        for row in s.chunks(100) {
            let sum: f64 = row.iter().map(|&v| v as f64).sum();
            assert!((sum - 1.0).abs() < 1e-5);
        }
    }
}
