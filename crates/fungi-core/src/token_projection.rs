//! Per-token projected gradients without per-token gradients.
//!
//! Dense FUNGI needs, for every token `t`, `f_t[k] = s · Σ_o Σ_i δ_t[o] · P[k, o·J + i] · ã_t[i]`
//! (`J = I + 1`, `ã_t = [a_t, 1]`): the projection of the gradient `δ_t ⊗ ã_t` of token `t`'s
//! own pass through the target Linear. Materialising those gradients costs `T·O·J` floats per
//! image (ViT-S/16 at 512 px: 1024 × 147 840 = 605 MB) and the paper's einsum does exactly that.
//! Here the projection rows are taken `kc` at a time, rearranged to `Q [O, kc·J]`
//! (`Q[o, κ·J + i] = P[k0 + κ, o·J + i]`), and
//!
//! `f[:, k0..k0+kc] = rowdot(Δ · Q reshaped [R, kc, J], Ã)`
//!
//! — one GEMM `[R, O] × [O, kc·J]` per chunk (all the arithmetic: `2·R·O·K·J` flops) and an
//! elementwise row-dot (`1/O` of it). `kc` is chosen so that the chunk's product fits a memory
//! budget; nothing of size `R·O·J` ever exists.

use burn::prelude::*;
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::projection::Projection;

/// Default memory budget of one chunk's product `[R, kc·J]` (16 MiB).
pub const DEFAULT_TOKEN_BUDGET: usize = 16 << 20;

impl Projection {
    /// Rows `k0 .. k0 + w` rearranged as `Q [o, w·j]` (`Q[r, κ·j + i] = P[k0 + κ, r·j + i]`),
    /// row-major `f32`.
    fn token_tile(&self, k0: usize, w: usize, o: usize, j: usize) -> Vec<f32> {
        let mut q = vec![0f32; o * w * j];
        match self.signs() {
            Some((bits, wpr)) => q.par_chunks_mut(w * j).enumerate().for_each(|(r, row)| {
                for kk in 0..w {
                    let rb = &bits[(k0 + kk) * wpr..(k0 + kk + 1) * wpr];
                    for (i, v) in row[kk * j..(kk + 1) * j].iter_mut().enumerate() {
                        let c = r * j + i;
                        *v = if rb[c / 64] >> (c % 64) & 1 == 1 {
                            1.0
                        } else {
                            -1.0
                        };
                    }
                }
            }),
            None => {
                for kk in 0..w {
                    let row = self.tile_row(k0 + kk);
                    for r in 0..o {
                        q[r * w * j + kk * j..r * w * j + (kk + 1) * j]
                            .copy_from_slice(&row[r * j..(r + 1) * j]);
                    }
                }
            }
        }
        q
    }

    /// Projected per-token gradients `s · P · vec(δ_t ⊗ ã_t)` for every row `t`, without
    /// forming the gradients (see the module docs). `budget_bytes` bounds the product of one
    /// chunk of projection rows (at least one row is taken at a time).
    ///
    /// # Shapes
    /// - `delta`: `[R, O]`, `input1`: `[R, J]` (the Linear's input with a 1 appended, for the
    ///   bias); `O·J` must be the projection's input size; output `[R, K]`.
    ///
    /// # Errors
    /// [`Error::Mismatch`] when the shapes do not fit the projection.
    pub fn project_tokens<B: Backend>(
        &self,
        delta: Tensor<B, 2>,
        input1: Tensor<B, 2>,
        budget_bytes: usize,
    ) -> Result<Tensor<B, 2>> {
        let [r, o] = delta.dims();
        let [r2, j] = input1.dims();
        if r != r2 || o * j != self.in_dim() {
            return Err(Error::Mismatch {
                what: "per-token gradient factors for the projection".into(),
                expected: format!("[R, O] and [R, J] with O·J = {}", self.in_dim()),
                found: format!("[{r}, {o}] and [{r2}, {j}]"),
            });
        }
        let k = self.out_dim();
        let device = delta.device();
        if r == 0 {
            return Ok(Tensor::zeros([0, k], &device));
        }
        let kc = (budget_bytes / (4 * r * j).max(1)).clamp(1, k.max(1));
        let a3 = input1.reshape([r, j, 1]);
        let mut parts = Vec::with_capacity(k.div_ceil(kc));
        for k0 in (0..k).step_by(kc) {
            let w = kc.min(k - k0);
            let q = Tensor::<B, 2>::from_data(
                TensorData::new(self.token_tile(k0, w, o, j), [o, w * j]),
                &device,
            );
            let m = delta.clone().matmul(q).reshape([r, w, j]);
            // Row-dot of each token's `w` rows with its `ã`: a batch of `r` matrix-vector
            // products (no `[r, w, j]` temporary besides the product itself).
            parts.push(m.matmul(a3.clone()).reshape([r, w]));
        }
        Ok(Tensor::cat(parts, 1).mul_scalar(self.scaling()))
    }
}
