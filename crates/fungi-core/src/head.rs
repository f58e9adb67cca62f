//! Random linear projection heads (`nn.Linear(E, L)` with PyTorch's default init).

use burn::prelude::*;
use rand::RngExt;

use crate::error::{Error, Result};
use crate::objective::StateTensor;
use crate::rng::stream;
use crate::state::take_state;

/// A linear head `z = x·Wᵀ + b`, PyTorch layout `W: [L, E]`, kept as a constant tensor.
#[derive(Debug, Clone)]
pub struct Head<B: Backend> {
    /// `Wᵀ`, `[E, L]`.
    weight_t: Tensor<B, 2>,
    /// `[L]`.
    bias: Tensor<B, 1>,
    weight: StateTensor,
    bias_state: StateTensor,
}

impl<B: Backend> Head<B> {
    /// `nn.Linear(in_dim, out_dim)` default init — weight and bias `U(-1/√in, 1/√in)` — drawn
    /// from the stream `(seed, "<name>", 0)`.
    pub fn random(
        name: &str,
        in_dim: usize,
        out_dim: usize,
        seed: u64,
        device: &B::Device,
    ) -> Self {
        let mut rng = stream(seed, name, 0);
        let bound = 1.0 / (in_dim as f32).sqrt();
        let mut u = |n: usize| -> Vec<f32> {
            (0..n)
                .map(|_| (rng.random::<f32>() * 2.0 - 1.0) * bound)
                .collect()
        };
        let w = u(out_dim * in_dim);
        let b = u(out_dim);
        Self::from_pytorch(
            StateTensor {
                shape: vec![out_dim, in_dim],
                data: w,
            },
            StateTensor {
                shape: vec![out_dim],
                data: b,
            },
            device,
        )
        .expect("consistent shapes")
    }

    /// From PyTorch-layout weight `[L, E]` and bias `[L]`.
    pub fn from_pytorch(
        weight: StateTensor,
        bias: StateTensor,
        device: &B::Device,
    ) -> Result<Self> {
        if weight.shape.len() != 2
            || bias.shape != [weight.shape[0]]
            || weight.data.len() != weight.shape.iter().product::<usize>()
        {
            return Err(Error::Mismatch {
                what: "head weight/bias".into(),
                expected: "weight [L, E] and bias [L]".into(),
                found: format!("{:?} and {:?}", weight.shape, bias.shape),
            });
        }
        let w = Tensor::<B, 2>::from_data(
            TensorData::new(weight.data.clone(), weight.shape.clone()),
            device,
        );
        let b = Tensor::<B, 1>::from_data(
            TensorData::new(bias.data.clone(), bias.shape.clone()),
            device,
        );
        Ok(Self {
            weight_t: w.transpose(),
            bias: b,
            weight,
            bias_state: bias,
        })
    }

    /// `[L, E]` / `[L]` of this head.
    pub fn dims(&self) -> (usize, usize) {
        (self.weight.shape[0], self.weight.shape[1])
    }

    /// Applies the head on the same backend.
    ///
    /// # Shapes
    /// - input `[V, E]`, output `[V, L]`
    pub fn apply(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        x.matmul(self.weight_t.clone()) + self.bias.clone().unsqueeze()
    }

    /// Device of the head's tensors.
    pub fn device(&self) -> B::Device {
        self.bias.device()
    }

    /// The state tensors `(weight, bias)`.
    pub fn state(&self) -> (StateTensor, StateTensor) {
        (self.weight.clone(), self.bias_state.clone())
    }

    /// This head as an objective's state entries `{name}.weight` and `{name}.bias` (for
    /// [`crate::Objective::state`]).
    pub fn state_entries(&self, name: &str) -> [(String, StateTensor); 2] {
        let (w, b) = self.state();
        [(format!("{name}.weight"), w), (format!("{name}.bias"), b)]
    }

    /// A head of this one's shape, on its device, from the entries `{name}.weight` and
    /// `{name}.bias` of an objective's state (for [`crate::Objective::load_state`]); `self` is
    /// unchanged.
    ///
    /// # Errors
    /// A missing entry or one of another shape, named `{objective}.{name}.weight`.
    pub fn loaded(
        &self,
        state: &std::collections::BTreeMap<String, StateTensor>,
        objective: &str,
        name: &str,
    ) -> Result<Self> {
        let (l, e) = self.dims();
        Head::from_pytorch(
            take_state(state, objective, &format!("{name}.weight"), &[l, e])?.clone(),
            take_state(state, objective, &format!("{name}.bias"), &[l])?.clone(),
            &self.device(),
        )
    }
}

impl<B: burn::tensor::backend::AutodiffBackend> Head<B> {
    /// Applies the head on the inner (non-autodiff) backend, for forward-only work.
    ///
    /// # Shapes
    /// - input `[N, E]`, output `[N, L]`
    pub fn apply_inner(&self, x: Tensor<B::InnerBackend, 2>) -> Tensor<B::InnerBackend, 2> {
        x.matmul(self.weight_t.clone().inner()) + self.bias.clone().inner().unsqueeze()
    }
}
