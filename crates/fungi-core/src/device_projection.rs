//! The projection kept on the compute device for a whole run.
//!
//! [`Projection::project`] works from the host copy of the matrix: on the CPU backends that is
//! the right place (flex multiplies by the packed signs directly), but on a GPU the composed
//! default would unpack column tiles on the host and upload them on every call — 1.8 GB per
//! batch and objective for ViT-B/16. A [`DeviceProjection`] is made once per run and holds the
//! matrix on the device in the form chosen by [`Residency`]:
//!
//! - [`Residency::Dense`]: unpacked `f32` (the backend's float type) column tiles, `E·G·4`
//!   bytes (ViT-S/16: 227 MB, ViT-B/16: 1.8 GB); each call is a few large matmuls.
//! - [`Residency::Packed`]: the sign bits as 32-bit words (`E·G/8` bytes: 57 MB for ViT-B/16),
//!   unpacked tile by tile on the device with integer shifts, never crossing the bus again.
//! - [`Residency::Host`]: the host path of [`Projection::project`] (the CPU backends).
//!
//! [`Residency::Auto`] picks `Host` on backends whose memory is the host's
//! ([`VitOps::vit_host_memory`]), else `Dense` when it fits the dense budget, else `Packed`.

use burn::prelude::*;
use burn::tensor::{ElementConversion, Int};
use fungi_backbone::VitOps;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::projection::Projection;

/// Default budget for a dense device copy of the projection: 2 GiB (ViT-B/16's 1.8 GB fits).
pub const DEFAULT_DENSE_BUDGET: u64 = 2 << 30;

/// Entries of one unpacked tile of a packed device projection (64 MB as f32).
const PACKED_TILE_ENTRIES: usize = 16 << 20;
/// Entries of one dense device tile (256 MB as f32): few, large matmuls.
const DENSE_TILE_ENTRIES: usize = 64 << 20;

/// Where and in which form the projection is kept during a run (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Residency {
    /// `Host` on CPU backends, else `Dense` within the budget, else `Packed`.
    #[default]
    Auto,
    /// The host copy, multiplied by the backend's sign-matmul (CPU backends).
    Host,
    /// Unpacked column tiles on the device.
    Dense,
    /// Bit-packed words on the device, unpacked per tile on the device.
    Packed,
}

impl std::str::FromStr for Residency {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "auto" => Ok(Self::Auto),
            "host" => Ok(Self::Host),
            "dense" => Ok(Self::Dense),
            "packed" => Ok(Self::Packed),
            other => Err(Error::Config {
                key: "projection_residency".into(),
                value: other.into(),
                expected: "auto, host, dense or packed".into(),
            }),
        }
    }
}

impl std::fmt::Display for Residency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Auto => "auto",
            Self::Host => "host",
            Self::Dense => "dense",
            Self::Packed => "packed",
        })
    }
}

#[derive(Debug, Clone)]
enum Form<B: Backend> {
    Host,
    /// `(first column, [E, w] tile)`.
    Dense(Vec<(usize, Tensor<B, 2>)>),
    /// `[E, ⌈G/32⌉]` words (bit `k` of word `j` = column `32j + k`), the shift amounts
    /// `[E, tile_words, 32]` and the tile width in words.
    Packed {
        words: Tensor<B, 2, Int>,
        shifts: Tensor<B, 3, Int>,
        tile_words: usize,
    },
}

/// A [`Projection`] materialised on a device for a run (see the module docs).
#[derive(Debug, Clone)]
pub struct DeviceProjection<B: VitOps> {
    form: Form<B>,
    out_dim: usize,
    in_dim: usize,
    scaling: f32,
    uploaded_bytes: u64,
}

impl<B: VitOps> DeviceProjection<B> {
    /// Materialises `p` on `device` in the form `residency` resolves to (`Auto`: see the module
    /// docs, with `dense_budget` bytes allowed for a dense copy).
    ///
    /// # Errors
    /// [`Error::Config`] for `Packed` with a matrix that is not `±1`.
    pub fn new(
        p: &Projection,
        device: &B::Device,
        residency: Residency,
        dense_budget: u64,
    ) -> Result<Self> {
        Self::with_tiles(
            p,
            device,
            residency,
            dense_budget,
            DENSE_TILE_ENTRIES,
            PACKED_TILE_ENTRIES,
        )
    }

    fn with_tiles(
        p: &Projection,
        device: &B::Device,
        residency: Residency,
        dense_budget: u64,
        dense_tile_entries: usize,
        packed_tile_entries: usize,
    ) -> Result<Self> {
        let (e, g) = (p.out_dim(), p.in_dim());
        let dense_bytes = (e as u64).saturating_mul(g as u64).saturating_mul(4);
        let resolved = match residency {
            Residency::Auto if B::vit_host_memory() => Residency::Host,
            Residency::Auto if dense_bytes <= dense_budget => Residency::Dense,
            Residency::Auto if p.signs().is_some() => Residency::Packed,
            // A dense (non-±1) matrix over the budget: its tiles go up per call.
            Residency::Auto => Residency::Host,
            r => r,
        };
        let mut uploaded_bytes = 0u64;
        let form = match resolved {
            Residency::Host | Residency::Auto => Form::Host,
            Residency::Dense => {
                let cols = tile_cols(e, dense_tile_entries);
                let mut tiles = Vec::with_capacity(g.div_ceil(cols));
                let mut c0 = 0;
                while c0 < g {
                    let w = cols.min(g - c0);
                    let t = p.tile(c0, w);
                    uploaded_bytes += (t.len() * 4) as u64;
                    tiles.push((
                        c0,
                        Tensor::<B, 2>::from_data(TensorData::new(t, [e, w]), device),
                    ));
                    c0 += w;
                }
                Form::Dense(tiles)
            }
            Residency::Packed => {
                let (bits, wpr) = p.signs().ok_or_else(|| Error::Config {
                    key: "projection_residency".into(),
                    value: "packed".into(),
                    expected: "dense, host or auto: the projection is not a ±1 matrix".into(),
                })?;
                let n32 = g.div_ceil(32);
                let mut words = Vec::with_capacity(e * n32);
                for row in bits.chunks(wpr.max(1)).take(e) {
                    for k in 0..n32 {
                        let w = row[k / 2];
                        let half = if k % 2 == 0 {
                            w as u32
                        } else {
                            (w >> 32) as u32
                        };
                        words.push(half as i32);
                    }
                }
                uploaded_bytes += (words.len() * 4) as u64;
                let tile_words = (tile_cols(e, packed_tile_entries) / 32).min(n32).max(1);
                let words =
                    Tensor::<B, 2, Int>::from_data(TensorData::new(words, [e, n32]), device);
                let shifts = Tensor::<B, 1, Int>::arange(0..32, device)
                    .reshape([1, 1, 32])
                    .repeat_dim(0, e)
                    .repeat_dim(1, tile_words);
                Form::Packed {
                    words,
                    shifts,
                    tile_words,
                }
            }
        };
        Ok(Self {
            form,
            out_dim: e,
            in_dim: g,
            scaling: p.scaling(),
            uploaded_bytes,
        })
    }

    /// The form in use (never `Auto`).
    pub fn residency(&self) -> Residency {
        match self.form {
            Form::Host => Residency::Host,
            Form::Dense(_) => Residency::Dense,
            Form::Packed { .. } => Residency::Packed,
        }
    }

    /// Bytes sent to the device when this copy was made (`0` for `Host`).
    pub fn uploaded_bytes(&self) -> u64 {
        self.uploaded_bytes
    }

    /// `scaling · grads · Pᵀ`; `host` must be the projection this copy was made from (the
    /// `Host` form multiplies by it).
    ///
    /// # Shapes
    /// - `grads`: `[N, G]`, output `[N, E]`
    ///
    /// # Errors
    /// [`Error::Mismatch`] when `G` or `host` does not match.
    pub fn project(&self, host: &Projection, grads: Tensor<B, 2>) -> Result<Tensor<B, 2>> {
        let [n, g] = grads.dims();
        if g != self.in_dim || host.in_dim() != self.in_dim || host.out_dim() != self.out_dim {
            return Err(Error::Mismatch {
                what: "gradient size for the device projection".into(),
                expected: self.in_dim.to_string(),
                found: g.to_string(),
            });
        }
        let e = self.out_dim;
        let device = grads.device();
        let acc = match &self.form {
            Form::Host => return host.project(grads),
            Form::Dense(tiles) => {
                let mut acc = Tensor::<B, 2>::zeros([n, e], &device);
                for (c0, t) in tiles {
                    let w = t.dims()[1];
                    acc = acc
                        + grads
                            .clone()
                            .slice([0..n, *c0..c0 + w])
                            .matmul(t.clone().transpose());
                }
                acc
            }
            Form::Packed {
                words,
                shifts,
                tile_words,
            } => {
                let n32 = words.dims()[1];
                let mut acc = Tensor::<B, 2>::zeros([n, e], &device);
                let mut k0 = 0;
                while k0 < n32 {
                    let nw = (*tile_words).min(n32 - k0);
                    let c0 = k0 * 32;
                    let w = (nw * 32).min(g - c0);
                    let sh = if nw == *tile_words {
                        shifts.clone()
                    } else {
                        shifts.clone().slice([0..e, 0..nw, 0..32])
                    };
                    let signs = words
                        .clone()
                        .slice([0..e, k0..k0 + nw])
                        .reshape([e, nw, 1])
                        .repeat_dim(2, 32)
                        .bitwise_right_shift(sh)
                        .bitwise_and_scalar(1.elem())
                        .float()
                        .reshape([e, nw * 32])
                        .mul_scalar(2.0)
                        .sub_scalar(1.0);
                    let signs = if w < nw * 32 {
                        signs.slice([0..e, 0..w])
                    } else {
                        signs
                    };
                    acc = acc
                        + grads
                            .clone()
                            .slice([0..n, c0..c0 + w])
                            .matmul(signs.transpose());
                    k0 += nw;
                }
                acc
            }
        };
        Ok(acc.mul_scalar(self.scaling))
    }
}

/// Columns per tile of about `entries` entries for `e` rows, a positive multiple of 64.
fn tile_cols(e: usize, entries: usize) -> usize {
    (entries / e.max(1)).max(64) / 64 * 64
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;

    fn grads(n: usize, g: usize) -> Tensor<Flex, 2> {
        let v: Vec<f32> = (0..n * g)
            .map(|i| ((i * 7919 % 1009) as f32 - 504.0) / 97.0)
            .collect();
        Tensor::from_data(TensorData::new(v, [n, g]), &Default::default())
    }

    fn values(t: Tensor<Flex, 2>) -> Vec<f32> {
        t.into_data().into_vec::<f32>().unwrap()
    }

    #[test]
    fn every_residency_gives_the_host_product_over_many_tiles() {
        // G = 1000: not a multiple of 32 or 64, so the last packed word and tile are partial.
        let (e, g, n) = (7, 1000, 3);
        let p = Projection::rademacher(e, g, 11);
        let want = values(p.project(grads(n, g)).unwrap());
        let d = Default::default();
        for r in [Residency::Host, Residency::Dense, Residency::Packed] {
            // Tiles of 64 columns: 16 dense tiles, 2 words per packed tile.
            let dp =
                DeviceProjection::<Flex>::with_tiles(&p, &d, r, u64::MAX, e * 64, e * 64).unwrap();
            assert_eq!(dp.residency(), r);
            let expect_bytes = match r {
                Residency::Host => 0,
                Residency::Dense => (e * g * 4) as u64,
                _ => (e * g.div_ceil(32) * 4) as u64,
            };
            assert_eq!(dp.uploaded_bytes(), expect_bytes, "{r}");
            let got = values(dp.project(&p, grads(n, g)).unwrap());
            for (a, b) in got.iter().zip(&want) {
                assert!((a - b).abs() <= 1e-4 * b.abs().max(1.0), "{r}: {a} vs {b}");
            }
        }
    }

    #[test]
    fn auto_keeps_the_host_copy_on_cpu_backends_and_packed_needs_signs() {
        let p = Projection::rademacher(4, 100, 0);
        let d = Default::default();
        let dp = DeviceProjection::<Flex>::new(&p, &d, Residency::Auto, u64::MAX).unwrap();
        assert_eq!(dp.residency(), Residency::Host);
        let dense = Projection::from_f32(2, 3, &[0.5, 1.0, -1.0, 1.0, 1.0, 1.0], 1.0).unwrap();
        let e = DeviceProjection::<Flex>::new(&dense, &d, Residency::Packed, 0).unwrap_err();
        assert!(e.to_string().contains("projection_residency"), "{e}");
        assert!("gpu".parse::<Residency>().is_err());
        assert_eq!("packed".parse::<Residency>().unwrap(), Residency::Packed);
    }
}
