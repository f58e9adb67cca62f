//! Fused, multi-threaded f32 CPU kernels on plain row-major slices (no Burn types): the
//! building blocks of the specialised [`VitOps`](crate::ops::VitOps) implementations of the
//! CPU backends.
//!
//! - [`linear`]: one GEMM over every row of the batch (the `gemm` crate, runtime-dispatched
//!   AVX2/AVX-512 kernels), the bias, GELU or residual add fused into its epilogue;
//! - [`layer_norm`]: one pass for the moments and one for the output, rows in parallel;
//! - [`attention`]: reads `q`, `k`, `v` in place from the `qkv` projection, parallel over
//!   batch × heads, exact softmax, and writes `[B, T, D]` directly (no permute copies).
//!
//! Threads come from rayon's global pool (the one Burn's CPU backends and `gemm` use).

pub mod math;

use rayon::prelude::*;

/// Work (multiply-adds) above which a GEMM is split across threads.
const PARALLEL_GEMM_WORK: usize = 1 << 21;
/// Rows handed to one rayon task by the row-wise kernels (amortises scheduling).
const ROW_BLOCK: usize = 16;

/// What is applied to `x·W + b` before it is written.
#[derive(Debug, Clone, Copy)]
pub enum Epilogue<'a> {
    /// Nothing.
    None,
    /// Exact (erf) GELU.
    Gelu,
    /// `residual + gamma ⊙ (x·W + b)` (`gamma` = DINOv2's LayerScale, or none).
    Residual {
        /// `[M, N]`, row-major.
        residual: &'a [f32],
        /// `[N]`.
        gamma: Option<&'a [f32]>,
    },
}

/// `C[M, N] = A[M, K] · B[K, N]` into `dst` with arbitrary strides, `dst = dst + A·B` when
/// `accumulate`, else `dst = scale · A·B`.
///
/// # Safety
/// Every pointer/stride pair must address valid memory for the given sizes, `dst` must not
/// alias `a` or `b`, and no other thread may access `dst`'s elements during the call.
#[allow(clippy::too_many_arguments)]
pub unsafe fn gemm_raw(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_rs: isize,
    dst_cs: isize,
    accumulate: bool,
    a: *const f32,
    a_rs: isize,
    a_cs: isize,
    b: *const f32,
    b_rs: isize,
    b_cs: isize,
    scale: f32,
    threaded: bool,
) {
    let par = if threaded && m.saturating_mul(n).saturating_mul(k) >= PARALLEL_GEMM_WORK {
        gemm::Parallelism::Rayon(0)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: forwarded to the caller's contract.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            dst_cs,
            dst_rs,
            accumulate,
            a,
            a_cs,
            a_rs,
            b,
            b_cs,
            b_rs,
            if accumulate { 1.0 } else { 0.0 },
            scale,
            false,
            false,
            false,
            par,
        );
    }
}

/// Applies `f(rows, block)` to blocks of [`ROW_BLOCK`] `n`-wide rows of `out` in parallel
/// (`rows`: the element range of the block in `out`).
fn par_rows(
    out: &mut [f32],
    n: usize,
    f: impl Fn(std::ops::Range<usize>, &mut [f32]) + Sync + Send,
) {
    if n == 0 {
        return;
    }
    let blk = n * ROW_BLOCK;
    out.par_chunks_mut(blk).enumerate().for_each(|(i, chunk)| {
        let start = i * blk;
        f(start..start + chunk.len(), chunk)
    });
}

/// A fused Linear layer: `epilogue(x·W + b)`.
///
/// # Shapes
/// - `x`: `[M, K]`; `w`: `[K, N]` (Burn's `[in, out]` layout); `bias`: `[N]`; output `[M, N]`.
///
/// # Panics
/// On slice lengths that do not match the sizes (a programming error of the caller).
pub fn linear(
    x: &[f32],
    m: usize,
    k: usize,
    w: &[f32],
    n: usize,
    bias: Option<&[f32]>,
    epilogue: Epilogue<'_>,
) -> Vec<f32> {
    assert_eq!(x.len(), m * k, "linear: x is not [M, K]");
    assert_eq!(w.len(), k * n, "linear: w is not [K, N]");
    if let Some(b) = bias {
        assert_eq!(b.len(), n, "linear: bias is not [N]");
    }
    // Prefill: the bias (and the residual when it is added unscaled), so the GEMM accumulates.
    let plain_residual = match epilogue {
        Epilogue::Residual {
            residual,
            gamma: None,
        } => {
            assert_eq!(residual.len(), m * n, "linear: residual is not [M, N]");
            Some(residual)
        }
        _ => None,
    };
    let prefilled = bias.is_some() || plain_residual.is_some();
    let mut out: Vec<f32> = Vec::with_capacity(m * n);
    if prefilled {
        let zeros = vec![0.0f32; if bias.is_some() { 0 } else { n }];
        let b = bias.unwrap_or(&zeros);
        let blk = n * ROW_BLOCK;
        out.spare_capacity_mut()[..m * n]
            .par_chunks_mut(blk)
            .enumerate()
            .for_each(|(i, chunk)| {
                let start = i * blk;
                let res = plain_residual.map_or(&[][..], |r| &r[start..start + chunk.len()]);
                math::fill_bias(chunk, res, b)
            });
    }
    // SAFETY: `out` has capacity `[M, N]` (row-major), `x` is `[M, K]`, `w` `[K, N]`, all
    // distinct buffers; the GEMM reads `out` only when it was prefilled.
    unsafe {
        gemm_raw(
            m,
            n,
            k,
            out.spare_capacity_mut().as_mut_ptr().cast::<f32>(),
            n as isize,
            1,
            prefilled,
            x.as_ptr(),
            k as isize,
            1,
            w.as_ptr(),
            n as isize,
            1,
            1.0,
            true,
        );
        // SAFETY: every element was written, by `fill_bias` (when prefilled) and by the GEMM.
        out.set_len(m * n);
    }
    match epilogue {
        Epilogue::None => {}
        Epilogue::Gelu => par_rows(&mut out, n, |_, chunk| math::gelu_in_place(chunk)),
        Epilogue::Residual {
            residual,
            gamma: Some(g),
        } => {
            assert_eq!(residual.len(), m * n, "linear: residual is not [M, N]");
            assert_eq!(g.len(), n, "linear: gamma is not [N]");
            par_rows(&mut out, n, |rows, chunk| {
                math::residual_scaled(chunk, &residual[rows], g)
            })
        }
        Epilogue::Residual { gamma: None, .. } => {}
    }
    out
}

/// LayerNorm over the last dimension: `(x - mean) / sqrt(var + eps) · weight + bias` with the
/// biased variance (PyTorch's).
///
/// # Shapes
/// - `x`: `[rows, D]`; `weight`, `bias`: `[D]`; output `[rows, D]`.
pub fn layer_norm(x: &[f32], d: usize, weight: &[f32], bias: &[f32], eps: f32) -> Vec<f32> {
    assert!(
        d > 0 && x.len().is_multiple_of(d),
        "layer_norm: x is not [rows, D]"
    );
    assert_eq!(weight.len(), d, "layer_norm: weight is not [D]");
    assert_eq!(bias.len(), d, "layer_norm: bias is not [D]");
    let mut out = vec![0.0f32; x.len()];
    par_rows(&mut out, d, |rows, chunk| {
        math::layer_norm_rows(&x[rows], chunk, weight, bias, eps)
    });
    out
}

/// A raw output pointer shared by tasks that write disjoint elements.
#[derive(Clone, Copy)]
struct SharedMut(*mut f32);
// SAFETY: only used by `attention`, whose tasks write disjoint column blocks.
unsafe impl Send for SharedMut {}
// SAFETY: as above.
unsafe impl Sync for SharedMut {}

impl SharedMut {
    /// The pointer (a method, so closures capture the `Sync` wrapper, not the raw field).
    fn get(self) -> *mut f32 {
        self.0
    }
}

/// Multi-head self-attention from the fused `qkv` projection (rows `q | k | v`, each split
/// into `heads` blocks of `D / heads`): `softmax(scale · q·kᵀ) · v` per head, concatenated.
///
/// With `cls_only` only the first query (the CLS token) is computed; keys and values use
/// every token, so row 0 equals the full computation's.
///
/// # Shapes
/// - `qkv`: `[B, T, 3D]`; output `[B, T, D]` (`[B, 1, D]` with `cls_only`).
pub fn attention(
    qkv: &[f32],
    b: usize,
    t: usize,
    d: usize,
    heads: usize,
    scale: f32,
    cls_only: bool,
) -> Vec<f32> {
    assert_eq!(qkv.len(), b * t * 3 * d, "attention: qkv is not [B, T, 3D]");
    assert!(
        heads > 0 && d.is_multiple_of(heads),
        "attention: D not divisible by heads"
    );
    let hd = d / heads;
    let tq = if cls_only { 1 } else { t };
    let mut out: Vec<f32> = Vec::with_capacity(b * tq * d);
    let dst = SharedMut(out.spare_capacity_mut().as_mut_ptr().cast::<f32>());
    let row = (3 * d) as isize;
    (0..b * heads).into_par_iter().for_each_init(
        || vec![0.0f32; tq * t],
        |scores, task| {
            let (bi, h) = (task / heads, task % heads);
            let base = bi * t * 3 * d + h * hd;
            let q = qkv[base..].as_ptr();
            let k = qkv[base + d..].as_ptr();
            let v = qkv[base + 2 * d..].as_ptr();
            // SAFETY: q/k/v address rows `bi` of `qkv` with row stride 3D and `hd` columns,
            // all within the slice (checked above); `scores` is `[tq, t]`.
            unsafe {
                gemm_raw(
                    tq,
                    t,
                    hd,
                    scores.as_mut_ptr(),
                    t as isize,
                    1,
                    false,
                    q,
                    row,
                    1,
                    k,
                    1,
                    row,
                    scale,
                    false,
                );
            }
            math::softmax_rows(scores, t);
            // SAFETY: the destination block (rows of image `bi`, columns h·hd .. (h+1)·hd of
            // the `[B, tq, D]` output) is written by this task only; `v` as for `k`.
            unsafe {
                gemm_raw(
                    tq,
                    hd,
                    t,
                    dst.get().add(bi * tq * d + h * hd),
                    d as isize,
                    1,
                    false,
                    scores.as_ptr(),
                    t as isize,
                    1,
                    v,
                    row,
                    1,
                    1.0,
                    false,
                );
            }
        },
    );
    // SAFETY: the `b · heads` tasks wrote every `[tq, hd]` block of the `[B, tq, D]` output.
    unsafe { out.set_len(b * tq * d) };
    out
}

/// `scale · g · Sᵀ` for a ±1 matrix `S` `[E, J]` stored as bits (row-major, `words_per_row`
/// u64 per row, bit set = +1, padding bits ignored), without unpacking it: each product is a
/// sign flip of `g`. Rows of `S` in parallel; columns in blocks of 4096 so that the block of
/// every image's gradient stays in cache while the rows pass over it. Each output is summed in
/// a fixed order, so an image's result does not depend on `n` or the thread count.
///
/// # Shapes
/// - `g`: `[N, J]`; output `[N, E]`.
pub fn sign_matmul(
    g: &[f32],
    n: usize,
    in_dim: usize,
    bits: &[u64],
    words_per_row: usize,
    out_dim: usize,
    scale: f32,
) -> Vec<f32> {
    assert_eq!(g.len(), n * in_dim, "sign_matmul: g is not [N, J]");
    assert_eq!(
        words_per_row,
        in_dim.div_ceil(64),
        "sign_matmul: words per row"
    );
    assert_eq!(
        bits.len(),
        out_dim * words_per_row,
        "sign_matmul: bits is not [E, J/64]"
    );
    const BLOCK_WORDS: usize = 64;
    const ROWS: usize = 8;
    let mut out_t = vec![0.0f32; out_dim * n]; // [E, N]
    if n == 0 || out_dim == 0 {
        return out_t;
    }
    out_t
        .par_chunks_mut(n * ROWS)
        .enumerate()
        .for_each(|(c, o)| {
            let r0 = c * ROWS;
            let rows = o.len() / n;
            let mut acc = vec![[0.0f32; 16]; rows * n];
            for wb in (0..words_per_row).step_by(BLOCK_WORDS) {
                let we = (wb + BLOCK_WORDS).min(words_per_row);
                let (j0, j1) = (wb * 64, (we * 64).min(in_dim));
                for r in 0..rows {
                    let row = (r0 + r) * words_per_row;
                    let rb = &bits[row + wb..row + we];
                    for i in 0..n {
                        math::sign_dot_acc(
                            rb,
                            &g[i * in_dim + j0..i * in_dim + j1],
                            &mut acc[r * n + i],
                        );
                    }
                }
            }
            for (k, a) in acc.iter().enumerate() {
                o[k] = a.iter().sum::<f32>() * scale;
            }
        });
    let mut out = vec![0.0f32; n * out_dim];
    for e in 0..out_dim {
        for i in 0..n {
            out[i * out_dim + e] = out_t[e * n + i];
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                (s as f32 / u32::MAX as f32) * 2.0 - 1.0
            })
            .collect()
    }

    fn naive_linear(x: &[f32], m: usize, k: usize, w: &[f32], n: usize, b: &[f32]) -> Vec<f64> {
        let mut out = vec![0.0f64; m * n];
        for i in 0..m {
            for j in 0..n {
                let mut acc = b[j] as f64;
                for l in 0..k {
                    acc += x[i * k + l] as f64 * w[l * n + j] as f64;
                }
                out[i * n + j] = acc;
            }
        }
        out
    }

    fn max_diff(a: &[f32], b: &[f64]) -> f64 {
        assert_eq!(a.len(), b.len());
        a.iter()
            .zip(b)
            .map(|(&x, &y)| (x as f64 - y).abs())
            .fold(0.0, f64::max)
    }

    #[test]
    fn linear_with_every_epilogue_matches_a_naive_f64_reference() {
        let (m, k, n) = (67, 96, 130);
        let (x, w, b) = (data(m * k, 1), data(k * n, 2), data(n, 3));
        let res = data(m * n, 4);
        let gamma = data(n, 5);
        let want = naive_linear(&x, m, k, &w, n, &b);
        let got = linear(&x, m, k, &w, n, Some(&b), Epilogue::None);
        assert!(max_diff(&got, &want) < 1e-4);
        let got = linear(&x, m, k, &w, n, None, Epilogue::None);
        let nob: Vec<f64> = want
            .iter()
            .zip(b.iter().cycle())
            .map(|(v, &b)| v - b as f64)
            .collect();
        assert!(max_diff(&got, &nob) < 1e-4);
        let got = linear(&x, m, k, &w, n, Some(&b), Epilogue::Gelu);
        let g: Vec<f64> = want.iter().map(|&v| math::gelu(v as f32) as f64).collect();
        assert!(max_diff(&got, &g) < 1e-4);
        let got = linear(
            &x,
            m,
            k,
            &w,
            n,
            Some(&b),
            Epilogue::Residual {
                residual: &res,
                gamma: None,
            },
        );
        let r: Vec<f64> = want.iter().zip(&res).map(|(v, &r)| v + r as f64).collect();
        assert!(max_diff(&got, &r) < 1e-4);
        let got = linear(
            &x,
            m,
            k,
            &w,
            n,
            Some(&b),
            Epilogue::Residual {
                residual: &res,
                gamma: Some(&gamma),
            },
        );
        let r: Vec<f64> = (0..m * n)
            .map(|i| res[i] as f64 + gamma[i % n] as f64 * want[i])
            .collect();
        assert!(max_diff(&got, &r) < 1e-4);
    }

    #[test]
    fn sign_matmul_matches_the_unpacked_product_for_any_batch() {
        let (e, j): (usize, usize) = (37, 64 * 70 + 13); // crosses a column block and a partial word
        let wpr = j.div_ceil(64);
        let bits: Vec<u64> = (0..e * wpr)
            .map(|i| (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xA5A5)
            .collect();
        let n = 3;
        let g = data(n * j, 21);
        let got = sign_matmul(&g, n, j, &bits, wpr, e, 0.5);
        for i in 0..n {
            for r in 0..e {
                let want: f64 = (0..j)
                    .map(|c| {
                        let s = if bits[r * wpr + c / 64] >> (c % 64) & 1 == 1 {
                            1.0
                        } else {
                            -1.0
                        };
                        s * g[i * j + c] as f64
                    })
                    .sum::<f64>()
                    * 0.5;
                assert!((got[i * e + r] as f64 - want).abs() < 1e-3, "({i}, {r})");
            }
        }
        // An image's row is the same alone as in the batch (bit for bit).
        let one = sign_matmul(&g[j..2 * j], 1, j, &bits, wpr, e, 0.5);
        assert_eq!(&one[..], &got[e..2 * e]);
    }

    #[test]
    fn layer_norm_matches_f64() {
        let d = 50;
        let x: Vec<f32> = data(7 * d, 9).iter().map(|v| v * 3.0 + 1.5).collect();
        let (w, b) = (data(d, 10), data(d, 11));
        let got = layer_norm(&x, d, &w, &b, 1e-6);
        let mut want = vec![0.0f64; x.len()];
        for r in 0..7 {
            let xr: Vec<f64> = x[r * d..(r + 1) * d].iter().map(|&v| v as f64).collect();
            let mean = xr.iter().sum::<f64>() / d as f64;
            let var = xr.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / d as f64;
            for j in 0..d {
                want[r * d + j] = (xr[j] - mean) / (var + 1e-6).sqrt() * w[j] as f64 + b[j] as f64;
            }
        }
        assert!(max_diff(&got, &want) < 1e-5);
    }

    #[test]
    fn attention_matches_f64_and_cls_only_is_row_zero() {
        let (b, t, d, heads) = (3, 11, 24, 4);
        let hd = d / heads;
        let qkv: Vec<f32> = data(b * t * 3 * d, 12).iter().map(|v| v * 2.0).collect();
        let scale = (hd as f32).powf(-0.5);
        let got = attention(&qkv, b, t, d, heads, scale, false);
        let at = |bi: usize, ti: usize, part: usize, h: usize, c: usize| {
            qkv[bi * t * 3 * d + ti * 3 * d + part * d + h * hd + c] as f64
        };
        let mut want = vec![0.0f64; b * t * d];
        for bi in 0..b {
            for h in 0..heads {
                for i in 0..t {
                    let s: Vec<f64> = (0..t)
                        .map(|j| {
                            (0..hd)
                                .map(|c| at(bi, i, 0, h, c) * at(bi, j, 1, h, c))
                                .sum::<f64>()
                                * scale as f64
                        })
                        .collect();
                    let m = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    let e: Vec<f64> = s.iter().map(|v| (v - m).exp()).collect();
                    let z: f64 = e.iter().sum();
                    for c in 0..hd {
                        want[bi * t * d + i * d + h * hd + c] =
                            (0..t).map(|j| e[j] / z * at(bi, j, 2, h, c)).sum();
                    }
                }
            }
        }
        assert!(max_diff(&got, &want) < 1e-5);
        let cls = attention(&qkv, b, t, d, heads, scale, true);
        for bi in 0..b {
            let row0: Vec<f64> = got[bi * t * d..bi * t * d + d]
                .iter()
                .map(|&v| v as f64)
                .collect();
            assert!(max_diff(&cls[bi * d..(bi + 1) * d], &row0) < 1e-6);
        }
    }
}
