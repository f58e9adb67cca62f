//! LayerNorm with PyTorch parameter names (`weight`, `bias`).

use burn::module::Param;
use burn::prelude::*;

/// Layer normalisation over the last dimension, named like `torch.nn.LayerNorm`.
#[derive(Module, Debug)]
pub struct LayerNorm<B: Backend> {
    /// Scale `[D]`.
    pub weight: Param<Tensor<B, 1>>,
    /// Shift `[D]`.
    pub bias: Param<Tensor<B, 1>>,
    /// Epsilon added to the (biased) variance.
    pub eps: f64,
}

impl<B: Backend> LayerNorm<B> {
    /// A LayerNorm with weight 1 and bias 0.
    pub fn new(dim: usize, eps: f64, device: &B::Device) -> Self {
        Self {
            weight: Param::from_tensor(Tensor::ones([dim], device)),
            bias: Param::from_tensor(Tensor::zeros([dim], device)),
            eps,
        }
    }

    /// # Shapes
    /// - input `[..., D]`, output the same.
    pub fn forward<const N: usize>(&self, x: Tensor<B, N>) -> Tensor<B, N> {
        let (var, mean) = x.clone().var_mean_bias(N - 1);
        let x = (x - mean) / (var + self.eps).sqrt();
        x * self.weight.val().unsqueeze() + self.bias.val().unsqueeze()
    }
}
