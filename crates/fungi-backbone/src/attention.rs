//! Multi-head self-attention with a fused `qkv` projection (DINO `Attention`).

use burn::nn::Linear;
use burn::prelude::*;
use burn::tensor::activation::softmax;

use crate::linear::linear;

/// DINO's `Attention`: `qkv` (rows q | k | v) then `proj`.
#[derive(Module, Debug)]
pub struct Attention<B: Backend> {
    /// Fused query/key/value projection, PyTorch weight `[3D, D]`.
    pub qkv: Linear<B>,
    /// Output projection, PyTorch weight `[D, D]` (the default FUNGI target layer).
    pub proj: Linear<B>,
    /// Number of heads.
    pub num_heads: usize,
    /// Score scale `head_dim^-0.5`.
    pub scale: f64,
}

impl<B: Backend> Attention<B> {
    /// Random init (DINO style).
    pub fn new(dim: usize, num_heads: usize, qkv_bias: bool, device: &B::Device) -> Self {
        Self {
            qkv: linear(dim, 3 * dim, qkv_bias, device),
            proj: linear(dim, dim, true, device),
            num_heads,
            scale: ((dim / num_heads) as f64).powf(-0.5),
        }
    }

    /// Attention from the `qkv` output to the concatenated heads (the input of `proj`).
    ///
    /// With `cls_only`, only the CLS query (token 0) is computed (keys/values still use every
    /// token): row 0 of the result is identical to the full computation.
    ///
    /// # Shapes
    /// - `qkv`: `[B, T, 3D]`
    /// - output: `[B, T, D]`, or `[B, 1, D]` with `cls_only`
    pub fn core(&self, qkv: Tensor<B, 3>, cls_only: bool) -> Tensor<B, 3> {
        let [b, t, d3] = qkv.dims();
        let d = d3 / 3;
        let h = self.num_heads;
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
        let attn = q.matmul(k.swap_dims(2, 3)).mul_scalar(self.scale);
        let attn = softmax(attn, 3);
        attn.matmul(v).swap_dims(1, 2).reshape([b, tq, d])
    }

    /// Full forward.
    ///
    /// # Shapes
    /// - input `[B, T, D]`, output `[B, T, D]` (`[B, 1, D]` with `cls_only`).
    pub fn forward(&self, x: Tensor<B, 3>, cls_only: bool) -> Tensor<B, 3> {
        let a = self.core(self.qkv.forward(x), cls_only);
        self.proj.forward(a)
    }
}
