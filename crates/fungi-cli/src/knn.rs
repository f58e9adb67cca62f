//! `fungi knn`: the paper's kNN evaluation over every block combination.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use burn::tensor::backend::Backend;
use fungi_eval::{evaluate, Block, KnnSettings, Matrix};

use crate::extract::Manifest;
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
    /// Neighbours.
    #[arg(long, default_value_t = 20)]
    pub k: usize,
    /// Use only the first N training examples of each class.
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

const ORDER: &[&str] = &[
    "embedding",
    "embeddings",
    "kl",
    "dino",
    "simclr",
    "deepcluster",
];

fn load(spec: &str) -> Result<Split> {
    if let Some((file, prefix)) = spec.split_once('#') {
        let bytes = std::fs::read(file).with_context(|| format!("reading {file}"))?;
        let st = safetensors::SafeTensors::deserialize(&bytes)
            .with_context(|| format!("{file}: not a safetensors file"))?;
        let mut blocks = Vec::new();
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
        for n in names {
            let t = st.tensor(&format!("{prefix}.{n}"))?;
            let s = t.shape();
            if s.len() != 2 || t.dtype() != safetensors::Dtype::F32 {
                bail!(
                    "{file}: `{prefix}.{n}` must be a 2-D F32 tensor, found {:?} {s:?}",
                    t.dtype()
                );
            }
            let v = t
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64)
                .collect();
            blocks.push((n, Matrix::new(s[0], s[1], v)));
        }
        let lt = st
            .tensor(&format!("{prefix}_labels"))
            .with_context(|| format!("{file}: no `{prefix}_labels` tensor"))?;
        let labels = lt
            .data()
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
            .collect();
        if blocks.is_empty() {
            bail!("{file}: no tensors named `{prefix}.<block>`");
        }
        return Ok(Split { blocks, labels });
    }
    let dir = Path::new(spec);
    let m: Manifest = serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json")).with_context(|| format!("{spec}: expected a fungi extract output directory (manifest.json) or FILE.safetensors#PREFIX"))?)?;
    let labels = match npy::read(&dir.join("labels.npy")) {
        Ok(npy::Array::I64(_, l)) => l,
        _ => bail!("{spec}: no labels.npy (extract with an ImageFolder dataset or --labels)"),
    };
    let (shape, f) = match npy::read(&dir.join("features.npy"))? {
        npy::Array::F32(s, f) => (s, f),
        _ => bail!("{spec}: features.npy is not float32"),
    };
    let d = shape[1];
    let blocks = m
        .blocks
        .iter()
        .map(|b| {
            (
                b.name.clone(),
                Matrix::new(
                    shape[0],
                    b.dim,
                    (0..shape[0])
                        .flat_map(|r| {
                            f[r * d + b.offset..r * d + b.offset + b.dim]
                                .iter()
                                .map(|&v| v as f64)
                        })
                        .collect(),
                ),
            )
        })
        .collect();
    Ok(Split { blocks, labels })
}

/// Runs `fungi knn` with distances on backend `B`.
pub fn run<B: Backend>(args: &KnnArgs, device: &B::Device) -> Result<()> {
    let (train, test) = (load(&args.train)?, load(&args.test)?);
    let wanted: Vec<String> = args
        .blocks
        .clone()
        .unwrap_or_else(|| train.blocks.iter().map(|b| b.0.clone()).collect());
    let mut blocks = Vec::new();
    for w in &wanted {
        let tr = train.blocks.iter().find(|b| &b.0 == w).with_context(|| {
            format!(
                "block `{w}` not in the training features ({:?})",
                train.blocks.iter().map(|b| &b.0).collect::<Vec<_>>()
            )
        })?;
        let te = test
            .blocks
            .iter()
            .find(|b| &b.0 == w)
            .with_context(|| format!("block `{w}` not in the test features"))?;
        if tr.1.cols != te.1.cols {
            bail!(
                "block `{w}`: {} columns in train, {} in test",
                tr.1.cols,
                te.1.cols
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
    let results = evaluate::<B>(&blocks, &train.labels, &test.labels, &s, device);
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
