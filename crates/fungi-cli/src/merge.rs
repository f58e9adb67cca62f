//! `fungi merge`: join the outputs of `fungi extract --shard i/n` runs.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use fungi::core::tensor_file;

use fungi::layout::{Manifest, OutDir, CHUNKS_DIR, LOCK_FILE};

use crate::extract::same_file;
use fungi::layout::{finish, Extras};

/// Arguments of `fungi merge`.
#[derive(Debug, clap::Args)]
pub struct MergeArgs {
    /// Output directory: new or empty (a non-empty one only with --force; never a shard).
    #[arg(long)]
    pub out: PathBuf,
    /// Write into a non-empty --out (its merged outputs are replaced; a shard is still refused).
    #[arg(long)]
    pub force: bool,
    /// Shard output directories (run with `--keep-chunks`), in any order.
    #[arg(required = true)]
    pub shards: Vec<PathBuf>,
}

/// Checks that the shards come from the same run and tile its chunks, then writes the merged
/// outputs (identical to those of one unsharded run). Nothing is written before every check has
/// passed, and `--out` is never one of the shards.
pub fn run(args: &MergeArgs) -> Result<()> {
    for d in &args.shards {
        if same_file(d, &args.out) {
            bail!(
                "--out {} is one of the shards being merged: choose another directory",
                args.out.display()
            );
        }
    }
    if args.out.exists() {
        if !args.out.is_dir() {
            bail!(
                "--out {}: exists and is not a directory",
                args.out.display()
            );
        }
        let mut entries = std::fs::read_dir(&args.out)
            .with_context(|| format!("reading {}", args.out.display()))?
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name() != LOCK_FILE);
        if entries.next().is_some() && !args.force {
            bail!(
                "--out {} is not empty: refusing to overwrite what it holds (choose a new directory, or pass --force to replace its merged outputs)",
                args.out.display()
            );
        }
        if args.out.join(CHUNKS_DIR).exists() {
            bail!(
                "--out {} holds chunks of an extract run: it cannot be a merge target, even with --force",
                args.out.display()
            );
        }
    }
    // One writer per run directory: a shard still being written is not final, and `--out`
    // is ours until the merge is done.
    for d in &args.shards {
        if OutDir::is_locked(d) {
            bail!(
                "{} is being written by a running fungi process ({} is locked): merge it when that run has finished",
                d.display(),
                d.join(LOCK_FILE).display()
            );
        }
    }
    let _lock = OutDir::open(&args.out)?;
    let mut ms: Vec<(Manifest, PathBuf)> = Vec::new();
    for d in &args.shards {
        ms.push((Manifest::read(d)?, d.clone()));
    }
    ms.sort_by_key(|(m, _)| m.chunks.0);
    let first = &ms[0].0;
    for (m, d) in &ms {
        if m.run != first.run {
            let diff = fungi::core::state::json_differences(
                &serde_json::to_value(&first.run)?,
                &serde_json::to_value(&m.run)?,
            );
            bail!(
                "{} comes from a different run than {} (expected = {}, found = {}):\n  {}",
                d.display(),
                ms[0].1.display(),
                ms[0].1.display(),
                d.display(),
                diff.join("\n  ")
            );
        }
        if m.blocks != first.blocks || m.total_chunks != first.total_chunks {
            bail!(
                "{}: block layout or chunk count differs from {}",
                d.display(),
                ms[0].1.display()
            );
        }
        let n = m.shard.map(|s| s.1);
        if n != first.shard.map(|s| s.1) || n.is_none() {
            bail!(
                "{}: not a shard of the same --shard i/n split as {}",
                d.display(),
                ms[0].1.display()
            );
        }
    }
    let mut next = 0;
    let mut prev_dir: Option<&PathBuf> = None;
    for (m, d) in &ms {
        if m.chunks.0 > next {
            bail!(
                "chunks {next}..{} are missing: no shard given covers them (before {})",
                m.chunks.0,
                d.display()
            );
        }
        if m.chunks.0 < next {
            bail!(
                "chunks {}..{} are covered twice: by {} and {}",
                m.chunks.0,
                next.min(m.chunks.1),
                prev_dir
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
                d.display()
            );
        }
        next = m.chunks.1;
        prev_dir = Some(d);
    }
    if next != first.total_chunks {
        bail!(
            "chunks {next}..{} are missing: not every shard was given",
            first.total_chunks
        );
    }
    let dirs: Vec<PathBuf> = ms.iter().map(|(_, d)| d.clone()).collect();
    if let Some(d) = dirs.iter().find(|d| !d.join("chunks").exists()) {
        bail!(
            "{} has no chunks/ folder: run the shards with --keep-chunks so that they can be merged",
            d.display()
        );
    }
    let read = |p: PathBuf| std::fs::read(&p).with_context(|| format!("reading {}", p.display()));
    let run_json = read(dirs[0].join("run.json"))?;
    let state = read(dirs[0].join("state.safetensors"))?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let extras = Extras {
        setup_skipped: first.setup_skipped.clone(),
        not_listed: first.not_listed.clone(),
    };
    tensor_file::write_bytes_atomic(&args.out.join("state.safetensors"), &state)?;
    tensor_file::write_bytes_atomic(&args.out.join("run.json"), &run_json)?;
    let m = finish(
        &args.out,
        &first.run,
        &first.blocks,
        (0, first.total_chunks),
        None,
        &dirs,
        &extras,
    )?;
    eprintln!(
        "merged {} shards: {} rows into {}",
        ms.len(),
        m.rows,
        args.out.display()
    );
    Ok(())
}
