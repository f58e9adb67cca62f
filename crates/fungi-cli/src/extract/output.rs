//! The final outputs of a run (or shard, or merge) and its manifest, written from its chunks.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[cfg(not(feature = "hdf5"))]
use anyhow::bail;
use anyhow::{Context, Result};
use fungi::core::tensor_file::{self, TensorBytes};
use fungi::dataset::ListingProblem;
use fungi::layout::{chunk_path, Format, Manifest, RunIdentity, Skipped, MANIFEST_FILE};
use fungi::Block;
use serde::{Deserialize, Serialize};

use super::chunks::read_chunk;
use crate::npy;

/// Columns `[b.offset, b.offset + b.dim)` of the `n` rows of width `dim`, row-major.
fn block_columns(features: &[f32], n: usize, dim: usize, b: &Block) -> Vec<f32> {
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
        {
            let f = hdf5_metno::File::create(&tmp)
                .with_context(|| format!("creating {}", tmp.display()))?;
            let arr =
                ndarray::Array2::from_shape_vec((n, b.dim), block_columns(features, n, dim, b))?;
            f.new_dataset_builder().with_data(&arr).create(key)?;
            f.new_dataset_builder()
                .with_data(&targets)
                .create("targets")?;
            f.new_dataset_builder()
                .with_data(indices)
                .create("indices")?;
        }
        std::fs::rename(&tmp, out.join(&file))?;
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
    bail!("--format hdf5 needs a build with `--features hdf5` (and Debian's libhdf5-dev)")
}

/// What a run reports next to its rows: setup skips and unlisted entries.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Extras {
    pub setup_skipped: Vec<Skipped>,
    pub not_listed: Vec<ListingProblem>,
}

/// Writes the final outputs of chunks `[a, b)` and the manifest (each file atomically; the
/// manifest last, so a manifest always describes complete files).
pub(crate) fn finish(
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
        let p = chunk_dirs
            .iter()
            .map(|d| chunk_path(d, c))
            .find(|p| p.exists())
            .with_context(|| {
                format!(
                    "chunk {c} is missing (looked for chunk-{c:06}.safetensors in {})",
                    chunk_dirs
                        .iter()
                        .map(|d| d.join("chunks").display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })?;
        let ch = read_chunk(&p, dim, run.chunk_range(c))?;
        features.extend(ch.features);
        indices.extend(ch.indices);
        labels.extend(ch.labels);
        skipped.extend(ch.skipped);
    }
    let n = indices.len();
    let mut files = Vec::new();
    match run.format {
        Format::Npy => {
            npy::write_f32(&out.join("features.npy"), &[n, dim], &features)?;
            npy::write_i64(&out.join("indices.npy"), &[n], &indices)?;
            files.extend(["features.npy".to_string(), "indices.npy".to_string()]);
            if !labels.is_empty() {
                npy::write_i64(&out.join("labels.npy"), &[n], &labels)?;
                files.push("labels.npy".into());
            }
        }
        Format::Safetensors => {
            let mut tensors: Vec<TensorBytes> = blocks
                .iter()
                .map(|bl| {
                    let data = block_columns(&features, n, dim, bl);
                    TensorBytes::f32(bl.name.clone(), vec![n, bl.dim], &data)
                })
                .collect();
            tensors.push(TensorBytes::i64("indices", vec![n], &indices));
            if !labels.is_empty() {
                tensors.push(TensorBytes::i64("labels", vec![n], &labels));
            }
            tensor_file::write_atomic(
                &out.join("features.safetensors"),
                &tensors,
                &BTreeMap::new(),
            )?;
            files.push("features.safetensors".into());
        }
        Format::Hdf5 => {
            files.extend(write_hdf5(
                out, blocks, n, dim, &features, &labels, &indices,
            )?);
        }
    }
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
    tensor_file::write_bytes_atomic(
        &out.join(MANIFEST_FILE),
        (serde_json::to_string_pretty(&manifest)? + "\n").as_bytes(),
    )?;
    Ok(manifest)
}
