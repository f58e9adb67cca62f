//! Dense FUNGI ([`fungi_dense`], re-exported here) through the library's one pipeline and run
//! directories: [`stream`] runs a [`DenseExtractor`] over an [`ImageSource`] exactly as
//! [`Fungi::stream`](crate::Fungi::stream) runs the image-level extractor (decode ahead,
//! [`OnError`](crate::OnError), batches aligned by the caller), and [`finish`] turns a run
//! directory's chunks into `features.npy` `[N, P, E+K]` (streamed, never whole in memory),
//! `indices.npy`, `labels.npy` and a [`DenseManifest`].
//!
//! A dense run directory has the layout of `fungi extract`'s (`run.json`, `state.safetensors`,
//! `chunks/`, `manifest.json`; see [`crate::layout`]); its `run.json` is a [`DenseRun`]. Chunk
//! rows are an image's whole `[P, E+K]` block, flattened.

use std::path::{Path, PathBuf};

use fungi_backbone::{AutodiffVitOps, Precision, VitConfig};
use fungi_core::tensor_file;
use serde::{Deserialize, Serialize};

pub use fungi_dense::*;

use crate::dataset::{ImageSource, ListingProblem};
use crate::layout::{
    find_chunk, npy, read_chunk, read_json, Extras, LayoutError, Skipped, MANIFEST_FILE,
};
use crate::pipeline::{run, PrepareFn, Rows, Stream};

/// `run.json` of a dense run: what a `--resume` must match.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DenseRun {
    /// fungi-rs version.
    pub tool_version: String,
    /// The dense settings.
    pub settings: DenseSettings,
    /// Architecture.
    pub arch: VitConfig,
    /// SHA-256 of the weights file.
    pub weights_sha256: String,
    /// SHA-256 of the dataset listing (relative paths and labels).
    pub dataset_sha256: String,
    /// Images in the dataset.
    pub dataset_len: usize,
    /// Class names (ImageFolder).
    pub classes: Vec<String>,
    /// SHA-256 of the state file used (projection, head, support bank).
    pub state_sha256: String,
    /// Projection fingerprint.
    pub projection_fingerprint: String,
    /// Images per chunk.
    pub chunk_size: usize,
    /// Patch tokens per image `P`.
    pub patches: usize,
    /// Width of a patch feature `E + K`.
    pub feature_dim: usize,
    /// Precision of the prefix.
    pub precision: Precision,
}

impl DenseRun {
    /// Reads `dir/run.json`.
    ///
    /// # Errors
    /// A missing, unreadable or malformed file (naming it).
    pub fn read(dir: &Path) -> Result<Self, LayoutError> {
        read_json(&dir.join(crate::layout::RUN_FILE), "dense run identity")
    }
    /// Number of chunks of the dataset.
    pub fn total_chunks(&self) -> usize {
        self.dataset_len.div_ceil(self.chunk_size.max(1))
    }
    /// Global indices of chunk `c`: `[c·C, min((c+1)·C, N))`.
    pub fn chunk_range(&self, c: usize) -> std::ops::Range<usize> {
        crate::layout::chunk_range(c, self.chunk_size, self.dataset_len)
    }
    /// Values of one image's features, `P · (E + K)` (a chunk row).
    pub fn row_len(&self) -> usize {
        self.patches * self.feature_dim
    }
}

/// `manifest.json` of a finished dense run (or shard).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DenseManifest {
    /// Identity.
    pub run: DenseRun,
    /// Shape of `features.npy`: `[rows, P, E + K]`.
    pub shape: [usize; 3],
    /// Chunks covered `[first, end)`.
    pub chunks: (usize, usize),
    /// Total chunks of the dataset.
    pub total_chunks: usize,
    /// Shard `(index, count)`, or `None` for a whole run.
    pub shard: Option<(usize, usize)>,
    /// Images skipped under a skip policy.
    pub skipped: Vec<Skipped>,
    /// Support images skipped under a skip policy.
    pub support_skipped: Vec<Skipped>,
    /// Entries of the dataset folder that could not be listed.
    pub not_listed: Vec<ListingProblem>,
    /// Files written.
    pub files: Vec<String>,
}

impl DenseManifest {
    /// Reads `dir/manifest.json`.
    ///
    /// # Errors
    /// A missing, unreadable or malformed manifest (naming the file).
    pub fn read(dir: &Path) -> Result<Self, LayoutError> {
        read_json(&dir.join(MANIFEST_FILE), "dense manifest")
    }
}

/// Runs `stream` over `source` through the dense extractor and hands each batch's rows
/// (`[n, P·(E+K)]` flattened) to `sink`, in order: the pipeline of
/// [`Fungi::stream`](crate::Fungi::stream) (decode ahead in parallel; the next batch's views
/// made ahead on backends with their own device; unreadable images failing or skipped).
///
/// # Errors
/// As [`Fungi::stream`](crate::Fungi::stream).
pub fn stream<B: AutodiffVitOps, S: ImageSource + ?Sized>(
    ex: &DenseExtractor<B>,
    source: &S,
    stream: Stream<'_>,
    sink: impl FnMut(Rows) -> fungi_core::Result<()>,
) -> fungi_core::Result<()> {
    ex.ready()?;
    let prepare = |imgs: &[fungi_aug::RgbImage], idx: &[u64]| ex.prepare(imgs, idx);
    let ahead = !<B::InnerBackend as fungi_backbone::VitOps>::vit_host_memory();
    let prepare: Option<PrepareFn<'_, Vec<f32>>> = ahead.then_some(&prepare);
    run(
        source,
        stream,
        prepare,
        |imgs, idx, prepared| match prepared {
            Some(p) => p.and_then(|v| ex.extract_prepared(v, idx)),
            None => ex.extract(imgs, idx),
        },
        sink,
    )
}

/// Writes the final outputs of chunks `[a, b)` (found in the first of `chunk_dirs` that has
/// each): `features.npy` `[N, P, E+K]` float32 (row-major patch order; streamed chunk by
/// chunk), `indices.npy`, `labels.npy` (with labels), then `manifest.json` last.
///
/// # Errors
/// A missing or damaged chunk, or a file that cannot be written (naming it).
pub fn finish(
    out: &Path,
    run: &DenseRun,
    (a, b): (usize, usize),
    shard: Option<(usize, usize)>,
    chunk_dirs: &[PathBuf],
    extras: &Extras,
) -> Result<DenseManifest, LayoutError> {
    let dim = run.row_len();
    let find = |c: usize| find_chunk(chunk_dirs, c);
    // First pass: indices, labels and skips (small); the features are streamed in a second.
    let (mut indices, mut labels, mut skipped) = (Vec::new(), Vec::new(), Vec::new());
    for c in a..b {
        let ch = read_chunk(&find(c)?, dim, run.chunk_range(c))?;
        indices.extend(ch.indices);
        labels.extend(ch.labels);
        skipped.extend(ch.skipped);
    }
    let n = indices.len();
    let shape = [n, run.patches, run.feature_dim];
    let mut next = a;
    npy::write_f32_parts(&out.join("features.npy"), &shape, || {
        if next >= b {
            return Ok(None);
        }
        let ch = read_chunk(&find(next)?, dim, run.chunk_range(next))?;
        next += 1;
        Ok(Some(ch.features))
    })?;
    npy::write_i64(&out.join("indices.npy"), &[n], &indices)?;
    let mut files = vec!["features.npy".to_string(), "indices.npy".to_string()];
    if !labels.is_empty() {
        npy::write_i64(&out.join("labels.npy"), &[n], &labels)?;
        files.push("labels.npy".into());
    }
    let manifest = DenseManifest {
        run: run.clone(),
        shape,
        chunks: (a, b),
        total_chunks: run.total_chunks(),
        shard,
        skipped,
        support_skipped: extras.setup_skipped.clone(),
        not_listed: extras.not_listed.clone(),
        files,
    };
    let text = serde_json::to_string_pretty(&manifest).map_err(|e| LayoutError::Invalid {
        path: out.join(MANIFEST_FILE),
        what: "dense manifest",
        reason: e.to_string(),
    })?;
    tensor_file::write_bytes_atomic(&out.join(MANIFEST_FILE), (text + "\n").as_bytes())?;
    Ok(manifest)
}
