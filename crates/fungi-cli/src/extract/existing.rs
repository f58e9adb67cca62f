//! What `--out` holds before a command touches it, and the checks that protect it.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use fungi::layout::{
    is_chunk_file, LayoutError, Manifest, RunIdentity, CHUNKS_DIR, MANIFEST_FILE, RUN_FILE,
};

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

/// `--shard i/n` or `auto` (Slurm arrays, Kubernetes Indexed Jobs).
pub(crate) fn parse_shard(s: &str) -> Result<(usize, usize)> {
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

/// What is in `--out` before this command touches it (`R`: its `run.json`, `M`: its
/// manifest; `fungi extract`'s by default, `fungi dense` reads its own).
pub(crate) struct Existing<R = RunIdentity, M = Manifest> {
    pub run: Option<R>,
    pub finished_chunks: usize,
    pub manifest: Option<M>,
}

/// Reader of a layout file of a run directory.
pub(crate) type ReadFn<T> = fn(&Path) -> std::result::Result<T, LayoutError>;

/// What `out` holds, for a run whose `run.json` and manifest `read_run` / `read_manifest` read.
pub(crate) fn inspect_out_as<R, M>(
    out: &Path,
    read_run: ReadFn<R>,
    read_manifest: ReadFn<M>,
) -> Result<Existing<R, M>> {
    if out.exists() && !out.is_dir() {
        bail!("--out {}: exists and is not a directory", out.display());
    }
    let run = if out.join(RUN_FILE).exists() {
        Some(read_run(out).map_err(|e| match e {
            e @ LayoutError::Invalid { .. } => anyhow::anyhow!(
                "{e}: damaged, or a run of another command? it records the settings of the run in {}",
                out.display()
            ),
            e => e.into(),
        })?)
    } else {
        None
    };
    let finished_chunks = std::fs::read_dir(out.join(CHUNKS_DIR))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter(|e| is_chunk_file(&e.file_name().to_string_lossy()))
                .count()
        })
        .unwrap_or(0);
    // A manifest that does not parse (an older or damaged one) is rewritten at the end.
    let manifest = if out.join(MANIFEST_FILE).exists() {
        match read_manifest(out) {
            Ok(m) => Some(m),
            Err(LayoutError::Invalid { .. }) => None,
            Err(e) => return Err(e.into()),
        }
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
pub(crate) fn identity_differences<R: serde::Serialize>(
    recorded: &R,
    now: &R,
) -> Result<Vec<String>> {
    Ok(fungi::core::state::json_differences(
        &serde_json::to_value(recorded)?,
        &serde_json::to_value(now)?,
    ))
}
