//! `fungi merge`: join the outputs of `fungi extract --shard i/n` runs.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};

use crate::extract::{finish, Manifest};

/// Arguments of `fungi merge`.
#[derive(Debug, clap::Args)]
pub struct MergeArgs {
    /// Output directory.
    #[arg(long)]
    pub out: PathBuf,
    /// Shard output directories (run with `--keep-chunks`), in any order.
    #[arg(required = true)]
    pub shards: Vec<PathBuf>,
}

/// Checks that the shards come from the same run and tile its chunks, then writes the merged
/// outputs (identical to those of one unsharded run).
pub fn run(args: &MergeArgs) -> Result<()> {
    let mut ms: Vec<(Manifest, PathBuf)> = Vec::new();
    for d in &args.shards {
        let p = d.join("manifest.json");
        let m: Manifest = serde_json::from_str(
            &std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?,
        )
        .with_context(|| format!("{}: not a fungi manifest", p.display()))?;
        ms.push((m, d.clone()));
    }
    ms.sort_by_key(|(m, _)| m.chunks.0);
    let first = &ms[0].0;
    for (m, d) in &ms {
        if m.run != first.run {
            bail!("{} comes from a different run (config, weights, dataset, state or chunking differ) than {}", d.display(), ms[0].1.display());
        }
        if m.blocks != first.blocks || m.total_chunks != first.total_chunks {
            bail!("{}: block layout or chunk count differs", d.display());
        }
        let n = m.shard.map(|s| s.1);
        if n != first.shard.map(|s| s.1) || n.is_none() {
            bail!("{}: not a shard of the same --shard i/n split", d.display());
        }
    }
    let mut next = 0;
    for (m, d) in &ms {
        if m.chunks.0 != next {
            bail!(
                "chunks {next}..{} are missing or covered twice (at {})",
                m.chunks.0,
                d.display()
            );
        }
        next = m.chunks.1;
    }
    if next != first.total_chunks {
        bail!(
            "chunks {next}..{} are missing: not every shard was given",
            first.total_chunks
        );
    }
    std::fs::create_dir_all(&args.out)?;
    let dirs: Vec<PathBuf> = ms.iter().map(|(_, d)| d.clone()).collect();
    if dirs.iter().any(|d| !d.join("chunks").exists()) {
        bail!("run the shards with --keep-chunks so that they can be merged");
    }
    std::fs::copy(dirs[0].join("run.json"), args.out.join("run.json"))?;
    std::fs::copy(
        dirs[0].join("state.safetensors"),
        args.out.join("state.safetensors"),
    )?;
    let m = finish(
        &args.out,
        &first.run,
        &first.blocks,
        (0, first.total_chunks),
        first.total_chunks,
        None,
        &dirs,
    )?;
    eprintln!(
        "merged {} shards: {} rows into {}",
        ms.len(),
        m.rows,
        args.out.display()
    );
    Ok(())
}
