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

mod existing;

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{bail, Context, Result};
use fungi::backbone::{AutodiffVitOps, Precision, Vit, VitConfig};
use fungi::core::tensor_file;
use fungi::dataset::Dataset;
use fungi::layout::{
    chunk_path, sha256_file, shard_chunks, Chunk, Extras, Format, Manifest, OutDir, RunIdentity,
    Skipped, CHUNKS_DIR, LOCK_FILE, RUN_FILE, SETUP_SKIPPED_FILE, STATE_FILE,
};
use fungi::{Fungi, FungiConfig, Stream, Unprepared};
use sha2::{Digest, Sha256};

pub(crate) use existing::same_file;
pub(crate) use existing::{identity_differences, parse_shard, ReadFn};
use existing::{inspect_out_as, Existing};

use crate::{progress_bar, OnError};

/// The arguments `fungi extract` and `fungi dense` share.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
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
    /// Also copy the state used to this path (pass it as `--state` to later runs).
    #[arg(long)]
    pub save_state: Option<PathBuf>,
    /// Output directory.
    #[arg(long)]
    pub out: PathBuf,
    /// Continue an interrupted run in `--out`.
    #[arg(long)]
    pub resume: bool,
    /// What to do with an image that cannot be decoded (dataset, and setup or support images).
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

/// Arguments of `fungi extract`.
#[derive(Debug, clap::Args)]
pub struct ExtractArgs {
    /// Weights, dataset, output directory and run policy (shared with `fungi dense`).
    #[command(flatten)]
    pub run: RunArgs,
    /// Configuration file (TOML or JSON): seed, target_layer, [[objective]] tables.
    #[arg(long, conflicts_with = "preset")]
    pub config: Option<PathBuf>,
    /// A built-in configuration instead of `--config`.
    #[arg(long, value_enum)]
    pub preset: Option<fungi::Preset>,
    /// Load the extractor state (projection, heads, negatives) of a training run.
    #[arg(long)]
    pub state: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value = "npy")]
    pub format: Format,
    /// Images per chunk written to disk (rounded up to a multiple of the batch size).
    #[arg(long, default_value_t = 256)]
    pub chunk_size: usize,
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

/// The command's inputs, checked: configuration, chunking, dataset, architecture, weights.
struct Plan {
    cfg: FungiConfig,
    inputs: RunInputs,
}

/// What a run of `fungi extract` or `fungi dense` reads, checked before `--out` is touched.
pub(crate) struct RunInputs {
    /// Images per chunk (a multiple of the batch size).
    pub chunk: usize,
    /// `--shard i/n`.
    pub shard: Option<(usize, usize)>,
    /// The dataset.
    pub ds: Dataset,
    /// The architecture and its name.
    pub arch: VitConfig,
    pub arch_name: String,
    /// The weights file and its SHA-256.
    pub weights: PathBuf,
    pub weights_sha256: String,
    /// Decoding options of the dataset's images.
    pub decode: fungi::aug::DecodeOptions,
}

impl RunInputs {
    /// Chunking, shard, `--save-state` ≠ `--state`, the dataset listing, the architecture and
    /// the weights (fetched by preset name if need be, hashed).
    pub(crate) fn check(
        a: &RunArgs,
        chunk_size: usize,
        batch_size: usize,
        state: Option<&Path>,
    ) -> Result<Self> {
        if chunk_size == 0 {
            bail!("--chunk-size 0: expected at least 1 image per chunk");
        }
        let bs = batch_size.max(1);
        let chunk = chunk_size
            .div_ceil(bs)
            .checked_mul(bs)
            .filter(|&c| c <= isize::MAX as usize / 8)
            .with_context(|| {
                format!(
                    "--chunk-size {}: too large (at most {} images per chunk)",
                    chunk_size,
                    isize::MAX as usize / 8 / bs * bs
                )
            })?;
        let shard = a.shard.as_deref().map(parse_shard).transpose()?;
        if let (Some(s), Some(p)) = (state, a.save_state.as_deref()) {
            if same_file(s, p) {
                bail!(
                    "--save-state {} is the --state file itself: nothing to save (drop --save-state)",
                    p.display()
                );
            }
        }
        let decode = fungi::aug::DecodeOptions {
            apply_exif_orientation: a.apply_exif_orientation,
            ..Default::default()
        };
        let ds = Dataset::load(&a.images, a.labels.as_deref(), a.on_error == OnError::Fail)
            .map_err(crate::listing_hint)?
            .with_decode_options(decode);
        let (weights, arch_name) = crate::fetch::resolve_weights(&a.weights, a.arch.as_deref())?;
        let arch = crate::rgb_arch(&arch_name)?;
        let weights_sha256 = sha256_file(&weights)?;
        Ok(Self {
            chunk,
            shard,
            ds,
            arch,
            arch_name,
            weights,
            weights_sha256,
            decode,
        })
    }
}

/// Everything validated — arguments, configuration, dataset, weights — before `--out` is
/// touched.
fn plan(args: &ExtractArgs) -> Result<Plan> {
    let mut cfg = match &args.config {
        Some(p) => FungiConfig::from_file(p)?,
        None => FungiConfig::preset(args.preset.unwrap_or(fungi::Preset::Fungivision)),
    };
    if let Some(t) = args.transform {
        cfg.extractor.transform = t;
    }
    let inputs = RunInputs::check(
        &args.run,
        args.chunk_size,
        cfg.extractor.batch_size,
        args.state.as_deref(),
    )?;
    Ok(Plan { cfg, inputs })
}

/// Takes `--out` for this process (one writer per run directory) and reads what it holds;
/// `resuming` when it holds a run with something computed. Refuses (touching nothing) a
/// directory that holds another run without `--resume`, or files that are not a fungi run.
fn open_out(args: &ExtractArgs) -> Result<(OutDir, Existing, bool)> {
    open_out_as(
        &args.run.out,
        args.run.resume,
        RunIdentity::read,
        Manifest::read,
    )
}

/// [`open_out`] for a run whose `run.json` and manifest `read_run` / `read_manifest` read
/// (`fungi dense`).
pub(crate) fn open_out_as<R, M>(
    out: &Path,
    resume: bool,
    read_run: ReadFn<R>,
    read_manifest: ReadFn<M>,
) -> Result<(OutDir, Existing<R, M>, bool)> {
    // Read-only first: a folder of other files is refused before a lock file goes into it. A
    // folder a live writer holds is left to `OutDir::open`, which names the holder (its
    // `run.json.tmp` may be all there is yet).
    if out.is_dir() && !out.join(RUN_FILE).exists() && !OutDir::is_locked(out) {
        let entries: Vec<String> = std::fs::read_dir(out)
            .with_context(|| format!("reading {}", out.display()))?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n != CHUNKS_DIR && n != LOCK_FILE)
            .take(5)
            .collect();
        let chunks = std::fs::read_dir(out.join(CHUNKS_DIR)).map_or(0, |d| d.count());
        if !entries.is_empty() || chunks > 0 {
            bail!(
                "--out {} is not empty and holds no fungi run (found {}): choose a new or empty directory",
                out.display(),
                if entries.is_empty() { "chunk files".to_string() } else { entries.join(", ") }
            );
        }
    }
    let dir = OutDir::open(out)?;
    let existing = inspect_out_as(out, read_run, read_manifest)?;
    let computed = existing.finished_chunks > 0 || existing.manifest.is_some();
    if existing.run.is_some() && computed && !resume {
        bail!(
            "{} already holds a run ({} finished chunk(s){}): pass --resume to continue it, or choose another --out",
            out.display(),
            existing.finished_chunks,
            if existing.manifest.is_some() { ", final outputs" } else { "" }
        );
    }
    // A run.json with nothing computed (a start that failed or was killed before its first
    // chunk) does not block a new run: there is nothing to lose.
    let resuming = existing.run.is_some() && computed;
    Ok((dir, existing, resuming))
}

/// The extractor made ready: the given `--state`, the state of the run being resumed, or a
/// setup on the dataset (progress bar, skip policy). Returns it with the state's bytes and the
/// training images the setup skipped.
fn ready<B: AutodiffVitOps>(
    args: &ExtractArgs,
    ds: &Dataset,
    unprepared: Unprepared<B>,
    resuming: bool,
) -> Result<(Fungi<B>, Vec<u8>, Vec<Skipped>)> {
    let state_path = args.run.out.join(STATE_FILE);
    let read = |p: &Path, what: &str| {
        std::fs::read(p).with_context(|| format!("reading {what}{}", p.display()))
    };
    if let Some(s) = &args.state {
        let bytes = read(s, "--state ")?;
        return Ok((unprepared.load_state_bytes(&bytes, s)?, bytes, vec![]));
    }
    if resuming && state_path.exists() {
        let bytes = read(&state_path, "")?;
        return Ok((
            unprepared.load_state_bytes(&bytes, &state_path)?,
            bytes,
            vec![],
        ));
    }
    let bar = progress_bar(0, "setup");
    let progress = |what: &str, done: usize, total: usize| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
        bar.set_prefix(what.to_string());
    };
    let skipped = Mutex::new(Vec::<Skipped>::new());
    let skip = |i: usize, e: &fungi::core::Error| {
        tracing::warn!("setup: skipping {}: {e}", ds.files[i].display());
        if let Ok(mut v) = skipped.lock() {
            v.push(Skipped {
                index: i,
                file: ds.relative(i),
                error: e.to_string(),
            });
        }
    };
    let skip_fn: Option<fungi::core::extractor::SkipFn<'_>> = match args.run.on_error {
        OnError::Skip => Some(&skip),
        OnError::Fail => None,
    };
    let fungi = unprepared
        .setup_with(ds, Some(&progress), skip_fn)
        .map_err(|e| match (&e, args.run.on_error) {
            (fungi::core::Error::Image(_), OnError::Fail) => anyhow::anyhow!(
                "{e}\n(setup reads training images for the objectives; nothing was written to {}: replace the file with a readable image, or rerun with --on-error skip)",
                args.run.out.display()
            ),
            _ => anyhow::Error::from(e),
        })?;
    bar.finish_and_clear();
    let bytes = fungi.state_bytes(&state_path)?;
    Ok((fungi, bytes, skipped.into_inner().unwrap_or_default()))
}

/// The run's identity; with `--resume`, refused unless it matches the recorded one. `None` when
/// the run in `--out` is already complete for these chunks.
fn identity<B: AutodiffVitOps>(
    args: &ExtractArgs,
    p: &Plan,
    fungi: &Fungi<B>,
    state_bytes: &[u8],
    precision: Precision,
    (existing, resuming, chunks): (&Existing, bool, (usize, usize)),
) -> Result<Option<RunIdentity>> {
    let run = RunIdentity {
        tool_version: env!("CARGO_PKG_VERSION").to_string(),
        config: p.cfg.clone(),
        arch: p.inputs.arch.clone(),
        weights_sha256: p.inputs.weights_sha256.clone(),
        dataset_sha256: p.inputs.ds.listing_hash(),
        dataset_len: p.inputs.ds.len(),
        classes: p.inputs.ds.classes.clone(),
        state_sha256: format!("{:x}", Sha256::digest(state_bytes)),
        projection_fingerprint: fungi.extractor().projection().fingerprint(),
        chunk_size: p.inputs.chunk,
        format: args.format,
        precision,
    };
    let done = resume_check(&args.run.out, existing, resuming, &run, |m: &Manifest| {
        (m.run == run && m.chunks == chunks && m.shard == p.inputs.shard).then_some(m.rows)
    })?;
    Ok((!done).then_some(run))
}

/// With `--resume`: refuses a run whose identity differs from the one recorded in `out`
/// (naming every setting that differs); returns true when the recorded manifest says the run
/// is already complete (`complete` gives its row count then), after saying so.
pub(crate) fn resume_check<R: serde::Serialize, M>(
    out: &Path,
    existing: &Existing<R, M>,
    resuming: bool,
    run: &R,
    complete: impl Fn(&M) -> Option<usize>,
) -> Result<bool> {
    if !resuming {
        return Ok(false);
    }
    if let Some(prev) = &existing.run {
        let d = identity_differences(prev, run)?;
        if !d.is_empty() {
            bail!(
                "--resume: this command differs from the run recorded in {} (expected = recorded, found = now):\n  {}\nnothing was changed; resume with the original settings, or choose another --out",
                out.join(RUN_FILE).display(),
                d.join("\n  ")
            );
        }
    }
    if let Some(rows) = existing.manifest.as_ref().and_then(complete) {
        eprintln!(
            "{} is already complete ({rows} rows): nothing to do",
            out.display()
        );
        return Ok(true);
    }
    Ok(false)
}

/// What [`start`] writes besides the run's identity.
pub(crate) struct Start<'a> {
    /// The state's bytes (`state.safetensors`).
    pub state_bytes: &'a [u8],
    /// Images the setup (or support bank) skipped.
    pub skipped: &'a [Skipped],
    /// Whether this continues a run in `--out`.
    pub resuming: bool,
    /// Whether the state came from `--state` (not from the run being resumed).
    pub state_given: bool,
    /// `--save-state`.
    pub save_state: Option<&'a Path>,
}

/// Every check passed: writes `run.json` first (if the state write then fails, the next run
/// finds a start with nothing computed, which never blocks it), the state, the setup's skips
/// and `--save-state`.
pub(crate) fn start<R: serde::Serialize>(out: &Path, run: &R, s: Start<'_>) -> Result<()> {
    std::fs::create_dir_all(out.join(CHUNKS_DIR))
        .with_context(|| format!("creating {}", out.join(CHUNKS_DIR).display()))?;
    tensor_file::write_bytes_atomic(
        &out.join(RUN_FILE),
        (serde_json::to_string_pretty(run)? + "\n").as_bytes(),
    )?;
    let state_path = out.join(STATE_FILE);
    if std::fs::read(&state_path).ok().as_deref() != Some(s.state_bytes) {
        tensor_file::write_bytes_atomic(&state_path, s.state_bytes)?;
    }
    let setup_file = out.join(SETUP_SKIPPED_FILE);
    if !s.skipped.is_empty() {
        tensor_file::write_bytes_atomic(
            &setup_file,
            serde_json::to_string_pretty(s.skipped)?.as_bytes(),
        )?;
    } else if !s.resuming || s.state_given {
        // No setup skips in this run's state (a stale list from an abandoned start goes).
        let _ = std::fs::remove_file(&setup_file);
    }
    if let Some(p) = s.save_state {
        if !same_file(p, &state_path) {
            tensor_file::write_bytes_atomic(p, s.state_bytes)
                .with_context(|| format!("--save-state {}", p.display()))?;
        }
    }
    Ok(())
}

/// Computes the chunks of `[a, b)` not finished yet through the library's pipeline (batches
/// aligned to chunks), writing each chunk atomically as soon as its last batch is done.
fn extract_chunks<B: AutodiffVitOps>(
    args: &ExtractArgs,
    dir: &OutDir,
    ds: &Dataset,
    fungi: &Fungi<B>,
    run: &RunIdentity,
    chunks: (usize, usize),
) -> Result<()> {
    let plan = ChunkPlan {
        chunk_size: run.chunk_size,
        dataset_len: run.dataset_len,
        batch_size: run.config.extractor.batch_size,
        dim: fungi.feature_dim(),
        on_error: args.run.on_error,
    };
    write_chunks(
        &args.run.out,
        dir,
        ds,
        &plan,
        chunks,
        "extract",
        |stream, sink| fungi.stream(ds, stream, sink),
    )
}

/// How a run's chunks are laid out: `chunk_size` images per chunk over `dataset_len`, batches
/// of at most `batch_size` aligned to chunks, rows of `dim` values.
pub(crate) struct ChunkPlan {
    pub chunk_size: usize,
    pub dataset_len: usize,
    pub batch_size: usize,
    pub dim: usize,
    pub on_error: OnError,
}

impl ChunkPlan {
    fn chunk_range(&self, c: usize) -> std::ops::Range<usize> {
        let start = c.saturating_mul(self.chunk_size).min(self.dataset_len);
        start
            ..c.saturating_add(1)
                .saturating_mul(self.chunk_size)
                .min(self.dataset_len)
    }
}

/// The sink a chunked run hands to the library's pipeline.
pub(crate) type RowSink<'s> = &'s mut dyn FnMut(fungi::Rows) -> fungi::core::Result<()>;

/// Computes the chunks of `[a, b)` not finished yet with `run_stream(stream, sink)` (the
/// library's pipeline over `ds`: `Fungi::stream` or `fungi::dense::stream`), writing each
/// chunk atomically as soon as its last batch is done; a progress bar named `what`.
pub(crate) fn write_chunks(
    out: &Path,
    dir: &OutDir,
    ds: &Dataset,
    plan: &ChunkPlan,
    (a, b): (usize, usize),
    what: &str,
    run_stream: impl FnOnce(Stream<'_>, RowSink<'_>) -> fungi::core::Result<()>,
) -> Result<()> {
    let (bs, dim) = (plan.batch_size.max(1), plan.dim);
    let todo: Vec<usize> = (a..b).filter(|&c| !dir.has_chunk(c)).collect();
    let batches: Vec<std::ops::Range<usize>> = todo
        .iter()
        .flat_map(|&c| {
            let r = plan.chunk_range(c);
            (r.start..r.end)
                .step_by(bs)
                .map(move |s| s..(s + bs).min(r.end))
        })
        .collect();
    let n_todo: usize = batches.iter().map(|r| r.len()).sum();
    tracing::info!(
        chunks = b - a,
        remaining = todo.len(),
        images = n_todo,
        "extracting"
    );
    let bar = progress_bar(n_todo as u64, what);
    let tick = |n: usize| bar.inc(n as u64);
    let stream = Stream::new(batches).on_error(plan.on_error).progress(&tick);
    // The chunk being filled; written as soon as its last batch is in, so that a failure
    // later never loses a finished chunk.
    let mut current: Option<(usize, Chunk)> = None;
    let mut write_error: Option<anyhow::Error> = None;
    let mut sink = |rows: fungi::Rows| {
        let c = rows.range.start / plan.chunk_size;
        let ch = &mut current.get_or_insert_with(|| (c, Chunk::default())).1;
        for (i, e) in rows.skipped {
            tracing::warn!("skipping {}: {e}", ds.files[i].display());
            ch.skipped.push(Skipped {
                index: i,
                file: ds.relative(i),
                error: e.to_string(),
            });
        }
        ch.features.extend(rows.features);
        for &i in &rows.indices {
            ch.indices.push(i as i64);
            if let Some(l) = &ds.labels {
                ch.labels.push(l[i as usize]);
            }
        }
        if rows.range.end == plan.chunk_range(c).end {
            if let Some((c, ch)) = current.take() {
                if let Err(e) = dir.write_chunk(c, &ch, dim) {
                    write_error = Some(e.into());
                    return Err(fungi::core::Error::Input(format!("chunk {c} not written")));
                }
            }
        }
        Ok(())
    };
    let result = run_stream(stream, &mut sink);
    if let Some(e) = write_error {
        return Err(e);
    }
    result.map_err(|e| match e {
        fungi::core::Error::Image(_) => anyhow::anyhow!(
            "{e}\n(finished chunks are kept in {}: replace the file with a readable image and rerun the same command with --resume, or rerun it with --resume --on-error skip to skip unreadable images and list them in manifest.json)",
            out.display()
        ),
        fungi::core::Error::NonFinite { objective, index, value } => anyhow::anyhow!(
            "{}: objective `{objective}` produced a non-finite feature ({value}); nothing of this chunk was written (finished chunks are kept in {}): check the weights and the state",
            ds.files[index as usize].display(),
            out.display()
        ),
        e => anyhow::Error::from(e),
    })?;
    bar.finish_and_clear();
    Ok(())
}

/// Runs `fungi extract` on backend `B`.
///
/// Everything is validated — arguments, configuration, dataset, weights, state, and the run
/// already in `--out` — before anything in `--out` is written, so a refused command leaves
/// finished chunks, the state and the outputs as they were. `--out` is locked for the whole
/// run: a second writer is refused at once.
pub fn run<B: AutodiffVitOps>(
    args: &ExtractArgs,
    device: &B::Device,
    precision: Precision,
) -> Result<()> {
    let p = plan(args)?;
    let vit = Vit::<B>::from_file(&p.inputs.arch, &p.inputs.weights, device)?;
    let mut builder = Fungi::<B>::builder(device)
        .backbone(vit)
        .config(p.cfg.clone())
        .precision(precision)
        .projection_residency(args.projection)
        .views_per_pass(args.max_views_per_pass);
    if args.prepare_ahead {
        builder = builder.prepare_ahead(true);
    }
    let unprepared = builder.build()?;
    let total = p.inputs.ds.len().div_ceil(p.inputs.chunk);
    let chunks = match p.inputs.shard {
        Some((i, n)) => shard_chunks(i, n, total),
        None => (0, total),
    };
    let (out, existing, resuming) = open_out(args)?;
    let (fungi, state_bytes, setup_skipped) = ready(args, &p.inputs.ds, unprepared, resuming)?;
    let Some(run) = identity(
        args,
        &p,
        &fungi,
        &state_bytes,
        precision,
        (&existing, resuming, chunks),
    )?
    else {
        return Ok(());
    };
    start(
        &args.run.out,
        &run,
        Start {
            state_bytes: &state_bytes,
            skipped: &setup_skipped,
            resuming,
            state_given: args.state.is_some(),
            save_state: args.run.save_state.as_deref(),
        },
    )?;
    extract_chunks(args, &out, &p.inputs.ds, &fungi, &run, chunks)?;
    report(
        args,
        &out,
        &p.inputs.ds,
        &fungi,
        &run,
        chunks,
        p.inputs.shard,
    )
}

/// Writes the final outputs and the manifest, removes the chunks (unless `--keep-chunks`) and
/// says what was written.
#[allow(clippy::too_many_arguments)]
fn report<B: AutodiffVitOps>(
    args: &ExtractArgs,
    dir: &OutDir,
    ds: &Dataset,
    fungi: &Fungi<B>,
    run: &RunIdentity,
    (a, b): (usize, usize),
    shard: Option<(usize, usize)>,
) -> Result<()> {
    let extras = extras(&args.run.out, ds)?;
    let blocks = fungi.blocks();
    let m = dir.finish(run, &blocks, (a, b), shard, &extras)?;
    remove_chunks(&args.run, (a, b));
    eprintln!(
        "wrote {} rows x {} features ({}) to {}{}",
        m.rows,
        fungi.feature_dim(),
        blocks
            .iter()
            .map(|b| format!("{} {}", b.name, b.dim))
            .collect::<Vec<_>>()
            .join(", "),
        args.run.out.display(),
        skips_note(
            m.skipped.len(),
            ("setup", m.setup_skipped.len()),
            m.not_listed.len()
        )
    );
    Ok(())
}

/// What the run's start recorded beside the chunks: the setup's (or support bank's) skipped
/// images and the dataset's unlisted entries.
pub(crate) fn extras(out: &Path, ds: &Dataset) -> Result<Extras> {
    let setup_file = out.join(SETUP_SKIPPED_FILE);
    Ok(Extras {
        setup_skipped: match std::fs::read_to_string(&setup_file) {
            Ok(t) => serde_json::from_str(&t)
                .with_context(|| format!("{}: damaged", setup_file.display()))?,
            Err(_) => vec![],
        },
        not_listed: ds.problems.clone(),
    })
}

/// Removes the chunk files of `[a, b)` unless `--keep-chunks`.
pub(crate) fn remove_chunks(run: &RunArgs, (a, b): (usize, usize)) {
    if !run.keep_chunks {
        for c in a..b {
            let _ = std::fs::remove_file(chunk_path(&run.out, c));
        }
    }
}

/// The end of the final message: what was skipped or not listed, if anything.
pub(crate) fn skips_note(
    skipped: usize,
    (setup, setup_skipped): (&str, usize),
    not_listed: usize,
) -> String {
    if skipped == 0 && setup_skipped == 0 && not_listed == 0 {
        String::new()
    } else {
        format!(
            "; {skipped} image(s) skipped, {setup_skipped} {setup} image(s) skipped, {not_listed} entr(y/ies) not listed: see manifest.json"
        )
    }
}
