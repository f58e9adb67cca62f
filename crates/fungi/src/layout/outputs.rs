//! The final outputs of a run (or shard, or merge) and its manifest, written from its chunks.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use fungi_core::tensor_file::{self, TensorBytes};
use serde::{Deserialize, Serialize};

use super::chunk::read_chunk;
use super::{npy, Format, LayoutError, Manifest, RunIdentity, Skipped, MANIFEST_FILE};
use crate::dataset::ListingProblem;
use crate::Block;

type Result<T> = std::result::Result<T, LayoutError>;

/// Columns `[b.offset, b.offset + b.dim)` of the `n` rows of width `dim`, row-major.
pub fn block_columns(features: &[f32], n: usize, dim: usize, b: &Block) -> Vec<f32> {
    (0..n)
        .flat_map(|r| {
            features[r * dim + b.offset..r * dim + b.offset + b.dim]
                .iter()
                .copied()
        })
        .collect()
}

#[cfg(feature = "hdf5")]
fn write_hdf5(
    out: &Path,
    blocks: &[Block],
    n: usize,
    dim: usize,
    features: &[f32],
    labels: &[i64],
    indices: &[i64],
) -> Result<Vec<String>> {
    // The paper's files carry `targets` (uint32); without labels, the dataset index (as its
    // retrieval files do).
    let targets: Vec<u32> = if labels.is_empty() {
        indices.iter().map(|&i| i as u32).collect()
    } else {
        labels.iter().map(|&l| l as u32).collect()
    };
    let mut files = Vec::new();
    for b in blocks {
        let (file, key) = if b.name == "embedding" {
            ("embeddings.h5".to_string(), "embeddings")
        } else {
            (format!("{}.h5", b.name), "attn_proj")
        };
        let tmp = out.join(format!("{file}.tmp"));
        let h5 = |e: &dyn std::fmt::Display| LayoutError::Hdf5 {
            path: tmp.clone(),
            reason: e.to_string(),
        };
        {
            let f = hdf5_metno::File::create(&tmp).map_err(|e| h5(&e))?;
            let arr =
                ndarray::Array2::from_shape_vec((n, b.dim), block_columns(features, n, dim, b))
                    .map_err(|e| h5(&e))?;
            f.new_dataset_builder()
                .with_data(&arr)
                .create(key)
                .map_err(|e| h5(&e))?;
            f.new_dataset_builder()
                .with_data(&targets)
                .create("targets")
                .map_err(|e| h5(&e))?;
            f.new_dataset_builder()
                .with_data(indices)
                .create("indices")
                .map_err(|e| h5(&e))?;
        }
        std::fs::rename(&tmp, out.join(&file)).map_err(|source| LayoutError::Io {
            path: out.join(&file),
            source,
        })?;
        files.push(file);
    }
    Ok(files)
}

#[cfg(not(feature = "hdf5"))]
fn write_hdf5(
    _: &Path,
    _: &[Block],
    _: usize,
    _: usize,
    _: &[f32],
    _: &[i64],
    _: &[i64],
) -> Result<Vec<String>> {
    Err(LayoutError::NoHdf5)
}

/// What a run reports next to its rows: setup skips and unlisted entries.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Extras {
    /// Training images the objectives' setup skipped.
    pub setup_skipped: Vec<Skipped>,
    /// Entries of the dataset folder that could not be listed.
    pub not_listed: Vec<ListingProblem>,
}

/// Writes the final outputs of chunks `[a, b)` (found in the first of `chunk_dirs` that has
/// each) and the manifest, each file atomically and the manifest last, so a manifest always
/// describes complete files.
///
/// # Errors
/// A missing or damaged chunk, or a file that cannot be written (naming it).
pub fn finish(
    out: &Path,
    run: &RunIdentity,
    blocks: &[Block],
    (a, b): (usize, usize),
    shard: Option<(usize, usize)>,
    chunk_dirs: &[PathBuf],
    extras: &Extras,
) -> Result<Manifest> {
    let total = run.total_chunks();
    let dim: usize = blocks.iter().map(|b| b.dim).sum();
    let (mut features, mut indices, mut labels, mut skipped) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for c in a..b {
        let p = super::find_chunk(chunk_dirs, c)?;
        let ch = read_chunk(&p, dim, run.chunk_range(c))?;
        features.extend(ch.features);
        indices.extend(ch.indices);
        labels.extend(ch.labels);
        skipped.extend(ch.skipped);
    }
    let files = write_outputs(out, run.format, blocks, &features, &indices, &labels)?;
    let n = indices.len();
    let manifest = Manifest {
        run: run.clone(),
        blocks: blocks.to_vec(),
        rows: n,
        chunks: (a, b),
        total_chunks: total,
        shard,
        skipped,
        setup_skipped: extras.setup_skipped.clone(),
        not_listed: extras.not_listed.clone(),
        files,
    };
    let text = serde_json::to_string_pretty(&manifest).map_err(|e| LayoutError::Invalid {
        path: out.join(MANIFEST_FILE),
        what: "manifest",
        reason: e.to_string(),
    })?;
    tensor_file::write_bytes_atomic(&out.join(MANIFEST_FILE), (text + "\n").as_bytes())?;
    Ok(manifest)
}

/// Writes rows (`features` `[n, dim]` with the block layout `blocks`, their global `indices`
/// and, when not empty, their `labels`) in `format` into `out`, each file atomically: the final
/// outputs of a run (`features.npy`, `indices.npy`, `labels.npy`; or `features.safetensors`, one
/// tensor per block plus `indices` and `labels`; or the paper's HDF5 files). Returns the file
/// names written.
///
/// # Errors
/// A file that cannot be written (naming it); [`LayoutError::NoHdf5`] for HDF5 in a build
/// without the `hdf5` feature.
pub fn write_outputs(
    out: &Path,
    format: Format,
    blocks: &[Block],
    features: &[f32],
    indices: &[i64],
    labels: &[i64],
) -> Result<Vec<String>> {
    let dim: usize = blocks.iter().map(|b| b.dim).sum();
    let n = indices.len();
    let mut files = Vec::new();
    match format {
        Format::Npy => {
            npy::write_f32(&out.join("features.npy"), &[n, dim], features)?;
            npy::write_i64(&out.join("indices.npy"), &[n], indices)?;
            files.extend(["features.npy".to_string(), "indices.npy".to_string()]);
            if !labels.is_empty() {
                npy::write_i64(&out.join("labels.npy"), &[n], labels)?;
                files.push("labels.npy".into());
            }
        }
        Format::Safetensors => {
            let mut tensors: Vec<TensorBytes> = blocks
                .iter()
                .map(|bl| {
                    let data = block_columns(features, n, dim, bl);
                    TensorBytes::f32(bl.name.clone(), vec![n, bl.dim], &data)
                })
                .collect();
            tensors.push(TensorBytes::i64("indices", vec![n], indices));
            if !labels.is_empty() {
                tensors.push(TensorBytes::i64("labels", vec![n], labels));
            }
            tensor_file::write_atomic(
                &out.join("features.safetensors"),
                &tensors,
                &BTreeMap::new(),
            )?;
            files.push("features.safetensors".into());
        }
        Format::Hdf5 => {
            files.extend(write_hdf5(out, blocks, n, dim, features, labels, indices)?);
        }
    }
    Ok(files)
}
