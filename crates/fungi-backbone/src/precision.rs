//! Mixed precision for the untracked prefix, in the manner of PyTorch's autocast (fungivision's
//! `use_fp16`): the Linear layers' matrix products run in half precision, everything else in f32.
//!
//! [`Vit::with_half_linears`] copies a model with the weight matrices of every block's Linear
//! layers (`attn.qkv`, `attn.proj`, `mlp.fc1`, `mlp.fc2`) stored in `bf16`/`f16`; biases,
//! LayerNorms, LayerScale, the patch embedding, tokens and positions stay `f32`. A Linear
//! whose weight dtype differs from its input's ([`composed::linear`](crate::ops::composed::linear))
//! casts the input to the weight's dtype, multiplies (the backend's half GEMM: f32 accumulation
//! on CUDA), casts the product back and adds the f32 bias. So the residual stream, LayerNorm,
//! softmax and attention's two products stay `f32` — more precise than autocast, which also
//! runs attention in half.

use burn::module::Param;
use burn::nn::Linear;
use burn::prelude::*;
use burn::tensor::FloatDType;
use serde::{Deserialize, Serialize};

use crate::error::Error;

use crate::vit::Vit;

/// Precision of the prefix's matrix products.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Everything in f32.
    #[default]
    F32,
    /// Linear products in bfloat16 (fungivision's `use_fp16=True` autocasts to bf16).
    Bf16,
    /// Linear products in IEEE half.
    F16,
}

impl Precision {
    /// The half dtype, `None` for f32.
    pub fn half_dtype(self) -> Option<FloatDType> {
        match self {
            Self::F32 => None,
            Self::Bf16 => Some(FloatDType::BF16),
            Self::F16 => Some(FloatDType::F16),
        }
    }
}

impl std::str::FromStr for Precision {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "f32" => Ok(Self::F32),
            "bf16" => Ok(Self::Bf16),
            "f16" => Ok(Self::F16),
            other => Err(format!("precision `{other}`: expected f32, bf16 or f16")),
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::F32 => "f32",
            Self::Bf16 => "bf16",
            Self::F16 => "f16",
        })
    }
}

fn half_weight<B: Backend>(l: &Linear<B>, dtype: FloatDType) -> Linear<B> {
    let mut l = l.clone();
    l.weight = Param::from_tensor(l.weight.val().cast(dtype));
    l
}

impl<B: Backend> Vit<B> {
    /// A copy whose blocks' Linear weight matrices are stored in `dtype` (see the module docs);
    /// its forward and [`Vit::tap`] then run their Linear products in that precision.
    ///
    /// # Errors
    /// [`Error::UnsupportedPrecision`] when the backend has no `dtype` tensors (burn-ndarray).
    pub fn with_half_linears(&self, dtype: FloatDType) -> Result<Self, Error> {
        let device = self.device();
        if !B::supports_dtype(&device, dtype.into()) {
            return Err(Error::UnsupportedPrecision {
                precision: format!("{dtype:?}").to_lowercase(),
                backend: B::name(&device),
            });
        }
        let mut v = self.clone();
        for b in v.blocks.iter_mut() {
            b.attn.qkv = half_weight(&b.attn.qkv, dtype);
            b.attn.proj = half_weight(&b.attn.proj, dtype);
            b.mlp.fc1 = half_weight(&b.mlp.fc1, dtype);
            b.mlp.fc2 = half_weight(&b.mlp.fc2, dtype);
        }
        Ok(v)
    }
}
