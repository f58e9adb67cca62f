//! [`VitOps`] for burn-flex: the fused kernels of [`super::cpu`] on the tensors' own buffers.
//!
//! Each op takes the `f32` buffers of its inputs (zero-copy when contiguous), runs the kernel
//! and wraps the new buffer as a tensor. Other dtypes fall back to the composed defaults.

use burn::backend::flex::{Flex, FlexTensor};
use burn::nn::Linear;
use burn::prelude::*;
use burn::tensor::{DType, TensorData, TensorPrimitive};

use super::cpu::{self, Epilogue};
use super::{composed, LinearEpilogue, VitOps};
use crate::layer_norm::LayerNorm;

/// The contiguous `f32` buffer of a float tensor, or `None` for another dtype.
fn f32_tensor<const D: usize>(x: Tensor<Flex, D>) -> Option<FlexTensor> {
    let t = x.into_primitive().tensor();
    if t.dtype() != DType::F32 {
        return None;
    }
    Some(if t.as_slice::<f32>().is_some() {
        t
    } else {
        t.to_contiguous()
    })
}

fn slice(t: &FlexTensor) -> &[f32] {
    t.as_slice::<f32>()
        .expect("contiguous f32 (checked by f32_tensor)")
}

fn wrap<const D: usize>(data: Vec<f32>, shape: [usize; D]) -> Tensor<Flex, D> {
    Tensor::from_primitive(TensorPrimitive::Float(FlexTensor::from_data(
        TensorData::new(data, shape),
    )))
}

/// Whether the fused kernels are used: always, unless `FUNGI_CPU_KERNELS=composed` is set
/// (read once; for benchmarks and bisecting a numerical difference).
pub fn fused_enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("FUNGI_CPU_KERNELS").as_deref() != Ok("composed"))
}

/// Whether the fused kernels take `x`: they are enabled and `x` is `f32`.
fn kernel_applies<const D: usize>(x: &Tensor<Flex, D>) -> bool {
    fused_enabled() && x.dtype() == DType::F32
}

impl VitOps for Flex {
    fn vit_host_memory() -> bool {
        true
    }

    fn vit_linear(
        x: Tensor<Self, 3>,
        linear: &Linear<Self>,
        epilogue: LinearEpilogue<Self>,
    ) -> Tensor<Self, 3> {
        let w = linear.weight.val();
        let b = linear.bias.as_ref().map(|b| b.val());
        let all_f32 = kernel_applies(&x)
            && kernel_applies(&w)
            && b.as_ref().is_none_or(kernel_applies)
            && match &epilogue {
                LinearEpilogue::Residual { residual, gamma } => {
                    kernel_applies(residual) && gamma.as_ref().is_none_or(kernel_applies)
                }
                _ => true,
            };
        if !all_f32 {
            return composed::linear(x, linear, epilogue);
        }
        let [bsz, t, k] = x.dims();
        let [_, n] = w.dims();
        let xt = f32_tensor(x).expect("f32");
        let wt = f32_tensor(w).expect("f32");
        let bt = b.map(|b| f32_tensor(b).expect("f32"));
        let (gelu, rt, gt) = match epilogue {
            LinearEpilogue::None => (false, None, None),
            LinearEpilogue::Gelu => (true, None, None),
            LinearEpilogue::Residual { residual, gamma } => (
                false,
                Some(f32_tensor(residual).expect("f32")),
                gamma.map(|g| f32_tensor(g).expect("f32")),
            ),
        };
        let epi = match (&rt, gelu) {
            (Some(r), _) => Epilogue::Residual {
                residual: slice(r),
                gamma: gt.as_ref().map(slice),
            },
            (None, true) => Epilogue::Gelu,
            (None, false) => Epilogue::None,
        };
        let out = cpu::linear(
            slice(&xt),
            bsz * t,
            k,
            slice(&wt),
            n,
            bt.as_ref().map(slice),
            epi,
        );
        wrap(out, [bsz, t, n])
    }

    fn vit_layer_norm(x: Tensor<Self, 3>, norm: &LayerNorm<Self>) -> Tensor<Self, 3> {
        let (w, b) = (norm.weight.val(), norm.bias.val());
        if !(kernel_applies(&x) && kernel_applies(&w) && kernel_applies(&b)) {
            return norm.forward(x);
        }
        let shape = x.dims();
        let (xt, wt, bt) = (
            f32_tensor(x).expect("f32"),
            f32_tensor(w).expect("f32"),
            f32_tensor(b).expect("f32"),
        );
        let out = cpu::layer_norm(
            slice(&xt),
            shape[2],
            slice(&wt),
            slice(&bt),
            norm.eps as f32,
        );
        wrap(out, shape)
    }

    fn vit_attention(
        qkv: Tensor<Self, 3>,
        num_heads: usize,
        scale: f64,
        cls_only: bool,
    ) -> Tensor<Self, 3> {
        if !kernel_applies(&qkv) {
            return composed::attention(qkv, num_heads, scale, cls_only);
        }
        let [b, t, d3] = qkv.dims();
        let d = d3 / 3;
        let qt = f32_tensor(qkv).expect("f32");
        let out = cpu::attention(slice(&qt), b, t, d, num_heads, scale as f32, cls_only);
        wrap(out, [b, if cls_only { 1 } else { t }, d])
    }

    fn vit_sign_matmul(
        g: Tensor<Self, 2>,
        bits: &[u64],
        words_per_row: usize,
        out_dim: usize,
        scale: f32,
    ) -> Tensor<Self, 2> {
        if !kernel_applies(&g) {
            return composed::sign_matmul(g, bits, words_per_row, out_dim, scale);
        }
        let [n, j] = g.dims();
        let gt = f32_tensor(g).expect("f32");
        let out = cpu::sign_matmul(slice(&gt), n, j, bits, words_per_row, out_dim, scale);
        wrap(out, [n, out_dim])
    }
}

#[cfg(test)]
mod tests {
    use burn::tensor::Distribution;

    use super::*;
    use crate::linear::linear;

    fn max_diff<const D: usize>(a: Tensor<Flex, D>, b: Tensor<Flex, D>) -> f32 {
        (a - b).abs().max().into_scalar()
    }

    fn rand<const D: usize>(shape: [usize; D]) -> Tensor<Flex, D> {
        Tensor::random(shape, Distribution::Uniform(-1.0, 1.0), &Default::default())
    }

    #[test]
    fn fused_ops_match_the_composed_defaults() {
        let dev = Default::default();
        let x = rand([3, 17, 48]);
        let lin = linear::<Flex>(48, 40, true, &dev);
        let res = rand([3, 17, 40]);
        let gamma = rand([40]);
        for epi in [
            LinearEpilogue::None,
            LinearEpilogue::Gelu,
            LinearEpilogue::Residual {
                residual: res.clone(),
                gamma: None,
            },
            LinearEpilogue::Residual {
                residual: res.clone(),
                gamma: Some(gamma.clone()),
            },
        ] {
            let fused = Flex::vit_linear(x.clone(), &lin, epi.clone());
            let comp = composed::linear(x.clone(), &lin, epi);
            assert!(max_diff(fused, comp) < 1e-5);
        }
        // A transposed (non-contiguous) input goes through the same kernel.
        let xt = rand([3, 48, 17]).swap_dims(1, 2);
        let d = max_diff(
            Flex::vit_linear(xt.clone(), &lin, LinearEpilogue::None),
            composed::linear(xt, &lin, LinearEpilogue::None),
        );
        assert!(d < 1e-5);

        let mut norm = LayerNorm::<Flex>::new(48, 1e-6, &dev);
        norm.weight = burn::module::Param::from_tensor(rand([48]));
        norm.bias = burn::module::Param::from_tensor(rand([48]));
        let d = max_diff(
            Flex::vit_layer_norm(x.clone(), &norm),
            norm.forward(x.clone()),
        );
        assert!(d < 1e-5);

        let qkv = rand([2, 13, 3 * 24]).mul_scalar(3.0);
        for cls_only in [false, true] {
            let d = max_diff(
                Flex::vit_attention(qkv.clone(), 4, 0.2, cls_only),
                composed::attention(qkv.clone(), 4, 0.2, cls_only),
            );
            assert!(d < 1e-5, "cls_only {cls_only}: {d}");
        }

        let g = rand([3, 200]);
        let bits: Vec<u64> = (0..7 * 4)
            .map(|i| 0x9E37_79B9_7F4A_7C15u64.wrapping_mul(i + 1))
            .collect();
        let d = max_diff(
            Flex::vit_sign_matmul(g.clone(), &bits, 4, 7, 0.1),
            composed::sign_matmul(g, &bits, 4, 7, 0.1),
        );
        assert!(d < 1e-5);
    }
}
