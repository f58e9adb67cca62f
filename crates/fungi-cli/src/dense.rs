//! `fungi dense`: dense FUNGI features `[N, P, E+K]` of a dataset (the paper's HummingBird
//! features; docs/dense.md), with `fungi extract`'s machinery: `--out` locked, chunks written
//! atomically, `--resume`, `--shard`, `--on-error`, progress bars. The support bank comes from
//! `--support DIR` (L2-normalised patch tokens of those images), a `--state`, or the state of
//! the run being resumed.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{bail, Context, Result};
use fungi::backbone::{AutodiffVitOps, Precision, Vit};
use fungi::dataset::Dataset;
use fungi::dense::{DenseExtractor, DenseManifest, DenseRun, DenseSettings};
use fungi::layout::{shard_chunks, OutDir, Skipped, STATE_FILE};
use sha2::{Digest, Sha256};

use crate::extract::{
    extras, open_out_as, remove_chunks, resume_check, skips_note, start, write_chunks, ChunkPlan,
    RunArgs, RunInputs, Start,
};
use crate::{progress_bar, OnError};

/// Arguments of `fungi dense`.
#[derive(Debug, clap::Args)]
pub struct DenseArgs {
    /// Weights, dataset, output directory and run policy (shared with `fungi extract`).
    #[command(flatten)]
    pub run: RunArgs,
    /// Settings (TOML or JSON): seed, target_layer, batch_size, projection_dim and the
    /// `[dense]` table (image_size, latent_dim, temperature, neighbours, drop,
    /// support_per_image). Default: the paper's full setting.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// A state (projection, head, support bank) to use, e.g. the `--save-state` of another run
    /// or one made elsewhere.
    #[arg(long, conflicts_with = "support")]
    pub state: Option<PathBuf>,
    /// Build the support bank from these images (folder, ImageFolder or list): their
    /// L2-normalised patch tokens (all, or `support_per_image` each).
    #[arg(long)]
    pub support: Option<PathBuf>,
    /// Images per chunk written to disk (rounded up to a multiple of the batch size; a chunk
    /// holds P·(E+K) floats per image).
    #[arg(long, default_value_t = 16)]
    pub chunk_size: usize,
}

const NO_SUPPORT: &str = "no support bank: pass --support DIR (images whose patch tokens give each token its negatives) or --state FILE (a state with `dense.support`)";

/// The command's inputs, checked before `--out` is touched.
struct Plan {
    settings: DenseSettings,
    inputs: RunInputs,
}

fn plan(args: &DenseArgs) -> Result<Plan> {
    let settings = match &args.config {
        Some(p) => DenseSettings::from_file(p)?,
        None => DenseSettings::default(),
    };
    if args.state.is_none() && args.support.is_none() && !args.run.resume {
        bail!(NO_SUPPORT);
    }
    let inputs = RunInputs::check(
        &args.run,
        args.chunk_size,
        settings.batch_size,
        args.state.as_deref(),
    )?;
    if !settings
        .dense
        .image_size
        .is_multiple_of(inputs.arch.patch_size)
    {
        bail!(
            "[dense] image_size = {}: must be a multiple of the patch size {} of {}",
            settings.dense.image_size,
            inputs.arch.patch_size,
            inputs.arch_name
        );
    }
    Ok(Plan { settings, inputs })
}

/// The extractor with its support bank: `--state`, the resumed run's state, or `--support`
/// images. Returns the state's bytes and the support images skipped.
fn ready<B: AutodiffVitOps>(
    args: &DenseArgs,
    p: &Plan,
    ex: &mut DenseExtractor<B>,
    resuming: bool,
) -> Result<(Vec<u8>, Vec<Skipped>)> {
    let state_path = args.run.out.join(STATE_FILE);
    let read = |p: &Path, what: &str| {
        std::fs::read(p).with_context(|| format!("reading {what}{}", p.display()))
    };
    if let Some(s) = &args.state {
        let bytes = read(s, "--state ")?;
        ex.load_state_bytes(&bytes, s)?;
        return Ok((bytes, vec![]));
    }
    if resuming && state_path.exists() {
        let bytes = read(&state_path, "")?;
        ex.load_state_bytes(&bytes, &state_path)?;
        return Ok((bytes, vec![]));
    }
    let Some(dir) = &args.support else {
        bail!(NO_SUPPORT);
    };
    let support = Dataset::load(dir, None, args.run.on_error == OnError::Fail)
        .map_err(crate::listing_hint)
        .with_context(|| format!("--support {} (the support bank's images)", dir.display()))?
        .with_decode_options(p.inputs.decode);
    if support.files.is_empty() {
        bail!(
            "--support {}: no images (an empty support bank has no negatives)",
            dir.display()
        );
    }
    let bar = progress_bar(support.len() as u64, "support");
    let progress = |done: usize, _: usize| bar.set_position(done as u64);
    let skipped = Mutex::new(Vec::<Skipped>::new());
    let skip = |i: usize, e: &fungi::core::Error| {
        tracing::warn!("support: skipping {}: {e}", support.files[i].display());
        if let Ok(mut v) = skipped.lock() {
            v.push(Skipped {
                index: i,
                file: support.relative(i),
                error: e.to_string(),
            });
        }
    };
    let skip_fn: Option<fungi::dense::SupportSkip<'_>> = match args.run.on_error {
        OnError::Skip => Some(&skip),
        OnError::Fail => None,
    };
    let load = |i: usize| fungi::ImageSource::image(&support, i);
    let rows = ex
        .build_support(support.len(), &load, Some(&progress), skip_fn)
        .map_err(|e| match (&e, args.run.on_error) {
            (fungi::core::Error::Image(_), OnError::Fail) => anyhow::anyhow!(
                "{e}\n(nothing was written to {}: replace the file with a readable image, or rerun with --on-error skip)",
                args.run.out.display()
            ),
            _ => anyhow::Error::from(e),
        })?;
    bar.finish_and_clear();
    tracing::info!(rows, "support bank built");
    let bytes = ex.state_bytes(&state_path)?;
    Ok((bytes, skipped.into_inner().unwrap_or_default()))
}

/// Runs `fungi dense` on backend `B`: everything is validated before `--out` is written.
pub fn run<B: AutodiffVitOps>(
    args: &DenseArgs,
    device: &B::Device,
    precision: Precision,
) -> Result<()> {
    let p = plan(args)?;
    let vit = Vit::<B>::from_file(&p.inputs.arch, &p.inputs.weights, device)?;
    let mut ex = DenseExtractor::new(vit, p.settings.clone())?;
    ex.set_prefix_precision(precision)?;
    let total = p.inputs.ds.len().div_ceil(p.inputs.chunk);
    let chunks = match p.inputs.shard {
        Some((i, n)) => shard_chunks(i, n, total),
        None => (0, total),
    };
    let (out, existing, resuming) = open_out_as(
        &args.run.out,
        args.run.resume,
        DenseRun::read,
        DenseManifest::read,
    )?;
    let (state_bytes, support_skipped) = ready(args, &p, &mut ex, resuming)?;
    let run = DenseRun {
        tool_version: env!("CARGO_PKG_VERSION").to_string(),
        settings: p.settings.clone(),
        arch: p.inputs.arch.clone(),
        weights_sha256: p.inputs.weights_sha256.clone(),
        dataset_sha256: p.inputs.ds.listing_hash(),
        dataset_len: p.inputs.ds.len(),
        classes: p.inputs.ds.classes.clone(),
        state_sha256: format!("{:x}", Sha256::digest(&state_bytes)),
        projection_fingerprint: ex.projection().fingerprint(),
        chunk_size: p.inputs.chunk,
        patches: ex.patches(),
        feature_dim: ex.feature_dim(),
        precision,
    };
    if resume_check(
        &args.run.out,
        &existing,
        resuming,
        &run,
        |m: &DenseManifest| {
            (m.run == run && m.chunks == chunks && m.shard == p.inputs.shard).then_some(m.shape[0])
        },
    )? {
        return Ok(());
    }
    start(
        &args.run.out,
        &run,
        Start {
            state_bytes: &state_bytes,
            skipped: &support_skipped,
            resuming,
            state_given: args.state.is_some(),
            save_state: args.run.save_state.as_deref(),
        },
    )?;
    let plan = ChunkPlan {
        chunk_size: run.chunk_size,
        dataset_len: run.dataset_len,
        batch_size: run.settings.batch_size,
        dim: run.row_len(),
        on_error: args.run.on_error,
    };
    write_chunks(
        &args.run.out,
        &out,
        &p.inputs.ds,
        &plan,
        chunks,
        "dense",
        |stream, sink| fungi::dense::stream(&ex, &p.inputs.ds, stream, sink),
    )?;
    report(args, &out, &p.inputs.ds, &run, chunks, p.inputs.shard)
}

/// Writes the final outputs and the manifest, removes the chunks (unless `--keep-chunks`).
fn report(
    args: &DenseArgs,
    dir: &OutDir,
    ds: &Dataset,
    run: &DenseRun,
    (a, b): (usize, usize),
    shard: Option<(usize, usize)>,
) -> Result<()> {
    let extras = extras(&args.run.out, ds)?;
    let m = fungi::dense::finish(
        dir.path(),
        run,
        (a, b),
        shard,
        std::slice::from_ref(&args.run.out),
        &extras,
    )?;
    remove_chunks(&args.run, (a, b));
    eprintln!(
        "wrote features.npy [{}, {}, {}] (patch tokens x (token {} + gradient {})) to {}{}",
        m.shape[0],
        m.shape[1],
        m.shape[2],
        run.arch.embed_dim,
        run.feature_dim - run.arch.embed_dim,
        args.run.out.display(),
        skips_note(
            m.skipped.len(),
            ("support", m.support_skipped.len()),
            m.not_listed.len()
        )
    );
    Ok(())
}
