//! Safetensors files written byte-for-byte reproducibly and atomically, and typed reads.
//!
//! `safetensors::serialize` keeps the `__metadata__` table in a `HashMap`, whose order changes
//! from one process to the next, so two identical runs wrote files with different bytes (and
//! hashes). [`to_bytes`] writes the same layout (8-byte header length, JSON header padded with
//! spaces to 8 bytes, tensors by descending dtype alignment then name, as `safetensors` does)
//! with the metadata in sorted order: same tensors and metadata → same bytes, always.
//! [`write_atomic`] writes to `<file>.tmp`, syncs it and renames it over the target, so a crash
//! or a full disk never leaves a half-written file under the final name.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use safetensors::Dtype;

use crate::error::{Error, Result};

/// One tensor to write: name, dtype, shape and little-endian bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorBytes {
    /// Tensor name.
    pub name: String,
    /// Element type.
    pub dtype: Dtype,
    /// Shape.
    pub shape: Vec<usize>,
    /// Little-endian element bytes, row-major.
    pub bytes: Vec<u8>,
}

impl TensorBytes {
    /// An `f32` tensor.
    pub fn f32(name: impl Into<String>, shape: Vec<usize>, data: &[f32]) -> Self {
        Self {
            name: name.into(),
            dtype: Dtype::F32,
            shape,
            bytes: data.iter().flat_map(|v| v.to_le_bytes()).collect(),
        }
    }
    /// An `i64` tensor.
    pub fn i64(name: impl Into<String>, shape: Vec<usize>, data: &[i64]) -> Self {
        Self {
            name: name.into(),
            dtype: Dtype::I64,
            shape,
            bytes: data.iter().flat_map(|v| v.to_le_bytes()).collect(),
        }
    }
    /// An `i8` tensor.
    pub fn i8(name: impl Into<String>, shape: Vec<usize>, data: &[i8]) -> Self {
        Self {
            name: name.into(),
            dtype: Dtype::I8,
            shape,
            bytes: data.iter().map(|&v| v as u8).collect(),
        }
    }
}

fn format_err(path: &Path, reason: impl Into<String>) -> Error {
    Error::Format {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// The file's bytes: deterministic for the same tensors and metadata. `path` names the file in
/// errors (a tensor whose byte count does not match its shape and dtype).
pub fn to_bytes(
    path: &Path,
    tensors: &[TensorBytes],
    metadata: &BTreeMap<String, String>,
) -> Result<Vec<u8>> {
    let mut order: Vec<&TensorBytes> = tensors.iter().collect();
    order.sort_by(|a, b| b.dtype.cmp(&a.dtype).then(a.name.cmp(&b.name)));
    let mut header = serde_json::Map::new();
    if !metadata.is_empty() {
        header.insert(
            "__metadata__".into(),
            serde_json::Value::Object(
                metadata
                    .iter()
                    .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
                    .collect(),
            ),
        );
    }
    let mut offset = 0usize;
    for t in &order {
        let elems = t
            .shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .ok_or_else(|| format_err(path, format!("tensor `{}`: shape overflows", t.name)))?;
        let want = elems
            .checked_mul(t.dtype.bitsize() / 8)
            .ok_or_else(|| format_err(path, format!("tensor `{}`: size overflows", t.name)))?;
        if want != t.bytes.len() {
            return Err(format_err(
                path,
                format!(
                    "tensor `{}`: {} bytes for shape {:?} of {:?} (expected {want})",
                    t.name,
                    t.bytes.len(),
                    t.shape,
                    t.dtype
                ),
            ));
        }
        if t.name == "__metadata__" || header.contains_key(&t.name) {
            return Err(format_err(
                path,
                format!("tensor name `{}` is reserved or repeated", t.name),
            ));
        }
        header.insert(
            t.name.clone(),
            serde_json::json!({
                "dtype": t.dtype,
                "shape": t.shape,
                "data_offsets": [offset, offset + t.bytes.len()],
            }),
        );
        offset += t.bytes.len();
    }
    let mut h = serde_json::to_vec(&serde_json::Value::Object(header))
        .map_err(|e| format_err(path, e.to_string()))?;
    h.resize(h.len().next_multiple_of(8), b' ');
    let mut out = Vec::with_capacity(8 + h.len() + offset);
    out.extend((h.len() as u64).to_le_bytes());
    out.extend(h);
    for t in order {
        out.extend_from_slice(&t.bytes);
    }
    Ok(out)
}

/// `<path>.tmp` next to `path`.
pub fn temp_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".tmp");
    PathBuf::from(s)
}

/// Writes `bytes` to `path` atomically: `<path>.tmp`, `fsync`, rename. On any failure the
/// temporary file is removed and `path` is untouched; errors name the file.
pub fn write_bytes_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = temp_path(path);
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |source| Error::Io { path: p, source }
    };
    let res = (|| {
        let mut f = std::fs::File::create(&tmp).map_err(io(&tmp))?;
        f.write_all(bytes).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
        drop(f);
        std::fs::rename(&tmp, path).map_err(io(path))
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res
}

/// [`to_bytes`] + [`write_bytes_atomic`].
pub fn write_atomic(
    path: &Path,
    tensors: &[TensorBytes],
    metadata: &BTreeMap<String, String>,
) -> Result<()> {
    write_bytes_atomic(path, &to_bytes(path, tensors, metadata)?)
}

/// Reads a tensor's values as `f32` (F32, or F64 / F16 / BF16 converted); errors name the file,
/// the tensor and the dtype found.
pub fn read_f32(
    path: &Path,
    name: &str,
    view: &safetensors::tensor::TensorView<'_>,
) -> Result<Vec<f32>> {
    let b = view.data();
    Ok(match view.dtype() {
        Dtype::F32 => b
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        Dtype::F64 => b
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32)
            .collect(),
        other => {
            return Err(format_err(
                path,
                format!("tensor `{name}` has dtype {other:?} (expected F32 or F64)"),
            ))
        }
    })
}

/// Reads an `I64` tensor; errors name the file, the tensor and the dtype found.
pub fn read_i64(
    path: &Path,
    name: &str,
    view: &safetensors::tensor::TensorView<'_>,
) -> Result<Vec<i64>> {
    if view.dtype() != Dtype::I64 {
        return Err(format_err(
            path,
            format!(
                "tensor `{name}` has dtype {:?} (expected I64)",
                view.dtype()
            ),
        ));
    }
    Ok(view
        .data()
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_are_deterministic_and_readable() {
        let t = vec![
            TensorBytes::f32("b", vec![2], &[1.0, 2.0]),
            TensorBytes::i8("a", vec![3], &[1, -1, 1]),
            TensorBytes::i64("c", vec![1], &[7]),
        ];
        let meta: BTreeMap<String, String> = (0..20)
            .map(|i| (format!("k{i}"), format!("v{i}")))
            .collect();
        let p = Path::new("x.safetensors");
        let a = to_bytes(p, &t, &meta).unwrap();
        let mut rev = t.clone();
        rev.reverse();
        assert_eq!(a, to_bytes(p, &rev, &meta).unwrap());
        let st = safetensors::SafeTensors::deserialize(&a).unwrap();
        assert_eq!(
            read_f32(p, "b", &st.tensor("b").unwrap()).unwrap(),
            vec![1.0, 2.0]
        );
        assert_eq!(read_i64(p, "c", &st.tensor("c").unwrap()).unwrap(), vec![7]);
        let (_, m) = safetensors::SafeTensors::read_metadata(&a).unwrap();
        assert_eq!(m.metadata().as_ref().unwrap()["k13"], "v13");
        let e = read_i64(p, "b", &st.tensor("b").unwrap())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("x.safetensors") && e.contains("`b`") && e.contains("F32"),
            "{e}"
        );
        let bad = vec![TensorBytes {
            name: "z".into(),
            dtype: Dtype::F32,
            shape: vec![3],
            bytes: vec![0; 4],
        }];
        assert!(to_bytes(p, &bad, &meta).is_err());
    }
}
