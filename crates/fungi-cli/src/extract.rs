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

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use burn::tensor::backend::AutodiffBackend;
use fungi::backbone::{Vit, VitConfig};
use fungi::FungiConfig;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::dataset::Dataset;
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
    /// Bad-image policy.
    pub on_error: String,
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
    /// Files written.
    pub files: Vec<String>,
}

pub(crate) fn sha256_file(path: &Path) -> Result<String> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
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
            (Some(i), Some(n), _, _) => (i - env("SLURM_ARRAY_TASK_MIN").unwrap_or(0), n),
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
    let f: Vec<u8> = ch.features.iter().flat_map(|v| v.to_le_bytes()).collect();
    let i: Vec<u8> = ch.indices.iter().flat_map(|v| v.to_le_bytes()).collect();
    let l: Vec<u8> = ch.labels.iter().flat_map(|v| v.to_le_bytes()).collect();
    let n = ch.indices.len();
    let mut views = vec![
        (
            "features".to_string(),
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![n, dim], &f)?,
        ),
        (
            "indices".to_string(),
            safetensors::tensor::TensorView::new(safetensors::Dtype::I64, vec![n], &i)?,
        ),
    ];
    if !ch.labels.is_empty() {
        views.push((
            "labels".to_string(),
            safetensors::tensor::TensorView::new(safetensors::Dtype::I64, vec![n], &l)?,
        ));
    }
    let meta = HashMap::from([("skipped".to_string(), serde_json::to_string(&ch.skipped)?)]);
    let tmp = path.with_extension("tmp");
    safetensors::serialize_to_file(views, Some(meta), &tmp)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

fn read_chunk(path: &Path) -> Result<Chunk> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .with_context(|| format!("{}: corrupt chunk", path.display()))?;
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes)?;
    let skipped = serde_json::from_str(
        meta.metadata()
            .as_ref()
            .and_then(|m| m.get("skipped"))
            .map(String::as_str)
            .unwrap_or("[]"),
    )?;
    let f32s = |b: &[u8]| {
        b.chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect::<Vec<f32>>()
    };
    let i64s = |b: &[u8]| {
        b.chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
            .collect::<Vec<i64>>()
    };
    Ok(Chunk {
        features: f32s(st.tensor("features")?.data()),
        indices: i64s(st.tensor("indices")?.data()),
        labels: st
            .tensor("labels")
            .map(|t| i64s(t.data()))
            .unwrap_or_default(),
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

/// Writes the final outputs of chunks `[a, b)` and the manifest.
pub(crate) fn finish(
    out: &Path,
    run: &RunIdentity,
    blocks: &[BlockInfo],
    (a, b): (usize, usize),
    total: usize,
    shard: Option<(usize, usize)>,
    chunk_dirs: &[PathBuf],
) -> Result<Manifest> {
    let dim: usize = blocks.iter().map(|b| b.dim).sum();
    let (mut features, mut indices, mut labels, mut skipped) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for c in a..b {
        let p = chunk_dirs
            .iter()
            .map(|d| chunk_path(d, c))
            .find(|p| p.exists())
            .with_context(|| format!("chunk {c} is missing"))?;
        let ch = read_chunk(&p)?;
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
            let mut bufs: Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)> = blocks
                .iter()
                .map(|bl| {
                    let data: Vec<u8> = (0..n)
                        .flat_map(|r| {
                            features[r * dim + bl.offset..r * dim + bl.offset + bl.dim]
                                .iter()
                                .flat_map(|v| v.to_le_bytes())
                        })
                        .collect();
                    (
                        bl.name.clone(),
                        safetensors::Dtype::F32,
                        vec![n, bl.dim],
                        data,
                    )
                })
                .collect();
            bufs.push((
                "indices".into(),
                safetensors::Dtype::I64,
                vec![n],
                indices.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ));
            if !labels.is_empty() {
                bufs.push((
                    "labels".into(),
                    safetensors::Dtype::I64,
                    vec![n],
                    labels.iter().flat_map(|v| v.to_le_bytes()).collect(),
                ));
            }
            let views: Vec<_> = bufs
                .iter()
                .map(|(k, dt, s, b)| {
                    (
                        k.clone(),
                        safetensors::tensor::TensorView::new(*dt, s.clone(), b).expect("sizes"),
                    )
                })
                .collect();
            let tmp = out.join("features.safetensors.tmp");
            safetensors::serialize_to_file(views, None, &tmp)?;
            std::fs::rename(&tmp, out.join("features.safetensors"))?;
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
        files,
    };
    let tmp = out.join("manifest.json.tmp");
    std::fs::write(&tmp, serde_json::to_string_pretty(&manifest)? + "\n")?;
    std::fs::rename(&tmp, out.join("manifest.json"))?;
    Ok(manifest)
}

/// Runs `fungi extract` on backend `B`.
pub fn run<B: AutodiffBackend>(args: &ExtractArgs, device: &B::Device) -> Result<()> {
    let cfg = match (&args.config, args.preset) {
        (Some(p), _) => FungiConfig::from_file(p)?,
        (None, Some(PresetArg::Paper)) => FungiConfig::preset(fungi::Preset::Paper),
        (None, Some(PresetArg::Fungivision)) | (None, None) => {
            FungiConfig::preset(fungi::Preset::Fungivision)
        }
    };
    let shard = args.shard.as_deref().map(parse_shard).transpose()?;
    let ds = Dataset::load(&args.images, args.labels.as_deref())?;
    let arch = VitConfig::from_preset_or_file(&args.arch)?;
    let weights_sha256 = sha256_file(&args.weights)?;
    let vit = Vit::<B>::from_file(&arch, &args.weights, device)?;
    let mut ex = cfg.build(vit)?;
    let bs = cfg.batch_size;
    let chunk = args.chunk_size.max(1).div_ceil(bs) * bs;
    std::fs::create_dir_all(args.out.join("chunks"))
        .with_context(|| format!("creating {}", args.out.display()))?;
    let opts = fungi::aug::DecodeOptions {
        apply_exif_orientation: args.apply_exif_orientation,
        ..Default::default()
    };
    let load =
        |i: usize| fungi::aug::decode_rgb(&ds.files[i], &opts).map_err(fungi::core::Error::from);

    // The state: given, kept from an interrupted run, or made now (SimCLR negatives from this set).
    let state_path = args.out.join("state.safetensors");
    let run_path = args.out.join("run.json");
    if run_path.exists() && !args.resume {
        bail!(
            "{} already holds a run: pass --resume to continue it, or choose another --out",
            args.out.display()
        );
    }
    if let Some(s) = &args.state {
        ex.load_state(s)?;
        if s != &state_path {
            std::fs::copy(s, &state_path)
                .with_context(|| format!("copying {} into {}", s.display(), args.out.display()))?;
        }
    } else if args.resume && state_path.exists() {
        ex.load_state(&state_path)?;
    } else {
        let bar = progress_bar(0, "setup");
        let progress = |what: &str, done: usize, total: usize| {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
            bar.set_prefix(what.to_string());
        };
        ex.setup_with_progress(ds.len(), &load, Some(&progress))?;
        bar.finish_and_clear();
        ex.save_state(&state_path)?;
    }
    if let Some(p) = &args.save_state {
        std::fs::copy(&state_path, p).with_context(|| format!("writing {}", p.display()))?;
    }
    let run = RunIdentity {
        tool_version: env!("CARGO_PKG_VERSION").to_string(),
        config: cfg.clone(),
        arch: arch.clone(),
        weights_sha256,
        dataset_sha256: ds.listing_hash(),
        dataset_len: ds.len(),
        classes: ds.classes.clone(),
        state_sha256: sha256_file(&state_path)?,
        projection_fingerprint: ex.projection().fingerprint(),
        chunk_size: chunk,
        format: args.format,
        on_error: format!("{:?}", args.on_error).to_lowercase(),
    };
    if run_path.exists() {
        let prev: RunIdentity = serde_json::from_str(&std::fs::read_to_string(&run_path)?)
            .with_context(|| format!("reading {}", run_path.display()))?;
        if prev != run {
            bail!("--resume: {} was started with different settings (config, weights, dataset, state or chunking); refusing to mix them", run_path.display());
        }
    } else {
        std::fs::write(&run_path, serde_json::to_string_pretty(&run)? + "\n")?;
    }

    let total = ds.len().div_ceil(chunk);
    let (a, b) = match shard {
        Some((i, n)) => shard_chunks(i, n, total),
        None => (0, total),
    };
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
    let n_todo: usize = todo
        .iter()
        .map(|&c| (ds.len().min((c + 1) * chunk)) - c * chunk)
        .sum();
    tracing::info!(
        chunks = b - a,
        remaining = todo.len(),
        images = n_todo,
        "extracting"
    );
    let bar = progress_bar(n_todo as u64, "extract");
    for c in todo {
        let range = c * chunk..ds.len().min((c + 1) * chunk);
        let decoded: Vec<(usize, std::result::Result<fungi::aug::RgbImage, String>)> = range
            .clone()
            .into_par_iter()
            .map(|i| (i, load(i).map_err(|e| e.to_string())))
            .collect();
        let mut ch = Chunk {
            features: vec![],
            indices: vec![],
            labels: vec![],
            skipped: vec![],
        };
        let mut imgs = Vec::new();
        for (i, r) in decoded {
            match r {
                Ok(img) => {
                    imgs.push(img);
                    ch.indices.push(i as i64);
                    if let Some(l) = &ds.labels {
                        ch.labels.push(l[i]);
                    }
                }
                Err(e) => match args.on_error {
                    OnError::Fail => bail!("{e}\n(finished chunks are kept in {}: fix or remove the file, then rerun with --resume; or use --on-error skip)", args.out.display()),
                    OnError::Skip => {
                        tracing::warn!("skipping {}: {e}", ds.files[i].display());
                        ch.skipped.push(Skipped { index: i, file: ds.relative(i), error: e });
                    }
                },
            }
        }
        let idx: Vec<u64> = ch.indices.iter().map(|&i| i as u64).collect();
        for (s, imgs_b) in imgs.chunks(bs).enumerate() {
            ch.features
                .extend(ex.extract(imgs_b, &idx[s * bs..s * bs + imgs_b.len()])?);
            bar.inc(imgs_b.len() as u64);
        }
        bar.inc(ch.skipped.len() as u64);
        write_chunk(&chunk_path(&args.out, c), &ch, dim)?;
    }
    bar.finish_and_clear();
    let m = finish(
        &args.out,
        &run,
        &blocks,
        (a, b),
        total,
        shard,
        std::slice::from_ref(&args.out),
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
        if m.skipped.is_empty() {
            String::new()
        } else {
            format!(
                "; {} image(s) skipped, listed in manifest.json",
                m.skipped.len()
            )
        }
    );
    Ok(())
}
