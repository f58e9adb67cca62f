//! Helpers around Burn's `Linear` (weight stored `[in, out]`, PyTorch stores `[out, in]`).

use burn::nn::{Linear, LinearConfig};
use burn::prelude::*;

/// A Linear layer initialised like DINO's `_init_weights` (weight ~ trunc-normal std 0.02, bias 0).
pub(crate) fn linear<B: Backend>(
    d_in: usize,
    d_out: usize,
    bias: bool,
    device: &B::Device,
) -> Linear<B> {
    LinearConfig::new(d_in, d_out)
        .with_bias(bias)
        .with_initializer(burn::nn::Initializer::Normal {
            mean: 0.0,
            std: 0.02,
        })
        .init(device)
}
