//! Multi-head self-attention with a fused `qkv` projection (DINO `Attention`).

use burn::nn::Linear;
use burn::prelude::*;

use crate::layer_norm::LayerNorm;
use crate::linear::linear;
use crate::ops::{LinearEpilogue, VitOps};

/// DINO's `Attention`: `qkv` (rows q | k | v) then `proj`.
#[derive(Module, Debug)]
pub struct Attention<B: Backend> {
    /// Fused query/key/value projection, PyTorch weight `[3D, D]`.
    pub qkv: Linear<B>,
    /// Output projection, PyTorch weight `[D, D]` (the default FUNGI target layer).
    pub proj: Linear<B>,
    /// LayerNorm of each head's queries (timm `qk_norm`), `[head_dim]`.
    pub q_norm: Option<LayerNorm<B>>,
    /// LayerNorm of each head's keys.
    pub k_norm: Option<LayerNorm<B>>,
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
            q_norm: None,
            k_norm: None,
            num_heads,
            scale: ((dim / num_heads) as f64).powf(-0.5),
        }
    }

    /// Attention from the `qkv` output to the concatenated heads (the input of `proj`), by the
    /// backend's [`VitOps::vit_attention`].
    ///
    /// With `cls_only`, only the CLS query (token 0) is computed (keys/values still use every
    /// token): row 0 of the result is identical to the full computation.
    ///
    /// # Shapes
    /// - `qkv`: `[B, T, 3D]`
    /// - output: `[B, T, D]`, or `[B, 1, D]` with `cls_only`
    pub fn core(&self, qkv: Tensor<B, 3>, cls_only: bool) -> Tensor<B, 3>
    where
        B: VitOps,
    {
        let qkv = match (&self.q_norm, &self.k_norm) {
            (Some(qn), Some(kn)) => self.qk_normed(qkv, qn, kn),
            _ => qkv,
        };
        B::vit_attention(qkv, self.num_heads, self.scale, cls_only)
    }

    /// `qkv` with each head's query and key LayerNorm-ed (timm's `q_norm(q)`, `k_norm(k)`).
    fn qk_normed(&self, qkv: Tensor<B, 3>, qn: &LayerNorm<B>, kn: &LayerNorm<B>) -> Tensor<B, 3> {
        let [b, t, d3] = qkv.dims();
        let d = d3 / 3;
        let (h, hd) = (self.num_heads, d / self.num_heads);
        let part = |i: usize| qkv.clone().slice([0..b, 0..t, i * d..(i + 1) * d]);
        let q = qn
            .forward(part(0).reshape([b, t, h, hd]))
            .reshape([b, t, d]);
        let k = kn
            .forward(part(1).reshape([b, t, h, hd]))
            .reshape([b, t, d]);
        Tensor::cat(vec![q, k, part(2)], 2)
    }

    /// Full forward.
    ///
    /// # Shapes
    /// - input `[B, T, D]`, output `[B, T, D]` (`[B, 1, D]` with `cls_only`).
    pub fn forward(&self, x: Tensor<B, 3>, cls_only: bool) -> Tensor<B, 3>
    where
        B: VitOps,
    {
        let qkv = B::vit_linear(x, &self.qkv, LinearEpilogue::None);
        B::vit_linear(self.core(qkv, cls_only), &self.proj, LinearEpilogue::None)
    }
}
