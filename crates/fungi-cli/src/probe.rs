//! `fungi probe`: the paper's linear probe (multinomial logistic regression) over every block
//! combination.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use fungi_eval::{
    default_lambdas, evaluate_linear_probe, ClassificationBlock, ProbeSettings, SolverOptions,
    Subset, Validation, FEW_SHOT_LAMBDA, SPLIT_SEED,
};

use crate::inputs::{check_block_list, load_labelled, select_blocks, Input};

/// The protocol, printed after the options by `fungi probe --help`.
const PROTOCOL: &str = "\
For every non-empty combination of blocks (named as `fungi knn` names them): each block \
L2-normalised per row, the blocks concatenated, PCA fitted on the rows the model is fitted on at \
that stage, then a multinomial logistic regression in float64 with no intercept and an L2 \
penalty, minimising (1/n)·Σ cross-entropy + (λ/2)·‖W‖². \
Solver: L-BFGS (10 corrections, strong-Wolfe line search) from W = 0, stopped when \
‖∇f(W)‖∞ ≤ tol·‖∇f(0)‖∞ (--tol, default 1e-8) or after --max-iter iterations; this solves the \
problem far more tightly than the paper's cyanure run (tol 1e-3, 300 iterations). \
λ is chosen by validation accuracy among --lambdas (ties → the smallest), on --val or, without \
it, on scikit-learn's stratified 80/20 split of the training rows (seed 42); the model is then \
refitted with that λ on train + val (on all of train). \
--few-shot N: fitted on the first N training rows of each class in dataset order, no \
validation, λ = 5e-5.";

/// Arguments of `fungi probe` (the protocol: [`PROTOCOL`]).
#[derive(Debug, clap::Args)]
#[command(after_long_help = PROTOCOL)]
pub struct ProbeArgs {
    /// Training features: a `fungi extract` output directory, or `FILE.safetensors#PREFIX` with
    /// tensors `PREFIX.<block>` and `PREFIX_labels`.
    #[arg(long)]
    pub train: String,
    /// Test features (same forms).
    #[arg(long)]
    pub test: String,
    /// Validation features (same forms) to choose λ on; default: the stratified 80/20 split of
    /// the training rows (seed 42).
    #[arg(long, conflicts_with = "few_shot")]
    pub val: Option<String>,
    /// PCA dimension, fitted on the rows each model is fitted on (0: none; skipped when not below
    /// their count and the feature size).
    #[arg(long, default_value_t = 512)]
    pub pca: usize,
    /// Candidate λ (each finite and > 0), comma-separated [default: 5 log-spaced values
    /// 5e-6 ... 5e-4].
    #[arg(long, value_delimiter = ',', conflicts_with = "few_shot")]
    pub lambdas: Option<Vec<f64>>,
    /// Fit on the first N (at least 1) training examples of each class, with λ = 5e-5 and no
    /// validation.
    #[arg(long)]
    pub few_shot: Option<usize>,
    /// Blocks to use, in order (default: all, in file order).
    #[arg(long, value_delimiter = ',')]
    pub blocks: Option<Vec<String>>,
    /// Solver tolerance: L-BFGS stops when ‖∇f(W)‖∞ ≤ tol·‖∇f(0)‖∞ [default: 1e-8]
    #[arg(long, default_value_t = SolverOptions::default().tol, hide_default_value = true)]
    pub tol: f64,
    /// Iteration cap of the L-BFGS solver.
    #[arg(long, default_value_t = SolverOptions::default().max_iter)]
    pub max_iter: usize,
    /// Write the JSON report here (with every prediction and every validation score).
    #[arg(long)]
    pub report: Option<PathBuf>,
}

/// Runs `fungi probe` (on the CPU: faer products on the rayon pool; no Burn backend).
pub fn run(args: &ProbeArgs) -> Result<()> {
    if args.few_shot == Some(0) {
        bail!("--few-shot 0: expected at least 1 training example per class");
    }
    let lambdas = match &args.lambdas {
        Some(l) => {
            if l.is_empty() {
                bail!("--lambdas: no values (expected at least one λ > 0)");
            }
            if let Some(v) = l.iter().find(|v| !(v.is_finite() && **v > 0.0)) {
                bail!("--lambdas: {v} is not a finite value > 0");
            }
            l.clone()
        }
        None => default_lambdas(),
    };
    if !(args.tol.is_finite() && args.tol >= 0.0) {
        bail!("--tol {}: expected a finite value >= 0", args.tol);
    }
    if args.max_iter == 0 {
        bail!("--max-iter 0: expected at least 1 iteration");
    }
    check_block_list(args.blocks.as_deref())?;
    let train =
        load_labelled(&args.train).with_context(|| format!("loading --train {}", args.train))?;
    let test =
        load_labelled(&args.test).with_context(|| format!("loading --test {}", args.test))?;
    let val = match &args.val {
        Some(v) => Some((
            v.as_str(),
            load_labelled(v).with_context(|| format!("loading --val {v}"))?,
        )),
        None => None,
    };
    let inputs = [
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
    ];
    let wanted = args.blocks.as_deref();
    let mut blocks: Vec<ClassificationBlock> = Vec::new();
    let mut val_blocks = Vec::new();
    match &val {
        Some((spec, v)) => {
            let [tr, te] = inputs;
            let va = Input {
                flag: "--val",
                what: "validation",
                spec,
                blocks: &v.blocks,
            };
            for (name, [train, test, val]) in select_blocks(wanted, &[tr, te, va])? {
                blocks.push(ClassificationBlock { name, train, test });
                val_blocks.push(val);
            }
        }
        None => {
            for (name, [train, test]) in select_blocks(wanted, &inputs)? {
                blocks.push(ClassificationBlock { name, train, test });
            }
        }
    }
    let validation = val.as_ref().map(|(_, v)| Validation {
        blocks: val_blocks,
        labels: v.labels.clone(),
    });
    let s = ProbeSettings {
        lambdas,
        pca_dim: (args.pca > 0).then_some(args.pca),
        few_shot: args.few_shot,
        solver: SolverOptions {
            tol: args.tol,
            max_iter: args.max_iter,
        },
    };
    let results = evaluate_linear_probe(
        &blocks,
        &train.labels,
        &test.labels,
        validation.as_ref(),
        &s,
    )
    .map_err(|e| {
        let what = match (e.subset(), &args.val) {
            (Some(Subset::Train), _) => format!("--train {}", args.train),
            (Some(Subset::Test), _) => format!("--test {}", args.test),
            (Some(Subset::Validation), Some(v)) => format!("--val {v}"),
            (Some(Subset::Validation), None) => format!(
                "the held-out 20 % of --train {} (or pass --val)",
                args.train
            ),
            _ => format!("--train {} --test {}", args.train, args.test),
        };
        anyhow::Error::new(e).context(format!("linear probe of {what}"))
    })?;
    println!(
        "{:<40} {:>9} {:>10} {:>10} {:>8} {:>5} {:>9}",
        "blocks", "accuracy", "mean/class", "lambda", "val acc", "pca", "converged"
    );
    for r in &results {
        let val_acc = r
            .validation
            .iter()
            .find(|v| v.lambda == r.lambda)
            .map_or_else(|| "-".to_string(), |v| format!("{:.4}", v.accuracy));
        println!(
            "{:<40} {:>9.4} {:>10.4} {:>10.3e} {:>8} {:>5} {:>9}",
            r.combination,
            r.accuracy,
            r.mean_per_class_accuracy,
            r.lambda,
            val_acc,
            if r.pca { "yes" } else { "no" },
            if r.converged { "yes" } else { "no" }
        );
    }
    let unconverged: Vec<&str> = results
        .iter()
        .filter(|r| !r.converged || r.validation.iter().any(|v| !v.converged))
        .map(|r| r.combination.as_str())
        .collect();
    if !unconverged.is_empty() {
        eprintln!(
            "warning: the solver stopped before --tol {} (after --max-iter {} or at the rounding level) for: {}",
            args.tol,
            args.max_iter,
            unconverged.join(", ")
        );
    }
    if let Some(p) = &args.report {
        let selection = match (args.few_shot, &args.val) {
            (Some(n), _) => format!("few-shot: first {n} per class, lambda {FEW_SHOT_LAMBDA}"),
            (None, Some(v)) => format!("validation set {v}, refit on train + val"),
            (None, None) => format!(
                "stratified 80/20 split of train (seed {SPLIT_SEED}), refit on all of train"
            ),
        };
        let report = serde_json::json!({
            "settings": s,
            "selection": selection,
            "n_train": train.labels.len(),
            "n_val": val.as_ref().map(|(_, v)| v.labels.len()),
            "n_test": test.labels.len(),
            "test_targets": test.labels,
            "results": results,
        });
        std::fs::write(p, serde_json::to_string_pretty(&report)? + "\n")
            .with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(())
}
