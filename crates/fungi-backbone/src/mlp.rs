//! Transformer MLP: `fc1`, exact (erf) GELU, `fc2`.

use burn::nn::Linear;
use burn::prelude::*;
use burn::tensor::activation::gelu;

use crate::linear::linear;

/// Exact (erf) GELU. Under autodiff it is composed from `erf` so that its derivative is exact on
/// every backend (burn-ndarray 0.21's fused GELU backward is off by up to 8.7e-4); without
/// autodiff the backend's fused kernel is used.
pub fn gelu_exact<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    if B::ad_enabled(&x.device()) {
        let cdf = x
            .clone()
            .mul_scalar(std::f64::consts::FRAC_1_SQRT_2)
            .erf()
            .add_scalar(1.0)
            .mul_scalar(0.5);
        x * cdf
    } else {
        gelu(x)
    }
}

/// DINO's `Mlp`.
#[derive(Module, Debug)]
pub struct Mlp<B: Backend> {
    /// `D -> hidden`, PyTorch weight `[hidden, D]`.
    pub fc1: Linear<B>,
    /// `hidden -> D`, PyTorch weight `[D, hidden]`.
    pub fc2: Linear<B>,
}

impl<B: Backend> Mlp<B> {
    /// Random init (DINO style).
    pub fn new(dim: usize, hidden: usize, device: &B::Device) -> Self {
        Self {
            fc1: linear(dim, hidden, true, device),
            fc2: linear(hidden, dim, true, device),
        }
    }

    /// # Shapes
    /// - input `[B, T, D]`, output `[B, T, D]`.
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3>
    where
        B: crate::ops::VitOps,
    {
        use crate::ops::LinearEpilogue;
        let g = B::vit_linear(x, &self.fc1, LinearEpilogue::Gelu);
        B::vit_linear(g, &self.fc2, LinearEpilogue::None)
    }
}
