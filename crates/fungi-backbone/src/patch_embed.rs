//! Patch embedding: a `Conv2d(in_chans, D, kernel = stride = patch_size)` named `proj`.

use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::prelude::*;

/// DINO's `PatchEmbed`.
#[derive(Module, Debug)]
pub struct PatchEmbed<B: Backend> {
    /// The patchifying convolution, weight `[D, C, P, P]`.
    pub proj: Conv2d<B>,
}

impl<B: Backend> PatchEmbed<B> {
    /// Random init.
    pub fn new(in_chans: usize, dim: usize, patch: usize, device: &B::Device) -> Self {
        Self {
            proj: Conv2dConfig::new([in_chans, dim], [patch, patch])
                .with_stride([patch, patch])
                .init(device),
        }
    }

    /// Patch tokens in row-major grid order (as `flatten(2).transpose(1, 2)`).
    ///
    /// # Shapes
    /// - input `[B, C, H, W]`
    /// - output `[B, (H/P)*(W/P), D]` (remainders dropped, as PyTorch's conv does)
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 3> {
        let y = self.proj.forward(x); // [B, D, h, w]
        let [b, d, h, w] = y.dims();
        y.reshape([b, d, h * w]).swap_dims(1, 2)
    }
}
