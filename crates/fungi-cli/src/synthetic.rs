//! `fungi synthetic-weights`: deterministic random weights for an architecture, written as
//! safetensors — the same bytes on every machine (`StateDict::synthetic`), so a device check
//! can compare features computed elsewhere without carrying a checkpoint.

use std::path::PathBuf;

use anyhow::{Context, Result};
use fungi::backbone::StateDict;

/// Arguments of `fungi synthetic-weights`.
#[derive(Debug, clap::Args)]
pub struct SyntheticArgs {
    /// Architecture preset or JSON config.
    #[arg(long)]
    pub arch: String,
    /// Seed of the generator.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output `.safetensors` file.
    #[arg(long)]
    pub out: PathBuf,
}

/// Runs `fungi synthetic-weights`.
pub fn run(args: &SyntheticArgs) -> Result<()> {
    let config = crate::rgb_arch(&args.arch)?;
    let sd = StateDict::synthetic(&config, args.seed);
    sd.write_safetensors(&args.out)
        .with_context(|| format!("writing {}", args.out.display()))?;
    eprintln!(
        "wrote {} tensors ({} parameters) of {} (seed {}) to {}",
        sd.tensors.len(),
        sd.tensors
            .values()
            .map(|t| t.shape.iter().product::<usize>())
            .sum::<usize>(),
        args.arch,
        args.seed,
        args.out.display()
    );
    Ok(())
}
