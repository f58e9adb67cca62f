//! `fungi extract`: FUNGI features of a dataset, chunked, atomic, resumable and shardable.
//!
//! Layout of `--out DIR`:
//! - `run.json` — the run's identity (config, weights/dataset/state hashes, chunking); a
//!   `--resume` must match it;
//! - `state.safetensors` — the extractor state used (projection, heads, SimCLR negatives);
//! - `chunks/chunk-NNNNNN.safetensors` — finished chunks (written atomically);
//! - at the end: `features.npy` `[N, D]` (or `features.safetensors` with one tensor per block),
//!   `indices.npy`, `labels.npy` (when labels are known) and `manifest.json`.
//!
//! Chunk `c` always holds global indices `[c·C, (c+1)·C)` and batches are aligned to it, so a
//! resumed or sharded run computes every image in exactly the same batch as an uninterrupted one:
//! outputs are byte-identical.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use fungi::backbone::{Vit, VitConfig};
use fungi::core::tensor_file::{self, TensorBytes};
use fungi::FungiConfig;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::dataset::Dataset;
use crate::images::ListingProblem;
use crate::{npy, progress_bar, OnError};

/// Output format of the features.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// `features.npy` `[N, D]`, `indices.npy`, `labels.npy`.
    Npy,
    /// `features.safetensors`: one tensor per block, plus `indices`, `labels`.
    Safetensors,
    /// The paper repo's HDF5 layout (feature `hdf5`): `embeddings.h5` with `targets` (uint32) and
    /// `embeddings`, and one `<objective>.h5` per gradient block with dataset `attn_proj` (and
    /// `targets`), as `train_knn_concat_grads.py` reads them.
    Hdf5,
}

/// Built-in configurations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PresetArg {
    /// fungivision's defaults (KL, DINO, SimCLR).
    Fungivision,
    /// The paper's settings.
    Paper,
}

/// Arguments of `fungi extract`.
#[derive(Debug, clap::Args)]
pub struct ExtractArgs {
    /// Backbone weights (.pth state dict or .safetensors).
    #[arg(long)]
    pub weights: PathBuf,
    /// Architecture preset or JSON config.
    #[arg(long)]
    pub arch: String,
    /// Dataset: an ImageFolder directory (class sub-folders -> labels), a plain folder, or a text
    /// file listing image paths.
    #[arg(long)]
    pub images: PathBuf,
    /// Optional `path,label` CSV (overrides ImageFolder labels).
    #[arg(long)]
    pub labels: Option<PathBuf>,
    /// Configuration file (TOML or JSON): seed, target_layer, [[objective]] tables.
    #[arg(long, conflicts_with = "preset")]
    pub config: Option<PathBuf>,
    /// A built-in configuration instead of `--config`.
    #[arg(long, value_enum)]
    pub preset: Option<PresetArg>,
    /// Load the extractor state (projection, heads, negatives) of a training run.
    #[arg(long)]
    pub state: Option<PathBuf>,
    /// Also copy the state used to this path (pass it as `--state` to the test run).
    #[arg(long)]
    pub save_state: Option<PathBuf>,
    /// Output directory.
    #[arg(long)]
    pub out: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value = "npy")]
    pub format: Format,
    /// Images per chunk written to disk (rounded up to a multiple of the batch size).
    #[arg(long, default_value_t = 256)]
    pub chunk_size: usize,
    /// Continue an interrupted run in `--out`.
    #[arg(long)]
    pub resume: bool,
    /// What to do with an image that cannot be decoded.
    #[arg(long, value_enum, default_value = "fail")]
    pub on_error: OnError,
    /// Process only shard `i/n` (0-based) of the chunks; `auto` reads SLURM_ARRAY_TASK_ID /
    /// SLURM_ARRAY_TASK_COUNT, or JOB_COMPLETION_INDEX with FUNGI_NUM_SHARDS (Kubernetes).
    #[arg(long)]
    pub shard: Option<String>,
    /// Keep the chunk files after the final outputs are written.
    #[arg(long)]
    pub keep_chunks: bool,
    /// Apply EXIF orientation (PIL and fungivision do not).
    #[arg(long)]
    pub apply_exif_orientation: bool,
    /// Where the random projection is kept during the run: auto (the CPU backends use the
    /// packed host copy; GPUs a dense device copy when it fits 2 GiB, else bit-packed words
    /// unpacked on the device), host, dense or packed. Features are the same up to float
    /// rounding.
    #[arg(long, default_value = "auto")]
    pub projection: fungi::core::Residency,
    /// Views per pass of the network's prefix (0: automatic — 16 on the CPU backends, 512 on
    /// GPUs): bounds the activations held at once; features do not depend on it beyond float
    /// rounding.
    #[arg(long, default_value_t = 0)]
    pub max_views_per_pass: usize,
    /// Make batch k+1's views on the decode thread while batch k computes (the default on
    /// GPUs; on the CPU backends both share the cores, so it is off unless set).
    #[arg(long)]
    pub prepare_ahead: bool,
}

/// What identifies a run; a resume or a merge must see the same values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunIdentity {
    /// fungi-rs version.
    pub tool_version: String,
    /// The full configuration.
    pub config: FungiConfig,
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
    /// SHA-256 of the state file used.
    pub state_sha256: String,
    /// Projection fingerprint.
    pub projection_fingerprint: String,
    /// Images per chunk.
    pub chunk_size: usize,
    /// Output format.
    pub format: Format,
    /// Precision of the prefix (`--precision`); f32 in manifests written before it existed.
    #[serde(default)]
    pub precision: fungi_backbone::Precision,
}

/// A block of the feature vector.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BlockInfo {
    /// Name (`embedding`, `kl`, ...).
    pub name: String,
    /// Width.
    pub dim: usize,
    /// First column.
    pub offset: usize,
}

/// A skipped image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Skipped {
    /// Global index.
    pub index: usize,
    /// File.
    pub file: String,
    /// Why.
    pub error: String,
}

/// `manifest.json` of a finished run (or shard).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Identity.
    pub run: RunIdentity,
    /// Feature layout.
    pub blocks: Vec<BlockInfo>,
    /// Rows written.
    pub rows: usize,
    /// Chunks covered `[first, end)`.
    pub chunks: (usize, usize),
    /// Total chunks of the dataset.
    pub total_chunks: usize,
    /// Shard `(index, count)`, or `None` for a whole run / merged output.
    pub shard: Option<(usize, usize)>,
    /// Images skipped by `--on-error skip`.
    pub skipped: Vec<Skipped>,
    /// Training images skipped by the objectives' setup (SimCLR negatives, DeepCluster memory
    /// bank) under `--on-error skip`.
    #[serde(default)]
    pub setup_skipped: Vec<Skipped>,
    /// Entries of the dataset folder that could not be listed (symlink loops, unreadable
    /// folders) under `--on-error skip`.
    #[serde(default)]
    pub not_listed: Vec<ListingProblem>,
    /// Files written.
    pub files: Vec<String>,
}

pub(crate) fn sha256_file(path: &Path) -> Result<String> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(format!("{:x}", h.finalize()))
}

fn parse_shard(s: &str) -> Result<(usize, usize)> {
    let (i, n) = if s == "auto" {
        let env = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<usize>().ok());
        match (env("SLURM_ARRAY_TASK_ID"), env("SLURM_ARRAY_TASK_COUNT"), env("JOB_COMPLETION_INDEX"), env("FUNGI_NUM_SHARDS")) {
            (Some(i), Some(n), _, _) => {
                let min = env("SLURM_ARRAY_TASK_MIN").unwrap_or(0);
                let i = i.checked_sub(min).with_context(|| {
                    format!("--shard auto: SLURM_ARRAY_TASK_ID {i} is below SLURM_ARRAY_TASK_MIN {min}")
                })?;
                (i, n)
            }
            (_, _, Some(i), Some(n)) => (i, n),
            _ => bail!("--shard auto: set SLURM_ARRAY_TASK_ID and SLURM_ARRAY_TASK_COUNT (Slurm arrays), or JOB_COMPLETION_INDEX and FUNGI_NUM_SHARDS (Kubernetes Indexed Jobs)"),
        }
    } else {
        let (i, n) = s
            .split_once('/')
            .with_context(|| format!("--shard {s:?}: expected i/n (e.g. 0/4) or auto"))?;
        (
            i.trim()
                .parse()
                .with_context(|| format!("--shard {s:?}: bad index"))?,
            n.trim()
                .parse()
                .with_context(|| format!("--shard {s:?}: bad count"))?,
        )
    };
    if n == 0 || i >= n {
        bail!("--shard {i}/{n}: the index must be in 0..{n}");
    }
    Ok((i, n))
}

/// Chunks `[a, b)` of shard `i` of `n` over `total` chunks.
pub fn shard_chunks(i: usize, n: usize, total: usize) -> (usize, usize) {
    (i * total / n, (i + 1) * total / n)
}

fn chunk_path(out: &Path, c: usize) -> PathBuf {
    out.join("chunks").join(format!("chunk-{c:06}.safetensors"))
}

struct Chunk {
    features: Vec<f32>,
    indices: Vec<i64>,
    labels: Vec<i64>,
    skipped: Vec<Skipped>,
}

fn write_chunk(path: &Path, ch: &Chunk, dim: usize) -> Result<()> {
    let n = ch.indices.len();
    let mut tensors = vec![
        TensorBytes::f32("features", vec![n, dim], &ch.features),
        TensorBytes::i64("indices", vec![n], &ch.indices),
    ];
    if !ch.labels.is_empty() {
        tensors.push(TensorBytes::i64("labels", vec![n], &ch.labels));
    }
    let meta = BTreeMap::from([("skipped".to_string(), serde_json::to_string(&ch.skipped)?)]);
    tensor_file::write_atomic(path, &tensors, &meta)?;
    Ok(())
}

/// Reads a finished chunk back, checking that it is whole and consistent: a damaged chunk is an
/// error naming it (delete it and `--resume` to recompute just that chunk).
fn read_chunk(path: &Path, dim: usize, range: std::ops::Range<usize>) -> Result<Chunk> {
    let damaged = |what: String| {
        anyhow::anyhow!(
            "{}: damaged chunk ({what}); delete it and rerun with --resume to recompute it",
            path.display()
        )
    };
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
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

#[cfg(feature = "hdf5")]
fn write_hdf5(
    out: &Path,
    blocks: &[BlockInfo],
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
            let block: Vec<f32> = (0..n)
                .flat_map(|r| {
                    features[r * dim + b.offset..r * dim + b.offset + b.dim]
                        .iter()
                        .copied()
                })
                .collect();
            let arr = ndarray::Array2::from_shape_vec((n, b.dim), block)?;
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
    _: &[BlockInfo],
    _: usize,
    _: usize,
    _: &[f32],
    _: &[i64],
    _: &[i64],
) -> Result<Vec<String>> {
    bail!("--format hdf5 needs a build with `--features hdf5` (and Debian's libhdf5-dev)")
}

/// Global indices of chunk `c`: `[c·C, min((c+1)·C, N))`.
pub(crate) fn chunk_range(run: &RunIdentity, c: usize) -> std::ops::Range<usize> {
    let start = c.saturating_mul(run.chunk_size).min(run.dataset_len);
    start
        ..c.saturating_add(1)
            .saturating_mul(run.chunk_size)
            .min(run.dataset_len)
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
    blocks: &[BlockInfo],
    (a, b): (usize, usize),
    shard: Option<(usize, usize)>,
    chunk_dirs: &[PathBuf],
    extras: &Extras,
) -> Result<Manifest> {
    let total = run.dataset_len.div_ceil(run.chunk_size.max(1));
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
        let ch = read_chunk(&p, dim, chunk_range(run, c))?;
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
                    let data: Vec<f32> = (0..n)
                        .flat_map(|r| {
                            features[r * dim + bl.offset..r * dim + bl.offset + bl.dim]
                                .iter()
                                .copied()
                        })
                        .collect();
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
        &out.join("manifest.json"),
        (serde_json::to_string_pretty(&manifest)? + "\n").as_bytes(),
    )?;
    Ok(manifest)
}

/// Whether `a` and `b` name the same file (also when `b` does not exist yet).
pub(crate) fn same_file(a: &Path, b: &Path) -> bool {
    fn resolve(p: &Path) -> Option<PathBuf> {
        if let Ok(c) = std::fs::canonicalize(p) {
            return Some(c);
        }
        let parent = match p.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        Some(std::fs::canonicalize(parent).ok()?.join(p.file_name()?))
    }
    match (resolve(a), resolve(b)) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

/// One batch of decoded images: `(global index, image or the reason it could not be read)`.
type Decoded = Vec<(usize, std::result::Result<fungi::aug::RgbImage, String>)>;

/// What is in `--out` before this command touches it.
struct Existing {
    run: Option<RunIdentity>,
    finished_chunks: usize,
    manifest: Option<Manifest>,
}

fn inspect_out(out: &Path) -> Result<Existing> {
    if out.exists() && !out.is_dir() {
        bail!("--out {}: exists and is not a directory", out.display());
    }
    let run_path = out.join("run.json");
    let run = if run_path.exists() {
        let text = std::fs::read_to_string(&run_path)
            .with_context(|| format!("reading {}", run_path.display()))?;
        Some(serde_json::from_str::<RunIdentity>(&text).with_context(|| {
            format!(
                "{}: not a fungi run identity (damaged? it records the settings of the run in {})",
                run_path.display(),
                out.display()
            )
        })?)
    } else {
        None
    };
    let finished_chunks = std::fs::read_dir(out.join("chunks"))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter(|e| {
                    let n = e.file_name();
                    let n = n.to_string_lossy();
                    n.starts_with("chunk-") && n.ends_with(".safetensors")
                })
                .count()
        })
        .unwrap_or(0);
    let manifest_path = out.join("manifest.json");
    let manifest = if manifest_path.exists() {
        let text = std::fs::read_to_string(&manifest_path)
            .with_context(|| format!("reading {}", manifest_path.display()))?;
        serde_json::from_str::<Manifest>(&text).ok()
    } else {
        None
    };
    Ok(Existing {
        run,
        finished_chunks,
        manifest,
    })
}

/// `--resume` refusal naming every setting that differs.
fn identity_differences(recorded: &RunIdentity, now: &RunIdentity) -> Result<Vec<String>> {
    Ok(fungi::core::extractor::json_differences(
        &serde_json::to_value(recorded)?,
        &serde_json::to_value(now)?,
    ))
}

/// Runs `fungi extract` on backend `B`.
///
/// Everything is validated — arguments, configuration, dataset, weights, state, and the run
/// already in `--out` — before anything in `--out` is written, so a refused command leaves
/// finished chunks, the state and the outputs as they were.
pub fn run<B: fungi_backbone::AutodiffVitOps>(
    args: &ExtractArgs,
    device: &B::Device,
    precision: fungi_backbone::Precision,
) -> Result<()> {
    if args.chunk_size == 0 {
        bail!("--chunk-size 0: expected at least 1 image per chunk");
    }
    let cfg = match (&args.config, args.preset) {
        (Some(p), _) => FungiConfig::from_file(p)?,
        (None, Some(PresetArg::Paper)) => FungiConfig::preset(fungi::Preset::Paper),
        (None, Some(PresetArg::Fungivision)) | (None, None) => {
            FungiConfig::preset(fungi::Preset::Fungivision)
        }
    };
    let bs = cfg.batch_size;
    let chunk = args
        .chunk_size
        .div_ceil(bs)
        .checked_mul(bs)
        .filter(|&c| c <= isize::MAX as usize / 8)
        .with_context(|| {
            format!(
                "--chunk-size {}: too large (at most {} images per chunk)",
                args.chunk_size,
                isize::MAX as usize / 8 / bs * bs
            )
        })?;
    let shard = args.shard.as_deref().map(parse_shard).transpose()?;
    let state_path = args.out.join("state.safetensors");
    if let (Some(s), Some(p)) = (&args.state, &args.save_state) {
        if same_file(s, p) {
            bail!(
                "--save-state {} is the --state file itself: nothing to save (drop --save-state)",
                p.display()
            );
        }
    }
    let strict = args.on_error == OnError::Fail;
    let ds = Dataset::load(&args.images, args.labels.as_deref(), strict)?;
    let arch = VitConfig::from_preset_or_file(&args.arch)?;
    if arch.in_chans != 3 {
        bail!(
            "{}: in_chans = {}: every view is an RGB image, so the architecture must take 3 input channels",
            args.arch,
            arch.in_chans
        );
    }
    let weights_sha256 = sha256_file(&args.weights)?;
    let vit = Vit::<B>::from_file(&arch, &args.weights, device)?;
    let mut ex = cfg.build(vit)?;
    ex.set_projection_residency(args.projection);
    ex.set_views_per_pass(args.max_views_per_pass);
    ex.set_prefix_precision(precision)?;
    if args.prepare_ahead {
        ex.set_prepare_ahead(Some(true));
    }
    let total = ds.len().div_ceil(chunk);
    let (a, b) = match shard {
        Some((i, n)) => shard_chunks(i, n, total),
        None => (0, total),
    };

    // What `--out` holds now; nothing in it is written until every check has passed.
    let existing = inspect_out(&args.out)?;
    let computed = existing.finished_chunks > 0 || existing.manifest.is_some();
    if existing.run.is_some() && computed && !args.resume {
        bail!(
            "{} already holds a run ({} finished chunk(s){}): pass --resume to continue it, or choose another --out",
            args.out.display(),
            existing.finished_chunks,
            if existing.manifest.is_some() { ", final outputs" } else { "" }
        );
    }
    if existing.run.is_none() && args.out.is_dir() {
        let entries: Vec<String> = std::fs::read_dir(&args.out)
            .with_context(|| format!("reading {}", args.out.display()))?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n != "chunks")
            .take(5)
            .collect();
        if !entries.is_empty() || existing.finished_chunks > 0 {
            bail!(
                "--out {} is not empty and holds no fungi run (found {}): choose a new or empty directory",
                args.out.display(),
                if entries.is_empty() { "chunk files".to_string() } else { entries.join(", ") }
            );
        }
    }
    // A run.json with nothing computed (a start that failed or was killed before its first
    // chunk) does not block a new run: there is nothing to lose.
    let resuming = existing.run.is_some() && computed;

    // The state: given, kept from the run being resumed, or made now.
    let setup_skipped = std::sync::Mutex::new(Vec::<Skipped>::new());
    let state_bytes: Vec<u8> = if let Some(s) = &args.state {
        let bytes = std::fs::read(s).with_context(|| format!("reading --state {}", s.display()))?;
        ex.load_state_bytes(&bytes, s)?;
        bytes
    } else if resuming && state_path.exists() {
        let bytes = std::fs::read(&state_path)
            .with_context(|| format!("reading {}", state_path.display()))?;
        ex.load_state_bytes(&bytes, &state_path)?;
        bytes
    } else {
        let opts = fungi::aug::DecodeOptions {
            apply_exif_orientation: args.apply_exif_orientation,
            ..Default::default()
        };
        let load = |i: usize| {
            fungi::aug::decode_rgb(&ds.files[i], &opts).map_err(fungi::core::Error::from)
        };
        let bar = progress_bar(0, "setup");
        let progress = |what: &str, done: usize, total: usize| {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
            bar.set_prefix(what.to_string());
        };
        let skip = |i: usize, e: &fungi::core::Error| {
            tracing::warn!("setup: skipping {}: {e}", ds.files[i].display());
            if let Ok(mut v) = setup_skipped.lock() {
                v.push(Skipped {
                    index: i,
                    file: ds.relative(i),
                    error: e.to_string(),
                });
            }
        };
        let skip_fn: Option<fungi::core::extractor::SkipFn<'_>> = match args.on_error {
            OnError::Skip => Some(&skip),
            OnError::Fail => None,
        };
        ex.setup_with(ds.len(), &load, Some(&progress), skip_fn)
            .map_err(|e| match (&e, args.on_error) {
                (fungi::core::Error::Image(_), OnError::Fail) => anyhow::anyhow!(
                    "{e}\n(setup reads training images for the objectives; nothing was written to {}: replace the file with a readable image, or rerun with --on-error skip)",
                    args.out.display()
                ),
                _ => anyhow::Error::from(e),
            })?;
        bar.finish_and_clear();
        ex.state_bytes(&state_path)?
    };
    let run = RunIdentity {
        tool_version: env!("CARGO_PKG_VERSION").to_string(),
        config: cfg.clone(),
        arch: arch.clone(),
        weights_sha256,
        dataset_sha256: ds.listing_hash(),
        dataset_len: ds.len(),
        classes: ds.classes.clone(),
        state_sha256: format!("{:x}", Sha256::digest(&state_bytes)),
        projection_fingerprint: ex.projection().fingerprint(),
        chunk_size: chunk,
        format: args.format,
        precision,
    };
    if resuming {
        if let Some(prev) = &existing.run {
            let d = identity_differences(prev, &run)?;
            if !d.is_empty() {
                bail!(
                    "--resume: this command differs from the run recorded in {} (expected = recorded, found = now):\n  {}\nnothing was changed; resume with the original settings, or choose another --out",
                    args.out.join("run.json").display(),
                    d.join("\n  ")
                );
            }
        }
        if let Some(m) = &existing.manifest {
            if m.run == run && m.chunks == (a, b) && m.shard == shard {
                eprintln!(
                    "{} is already complete ({} rows): nothing to do",
                    args.out.display(),
                    m.rows
                );
                return Ok(());
            }
        }
    }

    // Every check passed: write the state and the run identity, then the chunks.
    std::fs::create_dir_all(args.out.join("chunks"))
        .with_context(|| format!("creating {}", args.out.join("chunks").display()))?;
    // run.json first: if the state write fails, the next run finds a start with nothing
    // computed, which never blocks it.
    tensor_file::write_bytes_atomic(
        &args.out.join("run.json"),
        (serde_json::to_string_pretty(&run)? + "\n").as_bytes(),
    )?;
    if std::fs::read(&state_path).ok().as_deref() != Some(&state_bytes[..]) {
        tensor_file::write_bytes_atomic(&state_path, &state_bytes)?;
    }
    let setup_skipped = setup_skipped.into_inner().unwrap_or_default();
    let setup_file = args.out.join("setup-skipped.json");
    if !setup_skipped.is_empty() {
        tensor_file::write_bytes_atomic(
            &setup_file,
            serde_json::to_string_pretty(&setup_skipped)?.as_bytes(),
        )?;
    } else if !(resuming && args.state.is_none()) {
        // No setup skips in this run's state (a stale list from an abandoned start goes).
        let _ = std::fs::remove_file(&setup_file);
    }
    if let Some(p) = &args.save_state {
        if !same_file(p, &state_path) {
            tensor_file::write_bytes_atomic(p, &state_bytes)
                .with_context(|| format!("--save-state {}", p.display()))?;
        }
    }

    let dims = ex.block_dims();
    let mut off = 0;
    let blocks: Vec<BlockInfo> = ex
        .block_names()
        .into_iter()
        .zip(dims)
        .map(|(name, dim)| {
            let b = BlockInfo {
                name,
                dim,
                offset: off,
            };
            off += dim;
            b
        })
        .collect();
    let dim = off;
    let todo: Vec<usize> = (a..b)
        .filter(|&c| !chunk_path(&args.out, c).exists())
        .collect();
    let n_todo: usize = todo.iter().map(|&c| chunk_range(&run, c).len()).sum();
    tracing::info!(
        chunks = b - a,
        remaining = todo.len(),
        images = n_todo,
        "extracting"
    );
    let bar = progress_bar(n_todo as u64, "extract");
    let opts = fungi::aug::DecodeOptions {
        apply_exif_orientation: args.apply_exif_orientation,
        ..Default::default()
    };
    // Batches aligned to chunks; each batch is decoded while the previous one computes (one
    // batch in flight: memory is bounded by the batch size, not the chunk size).
    let batches: Vec<(usize, std::ops::Range<usize>)> = todo
        .iter()
        .flat_map(|&c| {
            let r = chunk_range(&run, c);
            (r.start..r.end)
                .step_by(bs)
                .map(move |s| (c, s..(s + bs).min(r.end)))
        })
        .collect();
    let out = &args.out;
    // On a separate device, the view transforms of batch k+1 run on the decode thread while
    // batch k computes; on the CPU backends they share the cores with the compute anyway.
    let overlap = ex.prepare_ahead();
    let ex = &ex;
    std::thread::scope(|scope| -> Result<()> {
        type Prepared = Option<fungi::core::Result<fungi::core::PreparedBatch>>;
        let (tx, rx) = std::sync::mpsc::sync_channel::<(usize, Decoded, Prepared)>(1);
        let ds = &ds;
        let opts = &opts;
        let batches = &batches;
        scope.spawn(move || {
            for (c, r) in batches {
                let decoded: Decoded = r
                    .clone()
                    .into_par_iter()
                    .map(|i| {
                        (
                            i,
                            fungi::aug::decode_rgb(&ds.files[i], opts).map_err(|e| e.to_string()),
                        )
                    })
                    .collect();
                let prepared = if overlap {
                    let (imgs, idx): (Vec<_>, Vec<u64>) = decoded
                        .iter()
                        .filter_map(|(i, r)| r.as_ref().ok().map(|im| (im.clone(), *i as u64)))
                        .unzip();
                    (!imgs.is_empty()).then(|| ex.prepare(&imgs, &idx))
                } else {
                    None
                };
                if tx.send((*c, decoded, prepared)).is_err() {
                    break;
                }
            }
        });
        let mut current: Option<(usize, Chunk)> = None;
        let flush = |c: usize, ch: &Chunk| write_chunk(&chunk_path(out, c), ch, dim);
        for (c, decoded, prepared) in rx {
            let in_batch = decoded.len() as u64;
            if let Some((pc, ch)) = current.take() {
                if pc != c {
                    flush(pc, &ch)?;
                } else {
                    current = Some((pc, ch));
                }
            }
            let ch = &mut current
                .get_or_insert_with(|| {
                    (
                        c,
                        Chunk {
                            features: vec![],
                            indices: vec![],
                            labels: vec![],
                            skipped: vec![],
                        },
                    )
                })
                .1;
            let mut imgs = Vec::new();
            let mut idx = Vec::new();
            for (i, r) in decoded {
                match r {
                    Ok(img) => {
                        imgs.push(img);
                        idx.push(i as u64);
                    }
                    Err(e) => match args.on_error {
                        OnError::Fail => bail!(
                            "{e}\n(finished chunks are kept in {}: replace the file with a readable image and rerun the same command with --resume, or rerun it with --resume --on-error skip to skip unreadable images and list them in manifest.json)",
                            out.display()
                        ),
                        OnError::Skip => {
                            tracing::warn!("skipping {}: {e}", ds.files[i].display());
                            ch.skipped.push(Skipped {
                                index: i,
                                file: ds.relative(i),
                                error: e,
                            });
                        }
                    },
                }
            }
            if !imgs.is_empty() {
                let f = match prepared {
                    Some(p) => p.and_then(|p| ex.extract_prepared(p)),
                    None => ex.extract(&imgs, &idx),
                };
                let f = f.map_err(|e| match e {
                    fungi::core::Error::NonFinite {
                        objective,
                        index,
                        value,
                    } => anyhow::anyhow!(
                        "{}: objective `{objective}` produced a non-finite feature ({value}); nothing of this chunk was written (finished chunks are kept in {}): check the weights and the state",
                        ds.files[index as usize].display(),
                        out.display()
                    ),
                    e => anyhow::Error::from(e),
                })?;
                ch.features.extend(f);
                for &i in &idx {
                    ch.indices.push(i as i64);
                    if let Some(l) = &ds.labels {
                        ch.labels.push(l[i as usize]);
                    }
                }
            }
            bar.inc(in_batch);
        }
        if let Some((c, ch)) = current.take() {
            flush(c, &ch)?;
        }
        Ok(())
    })?;
    bar.finish_and_clear();
    let extras = Extras {
        setup_skipped: match std::fs::read_to_string(&setup_file) {
            Ok(t) => serde_json::from_str(&t)
                .with_context(|| format!("{}: damaged", setup_file.display()))?,
            Err(_) => vec![],
        },
        not_listed: ds.problems.clone(),
    };
    let m = finish(
        &args.out,
        &run,
        &blocks,
        (a, b),
        shard,
        std::slice::from_ref(&args.out),
        &extras,
    )?;
    if !args.keep_chunks {
        for c in a..b {
            let _ = std::fs::remove_file(chunk_path(&args.out, c));
        }
    }
    eprintln!(
        "wrote {} rows x {} features ({}) to {}{}",
        m.rows,
        dim,
        blocks
            .iter()
            .map(|b| format!("{} {}", b.name, b.dim))
            .collect::<Vec<_>>()
            .join(", "),
        args.out.display(),
        if m.skipped.is_empty() && m.not_listed.is_empty() && m.setup_skipped.is_empty() {
            String::new()
        } else {
            format!(
                "; {} image(s) skipped, {} setup image(s) skipped, {} entr(y/ies) not listed: see manifest.json",
                m.skipped.len(),
                m.setup_skipped.len(),
                m.not_listed.len()
            )
        }
    );
    Ok(())
}
