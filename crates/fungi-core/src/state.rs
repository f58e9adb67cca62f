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
    parse(&read_bytes(path)?, path)
}

/// A state file's bytes ([`Error::Io`] naming it).
pub fn read_bytes(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })
}

impl StateFile {
    /// The `config` metadata as JSON ([`Error::Format`] naming `path` when it is missing).
    pub fn config(&self, path: &Path) -> Result<serde_json::Value> {
        self.metadata
            .get("config")
            .and_then(|c| serde_json::from_str(c).ok())
            .ok_or_else(|| Error::Format {
                path: path.into(),
                reason: "missing `config` metadata".into(),
            })
    }
}

/// The settings every state's `config` records: target layer and shape, token size.
pub const COMMON_KEYS: [&str; 3] = ["target_layer", "target_shape", "embed_dim"];

/// A state at `path` made for other settings: `what` differs.
pub fn mismatch(path: &Path, what: &str, expected: String, found: String) -> Error {
    Error::Mismatch {
        what: format!("{}: {what}", path.display()),
        expected,
        found,
    }
}

/// Refuses a state whose `config` (`theirs`) differs from `mine` in one of `keys`, naming the
/// file and the key.
pub fn require_same(
    theirs: &serde_json::Value,
    mine: &serde_json::Value,
    keys: &[&str],
    path: &Path,
) -> Result<()> {
    for key in keys {
        if theirs[key] != mine[key] {
            return Err(mismatch(
                path,
                &format!("`{key}`"),
                mine[key].to_string(),
                theirs[key].to_string(),
            ));
        }
    }
    Ok(())
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

/// SHA-256 of a backbone's parameters (state-dict keys, shapes and `f32` values in key order):
/// identifies the weights in state files, so a state made with other weights is refused.
pub fn backbone_fingerprint<Bk: burn::prelude::Backend>(vit: &fungi_backbone::Vit<Bk>) -> String {
    use sha2::{Digest, Sha256};
    let sd = vit.to_state_dict();
    let mut h = Sha256::new();
    for (k, t) in &sd.tensors {
        h.update(k.as_bytes());
        h.update([0]);
        for d in &t.shape {
            h.update((*d as u64).to_le_bytes());
        }
        if let Ok(v) = &t.data {
            let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
            h.update(&bytes);
        }
    }
    format!("{:x}", h.finalize())
}

/// Writes a projection into a state's tensors and metadata: `projection_fingerprint`,
/// `projection_out_dim`, `projection_in_dim`, then `projection_seed` for a seeded matrix or an
/// I8 `projection` tensor `[K, G]` otherwise, and the scalar `projection_scaling`.
///
/// # Errors
/// [`Error::Mismatch`] for a projection that is not `±1`.
pub fn projection_entries(
    p: &crate::projection::Projection,
    tensors: &mut BTreeMap<String, Stored>,
    meta: &mut BTreeMap<String, String>,
) -> Result<()> {
    meta.insert("projection_fingerprint".into(), p.fingerprint());
    meta.insert("projection_out_dim".into(), p.out_dim().to_string());
    meta.insert("projection_in_dim".into(), p.in_dim().to_string());
    match (p.seed(), p.to_i8()) {
        (Some(seed), _) => {
            meta.insert("projection_seed".into(), seed.to_string());
        }
        (None, Some(v)) => {
            tensors.insert(
                "projection".into(),
                Stored::I8 {
                    shape: vec![p.out_dim(), p.in_dim()],
                    data: v,
                },
            );
        }
        (None, None) => {
            return Err(Error::Mismatch {
                what: "projection of a state file".into(),
                expected: "a ±1 (bit-packed) projection".into(),
                found: "a dense projection".into(),
            })
        }
    }
    tensors.insert(
        "projection_scaling".into(),
        Stored::F32(StateTensor {
            shape: vec![],
            data: vec![p.scaling()],
        }),
    );
    Ok(())
}

/// The projection a state file holds, for gradients of size `in_dim`: its `projection` tensor
/// (I8 or float, `[K, in_dim]`) or its `projection_seed` / `projection_out_dim` metadata, with
/// its `projection_scaling` (default `1/√in_dim`); `out_dim`, when given, must be its `K`. A
/// recorded `projection_fingerprint` must match.
///
/// # Errors
/// [`Error::Format`] when the file holds no projection, [`Error::Mismatch`] naming the file for
/// another shape or fingerprint.
pub fn projection_from_state(
    st: &StateFile,
    path: &Path,
    in_dim: usize,
    out_dim: Option<usize>,
) -> Result<crate::projection::Projection> {
    use crate::projection::{suggested_scaling, Projection};
    let mismatch = |what: &str, expected: String, found: String| Error::Mismatch {
        what: format!("{}: {what}", path.display()),
        expected,
        found,
    };
    let scaling = st
        .f32
        .get("projection_scaling")
        .and_then(|t| t.data.first().copied())
        .unwrap_or_else(|| suggested_scaling(in_dim));
    let check = |shape: &[usize]| -> Result<usize> {
        let ok = shape.len() == 2 && shape[1] == in_dim && out_dim.is_none_or(|k| shape[0] == k);
        if !ok {
            return Err(mismatch(
                "`projection` shape",
                format!(
                    "[{}, {in_dim}]",
                    out_dim.map_or("K".to_string(), |k| k.to_string())
                ),
                format!("{shape:?}"),
            ));
        }
        Ok(shape[0])
    };
    let p = if let Some((shape, data)) = st.i8.get("projection") {
        let k = check(shape)?;
        Projection::from_i8(k, in_dim, data, scaling)?
    } else if let Some(t) = st.f32.get("projection") {
        let k = check(&t.shape)?;
        Projection::from_f32(k, in_dim, &t.data, scaling)?
    } else {
        let seed: u64 = st
            .metadata
            .get("projection_seed")
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| Error::Format {
                path: path.into(),
                reason: "neither a `projection` tensor nor `projection_seed` metadata".into(),
            })?;
        let dim = |k: &str| st.metadata.get(k).and_then(|v| v.parse::<usize>().ok());
        let shape = [
            dim("projection_out_dim").unwrap_or(0),
            dim("projection_in_dim").unwrap_or(0),
        ];
        let k = check(&shape)?;
        Projection::rademacher(k, in_dim, seed).with_scaling(scaling)
    };
    if let Some(fp) = st.metadata.get("projection_fingerprint") {
        if fp != &p.fingerprint() {
            return Err(mismatch(
                "projection fingerprint",
                fp.clone(),
                p.fingerprint(),
            ));
        }
    }
    Ok(p)
}
