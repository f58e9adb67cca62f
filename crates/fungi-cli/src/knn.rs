//! `fungi knn`: the paper's kNN evaluation over every block combination.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use burn::tensor::backend::Backend;
use fungi_eval::{evaluate, ClassificationBlock, KnnSettings, SplitKind};

use crate::inputs::{check_block_list, load_labelled, select_blocks, Input};

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

/// Runs `fungi knn` with distances on backend `B`.
pub fn run<B: Backend>(args: &KnnArgs, device: &B::Device) -> Result<()> {
    if args.k == 0 {
        bail!("--k 0: expected at least 1 neighbour");
    }
    if args.few_shot == Some(0) {
        bail!("--few-shot 0: expected at least 1 training example per class");
    }
    check_block_list(args.blocks.as_deref())?;
    let train =
        load_labelled(&args.train).with_context(|| format!("loading --train {}", args.train))?;
    let test =
        load_labelled(&args.test).with_context(|| format!("loading --test {}", args.test))?;
    let blocks: Vec<ClassificationBlock> = select_blocks(
        args.blocks.as_deref(),
        &[
            Input {
                flag: "--train",
                what: "training",
                spec: &args.train,
                blocks: &train.blocks,
            },
            Input {
                flag: "--test",
                what: "test",
                spec: &args.test,
                blocks: &test.blocks,
            },
        ],
    )?
    .into_iter()
    .map(|(name, [train, test])| ClassificationBlock { name, train, test })
    .collect();
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
