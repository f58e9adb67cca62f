//! `fungi embed`: backbone CLS embeddings of a folder of images.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use burn::prelude::*;
use fungi_aug::transforms::EvalTransform;
use fungi_aug::DecodeOptions;
use fungi_backbone::Vit;
use rayon::prelude::*;

use crate::npy;
use crate::{progress_bar, OnError};
use fungi::dataset::list_images;

/// How images become network inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TransformKind {
    /// The model's own eval transform (timm `pretrained_cfg`, torchvision weights transforms,
    /// a transformers image processor's `preprocessor`): resize, center crop, its mean / std.
    /// The default when the arch has one.
    Model,
    /// DINO / fungivision eval: short side 256 (PIL bicubic), center crop 224, ImageNet
    /// normalisation. The default for archs without a transform of their own.
    Eval,
    /// The image as is (normalised with the model's mean / std, ImageNet's when it has none);
    /// images of equal size are batched together.
    None,
}

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
    pub transform: Option<TransformKind>,
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

/// A normalised view `(height, width, CHW data)` or the reason it could not be made.
type ViewResult = std::result::Result<(usize, usize, Vec<f32>), String>;

fn sidecar(out: &Path, suffix: &str) -> PathBuf {
    let mut s = out.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

fn write_list(path: &Path, files: &[PathBuf]) -> Result<()> {
    let text: String = files.iter().map(|f| format!("{}\n", f.display())).collect();
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// Runs `fungi embed` on backend `B`.
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
    let opts = DecodeOptions {
        apply_exif_orientation: args.apply_exif_orientation,
        ..Default::default()
    };
    let kind = args.transform.unwrap_or(if config.transform.is_some() {
        TransformKind::Model
    } else {
        TransformKind::Eval
    });
    let eval = match (kind, &config.transform) {
        (TransformKind::Model, None) => bail!(
            "--transform model: the architecture {} carries no eval transform of its own (a timm \
             `pretrained_cfg`, torchvision `transforms` or Hugging Face `preprocessor` in its \
             JSON); use --transform eval",
            arch
        ),
        (TransformKind::Model | TransformKind::None, Some(t)) => *t,
        _ => EvalTransform::default(),
    };
    let side = eval.crop as usize;
    let e = model.out_dim();
    let mut rows: Vec<f32> = Vec::with_capacity(files.len() * e);
    let mut kept: Vec<PathBuf> = Vec::new();
    let mut skipped: Vec<(PathBuf, String)> = problems
        .into_iter()
        .map(|p| (PathBuf::from(p.path), format!("not listed: {}", p.error)))
        .collect();
    let bar = progress_bar(files.len() as u64, "embed");
    for chunk in files.chunks(args.batch_size) {
        let views: Vec<(PathBuf, ViewResult)> = chunk
            .par_iter()
            .map(|f| {
                let r = fungi_aug::decode_rgb(f, &opts)
                    .map_err(|e| e.to_string())
                    .and_then(|img| match kind {
                        TransformKind::Eval | TransformKind::Model => {
                            Ok((side, side, eval.apply(&img)))
                        }
                        TransformKind::None => {
                            let (w, h) = (img.width() as usize, img.height() as usize);
                            model
                                .check_input(h, w)
                                .map_err(|e| format!("{}: {e}", f.display()))?;
                            Ok((
                                h,
                                w,
                                fungi_aug::normalize::to_chw_normalized_with(
                                    &img,
                                    fungi_aug::normalize::ScaleFormula::Divide,
                                    eval.mean,
                                    eval.std,
                                ),
                            ))
                        }
                    });
                (f.clone(), r)
            })
            .collect();
        // Group consecutive images of equal size into one forward pass.
        let mut group: Vec<(PathBuf, Vec<f32>)> = Vec::new();
        let mut group_hw = (0, 0);
        let mut flush = |group: &mut Vec<(PathBuf, Vec<f32>)>, hw: (usize, usize)| {
            if group.is_empty() {
                return Ok(());
            }
            let n = group.len();
            let data: Vec<f32> = group.iter().flat_map(|(_, v)| v.iter().copied()).collect();
            let x = Tensor::<B, 4>::from_data(TensorData::new(data, [n, 3, hw.0, hw.1]), device);
            let emb: Vec<f32> = model
                .forward(x)
                .into_data()
                .convert::<f32>()
                .iter::<f32>()
                .collect();
            if let Some(i) = emb.iter().position(|v| !v.is_finite()) {
                return Err(anyhow::anyhow!(
                    "the embedding of {} is not finite ({}): refusing to write NaN/Inf (check the weights)",
                    group[i / e].0.display(),
                    emb[i]
                ));
            }
            rows.extend(emb);
            kept.extend(group.drain(..).map(|(p, _)| p));
            Ok(())
        };
        for (path, r) in views {
            match r {
                Ok((h, w, v)) => {
                    if (h, w) != group_hw {
                        flush(&mut group, group_hw)?;
                        group_hw = (h, w);
                    }
                    group.push((path, v));
                }
                Err(msg) => match args.on_error {
                    OnError::Skip => {
                        tracing::warn!("skipping {}: {msg}", path.display());
                        skipped.push((path, msg));
                    }
                    OnError::Fail => {
                        flush(&mut group, group_hw)?;
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
                },
            }
        }
        flush(&mut group, group_hw)?;
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
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
