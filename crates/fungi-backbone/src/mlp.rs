//! Transformer MLP: `fc1`, exact (erf) GELU, `fc2`.

use burn::nn::Linear;
use burn::prelude::*;
use burn::tensor::activation::gelu;

use crate::family::Act;
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

/// tanh-approximated GELU, `0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))`.
pub fn gelu_tanh<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    let inner = (x.clone() + x.clone().powi_scalar(3).mul_scalar(0.044715))
        .mul_scalar((2.0 / std::f64::consts::PI).sqrt());
    x.clone() * inner.tanh().add_scalar(1.0).mul_scalar(0.5)
}

/// CLIP's QuickGELU, `x * sigmoid(1.702 x)`.
pub fn quick_gelu<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    x.clone() * burn::tensor::activation::sigmoid(x.mul_scalar(1.702))
}

/// The MLP's activation.
pub fn activate<B: Backend, const D: usize>(act: Act, x: Tensor<B, D>) -> Tensor<B, D> {
    match act {
        Act::Gelu => gelu_exact(x),
        Act::GeluTanh => gelu_tanh(x),
        Act::QuickGelu => quick_gelu(x),
    }
}

/// DINO's / timm's `Mlp`.
#[derive(Module, Debug)]
pub struct Mlp<B: Backend> {
    /// `D -> hidden`, PyTorch weight `[hidden, D]`.
    pub fc1: Linear<B>,
    /// `hidden -> D`, PyTorch weight `[D, hidden]`.
    pub fc2: Linear<B>,
    /// Activation between them.
    #[module(skip)]
    pub act: Act,
}

impl<B: Backend> Mlp<B> {
    /// Random init (DINO style).
    pub fn new(dim: usize, hidden: usize, device: &B::Device) -> Self {
        Self {
            fc1: linear(dim, hidden, true, device),
            fc2: linear(hidden, dim, true, device),
            act: Act::Gelu,
        }
    }

    /// `act(fc1(x))`: the input of `fc2` (the erf GELU fused into `fc1` where the backend can).
    ///
    /// # Shapes
    /// - input `[B, T, D]`, output `[B, T, hidden]`.
    pub fn hidden(&self, x: Tensor<B, 3>) -> Tensor<B, 3>
    where
        B: crate::ops::VitOps,
    {
        use crate::ops::LinearEpilogue;
        match self.act {
            Act::Gelu => B::vit_linear(x, &self.fc1, LinearEpilogue::Gelu),
            act => activate(act, B::vit_linear(x, &self.fc1, LinearEpilogue::None)),
        }
    }

    /// # Shapes
    /// - input `[B, T, D]`, output `[B, T, D]`.
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3>
    where
        B: crate::ops::VitOps,
    {
        use crate::ops::LinearEpilogue;
        let g = self.hidden(x);
        B::vit_linear(g, &self.fc2, LinearEpilogue::None)
    }
}
