//! Finished chunks: `chunks/chunk-NNNNNN.safetensors`, written atomically and checked whole
//! when read back.

use std::collections::BTreeMap;
use std::path::Path;

use fungi_core::tensor_file::{self, TensorBytes};

use super::{LayoutError, Skipped};

type Result<T> = std::result::Result<T, LayoutError>;

/// The rows of one chunk (images of `[c·C, (c+1)·C)` that were read, and those skipped).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Chunk {
    /// `[rows, dim]` features, row-major.
    pub features: Vec<f32>,
    /// Global index of each row.
    pub indices: Vec<i64>,
    /// Label of each row (empty without labels).
    pub labels: Vec<i64>,
    /// Images of the chunk left out under a skip policy.
    pub skipped: Vec<Skipped>,
}

/// Writes a finished chunk atomically (temp file + rename).
///
/// # Errors
/// When the file cannot be written.
pub fn write_chunk(path: &Path, ch: &Chunk, dim: usize) -> Result<()> {
    let n = ch.indices.len();
    let mut tensors = vec![
        TensorBytes::f32("features", vec![n, dim], &ch.features),
        TensorBytes::i64("indices", vec![n], &ch.indices),
    ];
    if !ch.labels.is_empty() {
        tensors.push(TensorBytes::i64("labels", vec![n], &ch.labels));
    }
    let skipped = serde_json::to_string(&ch.skipped).map_err(|e| LayoutError::Invalid {
        path: path.to_path_buf(),
        what: "chunk",
        reason: e.to_string(),
    })?;
    let meta = BTreeMap::from([("skipped".to_string(), skipped)]);
    tensor_file::write_atomic(path, &tensors, &meta)?;
    Ok(())
}

/// Reads a finished chunk back, checking that it is whole and consistent: a damaged chunk is an
/// error naming it (delete it and `--resume` to recompute just that chunk).
///
/// # Errors
/// [`LayoutError::DamagedChunk`] naming the file and what is wrong.
pub fn read_chunk(path: &Path, dim: usize, range: std::ops::Range<usize>) -> Result<Chunk> {
    let damaged = |reason: String| LayoutError::DamagedChunk {
        path: path.to_path_buf(),
        reason,
    };
    let bytes = std::fs::read(path).map_err(|source| LayoutError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| damaged(e.to_string()))?;
    let (_, meta) =
        safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| damaged(e.to_string()))?;
    let skipped: Vec<Skipped> = serde_json::from_str(
        meta.metadata()
            .as_ref()
            .and_then(|m| m.get("skipped"))
            .map(String::as_str)
            .unwrap_or("[]"),
    )
    .map_err(|e| damaged(format!("`skipped` metadata: {e}")))?;
    let tensor = |name: &str| {
        st.tensor(name)
            .map_err(|e| damaged(format!("`{name}`: {e}")))
    };
    let features = tensor_file::read_f32(path, "features", &tensor("features")?)?;
    let indices = tensor_file::read_i64(path, "indices", &tensor("indices")?)?;
    let labels = match st.tensor("labels") {
        Ok(t) => tensor_file::read_i64(path, "labels", &t)?,
        Err(_) => vec![],
    };
    let n = indices.len();
    if features.len() != n * dim || (!labels.is_empty() && labels.len() != n) {
        return Err(damaged(format!(
            "{} feature values and {} labels for {n} rows of width {dim}",
            features.len(),
            labels.len()
        )));
    }
    if let Some(i) = indices
        .iter()
        .find(|&&i| i < 0 || !range.contains(&(i as usize)))
    {
        return Err(damaged(format!("index {i} outside {range:?}")));
    }
    if n + skipped.len() != range.len() {
        return Err(damaged(format!(
            "{n} rows + {} skipped for {} images",
            skipped.len(),
            range.len()
        )));
    }
    if let Some(v) = features.iter().find(|v| !v.is_finite()) {
        return Err(damaged(format!("non-finite feature {v}")));
    }
    Ok(Chunk {
        features,
        indices,
        labels,
        skipped,
    })
}
