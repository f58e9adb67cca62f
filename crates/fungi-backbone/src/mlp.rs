//! Transformer MLP: `fc1`, exact (erf) GELU, `fc2`.

use burn::nn::Linear;
use burn::prelude::*;
use burn::tensor::activation::gelu;

use crate::linear::linear;

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
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        self.fc2.forward(gelu(self.fc1.forward(x)))
    }
}
