//! The composed (default) implementations of [`VitOps`](super::VitOps), from ordinary tensor
//! ops: correct on every backend and differentiable.

use burn::nn::Linear;
use burn::prelude::*;
use burn::tensor::activation::softmax;

use super::LinearEpilogue;
use crate::mlp::gelu_exact;

/// `epilogue(x·W + b)`.
///
/// # Shapes
/// - `x`: `[B, T, K]`; output `[B, T, N]`.
pub fn linear<B: Backend>(
    x: Tensor<B, 3>,
    linear: &Linear<B>,
    epilogue: LinearEpilogue<B>,
) -> Tensor<B, 3> {
    let w = linear.weight.val();
    let y = if w.dtype() != x.dtype() {
        // Mixed precision (crate::precision): the product in the weight's (half) dtype, the
        // rest in the input's.
        let dt = burn::tensor::FloatDType::from(x.dtype());
        let y = x
            .cast(burn::tensor::FloatDType::from(w.dtype()))
            .matmul(w.unsqueeze())
            .cast(dt);
        match &linear.bias {
            Some(b) => y + b.val().cast(dt).unsqueeze(),
            None => y,
        }
    } else {
        linear.forward(x)
    };
    match epilogue {
        LinearEpilogue::None => y,
        LinearEpilogue::Gelu => gelu_exact(y),
        LinearEpilogue::Residual { residual, gamma } => match gamma {
            Some(g) => residual + y * g.unsqueeze(),
            None => residual + y,
        },
    }
}

/// Multi-head attention from `qkv` (see [`VitOps::vit_attention`](super::VitOps::vit_attention)).
///
/// # Shapes
/// - `qkv`: `[B, T, 3D]`; output `[B, T, D]` (`[B, 1, D]` with `cls_only`).
pub fn attention<B: Backend>(
    qkv: Tensor<B, 3>,
    num_heads: usize,
    scale: f64,
    cls_only: bool,
) -> Tensor<B, 3> {
    let [b, t, d3] = qkv.dims();
    let d = d3 / 3;
    let h = num_heads;
    let hd = d / h;
    let qkv = qkv.reshape([b, t, 3, h, hd]);
    let pick = |i: usize, rows: usize| {
        qkv.clone()
            .slice([0..b, 0..rows, i..i + 1, 0..h, 0..hd])
            .reshape([b, rows, h, hd])
            .swap_dims(1, 2)
    };
    let tq = if cls_only { 1 } else { t };
    let q = pick(0, tq); // [B, H, Tq, hd]
    let k = pick(1, t);
    let v = pick(2, t);
    let attn = q.matmul(k.swap_dims(2, 3)).mul_scalar(scale);
    let attn = softmax(attn, 3);
    attn.matmul(v).swap_dims(1, 2).reshape([b, tq, d])
}

/// `scale · g · Sᵀ` for a bit-packed ±1 matrix: unpacks column tiles of at most 4 M entries
/// ([`unpack_signs`]) and accumulates their matmuls ([`tiled_matmul_t`]).
///
/// # Shapes
/// - `g`: `[N, J]`; output `[N, E]`.
pub fn sign_matmul<B: Backend>(
    g: Tensor<B, 2>,
    bits: &[u64],
    words_per_row: usize,
    out_dim: usize,
    scale: f32,
) -> Tensor<B, 2> {
    tiled_matmul_t(g, out_dim, |c0, w| {
        unpack_signs(bits, words_per_row, out_dim, c0, w)
    })
    .mul_scalar(scale)
}

/// Columns `c0 .. c0 + w` of a bit-packed ±1 matrix `[E, J]` (row-major bits, `words_per_row`
/// u64 per row, bit set = +1) as `[E, w]` row-major `f32`, rows in parallel.
pub fn unpack_signs(
    bits: &[u64],
    words_per_row: usize,
    out_dim: usize,
    c0: usize,
    w: usize,
) -> Vec<f32> {
    use rayon::prelude::*;
    let mut tile = vec![0f32; out_dim * w];
    tile.par_chunks_mut(w.max(1))
        .enumerate()
        .for_each(|(r, row)| {
            let rb = &bits[r * words_per_row..(r + 1) * words_per_row];
            for (k, o) in row.iter_mut().enumerate() {
                let c = c0 + k;
                *o = if rb[c / 64] >> (c % 64) & 1 == 1 {
                    1.0
                } else {
                    -1.0
                };
            }
        });
    tile
}

/// `g · Mᵀ` for a matrix `M` `[E, J]` handed out in column tiles by `tile(c0, w)` (`[E, w]`
/// row-major), so that at most 4 M entries of `M` are on the device at a time.
///
/// # Shapes
/// - `g`: `[N, J]`; output `[N, E]`.
pub fn tiled_matmul_t<B: Backend>(
    g: Tensor<B, 2>,
    out_dim: usize,
    tile: impl Fn(usize, usize) -> Vec<f32>,
) -> Tensor<B, 2> {
    let [n, j] = g.dims();
    let device = g.device();
    let cols = ((4 << 20) / out_dim.max(1)).max(64) / 64 * 64;
    let mut acc = Tensor::<B, 2>::zeros([n, out_dim], &device);
    let mut c0 = 0;
    while c0 < j {
        let w = cols.min(j - c0);
        let t = Tensor::<B, 2>::from_data(
            burn::tensor::TensorData::new(tile(c0, w), [out_dim, w]),
            &device,
        );
        acc = acc + g.clone().slice([0..n, c0..c0 + w]).matmul(t.transpose());
        c0 += w;
    }
    acc
}
