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

mod chunks;
mod existing;
mod output;

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use fungi::backbone::Vit;
use fungi::core::tensor_file;
use fungi::dataset::Dataset;
use fungi::layout::{
    chunk_path, sha256_file, shard_chunks, Format, RunIdentity, Skipped, CHUNKS_DIR, RUN_FILE,
    SETUP_SKIPPED_FILE, STATE_FILE,
};
use fungi::{Fungi, FungiConfig};
use rayon::prelude::*;
use sha2::{Digest, Sha256};

use chunks::{write_chunk, Chunk};
pub(crate) use existing::same_file;
use existing::{identity_differences, inspect_out, parse_shard};
pub(crate) use output::{finish, Extras};

use crate::{progress_bar, OnError};

/// Arguments of `fungi extract`.
#[derive(Debug, clap::Args)]
pub struct ExtractArgs {
    /// Backbone weights (.pth state dict, .safetensors or .onnx), or a preset name of
    /// `fungi fetch --list` (downloaded into the cache on first use).
    #[arg(long)]
    pub weights: PathBuf,
    /// Architecture preset or JSON config (default: the preset named by `--weights`).
    #[arg(long)]
    pub arch: Option<String>,
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
    pub preset: Option<fungi::Preset>,
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
    /// Eval transform of the embedding block: `model` (the arch's own timm / torchvision
    /// transform; the default when the arch carries one) or `eval` (fungivision's, the default
    /// otherwise). Overrides the config file's `transform`.
    #[arg(long, value_enum)]
    pub transform: Option<fungi::core::EmbeddingTransform>,
    /// Make batch k+1's views on the decode thread while batch k computes (the default on
    /// GPUs; on the CPU backends both share the cores, so it is off unless set).
    #[arg(long)]
    pub prepare_ahead: bool,
}

/// One batch of decoded images: `(global index, image or the reason it could not be read)`.
type Decoded = Vec<(usize, std::result::Result<fungi::aug::RgbImage, String>)>;

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
    let mut cfg = match &args.config {
        Some(p) => FungiConfig::from_file(p)?,
        None => FungiConfig::preset(args.preset.unwrap_or(fungi::Preset::Fungivision)),
    };
    if let Some(t) = args.transform {
        cfg.extractor.transform = t;
    }
    let bs = cfg.extractor.batch_size;
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
    let state_path = args.out.join(STATE_FILE);
    if let (Some(s), Some(p)) = (&args.state, &args.save_state) {
        if same_file(s, p) {
            bail!(
                "--save-state {} is the --state file itself: nothing to save (drop --save-state)",
                p.display()
            );
        }
    }
    let strict = args.on_error == OnError::Fail;
    let decode = fungi::aug::DecodeOptions {
        apply_exif_orientation: args.apply_exif_orientation,
        ..Default::default()
    };
    let ds = Dataset::load(&args.images, args.labels.as_deref(), strict)
        .map_err(crate::listing_hint)?
        .with_decode_options(decode);
    let (weights, arch_name) = crate::fetch::resolve_weights(&args.weights, args.arch.as_deref())?;
    let arch = crate::rgb_arch(&arch_name)?;
    let weights_sha256 = sha256_file(&weights)?;
    let vit = Vit::<B>::from_file(&arch, &weights, device)?;
    let mut builder = Fungi::<B>::builder(device)
        .backbone(vit)
        .config(cfg.clone())
        .precision(precision)
        .projection_residency(args.projection)
        .views_per_pass(args.max_views_per_pass);
    if args.prepare_ahead {
        builder = builder.prepare_ahead(true);
    }
    let unprepared = builder.build()?;
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
            .filter(|n| n != CHUNKS_DIR)
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
    let (fungi, state_bytes) = if let Some(s) = &args.state {
        let bytes = std::fs::read(s).with_context(|| format!("reading --state {}", s.display()))?;
        (unprepared.load_state_bytes(&bytes, s)?, bytes)
    } else if resuming && state_path.exists() {
        let bytes = std::fs::read(&state_path)
            .with_context(|| format!("reading {}", state_path.display()))?;
        (unprepared.load_state_bytes(&bytes, &state_path)?, bytes)
    } else {
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
        let fungi = unprepared
            .setup_with(&ds, Some(&progress), skip_fn)
            .map_err(|e| match (&e, args.on_error) {
                (fungi::core::Error::Image(_), OnError::Fail) => anyhow::anyhow!(
                    "{e}\n(setup reads training images for the objectives; nothing was written to {}: replace the file with a readable image, or rerun with --on-error skip)",
                    args.out.display()
                ),
                _ => anyhow::Error::from(e),
            })?;
        bar.finish_and_clear();
        let bytes = fungi.state_bytes(&state_path)?;
        (fungi, bytes)
    };
    let ex = fungi.extractor();
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
                    args.out.join(RUN_FILE).display(),
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
    std::fs::create_dir_all(args.out.join(CHUNKS_DIR))
        .with_context(|| format!("creating {}", args.out.join(CHUNKS_DIR).display()))?;
    // run.json first: if the state write fails, the next run finds a start with nothing
    // computed, which never blocks it.
    tensor_file::write_bytes_atomic(
        &args.out.join(RUN_FILE),
        (serde_json::to_string_pretty(&run)? + "\n").as_bytes(),
    )?;
    if std::fs::read(&state_path).ok().as_deref() != Some(&state_bytes[..]) {
        tensor_file::write_bytes_atomic(&state_path, &state_bytes)?;
    }
    let setup_skipped = setup_skipped.into_inner().unwrap_or_default();
    let setup_file = args.out.join(SETUP_SKIPPED_FILE);
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

    let blocks = fungi.blocks();
    let dim = fungi.feature_dim();
    let todo: Vec<usize> = (a..b)
        .filter(|&c| !chunk_path(&args.out, c).exists())
        .collect();
    let n_todo: usize = todo.iter().map(|&c| run.chunk_range(c).len()).sum();
    tracing::info!(
        chunks = b - a,
        remaining = todo.len(),
        images = n_todo,
        "extracting"
    );
    let bar = progress_bar(n_todo as u64, "extract");
    // Batches aligned to chunks; each batch is decoded while the previous one computes (one
    // batch in flight: memory is bounded by the batch size, not the chunk size).
    let batches: Vec<(usize, std::ops::Range<usize>)> = todo
        .iter()
        .flat_map(|&c| {
            let r = run.chunk_range(c);
            (r.start..r.end)
                .step_by(bs)
                .map(move |s| (c, s..(s + bs).min(r.end)))
        })
        .collect();
    let out = &args.out;
    // On a separate device, the view transforms of batch k+1 run on the decode thread while
    // batch k computes; on the CPU backends they share the cores with the compute anyway.
    let overlap = ex.prepare_ahead();
    std::thread::scope(|scope| -> Result<()> {
        type Prepared = Option<fungi::core::Result<fungi::core::PreparedBatch>>;
        let (tx, rx) = std::sync::mpsc::sync_channel::<(usize, Decoded, Prepared)>(1);
        let ds = &ds;
        let batches = &batches;
        scope.spawn(move || {
            for (c, r) in batches {
                let decoded: Decoded = r
                    .clone()
                    .into_par_iter()
                    .map(|i| {
                        (
                            i,
                            fungi::ImageSource::image(ds, i).map_err(|e| e.to_string()),
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
