//! `fungi bench`: extraction throughput without a dataset, for sizing jobs.
//!
//! Synthetic 320×256 RGB images (deterministic noise) go through exactly what `fungi extract`
//! runs per batch — the objectives' views, the prefix forward, the autodiff tail and backward,
//! the per-image gradients, the projection and the normalisation — with random weights unless
//! `--weights` is given. SimCLR's negatives are random latents of the configured shape (its
//! `setup` is a dataset pass, not part of the per-batch cost). Images/s, views/s and seconds
//! per batch are the median over `--iters` timed batches after one warm-up batch.

use std::time::Instant;

use anyhow::{bail, Context, Result};
use fungi::aug::RgbImage;
use fungi::core::{Objective, Residency, StateTensor};
use fungi::{Fungi, ObjectiveConfig, Preset, Stream};
use fungi_backbone::{AutodiffVitOps, Vit, VitConfig};
use serde::Serialize;

/// Arguments of `fungi bench`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Architecture: a preset (dino_vits16, dino_vitb16, ...) or a JSON config (default: the
    /// preset named by `--weights`, else dino_vits16).
    #[arg(long)]
    pub arch: Option<String>,
    /// Backbone weights (.pth / .safetensors / .onnx, or a name of `fungi fetch --list`); random
    /// weights when omitted (the speed does not depend on the values).
    #[arg(long)]
    pub weights: Option<std::path::PathBuf>,
    /// Objectives, comma-separated: kl, dino, simclr (or `all`), with fungivision's settings
    /// (`--paper` for the paper's).
    #[arg(long, default_value = "kl,dino,simclr")]
    pub objectives: String,
    /// Use the paper's objective settings (KL T 15 on the eval view, SimCLR with 256
    /// negatives and its loss) instead of fungivision's.
    #[arg(long)]
    pub paper: bool,
    /// Also compute the embedding block (as `extract` does by default).
    #[arg(long)]
    pub embedding: bool,
    /// Images per batch; a comma-separated list runs one row per batch size.
    #[arg(long, default_value = "16")]
    pub batch: String,
    /// Timed batches per row (after one warm-up batch).
    #[arg(long, default_value_t = 3)]
    pub iters: usize,
    /// Where the projection is kept: auto, host, dense, packed (see `fungi extract --help`).
    #[arg(long, default_value = "auto")]
    pub projection: Residency,
    /// Views per pass of the network's prefix (0: automatic — 16 on the CPU backends, 512 on
    /// GPUs): bounds the activations held at once; features do not depend on it beyond float
    /// rounding.
    #[arg(long, default_value_t = 0)]
    pub max_views_per_pass: usize,
    /// Print the rows as JSON lines instead of a table: one object per row, with the setup's
    /// fields (backend, device, precision, arch, ...) in each, written and flushed as soon as
    /// the row is timed, so a run cut short keeps the rows it finished.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Serialize)]
struct Row {
    batch: usize,
    images_per_s: f64,
    views_per_s: f64,
    s_per_batch_median: f64,
    s_per_batch_best: f64,
    peak_rss_mb: Option<f64>,
    device_mem_reserved_mb: Option<f64>,
}

/// The setup, repeated in every JSON line.
#[derive(Debug, Serialize)]
struct Setup {
    backend: String,
    device: String,
    precision: String,
    arch: String,
    weights: String,
    objectives: Vec<String>,
    views_per_image: usize,
    embedding: bool,
    projection: String,
    views_per_pass: usize,
    threads: usize,
    cpu: String,
}

/// One JSON line: the setup and one row.
#[derive(Debug, Serialize)]
struct Line<'a> {
    #[serde(flatten)]
    setup: &'a Setup,
    #[serde(flatten)]
    row: &'a Row,
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

/// The objectives named, as the preset configures them (fungivision's, or the paper's with
/// `paper`), in the order given.
fn objective_configs(names: &[String], paper: bool) -> Result<Vec<ObjectiveConfig>> {
    let preset = if paper {
        Preset::Paper
    } else {
        Preset::Fungivision
    };
    let all = preset.objectives();
    names
        .iter()
        .map(|name| {
            all.iter()
                .find(|c| c.name() == name)
                .cloned()
                .with_context(|| format!(
                    "--objectives: unknown objective `{name}` (expected kl, dino, simclr or all; deepcluster needs a k-means setup on a dataset: time it with `fungi extract`)"
                ))
        })
        .collect()
}

/// The objective of `cfg`, ready without a dataset: SimCLR gets random negatives of the
/// configured shape (its `setup` is a dataset pass, not part of the per-batch cost).
fn bench_objective<B: AutodiffVitOps>(
    cfg: &ObjectiveConfig,
    e: usize,
    seed: u64,
    device: &B::Device,
) -> fungi::core::Result<Box<dyn Objective<B>>> {
    let mut o = cfg.build::<B>(e, seed, device)?;
    if let ObjectiveConfig::Simclr(c) = cfg {
        let rows = c.comparison_batch_size * o.views_per_image();
        let mut state = o.state();
        state.insert(
            "negatives".into(),
            StateTensor {
                shape: vec![rows, c.latent_dim],
                data: fungi::benchmark::noise_latents(rows * c.latent_dim),
            },
        );
        o.load_state(&state)?;
    }
    Ok(o)
}

/// Runs `fungi bench` on the autodiff backend `B`.
pub fn run<B: AutodiffVitOps>(
    args: &BenchArgs,
    device: &B::Device,
    device_name: &str,
    precision: fungi_backbone::Precision,
) -> Result<()> {
    let batches: Vec<usize> = args
        .batch
        .split(',')
        .map(|s| {
            s.trim()
                .parse::<usize>()
                .ok()
                .filter(|&b| b > 0)
                .with_context(|| format!("--batch: `{s}` is not a positive integer"))
        })
        .collect::<Result<_>>()?;
    if args.iters == 0 {
        bail!("--iters must be at least 1");
    }
    let names: Vec<String> = if args.objectives.trim() == "all" {
        vec!["kl".into(), "dino".into(), "simclr".into()]
    } else {
        args.objectives
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect()
    };
    if names.is_empty() && !args.embedding {
        bail!("--objectives is empty and --embedding is not set: nothing to time");
    }
    let (weights, arch) = match &args.weights {
        Some(w) => {
            let (w, a) = crate::fetch::resolve_weights(w, args.arch.as_deref())?;
            (Some(w), a)
        }
        None => (
            None,
            args.arch.clone().unwrap_or_else(|| "dino_vits16".into()),
        ),
    };
    let cfg = VitConfig::from_preset_or_file(&arch)?;
    let vit = match &weights {
        Some(w) => Vit::<B>::from_file(&cfg, w, device)
            .with_context(|| format!("loading {}", w.display()))?,
        None => cfg.init::<B>(device),
    };
    let max_batch = batches.iter().copied().max().unwrap_or(1);
    let mut builder = Fungi::<B>::builder(device)
        .backbone(vit)
        .objectives(vec![])
        .include_embedding(args.embedding)
        .projection_residency(args.projection)
        .views_per_pass(args.max_views_per_pass)
        .precision(precision)
        .batch_size(max_batch);
    for cfg in objective_configs(&names, args.paper)? {
        builder = builder
            .custom_objective(move |e, seed, device| bench_objective::<B>(&cfg, e, seed, device));
    }
    let fungi = builder.build()?.ready()?;
    let ex = fungi.extractor();
    let views_per_image: usize = ex.objectives().iter().map(|o| o.views_per_image()).sum();
    let imgs: Vec<RgbImage> = (0..max_batch as u64)
        .map(fungi::benchmark::noise_image)
        .collect();
    let mut report = Setup {
        backend: std::any::type_name::<B::InnerBackend>().into(),
        device: device_name.into(),
        precision: precision.to_string(),
        arch: arch.clone(),
        weights: weights
            .as_ref()
            .map(|w| w.display().to_string())
            .unwrap_or_else(|| "random".into()),
        objectives: names.clone(),
        views_per_image,
        embedding: args.embedding,
        projection: String::new(),
        views_per_pass: ex.engine().views_per_pass(),
        threads: rayon::current_num_threads(),
        cpu: cpu_model(),
    };
    if !args.json {
        eprintln!(
            "fungi bench: {} ({}), {}, objectives {} ({} views/image){}, {} thread(s), {}",
            report.device,
            report.precision,
            report.arch,
            if names.is_empty() {
                "-".into()
            } else {
                names.join(",")
            },
            views_per_image,
            if args.embedding { " + embedding" } else { "" },
            report.threads,
            report.cpu
        );
        println!(
            "{:>5} {:>10} {:>10} {:>10} {:>10} {:>12} {:>14}",
            "batch", "img/s", "views/s", "s/batch", "best s", "peak RSS MB", "device MB"
        );
    }
    // One batch of `b` images through the library's pipeline, exactly as `fungi extract` runs it.
    let batch = |b: usize| -> Result<()> {
        let mut rows = 0;
        fungi.stream(&imgs[..b], Stream::all(b, b), |r| {
            rows += r.indices.len();
            Ok(())
        })?;
        if rows != b {
            bail!("{rows} feature rows for {b} images");
        }
        Ok(())
    };
    for &b in &batches {
        fungi::benchmark::reset_peak_rss();
        // Warm-up: allocations, autotuning, the device projection.
        batch(b)?;
        report.projection = ex.device_projection()?.residency().to_string();
        let mut t: Vec<f64> = (0..args.iters)
            .map(|_| -> Result<f64> {
                let s = Instant::now();
                batch(b)?;
                Ok(s.elapsed().as_secs_f64())
            })
            .collect::<Result<_>>()?;
        t.sort_by(f64::total_cmp);
        let med = t[t.len() / 2];
        let row = Row {
            batch: b,
            images_per_s: b as f64 / med,
            views_per_s: (b * views_per_image) as f64 / med,
            s_per_batch_median: med,
            s_per_batch_best: t[0],
            peak_rss_mb: fungi::benchmark::peak_rss_mb(),
            device_mem_reserved_mb:
                <B::InnerBackend as fungi_backbone::VitOps>::vit_device_memory_reserved(device)
                    .map(|v| v as f64 / (1 << 20) as f64),
        };
        if !args.json {
            let mb = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.0}"));
            println!(
                "{:>5} {:>10.3} {:>10.1} {:>10.3} {:>10.3} {:>12} {:>14}",
                row.batch,
                row.images_per_s,
                row.views_per_s,
                row.s_per_batch_median,
                row.s_per_batch_best,
                mb(row.peak_rss_mb),
                mb(row.device_mem_reserved_mb)
            );
        }
        if args.json {
            use std::io::Write;
            let line = serde_json::to_string(&Line {
                setup: &report,
                row: &row,
            })?;
            let mut out = std::io::stdout().lock();
            writeln!(out, "{line}")?;
            out.flush()?;
        }
    }
    Ok(())
}
