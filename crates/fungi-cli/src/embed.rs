//! `fungi embed`: backbone CLS embeddings of a folder of images.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use fungi::dataset::list_images;
use fungi::{Dataset, Embedder, InputTransform, Stream};
use fungi_aug::DecodeOptions;
use fungi_backbone::Vit;

use crate::npy;
use crate::{progress_bar, OnError};

/// Arguments of `fungi embed`.
#[derive(Debug, clap::Args)]
pub struct EmbedArgs {
    /// Backbone weights: a PyTorch state dict (.pth), a .safetensors or an .onnx file, or a
    /// preset name of `fungi fetch --list` (downloaded into the cache on first use).
    #[arg(long)]
    pub weights: PathBuf,
    /// Architecture: a preset (`fungi inspect --help` lists them) or a JSON config (DINO's,
    /// timm's, torchvision's or Hugging Face's keyword names). Default: the preset named by
    /// `--weights`.
    #[arg(long)]
    pub arch: Option<String>,
    /// Image files and/or directories (walked recursively, sorted by path).
    #[arg(long, num_args = 1.., required = true)]
    pub images: Vec<PathBuf>,
    /// Output `.npy` file, `[N, E]` float32, one row per image in listing order. A
    /// `<out>.files.txt` lists the image of every row.
    #[arg(long)]
    pub out: PathBuf,
    /// Input transform (default: `model` when the arch carries its own, else `eval`).
    #[arg(long, value_enum)]
    pub transform: Option<fungi::InputChoice>,
    /// Images per forward pass.
    #[arg(long, default_value_t = 16)]
    pub batch_size: usize,
    /// What to do with an image that cannot be decoded.
    #[arg(long, value_enum, default_value = "fail")]
    pub on_error: OnError,
    /// Apply the EXIF orientation tag (PIL and fungivision do not).
    #[arg(long)]
    pub apply_exif_orientation: bool,
}

fn sidecar(out: &Path, suffix: &str) -> PathBuf {
    let mut s = out.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

fn write_list(path: &Path, files: &[PathBuf]) -> Result<()> {
    let text: String = files.iter().map(|f| format!("{}\n", f.display())).collect();
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// Runs `fungi embed` on backend `B`: the library's [`Embedder`] over the listed images,
/// rows in listing order.
pub fn run<B: fungi_backbone::VitOps>(
    args: &EmbedArgs,
    device: &B::Device,
    precision: fungi_backbone::Precision,
) -> Result<()> {
    if args.batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    let (weights, arch) = crate::fetch::resolve_weights(&args.weights, args.arch.as_deref())?;
    let config = crate::rgb_arch(&arch)?;
    let model = Vit::<B>::from_file(&config, &weights, device)?;
    let model = match precision.half_dtype() {
        Some(d) => model.with_half_linears(d)?,
        None => model,
    };
    let (files, problems) =
        list_images(&args.images, args.on_error == OnError::Fail).map_err(crate::listing_hint)?;
    tracing::info!(images = files.len(), arch = %arch, "embedding");
    let input = InputTransform::choose(args.transform, config.transform.as_ref(), &arch)?;
    let embedder = Embedder::new(model, input);
    let e = embedder.dim();
    let ds = Dataset::from_files(Path::new(""), files.clone()).with_decode_options(DecodeOptions {
        apply_exif_orientation: args.apply_exif_orientation,
        ..Default::default()
    });
    let mut rows: Vec<f32> = Vec::with_capacity(files.len() * e);
    let mut kept: Vec<PathBuf> = Vec::new();
    let mut skipped: Vec<(PathBuf, String)> = problems
        .into_iter()
        .map(|p| (PathBuf::from(p.path), format!("not listed: {}", p.error)))
        .collect();
    let bar = progress_bar(files.len() as u64, "embed");
    let tick = |n: usize| bar.inc(n as u64);
    let stream = Stream::all(files.len(), args.batch_size)
        .on_error(args.on_error)
        .progress(&tick);
    let result = embedder.stream(&ds, stream, |r| {
        for (i, err) in r.skipped {
            tracing::warn!("skipping {}: {err}", files[i].display());
            skipped.push((files[i].clone(), err.to_string()));
        }
        rows.extend(r.features);
        kept.extend(r.indices.iter().map(|&i| files[i as usize].clone()));
        Ok(())
    });
    bar.finish_and_clear();
    if let Err(err) = result {
        let msg = match err {
            fungi::core::Error::NonFinite { index, value, .. } => format!(
                "the embedding of {} is not finite ({value}): refusing to write NaN/Inf (check the weights)",
                files[index as usize].display()
            ),
            err => err.to_string(),
        };
        let partial = sidecar(&args.out, ".partial.npy");
        npy::write_f32(&partial, &[kept.len(), e], &rows)?;
        write_list(&sidecar(&args.out, ".partial.files.txt"), &kept)?;
        bail!(
            "{msg}\n({} embeddings computed before the failure were saved to {}; \
             use --on-error skip to skip bad images)",
            kept.len(),
            partial.display()
        );
    }
    npy::write_f32(&args.out, &[kept.len(), e], &rows)?;
    write_list(&sidecar(&args.out, ".files.txt"), &kept)?;
    if !skipped.is_empty() {
        let text: String = skipped
            .iter()
            .map(|(p, m)| format!("{}\t{}\n", p.display(), m.replace('\n', " ")))
            .collect();
        std::fs::write(sidecar(&args.out, ".skipped.tsv"), text)?;
    }
    eprintln!(
        "wrote {} embeddings of dim {e} to {}{}",
        kept.len(),
        args.out.display(),
        if skipped.is_empty() {
            String::new()
        } else {
            format!(
                " ({} skipped, listed in {})",
                skipped.len(),
                sidecar(&args.out, ".skipped.tsv").display()
            )
        }
    );
    Ok(())
}
