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
use crate::tensor_file::{self, TensorBytes};

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

/// The state file's bytes: deterministic (same tensors and metadata → same bytes), so identical
/// runs write identical states and manifests.
pub fn to_bytes(
    path: &Path,
    tensors: &BTreeMap<String, Stored>,
    metadata: &BTreeMap<String, String>,
) -> Result<Vec<u8>> {
    let raw: Vec<TensorBytes> = tensors
        .iter()
        .map(|(k, t)| match t {
            Stored::F32(s) => TensorBytes::f32(k.clone(), s.shape.clone(), &s.data),
            Stored::I8 { shape, data } => TensorBytes::i8(k.clone(), shape.clone(), data),
        })
        .collect();
    tensor_file::to_bytes(path, &raw, metadata)
}

/// Writes tensors and metadata atomically (temp file + fsync + rename), byte-reproducibly.
pub fn write(
    path: &Path,
    tensors: &BTreeMap<String, Stored>,
    metadata: &BTreeMap<String, String>,
) -> Result<()> {
    tensor_file::write_bytes_atomic(path, &to_bytes(path, tensors, metadata)?)
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
    let bytes = std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse(&bytes, path)
}

/// Parses a state file's bytes (`path` names it in errors). Every float must be finite.
pub fn parse(bytes: &[u8], path: &Path) -> Result<StateFile> {
    let fmt = |reason: String| Error::Format {
        path: path.to_path_buf(),
        reason,
    };
    let st = safetensors::SafeTensors::deserialize(bytes)
        .map_err(|e| fmt(format!("not a valid safetensors file: {e}")))?;
    let (_, meta) =
        safetensors::SafeTensors::read_metadata(bytes).map_err(|e| fmt(e.to_string()))?;
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
        match t.dtype() {
            safetensors::Dtype::I8 => {
                out.i8
                    .insert(name, (shape, t.data().iter().map(|&x| x as i8).collect()));
            }
            _ => {
                let data = tensor_file::read_f32(path, &name, &t)?;
                if let Some(i) = data.iter().position(|v| !v.is_finite()) {
                    return Err(fmt(format!(
                        "tensor `{name}` holds a non-finite value ({}) at element {i}",
                        data[i]
                    )));
                }
                out.f32.insert(name, StateTensor { shape, data });
            }
        }
    }
    Ok(out)
}

/// The differences between two JSON values, one line per differing leaf (`path: expected X,
/// found Y`); empty when equal. Used to say exactly which setting a state or a run differs in.
pub fn json_differences(expected: &serde_json::Value, found: &serde_json::Value) -> Vec<String> {
    fn walk(path: &str, a: &serde_json::Value, b: &serde_json::Value, out: &mut Vec<String>) {
        use serde_json::Value;
        match (a, b) {
            (Value::Object(x), Value::Object(y)) => {
                let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
                for k in keys {
                    let p = if path.is_empty() {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    };
                    walk(
                        &p,
                        x.get(k).unwrap_or(&Value::Null),
                        y.get(k).unwrap_or(&Value::Null),
                        out,
                    );
                }
            }
            _ if a != b => out.push(format!(
                "`{}`: expected {a}, found {b}",
                if path.is_empty() { "value" } else { path }
            )),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk("", expected, found, &mut out);
    out
}

/// Checks a state tensor's presence and shape (for [`Objective::load_state`] implementations).
pub fn take_state<'a>(
    state: &'a BTreeMap<String, StateTensor>,
    objective: &str,
    key: &str,
    shape: &[usize],
) -> Result<&'a StateTensor> {
    let t = state.get(key).ok_or_else(|| Error::Mismatch {
        what: format!("state tensor `{objective}.{key}`"),
        expected: format!("shape {shape:?}"),
        found: "nothing".into(),
    })?;
    if t.shape != shape {
        return Err(Error::Mismatch {
            what: format!("state tensor `{objective}.{key}`"),
            expected: format!("shape {shape:?}"),
            found: format!("shape {:?}", t.shape),
        });
    }
    Ok(t)
}
