//! The random projection `P`: `[E, G]` with `G = O·(I+1)` the flattened gradient size.
//!
//! The seeded matrix is i.i.d. Rademacher ±1, stored bit-packed (ViT-B/16: 768 × 590 592 bits =
//! 56.7 MB, against 1.8 GB as dense f32 in fungivision). It is never materialised densely: the
//! product `scaling · grads · Pᵀ` is accumulated over column tiles of at most 16 MB that are
//! unpacked to `f32` on the fly. Explicit matrices (fungivision's / the paper's `±1` f32, or I8)
//! load from safetensors or the paper's `.pth` (`{"scaling", "projection"}`); `±1` matrices are
//! packed too, anything else is kept dense.

use std::path::Path;

use burn::prelude::*;
use fungi_backbone::ops::composed;
use fungi_backbone::VitOps;
use rand::Rng;
use rayon::prelude::*;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::rng::stream;

/// Storage of the matrix.
#[derive(Debug, Clone, PartialEq)]
enum Matrix {
    /// Row-major bits, `words_per_row` u64 per row; bit set = `+1`, clear = `-1`.
    Signs {
        bits: Vec<u64>,
        words_per_row: usize,
    },
    /// Row-major dense values.
    Dense(Vec<f32>),
}

/// A projection matrix `[out_dim, in_dim]` and its scaling factor.
#[derive(Debug, Clone, PartialEq)]
pub struct Projection {
    out_dim: usize,
    in_dim: usize,
    scaling: f32,
    seed: Option<u64>,
    matrix: Matrix,
}

/// fungivision's `suggested_scaling_factor(n) = 1 / sqrt(n)` as an f32 tensor.
pub fn suggested_scaling(n: usize) -> f32 {
    1.0f32 / (n as f32).sqrt()
}

impl Projection {
    /// Seeded i.i.d. Rademacher `[out_dim, in_dim]`, scaling `1/sqrt(in_dim)` (fungivision's
    /// choice; any positive scaling cancels in the final L2 normalisation). Row `e` is drawn from
    /// the stream `(seed, "projection", e)`, so the matrix is identical on every machine and
    /// thread count.
    pub fn rademacher(out_dim: usize, in_dim: usize, seed: u64) -> Self {
        let wpr = in_dim.div_ceil(64);
        let mut bits = vec![0u64; out_dim * wpr];
        bits.par_chunks_mut(wpr.max(1))
            .enumerate()
            .for_each(|(e, row)| {
                let mut rng = stream(seed, "projection", e as u64);
                for w in row.iter_mut() {
                    *w = rng.next_u64();
                }
                // Clear the padding bits so equal matrices have equal storage.
                let tail = in_dim % 64;
                if tail != 0 {
                    *row.last_mut().unwrap() &= (1u64 << tail) - 1;
                }
            });
        Self {
            out_dim,
            in_dim,
            scaling: suggested_scaling(in_dim),
            seed: Some(seed),
            matrix: Matrix::Signs {
                bits,
                words_per_row: wpr,
            },
        }
    }

    /// An explicit row-major `f32` matrix; `±1` matrices are bit-packed.
    pub fn from_f32(out_dim: usize, in_dim: usize, values: &[f32], scaling: f32) -> Result<Self> {
        if values.len() != out_dim * in_dim {
            return Err(Error::Mismatch {
                what: "projection element count".into(),
                expected: format!("{out_dim} x {in_dim} = {}", out_dim * in_dim),
                found: values.len().to_string(),
            });
        }
        if !(scaling.is_finite() && scaling > 0.0) {
            return Err(Error::Config {
                key: "projection_scaling".into(),
                value: scaling.to_string(),
                expected: "a positive finite number".into(),
            });
        }
        if let Some(i) = values.iter().position(|v| !v.is_finite()) {
            return Err(Error::Config {
                key: format!("projection[{}, {}]", i / in_dim.max(1), i % in_dim.max(1)),
                value: values[i].to_string(),
                expected: "finite values".into(),
            });
        }
        let matrix = if values.iter().all(|&v| v == 1.0 || v == -1.0) {
            let wpr = in_dim.div_ceil(64);
            let mut bits = vec![0u64; out_dim * wpr];
            for e in 0..out_dim {
                for j in 0..in_dim {
                    if values[e * in_dim + j] > 0.0 {
                        bits[e * wpr + j / 64] |= 1 << (j % 64);
                    }
                }
            }
            Matrix::Signs {
                bits,
                words_per_row: wpr,
            }
        } else {
            Matrix::Dense(values.to_vec())
        };
        Ok(Self {
            out_dim,
            in_dim,
            scaling,
            seed: None,
            matrix,
        })
    }

    /// An explicit row-major `i8` matrix (e.g. `±1` stored as I8).
    pub fn from_i8(out_dim: usize, in_dim: usize, values: &[i8], scaling: f32) -> Result<Self> {
        let v: Vec<f32> = values.iter().map(|&x| x as f32).collect();
        Self::from_f32(out_dim, in_dim, &v, scaling)
    }

    /// Loads a projection from a safetensors file (`projection` I8/F32 `[E, G]` and an optional
    /// scalar `projection_scaling`; or a state file with `projection_seed` metadata) or from the
    /// paper's `.pth` (`torch.save({"scaling": s, "projection": P})`).
    pub fn load(path: &Path) -> Result<Self> {
        let fmt = |reason: String| Error::Format {
            path: path.to_path_buf(),
            reason,
        };
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        if ext == "safetensors" {
            let bytes = std::fs::read(path).map_err(|source| Error::Io {
                path: path.to_path_buf(),
                source,
            })?;
            let st = safetensors::SafeTensors::deserialize(&bytes)
                .map_err(|e| fmt(format!("not a valid safetensors file: {e}")))?;
            let scaling = match st.tensor("projection_scaling") {
                Ok(t) => read_f32(&t)
                    .map_err(fmt)?
                    .first()
                    .copied()
                    .ok_or_else(|| fmt("empty `projection_scaling`".into()))?,
                Err(_) => f32::NAN,
            };
            match st.tensor("projection") {
                Ok(t) => {
                    let s = t.shape();
                    if s.len() != 2 {
                        return Err(fmt(format!(
                            "`projection` must be 2-D [E, G], found shape {s:?}"
                        )));
                    }
                    let scaling = if scaling.is_nan() {
                        suggested_scaling(s[1])
                    } else {
                        scaling
                    };
                    match t.dtype() {
                        safetensors::Dtype::I8 => {
                            let v: Vec<i8> = t.data().iter().map(|&b| b as i8).collect();
                            Self::from_i8(s[0], s[1], &v, scaling)
                        }
                        _ => Self::from_f32(s[0], s[1], &read_f32(&t).map_err(fmt)?, scaling),
                    }
                }
                Err(_) => {
                    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes)
                        .map_err(|e| fmt(e.to_string()))?;
                    let m = meta.metadata().clone().unwrap_or_default();
                    let get = |k: &str| -> Result<usize> {
                        m.get(k).and_then(|v| v.parse().ok()).ok_or_else(|| {
                            fmt(format!("no `projection` tensor and no `{k}` metadata"))
                        })
                    };
                    let seed = m
                        .get("projection_seed")
                        .and_then(|v| v.parse::<u64>().ok())
                        .ok_or_else(|| {
                            fmt("no `projection` tensor and no `projection_seed` metadata".into())
                        })?;
                    let mut p = Self::rademacher(
                        get("projection_out_dim")?,
                        get("projection_in_dim")?,
                        seed,
                    );
                    if !scaling.is_nan() {
                        p.scaling = scaling;
                    }
                    Ok(p)
                }
            }
        } else {
            let reader = burn_store::pytorch::PytorchReader::new(path)
                .map_err(|e| fmt(format!("not a readable PyTorch file: {e}")))?;
            let tensors = reader.into_tensors();
            let get = |k: &str| -> Result<(Vec<usize>, Vec<f32>)> {
                let t = tensors.get(k).ok_or_else(|| {
                    fmt(format!(
                        "missing `{k}` (expected {{\"scaling\", \"projection\"}})"
                    ))
                })?;
                let d = t.to_data().map_err(|e| fmt(format!("`{k}`: {e:?}")))?;
                let v = d
                    .convert::<f32>()
                    .into_vec::<f32>()
                    .map_err(|e| fmt(format!("`{k}`: {e:?}")))?;
                Ok((t.shape.to_vec(), v))
            };
            let (s, v) = get("projection")?;
            if s.len() != 2 {
                return Err(fmt(format!(
                    "`projection` must be 2-D [E, G], found shape {s:?}"
                )));
            }
            let (_, sc) = get("scaling")?;
            let sc = sc
                .first()
                .copied()
                .ok_or_else(|| fmt("`scaling` is empty (expected a scalar)".into()))?;
            Self::from_f32(s[0], s[1], &v, sc)
        }
    }

    /// Output dimension `E`.
    pub fn out_dim(&self) -> usize {
        self.out_dim
    }
    /// Input dimension `G`.
    pub fn in_dim(&self) -> usize {
        self.in_dim
    }
    /// Scaling factor applied to the product.
    pub fn scaling(&self) -> f32 {
        self.scaling
    }
    /// Overrides the scaling (e.g. the paper's `1/sqrt(E)`).
    pub fn with_scaling(mut self, scaling: f32) -> Self {
        self.scaling = scaling;
        self
    }
    /// The seed, for a seeded matrix.
    pub fn seed(&self) -> Option<u64> {
        self.seed
    }
    /// Bytes held by the matrix.
    pub fn memory_bytes(&self) -> usize {
        match &self.matrix {
            Matrix::Signs { bits, .. } => bits.len() * 8,
            Matrix::Dense(v) => v.len() * 4,
        }
    }

    /// The matrix as `i8` (only for `±1` matrices).
    pub fn to_i8(&self) -> Option<Vec<i8>> {
        match &self.matrix {
            Matrix::Signs { .. } => {
                let t = self.tile(0, self.in_dim);
                Some(t.iter().map(|&v| v as i8).collect())
            }
            Matrix::Dense(_) => None,
        }
    }

    /// SHA-256 of `E, G, scaling` and the matrix values (as `±1` bits or f32 bytes).
    pub fn fingerprint(&self) -> String {
        let mut h = Sha256::new();
        h.update((self.out_dim as u64).to_le_bytes());
        h.update((self.in_dim as u64).to_le_bytes());
        h.update(self.scaling.to_le_bytes());
        match &self.matrix {
            Matrix::Signs { bits, .. } => bits.iter().for_each(|w| h.update(w.to_le_bytes())),
            Matrix::Dense(v) => v.iter().for_each(|x| h.update(x.to_le_bytes())),
        }
        format!("{:x}", h.finalize())
    }

    /// The sign bits and `words_per_row` of a `±1` matrix.
    pub(crate) fn signs(&self) -> Option<(&[u64], usize)> {
        match &self.matrix {
            Matrix::Signs {
                bits,
                words_per_row,
            } => Some((bits, *words_per_row)),
            Matrix::Dense(_) => None,
        }
    }

    /// Row `k` of the matrix as `f32` (`[G]`).
    pub(crate) fn tile_row(&self, k: usize) -> Vec<f32> {
        match &self.matrix {
            Matrix::Signs {
                bits,
                words_per_row,
            } => (0..self.in_dim)
                .map(|c| {
                    if bits[k * words_per_row + c / 64] >> (c % 64) & 1 == 1 {
                        1.0
                    } else {
                        -1.0
                    }
                })
                .collect(),
            Matrix::Dense(v) => v[k * self.in_dim..(k + 1) * self.in_dim].to_vec(),
        }
    }

    /// Columns `c0 .. c0 + n` of the matrix, `[E, n]` row-major `f32`.
    pub(crate) fn tile(&self, c0: usize, n: usize) -> Vec<f32> {
        match &self.matrix {
            Matrix::Signs {
                bits,
                words_per_row,
            } => composed::unpack_signs(bits, *words_per_row, self.out_dim, c0, n),
            Matrix::Dense(v) => v
                .chunks(self.in_dim)
                .flat_map(|row| &row[c0..c0 + n])
                .copied()
                .collect(),
        }
    }

    /// `scaling · grads · Pᵀ`: a bit-packed matrix through the backend's
    /// [`VitOps::vit_sign_matmul`] (on flex: sign flips, never unpacked), a dense one
    /// accumulated over column tiles of at most 16 MB.
    ///
    /// # Shapes
    /// - `grads`: `[N, G]`, output `[N, E]`
    ///
    /// # Errors
    /// [`Error::Mismatch`] when `G` is not the projection's input size.
    pub fn project<B: VitOps>(&self, grads: Tensor<B, 2>) -> Result<Tensor<B, 2>> {
        let [_, g] = grads.dims();
        if g != self.in_dim {
            return Err(Error::Mismatch {
                what: "gradient size for the projection".into(),
                expected: self.in_dim.to_string(),
                found: g.to_string(),
            });
        }
        if let Matrix::Signs {
            bits,
            words_per_row,
        } = &self.matrix
        {
            return Ok(B::vit_sign_matmul(
                grads,
                bits,
                *words_per_row,
                self.out_dim,
                self.scaling,
            ));
        }
        let acc = composed::tiled_matmul_t(grads, self.out_dim, |c0, w| self.tile(c0, w));
        Ok(acc.mul_scalar(self.scaling))
    }

    /// Bytes a seeded (bit-packed) `[out_dim, in_dim]` matrix needs, or `None` on overflow.
    pub fn packed_bytes(out_dim: usize, in_dim: usize) -> Option<u64> {
        (out_dim as u64)
            .checked_mul((in_dim as u64).div_ceil(64))?
            .checked_mul(8)
    }
}

fn read_f32(t: &safetensors::tensor::TensorView<'_>) -> std::result::Result<Vec<f32>, String> {
    let b = t.data();
    Ok(match t.dtype() {
        safetensors::Dtype::F32 => b
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        safetensors::Dtype::F64 => b
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap()) as f32)
            .collect(),
        safetensors::Dtype::I8 => b.iter().map(|&x| x as i8 as f32).collect(),
        other => {
            return Err(format!(
                "unsupported dtype {other:?} (expected I8, F32 or F64)"
            ))
        }
    })
}
