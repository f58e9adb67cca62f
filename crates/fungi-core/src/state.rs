//! The extractor's state file (safetensors), shared by train and test runs.
//!
//! Tensors: `projection` (I8 `[E, G]`; absent for a seeded projection, whose seed and shape are in
//! the metadata), `projection_scaling` (F32 scalar), and every objective's state under its name
//! (`kl.head.weight`, `dino.teacher_head.bias`, `simclr.negatives`, ...). Metadata: `format`
//! (`fungi-state/1`), `config` (JSON), `projection_seed`, `projection_out_dim`, `projection_in_dim`,
//! `projection_fingerprint`.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use crate::error::{Error, Result};
use crate::objective::StateTensor;

/// Format tag written into every state file.
pub const STATE_FORMAT: &str = "fungi-state/1";

/// A tensor to write.
#[derive(Debug, Clone)]
pub enum Stored {
    /// `f32` values.
    F32(StateTensor),
    /// `i8` values.
    I8 {
        /// Shape.
        shape: Vec<usize>,
        /// Values.
        data: Vec<i8>,
    },
}

/// Writes tensors and metadata (temp file + rename).
pub fn write(
    path: &Path,
    tensors: &BTreeMap<String, Stored>,
    metadata: HashMap<String, String>,
) -> Result<()> {
    let bufs: Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(k, t)| match t {
            Stored::F32(s) => (
                k.clone(),
                safetensors::Dtype::F32,
                s.shape.clone(),
                s.data.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ),
            Stored::I8 { shape, data } => (
                k.clone(),
                safetensors::Dtype::I8,
                shape.clone(),
                data.iter().map(|&v| v as u8).collect(),
            ),
        })
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = bufs
        .iter()
        .map(|(k, dt, s, b)| {
            (
                k.clone(),
                safetensors::tensor::TensorView::new(*dt, s.clone(), b).expect("consistent sizes"),
            )
        })
        .collect();
    let tmp = path.with_extension("safetensors.tmp");
    safetensors::serialize_to_file(views, Some(metadata), &tmp).map_err(|e| Error::Format {
        path: tmp.clone(),
        reason: e.to_string(),
    })?;
    std::fs::rename(&tmp, path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// A state file read back.
#[derive(Debug, Clone, Default)]
pub struct StateFile {
    /// Float tensors (F32/F64 up-cast) by name.
    pub f32: BTreeMap<String, StateTensor>,
    /// I8 tensors by name.
    pub i8: BTreeMap<String, (Vec<usize>, Vec<i8>)>,
    /// Metadata.
    pub metadata: HashMap<String, String>,
}

/// Reads a state file.
pub fn read(path: &Path) -> Result<StateFile> {
    let fmt = |reason: String| Error::Format {
        path: path.to_path_buf(),
        reason,
    };
    let bytes = std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| fmt(format!("not a valid safetensors file: {e}")))?;
    let (_, meta) =
        safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| fmt(e.to_string()))?;
    let metadata = meta.metadata().clone().unwrap_or_default();
    match metadata.get("format") {
        Some(f) if f == STATE_FORMAT => {}
        other => {
            return Err(fmt(format!(
            "not a fungi state file (metadata `format` = {other:?}, expected \"{STATE_FORMAT}\")"
        )))
        }
    }
    let mut out = StateFile {
        metadata,
        ..Default::default()
    };
    for (name, t) in st.tensors() {
        let shape = t.shape().to_vec();
        let b = t.data();
        match t.dtype() {
            safetensors::Dtype::F32 => {
                let data = b
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect();
                out.f32.insert(name, StateTensor { shape, data });
            }
            safetensors::Dtype::I8 => {
                out.i8
                    .insert(name, (shape, b.iter().map(|&x| x as i8).collect()));
            }
            other => {
                return Err(fmt(format!(
                    "tensor `{name}` has dtype {other:?} (expected F32 or I8)"
                )))
            }
        }
    }
    Ok(out)
}
