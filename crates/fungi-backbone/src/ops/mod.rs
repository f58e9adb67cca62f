//! Fused ViT operations: Burn's *backend extension* pattern.
//!
//! [`VitOps`] extends [`Backend`] with the three operations that dominate a ViT forward — a
//! Linear layer with its epilogue (bias, GELU, residual add), LayerNorm and multi-head
//! attention from the fused `qkv` projection. Every method has a default composed from ordinary
//! tensor ops ([`composed`]), so every backend works unchanged (autodiff included: the defaults
//! are differentiable); a backend overrides what it can do better. The CPU backend
//! [`Flex`](burn::backend::Flex) (feature `flex`) runs the fused, multi-threaded kernels of
//! [`cpu`].
//!
//! Implementations are provided, behind features, for `Flex` (`flex`, specialised), `NdArray`
//! (`ndarray`), the CubeCL backends CUDA/WGPU/ROCm and their `Fusion` wrapper (`cubecl`), and
//! `Autodiff<B>` of any of them (always). Another backend needs a one-line
//! `impl VitOps for ThatBackend {}` here (Rust's orphan rule keeps it out of user crates).

pub mod composed;
pub mod cpu;
#[cfg(feature = "flex")]
mod flex;
#[cfg(feature = "flex")]
pub use flex::fused_enabled;

use burn::nn::Linear;
use burn::prelude::*;

use crate::layer_norm::LayerNorm;

/// What a fused Linear applies to `x·W + b`.
#[derive(Debug, Clone)]
pub enum LinearEpilogue<B: Backend> {
    /// Nothing: `x·W + b`.
    None,
    /// Exact (erf) GELU: `gelu(x·W + b)`.
    Gelu,
    /// Residual add: `residual + gamma ⊙ (x·W + b)` (`gamma`: DINOv2's LayerScale, if any).
    Residual {
        /// `[B, T, N]`.
        residual: Tensor<B, 3>,
        /// `[N]`.
        gamma: Option<Tensor<B, 1>>,
    },
}

/// ViT operations a backend may fuse (see the module docs). All methods have composed defaults.
pub trait VitOps: Backend {
    /// `epilogue(x·W + b)` for a Linear layer.
    ///
    /// # Shapes
    /// - `x`: `[B, T, K]`; output `[B, T, N]` (`linear.weight` is `[K, N]`).
    fn vit_linear(
        x: Tensor<Self, 3>,
        linear: &Linear<Self>,
        epilogue: LinearEpilogue<Self>,
    ) -> Tensor<Self, 3> {
        composed::linear(x, linear, epilogue)
    }

    /// LayerNorm over the last dimension.
    ///
    /// # Shapes
    /// - `x`: `[B, T, D]`; output the same.
    fn vit_layer_norm(x: Tensor<Self, 3>, norm: &LayerNorm<Self>) -> Tensor<Self, 3> {
        norm.forward(x)
    }

    /// Multi-head attention from the fused `qkv` output (rows `q | k | v`) to the concatenated
    /// heads; with `cls_only` only the CLS query (row 0) is computed.
    ///
    /// # Shapes
    /// - `qkv`: `[B, T, 3D]`; output `[B, T, D]` (`[B, 1, D]` with `cls_only`).
    fn vit_attention(
        qkv: Tensor<Self, 3>,
        num_heads: usize,
        scale: f64,
        cls_only: bool,
    ) -> Tensor<Self, 3> {
        composed::attention(qkv, num_heads, scale, cls_only)
    }

    /// `scale · g · Sᵀ` for a ±1 matrix `S` `[E, J]` given as bits (row-major, `words_per_row`
    /// u64 per row, bit set = +1): FUNGI's random projection of the per-image gradients.
    ///
    /// # Shapes
    /// - `g`: `[N, J]`; output `[N, E]`.
    fn vit_sign_matmul(
        g: Tensor<Self, 2>,
        bits: &[u64],
        words_per_row: usize,
        out_dim: usize,
        scale: f32,
    ) -> Tensor<Self, 2> {
        composed::sign_matmul(g, bits, words_per_row, out_dim, scale)
    }

    /// Whether the backend's tensors live in host memory (the CPU backends). Callers use it to
    /// keep large constant operands, such as the projection, in their compact host form instead
    /// of caching an expanded copy on the device. Default: `false` (a separate device).
    fn vit_host_memory() -> bool {
        false
    }

    /// Bytes the backend's memory pool has reserved on `device`, where the backend reports it
    /// (the CubeCL backends: CUDA, WGPU, ROCm); `None` elsewhere (the CPU backends: see the
    /// process's RSS instead).
    fn vit_device_memory_reserved(_device: &Self::Device) -> Option<u64> {
        None
    }
}

/// An autodiff backend whose inner backend also has [`VitOps`] (what FUNGI's gradient engine
/// needs: the prefix runs on the inner backend, the suffix under autodiff).
pub trait AutodiffVitOps:
    burn::tensor::backend::AutodiffBackend<InnerBackend: VitOps> + VitOps
{
}

impl<B> AutodiffVitOps for B
where
    B: burn::tensor::backend::AutodiffBackend + VitOps,
    B::InnerBackend: VitOps,
{
}

impl<B: VitOps, C: burn_autodiff::checkpoint::strategy::CheckpointStrategy> VitOps
    for burn_autodiff::Autodiff<B, C>
{
    fn vit_host_memory() -> bool {
        B::vit_host_memory()
    }
    fn vit_device_memory_reserved(device: &Self::Device) -> Option<u64> {
        B::vit_device_memory_reserved(device)
    }
}

#[cfg(feature = "ndarray")]
impl VitOps for burn_ndarray::NdArray {
    fn vit_host_memory() -> bool {
        true
    }
}

#[cfg(feature = "ndarray")]
impl VitOps for burn_ndarray::NdArray<f64> {
    fn vit_host_memory() -> bool {
        true
    }
}

#[cfg(feature = "cubecl")]
impl<R, F, I, BT> VitOps for burn_cubecl::CubeBackend<R, F, I, BT>
where
    R: burn_cubecl::CubeRuntime,
    F: burn_cubecl::FloatElement,
    I: burn_cubecl::IntElement,
    BT: burn_cubecl::BoolElement,
    burn_cubecl::CubeBackend<R, F, I, BT>: Backend<Device = R::Device>,
{
    fn vit_device_memory_reserved(device: &Self::Device) -> Option<u64> {
        <R as burn_cubecl::cubecl::Runtime>::client(device)
            .memory_usage()
            .ok()
            .map(|m| m.bytes_reserved)
    }
}

#[cfg(feature = "cubecl")]
impl<B> VitOps for burn_fusion::Fusion<B>
where
    B: burn_fusion::FusionBackend + VitOps,
    burn_fusion::Fusion<B>: Backend<Device = B::Device>,
{
    fn vit_device_memory_reserved(device: &Self::Device) -> Option<u64> {
        B::vit_device_memory_reserved(device)
    }
}
