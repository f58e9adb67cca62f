//! `fungi hummingbird`: the HummingBird in-context segmentation evaluation
//! (`../shared/docs/dense-fungi.md` §C, docs/dense.md) of dense FUNGI or of the patch tokens on a
//! Pascal VOC folder or a pair of image / mask folders.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{bail, Context, Result};
use fungi::backbone::{AutodiffVitOps, Precision, Vit};
use fungi::core::tensor_file;
use fungi::dense::{DenseExtractor, DenseSettings};
use fungi::hummingbird::{
    data, evaluate, DenseFeatures, FeatureKind, HummingbirdSettings, IndexChoice, Phase,
    Prediction, SegSplit,
};

/// Arguments of `fungi hummingbird`.
#[derive(Debug, clap::Args)]
pub struct HummingbirdArgs {
    /// Backbone weights (.pth state dict, .safetensors or .onnx), or a preset name of
    /// `fungi fetch --list`.
    #[arg(long)]
    pub weights: PathBuf,
    /// Architecture preset or JSON config (default: the preset named by `--weights`).
    #[arg(long)]
    pub arch: Option<String>,
    /// A Pascal VOC folder (`JPEGImages/`, `SegmentationClass/`, `ImageSets/Segmentation/`).
    #[arg(long, conflicts_with_all = ["train_images", "val_images"])]
    pub voc: Option<PathBuf>,
    /// The VOC split of the memory bank (`ImageSets/Segmentation/<name>.txt`).
    #[arg(long, default_value = "train")]
    pub train_split: String,
    /// The VOC split evaluated.
    #[arg(long, default_value = "val")]
    pub val_split: String,
    /// Training images folder (with `--train-masks`: masks matched by file stem).
    #[arg(long, requires = "train_masks")]
    pub train_images: Option<PathBuf>,
    /// Training masks folder (palette or 8-bit grey PNGs of class ids, 255 ignored).
    #[arg(long)]
    pub train_masks: Option<PathBuf>,
    /// Validation images folder (with `--val-masks`).
    #[arg(long, requires = "val_masks")]
    pub val_images: Option<PathBuf>,
    /// Validation masks folder.
    #[arg(long)]
    pub val_masks: Option<PathBuf>,
    /// Use a seeded random subset of this many training images (the paper's VOC-tiny).
    #[arg(long)]
    pub train_subset: Option<usize>,
    /// Evaluate only the first this many validation images.
    #[arg(long)]
    pub val_limit: Option<usize>,
    /// Features compared: dense FUNGI, or the patch tokens alone.
    #[arg(long, value_enum, default_value = "fungi")]
    pub features: FeatureKind,
    /// Dense settings (TOML or JSON, as `fungi dense --config`): seed, target_layer,
    /// batch_size, projection_dim and the `[dense]` table.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Evaluation settings (TOML or JSON): num_classes, k, temperature, memory_size,
    /// augmentation_epochs, augment, index, exact_max_bytes, [hnsw] max_connections /
    /// ef_construction / ef_search, recall_queries, seed. The flags below override them.
    #[arg(long)]
    pub settings: Option<PathBuf>,
    /// A dense state (projection, head, support bank), e.g. `fungi dense --save-state`.
    #[arg(long, conflicts_with = "support")]
    pub state: Option<PathBuf>,
    /// Build the support bank from these images (default: the training images).
    #[arg(long)]
    pub support: Option<PathBuf>,
    /// Classes (21 for VOC).
    #[arg(long)]
    pub num_classes: Option<usize>,
    /// Neighbours per patch.
    #[arg(long)]
    pub k: Option<usize>,
    /// Softmax temperature.
    #[arg(long)]
    pub temperature: Option<f64>,
    /// Memory bank size in patches.
    #[arg(long)]
    pub memory_size: Option<usize>,
    /// Passes of augmented training images.
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Resize training images instead of augmenting them.
    #[arg(long)]
    pub no_augment: bool,
    /// Nearest-neighbour search.
    #[arg(long, value_enum)]
    pub index: Option<IndexChoice>,
    /// Write each validation image's prediction (palette PNG) and an `image | truth |
    /// prediction` overlay here.
    #[arg(long)]
    pub save_predictions: Option<PathBuf>,
    /// Write the report (JSON) here.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

fn splits(args: &HummingbirdArgs, seed: u64) -> Result<(SegSplit, SegSplit)> {
    let (mut train, val) = if let Some(root) = &args.voc {
        (
            SegSplit::voc(root, &args.train_split)?,
            SegSplit::voc(root, &args.val_split)?,
        )
    } else {
        match (
            &args.train_images,
            &args.train_masks,
            &args.val_images,
            &args.val_masks,
        ) {
            (Some(ti), Some(tm), Some(vi), Some(vm)) => {
                (SegSplit::folders(ti, tm)?, SegSplit::folders(vi, vm)?)
            }
            _ => bail!(
                "no data: pass --voc DIR (a Pascal VOC folder), or --train-images, --train-masks, --val-images and --val-masks"
            ),
        }
    };
    if let Some(n) = args.train_subset {
        if n == 0 {
            bail!("--train-subset 0: expected at least 1 training image");
        }
        if n < train.items.len() {
            let mut rng = fungi::core::rng::stream(seed, "hummingbird.subset", 0);
            let mut pick =
                fungi::core::rng::sample_without_replacement(train.items.len(), n, &mut rng);
            pick.sort_unstable();
            train.items = pick.into_iter().map(|i| train.items[i].clone()).collect();
        }
    }
    Ok((train, val.truncated(args.val_limit)))
}

fn settings(args: &HummingbirdArgs) -> Result<HummingbirdSettings> {
    let mut s = match &args.settings {
        Some(p) => HummingbirdSettings::from_file(p)?,
        None => HummingbirdSettings::default(),
    };
    if let Some(v) = args.num_classes {
        s.num_classes = v;
    }
    if let Some(v) = args.k {
        s.k = v;
    }
    if let Some(v) = args.temperature {
        s.temperature = v;
    }
    if let Some(v) = args.memory_size {
        s.memory_size = v;
    }
    if let Some(v) = args.epochs {
        s.augmentation_epochs = v;
    }
    if args.no_augment {
        s.augment = false;
    }
    if let Some(v) = args.index {
        s.index = v;
    }
    s.validate()?;
    Ok(s)
}

/// The support bank for FUNGI features: `--state`, `--support` images, or the training images.
fn ready<B: AutodiffVitOps>(
    args: &HummingbirdArgs,
    ex: &mut DenseExtractor<B>,
    train: &SegSplit,
    decode: &fungi::aug::DecodeOptions,
) -> Result<()> {
    if let Some(s) = &args.state {
        ex.load_state(s)?;
        return Ok(());
    }
    let files: Vec<PathBuf> = match &args.support {
        Some(dir) => {
            let ds = fungi::Dataset::load(dir, None, true)
                .map_err(crate::listing_hint)
                .with_context(|| {
                    format!("--support {} (the support bank's images)", dir.display())
                })?;
            ds.files
        }
        None => train.items.iter().map(|i| i.image.clone()).collect(),
    };
    if files.is_empty() {
        bail!("the support bank has no images (an empty support bank has no negatives): pass --support DIR or --state FILE");
    }
    let bar = crate::progress_bar(files.len() as u64, "support");
    let progress = |done: usize, _: usize| bar.set_position(done as u64);
    let load =
        |i: usize| fungi::aug::decode_rgb(&files[i], decode).map_err(fungi::core::Error::from);
    let rows = ex.build_support(files.len(), &load, Some(&progress), None)?;
    bar.finish_and_clear();
    tracing::info!(rows, "support bank built");
    Ok(())
}

fn save_prediction(dir: &Path, p: &Prediction<'_>) -> fungi::hummingbird::Result<()> {
    data::write_palette_png(&dir.join(format!("{}.png", p.item.name)), p.prediction)?;
    let ov = data::overlay(p.image, p.truth, p.prediction);
    let mut bytes = std::io::Cursor::new(Vec::new());
    let path = dir.join(format!("{}_overlay.png", p.item.name));
    fungi::aug::image::DynamicImage::ImageRgb8(ov)
        .write_to(&mut bytes, fungi::aug::image::ImageFormat::Png)
        .map_err(|e| fungi::hummingbird::HummingbirdError::Io {
            path: path.clone(),
            what: "an overlay".into(),
            source: std::io::Error::other(e),
        })?;
    tensor_file::write_bytes_atomic(&path, bytes.get_ref())?;
    Ok(())
}

/// Runs `fungi hummingbird` on backend `B`.
pub fn run<B: AutodiffVitOps>(
    args: &HummingbirdArgs,
    device: &B::Device,
    precision: Precision,
) -> Result<()> {
    let hb = settings(args)?;
    let dense = match &args.config {
        Some(p) => DenseSettings::from_file(p)?,
        None => DenseSettings::default(),
    };
    let (train, val) = splits(args, hb.seed)?;
    let (weights, arch_name) = crate::fetch::resolve_weights(&args.weights, args.arch.as_deref())?;
    let arch = crate::rgb_arch(&arch_name)?;
    if !dense.dense.image_size.is_multiple_of(arch.patch_size) {
        bail!(
            "[dense] image_size = {}: must be a multiple of the patch size {} of {arch_name}",
            dense.dense.image_size,
            arch.patch_size
        );
    }
    if let Some(dir) = &args.save_predictions {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating --save-predictions {}", dir.display()))?;
    }
    let decode = fungi::aug::DecodeOptions::default();
    let vit = Vit::<B>::from_file(&arch, &weights, device)?;
    let mut ex = DenseExtractor::new(vit, dense)?;
    ex.set_prefix_precision(precision)?;
    if args.features == FeatureKind::Fungi {
        ready(args, &mut ex, &train, &decode)?;
    }
    let feats = DenseFeatures {
        extractor: &ex,
        kind: args.features,
    };
    let bars = Mutex::new(None::<(Phase, indicatif::ProgressBar)>);
    let progress = |ph: Phase, done: usize, total: usize| {
        if let Ok(mut b) = bars.lock() {
            if b.as_ref().map(|(p, _)| *p) != Some(ph) {
                if let Some((_, old)) = b.take() {
                    old.finish_and_clear();
                }
                let name = match ph {
                    Phase::Memory => "memory",
                    Phase::Index => "index",
                    Phase::Evaluate => "evaluate",
                };
                *b = Some((ph, crate::progress_bar(total as u64, name)));
            }
            if let Some((_, bar)) = b.as_ref() {
                bar.set_position(done as u64);
            }
        }
    };
    let mut save = |p: Prediction<'_>| match &args.save_predictions {
        Some(dir) => save_prediction(dir, &p),
        None => Ok(()),
    };
    let report = evaluate::<B::InnerBackend>(
        &feats,
        &train,
        &val,
        &hb,
        &decode,
        device,
        Some(&progress),
        Some(&mut save),
    )?;
    if let Ok(mut b) = bars.lock() {
        if let Some((_, bar)) = b.take() {
            bar.finish_and_clear();
        }
    }
    println!(
        "{}: mIoU {:.2} (over the {} classes present; {:.2} over all {}), pixel accuracy {:.2} %",
        report.features,
        100.0 * report.miou,
        report.per_class_iou.iter().flatten().count(),
        100.0 * report.miou_all_classes,
        report.settings.num_classes,
        100.0 * report.pixel_accuracy
    );
    println!(
        "memory: {} patches ({} per image, {} training image(s)); {} search, recall@{} {}{}; {} validation image(s); {:.1} s + {:.1} s + {:.1} s",
        report.memory_rows,
        report.patches_per_image,
        report.train_images,
        report.index,
        report.settings.k,
        report
            .recall
            .map_or_else(|| "not measured".to_string(), |r| format!("{r:.4}")),
        if report.recall_queries > 0 {
            format!(" on {} queries", report.recall_queries)
        } else {
            String::new()
        },
        report.val_images,
        report.seconds[0],
        report.seconds[1],
        report.seconds[2]
    );
    if let Some(out) = &args.out {
        tensor_file::write_bytes_atomic(
            out,
            (serde_json::to_string_pretty(&report)? + "\n").as_bytes(),
        )
        .with_context(|| format!("--out {}", out.display()))?;
    }
    Ok(())
}
