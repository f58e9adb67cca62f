//! `fungi`: the FUNGI command line.
#![warn(missing_docs)]

mod bench;
mod dense;
mod embed;
mod extract;
mod fetch;
mod hummingbird;
mod inputs;
mod inspect;
mod knn;
mod merge;
mod probe;
mod retrieve;
mod synthetic;

/// `.npy` reading and writing: the library's (`fungi::layout::npy`).
use fungi::layout::npy;

use anyhow::{bail, Result};
use clap::{Parser, Subcommand};

pub use fungi::OnError;

#[derive(Debug, Parser)]
#[command(
    name = "fungi",
    version,
    about = "FUNGI — features from unsupervised gradients (Rust/Burn)"
)]
struct Cli {
    /// Compute device: auto, flex (CPU), ndarray (CPU), cuda[:N], wgpu. Only backends compiled in
    /// (cargo features) are available; auto picks cuda (when this machine has the driver, NVRTC
    /// and the CUDA headers) > wgpu > flex > ndarray.
    #[arg(long, global = true, default_value = "auto")]
    device: String,
    /// Precision of the network's Linear products before the target layer (and of every
    /// forward-only pass): f32, or bf16 / f16 on GPUs (fungivision's `use_fp16` autocasts to
    /// bf16). The target layer, the rest of the network, the losses, the backward and the
    /// projection always run in f32; see docs/backends.md.
    #[arg(long, global = true, default_value = "f32")]
    precision: fungi_backbone::Precision,
    #[command(subcommand)]
    cmd: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Backbone CLS embeddings of images, written as an [N, E] float32 .npy.
    Embed(embed::EmbedArgs),
    /// FUNGI features of a dataset (chunked, resumable, shardable).
    Extract(extract::ExtractArgs),
    /// Dense (per-patch) FUNGI features [N, P, E+K] of a dataset, the paper's HummingBird
    /// features (chunked, resumable, shardable).
    Dense(dense::DenseArgs),
    /// Download the official weights of architecture presets into the cache (prints paths).
    /// HummingBird in-context segmentation (mIoU) of dense FUNGI or of the patch tokens on a
    /// Pascal VOC folder or image / mask folders.
    Hummingbird(Box<hummingbird::HummingbirdArgs>),
    Fetch(fetch::FetchArgs),
    /// Merge the outputs of `extract --shard i/n` runs.
    Merge(merge::MergeArgs),
    /// kNN evaluation (the paper's protocol) over every block combination.
    Knn(knn::KnnArgs),
    /// Linear-probe evaluation (the paper's protocol) over every block combination.
    Probe(probe::ProbeArgs),
    /// Revisited Oxford / Paris retrieval (mAP, mP@k) over every block combination.
    Retrieve(retrieve::RetrieveArgs),
    /// Shapes, dtypes and metadata of a features / weights / state file.
    Inspect(inspect::InspectArgs),
    /// Extraction throughput without a dataset (random weights unless --weights): images/s,
    /// views/s, seconds per batch, peak memory.
    Bench(bench::BenchArgs),
    /// Deterministic random weights for an architecture (the same bytes on every machine), for
    /// device checks and benchmarks.
    SyntheticWeights(synthetic::SyntheticArgs),
}

/// The architecture `arch` (preset or JSON file), refused before any weights are read when it
/// does not take 3 input channels: images and views are always RGB.
pub fn rgb_arch(arch: &str) -> Result<fungi_backbone::VitConfig> {
    let config = fungi_backbone::VitConfig::from_preset_or_file(arch)?;
    if config.in_chans != 3 {
        bail!(
            "{arch}: in_chans = {}: images are fed to the network as RGB, so the architecture must take 3 input channels",
            config.in_chans
        );
    }
    Ok(config)
}

/// The command line's hint on a listing error: `--on-error skip` leaves such entries out.
pub fn listing_hint(e: fungi::dataset::DatasetError) -> anyhow::Error {
    match e {
        e @ fungi::dataset::DatasetError::Listing { .. } => anyhow::anyhow!(
            "{e}\n(with --on-error skip such entries are left out and listed in the manifest)"
        ),
        e => e.into(),
    }
}

/// A progress bar on stderr (hidden when stderr is not a terminal).
pub fn progress_bar(len: u64, what: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(len);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{prefix} [{elapsed_precise}] {wide_bar} {pos}/{len} ({per_sec}, ETA {eta})",
        )
        .expect("valid template"),
    );
    bar.set_prefix(what.to_string());
    bar
}

/// Runs the command on backend `B` (autodiff over it for `extract`).
fn run<B: fungi_backbone::VitOps>(cli: &Cli, device: B::Device) -> Result<()> {
    let p = cli.precision;
    if p != fungi_backbone::Precision::F32 && B::vit_host_memory() {
        bail!(
            "{}",
            cpu_half_refusal(p, fungi_simd::HalfGemmFeatures::detect())
        );
    }
    match &cli.cmd {
        Command::Embed(a) => embed::run::<B>(a, &device, p),
        Command::Extract(a) => extract::run::<burn::backend::Autodiff<B>>(a, &device, p),
        Command::Dense(a) => dense::run::<burn::backend::Autodiff<B>>(a, &device, p),
        Command::Hummingbird(a) => hummingbird::run::<burn::backend::Autodiff<B>>(a, &device, p),
        Command::Fetch(a) => fetch::run(a),
        Command::Merge(a) => merge::run(a),
        Command::Knn(a) => knn::run::<B>(a, &device),
        Command::Probe(a) => probe::run(a),
        Command::Retrieve(a) => retrieve::run(a),
        Command::Inspect(a) => inspect::run(a),
        Command::Bench(a) => bench::run::<burn::backend::Autodiff<B>>(a, &device, &cli.device, p),
        Command::SyntheticWeights(a) => synthetic::run(a),
    }
}

/// Why `--precision bf16|f16` does not run on a CPU backend: what the CPU lacks, or that the
/// half-precision CPU GEMM is not written yet where it has the instructions.
fn cpu_half_refusal(p: fungi_backbone::Precision, f: fungi_simd::HalfGemmFeatures) -> String {
    let has = f.names();
    let found = if has.is_empty() {
        "none of them".to_string()
    } else {
        has.join(", ")
    };
    let need = match p {
        fungi_backbone::Precision::F16 => "AVX512-FP16",
        _ => "AVX512-BF16 (vdpbf16ps) or AMX-BF16",
    };
    let lacks = match p {
        fungi_backbone::Precision::F16 => !f.avx512_fp16,
        _ => !f.avx512_bf16 && !f.amx_bf16,
    };
    if lacks {
        format!(
            "--precision {p} on the CPU: a half-precision GEMM is only faster than f32 with {need}, and this CPU has {found} (emulating it with AVX2 converts every value and is slower than the f32 path); omit --precision (f32), or run on a GPU (--device cuda)"
        )
    } else {
        format!(
            "--precision {p} on the CPU: this CPU has {found}, but fungi-rs has no half-precision CPU GEMM yet (only f32 on the CPU backends); omit --precision (f32), or run on a GPU (--device cuda)"
        )
    }
}

fn available() -> Vec<&'static str> {
    let mut v = Vec::new();
    if cfg!(feature = "cuda") {
        v.push("cuda");
    }
    if cfg!(feature = "wgpu") {
        v.push("wgpu");
    }
    if cfg!(feature = "flex") {
        v.push("flex");
    }
    if cfg!(feature = "ndarray") {
        v.push("ndarray");
    }
    v
}

/// `--device auto`: the first backend compiled in, skipping CUDA (with a warning saying why)
/// when this machine cannot run it.
fn auto_device(index: usize) -> String {
    available()
        .into_iter()
        .find(|&kind| kind != "cuda" || cuda_usable(index))
        .unwrap_or("none")
        .to_string()
}

/// Whether CUDA device `index` passes the preflight (a warning says why not).
fn cuda_usable(index: usize) -> bool {
    #[cfg(all(unix, feature = "cuda"))]
    if let Err(e) = fungi::cuda::preflight(index) {
        tracing::warn!("--device auto: not using CUDA: {e}");
        return false;
    }
    let _ = index;
    true
}

fn main() -> Result<()> {
    // `fungi inspect ... | head` must end quietly like any Unix tool, not panic on a closed pipe.
    #[cfg(unix)]
    // SAFETY: restoring the default SIGPIPE disposition before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("FUNGI_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    // Commands that need no backend run before one is chosen.
    match &cli.cmd {
        Command::Fetch(a) => return fetch::run(a),
        Command::SyntheticWeights(a) => return synthetic::run(a),
        Command::Probe(a) => return probe::run(a),
        Command::Retrieve(a) => return retrieve::run(a),
        _ => {}
    }
    let (kind, index) = match cli.device.split_once(':') {
        Some((k, i)) => (k.to_string(), i.parse::<usize>().ok()),
        None => (cli.device.clone(), None),
    };
    let kind = if kind == "auto" {
        auto_device(index.unwrap_or(0))
    } else {
        kind
    };
    let _ = index;
    match kind.as_str() {
        #[cfg(feature = "cuda")]
        "cuda" => {
            // The driver, NVRTC and the CUDA headers are checked here, on this thread: cubecl
            // would panic on its device thread (or skip kernels) without them.
            // (Not inside `tracing::info!`: its arguments are only evaluated when the level
            // is enabled.)
            #[cfg(unix)]
            {
                let info = fungi::cuda::preflight(index.unwrap_or(0))?;
                tracing::info!("{info}");
            }
            let d = burn::backend::cuda::CudaDevice::new(index.unwrap_or(0));
            run::<burn::backend::Cuda>(&cli, d)
        }
        #[cfg(feature = "wgpu")]
        "wgpu" => run::<burn::backend::Wgpu>(&cli, Default::default()),
        #[cfg(feature = "flex")]
        "flex" | "cpu" => run::<burn::backend::Flex>(&cli, Default::default()),
        #[cfg(feature = "ndarray")]
        "ndarray" => run::<burn::backend::NdArray>(&cli, Default::default()),
        other => bail!(
            "device `{other}` is not available in this build; compiled in: {} (rebuild with --features <backend>)",
            available().join(", ")
        ),
    }
}
