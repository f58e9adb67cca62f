//! `fungi fetch`: download the official weights of an architecture preset into the cache.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use fungi::backbone::presets;

/// Arguments of `fungi fetch`.
#[derive(Debug, clap::Args)]
pub struct FetchArgs {
    /// Names to fetch (the architecture presets: `fungi fetch --list`). Prints each file's path.
    #[arg(required_unless_present = "list")]
    pub names: Vec<String>,
    /// List the presets' release weights: name, source URL, and the cached file (or `-`).
    #[arg(long)]
    pub list: bool,
    /// Base URL of a mirror serving the originals' paths (default: $FUNGI_MIRROR, else the
    /// original hosts; Hugging Face files also honour $HF_ENDPOINT).
    #[arg(long)]
    pub mirror: Option<String>,
    /// Cache directory (default: $FUNGI_CACHE, else $XDG_CACHE_HOME/fungi, else ~/.cache/fungi).
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

/// The hub of the environment, with the command line's overrides.
pub fn hub(mirror: Option<&str>, cache_dir: Option<&Path>, quiet: bool) -> Result<fungi_hub::Hub> {
    let mut hub = match cache_dir {
        Some(d) => fungi_hub::Hub::new(d).with_env_sources(),
        None => fungi_hub::Hub::from_env()?,
    }
    .with_progress(!quiet);
    if let Some(m) = mirror {
        hub = hub.with_mirror(Some(m.to_string()));
    }
    Ok(hub)
}

/// Runs `fungi fetch`.
pub fn run(args: &FetchArgs) -> Result<()> {
    let hub = hub(
        args.mirror.as_deref(),
        args.cache_dir.as_deref(),
        args.quiet,
    )?;
    if args.list {
        println!("# cache: {}", hub.cache_dir().display());
        for p in fungi::backbone::PRESETS {
            let e = &p.entry();
            let cached = hub
                .cached(e)
                .map_or_else(|| "-".to_string(), |p| p.display().to_string());
            println!("{}\t{}\t{}\t{}", e.name, hub.url(e), cached, e.description);
        }
    }
    let unknown: Vec<&str> = args
        .names
        .iter()
        .map(String::as_str)
        .filter(|n| presets::find(n).is_none())
        .collect();
    if !unknown.is_empty() {
        bail!(
            "unknown weights {}: expected names of `fungi fetch --list` ({})",
            unknown.join(", "),
            presets::names().join(", ")
        );
    }
    for p in args.names.iter().filter_map(|n| presets::find(n)) {
        let path = hub.fetch(&p.entry())?;
        println!("{}", path.display());
    }
    Ok(())
}

/// `--weights` and `--arch` as a command takes them: a weights file (with `--arch`), or a
/// catalogue name, fetched into the cache (or read from it) and implying its preset as the
/// architecture unless `--arch` names another.
pub fn resolve_weights(weights: &Path, arch: Option<&str>) -> Result<(PathBuf, String)> {
    if !weights.exists() {
        if let Some(p) = weights.to_str().and_then(presets::find) {
            let path = hub(None, None, false)?.fetch(&p.entry())?;
            return Ok((path, arch.unwrap_or(p.name).to_string()));
        }
    }
    let Some(arch) = arch else {
        bail!(
            "--weights {}: a weights file needs --arch (a preset or a JSON config); only a name of \
             `fungi fetch --list` implies its architecture",
            weights.display()
        );
    };
    Ok((weights.to_path_buf(), arch.to_string()))
}
