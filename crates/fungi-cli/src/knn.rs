//! `fungi knn`: the paper's kNN evaluation over every block combination.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use burn::tensor::backend::Backend;
use fungi_eval::{evaluate, Block, KnnSettings, Matrix, SplitKind};

use crate::npy;

/// Arguments of `fungi knn`.
#[derive(Debug, clap::Args)]
pub struct KnnArgs {
    /// Training features: a `fungi extract` output directory, or `FILE.safetensors#PREFIX` with
    /// tensors `PREFIX.<block>` and `PREFIX_labels`.
    #[arg(long)]
    pub train: String,
    /// Test features (same forms).
    #[arg(long)]
    pub test: String,
    /// PCA dimension fitted on the training rows (0: none).
    #[arg(long, default_value_t = 512)]
    pub pca: usize,
    /// Neighbours (at least 1).
    #[arg(long, default_value_t = 20)]
    pub k: usize,
    /// Use only the first N (at least 1) training examples of each class.
    #[arg(long)]
    pub few_shot: Option<usize>,
    /// Blocks to use, in order (default: all, in file order).
    #[arg(long, value_delimiter = ',')]
    pub blocks: Option<Vec<String>>,
    /// Write the JSON report here (with every prediction).
    #[arg(long)]
    pub report: Option<PathBuf>,
}

struct Split {
    blocks: Vec<(String, Matrix)>,
    labels: Vec<i64>,
}

/// The only part of `manifest.json` that `knn` reads (every other field is ignored, so the
/// manifest may come from any version of `fungi extract`).
#[derive(Debug, serde::Deserialize)]
struct ManifestLayout {
    /// Columns `[offset, offset + dim)` of `features.npy`, as `fungi extract` writes them.
    blocks: Vec<fungi::Block>,
}

const ORDER: &[&str] = &[
    "embedding",
    "embeddings",
    "kl",
    "dino",
    "simclr",
    "deepcluster",
];

/// An error naming `file`, the block and the first row and column holding a NaN or infinity.
fn check_finite(file: &str, block: &str, m: &Matrix) -> Result<()> {
    if let Some(i) = m.data.iter().position(|v| !v.is_finite()) {
        let cols = m.cols.max(1);
        bail!(
            "{file}: block `{block}`, row {}, column {}: {} (expected finite features)",
            i / cols,
            i % cols,
            m.data[i]
        );
    }
    Ok(())
}

fn load_safetensors(file: &str, prefix: &str) -> Result<Split> {
    let bytes = std::fs::read(file).with_context(|| format!("reading {file}"))?;
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .with_context(|| format!("{file}: not a safetensors file"))?;
    let label_name = format!("{prefix}_labels");
    let lt = st
        .tensor(&label_name)
        .with_context(|| format!("{file}: no `{label_name}` tensor (expected I64 labels)"))?;
    if lt.dtype() != safetensors::Dtype::I64 || lt.shape().len() != 1 {
        bail!(
            "{file}: `{label_name}` must be a 1-D I64 tensor, found {:?} {:?}",
            lt.dtype(),
            lt.shape()
        );
    }
    let labels: Vec<i64> = lt
        .data()
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
        .collect();
    if labels.len() != lt.shape()[0] {
        bail!(
            "{file}: `{label_name}` holds {} values for shape {:?}",
            labels.len(),
            lt.shape()
        );
    }
    let mut names: Vec<String> = st
        .names()
        .into_iter()
        .filter_map(|n| n.strip_prefix(&format!("{prefix}.")).map(str::to_string))
        .collect();
    names.sort_by_key(|n| {
        (
            ORDER.iter().position(|o| o == n).unwrap_or(ORDER.len()),
            n.clone(),
        )
    });
    if names.is_empty() {
        bail!("{file}: no tensors named `{prefix}.<block>`");
    }
    let mut blocks = Vec::new();
    for n in names {
        let name = format!("{prefix}.{n}");
        let t = st
            .tensor(&name)
            .with_context(|| format!("{file}: reading `{name}`"))?;
        let s = t.shape();
        if s.len() != 2 || t.dtype() != safetensors::Dtype::F32 {
            bail!(
                "{file}: `{name}` must be a 2-D F32 tensor, found {:?} {s:?}",
                t.dtype()
            );
        }
        if s[1] == 0 {
            bail!("{file}: `{name}` has shape {s:?}: 0 columns (expected at least 1)");
        }
        if s[0] != labels.len() {
            bail!(
                "{file}: `{name}` has shape {s:?}, expected [{}, {}] (`{label_name}` has {} rows)",
                labels.len(),
                s[1],
                labels.len()
            );
        }
        let v = t
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64)
            .collect();
        let m = Matrix::new(s[0], s[1], v).with_context(|| format!("{file}: `{name}`"))?;
        check_finite(file, &n, &m)?;
        blocks.push((n, m));
    }
    Ok(Split { blocks, labels })
}

fn load_dir(spec: &str) -> Result<Split> {
    let dir = Path::new(spec);
    let mpath = dir.join("manifest.json");
    let mtext = std::fs::read_to_string(&mpath).with_context(|| {
        format!(
            "{}: cannot read it ({spec}: expected a fungi extract output directory with manifest.json, or FILE.safetensors#PREFIX)",
            mpath.display()
        )
    })?;
    let mfile = mpath.display().to_string();
    let m: ManifestLayout = serde_json::from_str(&mtext).with_context(|| {
        format!(
            "{mfile}: not a valid manifest (expected JSON with `blocks`: [{{name, dim, offset}}])"
        )
    })?;
    if m.blocks.is_empty() {
        bail!("{mfile}: `blocks` is empty (expected at least one block)");
    }
    let mut width = 0usize;
    for (i, b) in m.blocks.iter().enumerate() {
        if b.dim == 0 {
            bail!(
                "{mfile}: block `{}` has dim 0 (expected at least 1 column)",
                b.name
            );
        }
        if m.blocks[..i].iter().any(|o| o.name == b.name) {
            bail!("{mfile}: block `{}` is listed twice", b.name);
        }
        width = width
            .checked_add(b.dim)
            .with_context(|| format!("{mfile}: block dims overflow"))?;
    }

    let lpath = dir.join("labels.npy");
    let lfile = lpath.display().to_string();
    if !lpath.exists() {
        bail!("{lfile}: missing (extract with an ImageFolder dataset or --labels to get labels)");
    }
    let labels = match npy::read(&lpath)? {
        npy::Array::I64(s, l) if s.len() == 1 => l,
        npy::Array::I64(s, _) => {
            bail!("{lfile}: labels have shape {s:?}, expected a 1-D int64 array [rows]")
        }
        a @ npy::Array::F32(..) => bail!(
            "{lfile}: labels must be int64, found {} {:?}",
            a.dtype(),
            a.shape()
        ),
    };

    let fpath = dir.join("features.npy");
    let ffile = fpath.display().to_string();
    let (shape, f) = match npy::read(&fpath)? {
        npy::Array::F32(s, f) if s.len() == 2 => (s, f),
        a => bail!(
            "{ffile}: found {} {:?}, expected a 2-D float32 array [{}, {width}] (rows of labels.npy, sum of manifest.json's block dims)",
            a.dtype(),
            a.shape(),
            labels.len()
        ),
    };
    let (rows, d) = (shape[0], shape[1]);
    if rows == 0 {
        bail!("{ffile}: shape {shape:?} has no rows (expected at least one example)");
    }
    if d != width {
        bail!(
            "{ffile}: shape {shape:?}, expected [{rows}, {width}] (the dims of manifest.json's blocks sum to {width})"
        );
    }
    if rows != labels.len() {
        bail!(
            "{ffile}: shape {shape:?}, expected [{}, {d}] ({lfile} has {} labels)",
            labels.len(),
            labels.len()
        );
    }
    let mut spans: Vec<(usize, usize, &str)> = Vec::with_capacity(m.blocks.len());
    for b in &m.blocks {
        let end = b.offset.checked_add(b.dim).filter(|&e| e <= d);
        let Some(end) = end else {
            bail!(
                "{mfile}: block `{}` spans columns [{}, {}+{}) but {ffile} has {d} columns",
                b.name,
                b.offset,
                b.offset,
                b.dim
            );
        };
        spans.push((b.offset, end, &b.name));
    }
    spans.sort();
    for w in spans.windows(2) {
        if w[1].0 < w[0].1 {
            bail!(
                "{mfile}: blocks `{}` [{}, {}) and `{}` [{}, {}) overlap",
                w[0].2,
                w[0].0,
                w[0].1,
                w[1].2,
                w[1].0,
                w[1].1
            );
        }
    }
    let mut blocks = Vec::with_capacity(m.blocks.len());
    for b in &m.blocks {
        let v = (0..rows)
            .flat_map(|r| {
                f[r * d + b.offset..r * d + b.offset + b.dim]
                    .iter()
                    .map(|&v| v as f64)
            })
            .collect();
        let mat =
            Matrix::new(rows, b.dim, v).with_context(|| format!("{ffile}: block `{}`", b.name))?;
        check_finite(&ffile, &b.name, &mat)?;
        blocks.push((b.name.clone(), mat));
    }
    Ok(Split { blocks, labels })
}

fn load(spec: &str) -> Result<Split> {
    if !Path::new(spec).is_dir() {
        if let Some((file, prefix)) = spec.split_once('#') {
            return load_safetensors(file, prefix);
        }
    }
    load_dir(spec)
}

/// Runs `fungi knn` with distances on backend `B`.
pub fn run<B: Backend>(args: &KnnArgs, device: &B::Device) -> Result<()> {
    if args.k == 0 {
        bail!("--k 0: expected at least 1 neighbour");
    }
    if args.few_shot == Some(0) {
        bail!("--few-shot 0: expected at least 1 training example per class");
    }
    if let Some(w) = &args.blocks {
        if let Some((i, b)) = w.iter().enumerate().find(|(i, b)| w[..*i].contains(b)) {
            bail!(
                "--blocks: block `{b}` is listed twice (at positions {} and {})",
                w.iter().position(|x| x == b).unwrap_or(0) + 1,
                i + 1
            );
        }
    }
    let train = load(&args.train).with_context(|| format!("loading --train {}", args.train))?;
    let test = load(&args.test).with_context(|| format!("loading --test {}", args.test))?;
    let wanted: Vec<String> = args
        .blocks
        .clone()
        .unwrap_or_else(|| train.blocks.iter().map(|b| b.0.clone()).collect());
    let mut blocks = Vec::new();
    for w in &wanted {
        let tr = train.blocks.iter().find(|b| &b.0 == w).with_context(|| {
            format!(
                "block `{w}` not in the training features --train {} ({:?})",
                args.train,
                train.blocks.iter().map(|b| &b.0).collect::<Vec<_>>()
            )
        })?;
        let te = test.blocks.iter().find(|b| &b.0 == w).with_context(|| {
            format!(
                "block `{w}` not in the test features --test {} ({:?})",
                args.test,
                test.blocks.iter().map(|b| &b.0).collect::<Vec<_>>()
            )
        })?;
        if tr.1.cols != te.1.cols {
            bail!(
                "block `{w}`: {} columns in --train {}, {} in --test {} (expected equal)",
                tr.1.cols,
                args.train,
                te.1.cols,
                args.test
            );
        }
        blocks.push(Block {
            name: w.clone(),
            train: tr.1.clone(),
            test: te.1.clone(),
        });
    }
    let s = KnnSettings {
        k: args.k,
        pca_dim: (args.pca > 0).then_some(args.pca),
        few_shot: args.few_shot,
    };
    let results = evaluate::<B>(&blocks, &train.labels, &test.labels, &s, device).map_err(|e| {
        let what = match e.split() {
            Some(SplitKind::Train) => format!("--train {}", args.train),
            Some(SplitKind::Test) => format!("--test {}", args.test),
            None => format!("--train {} --test {}", args.train, args.test),
        };
        anyhow::Error::new(e).context(format!("kNN evaluation of {what}"))
    })?;
    println!(
        "{:<40} {:>9} {:>10} {:>5}",
        "blocks", "accuracy", "mean/class", "pca"
    );
    for r in &results {
        println!(
            "{:<40} {:>9.4} {:>10.4} {:>5}",
            r.combination,
            r.accuracy,
            r.mean_per_class_accuracy,
            if r.pca { "yes" } else { "no" }
        );
    }
    if let Some(p) = &args.report {
        let report = serde_json::json!({
            "settings": s,
            "n_train": train.labels.len(),
            "n_test": test.labels.len(),
            "test_targets": test.labels,
            "results": results,
        });
        std::fs::write(p, serde_json::to_string_pretty(&report)? + "\n")
            .with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(())
}
