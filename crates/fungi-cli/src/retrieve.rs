//! `fungi retrieve`: revisited Oxford / Paris retrieval (mAP medium / hard, mP@k) over every
//! block combination.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use fungi_eval::{retrieval_map, GroundTruth, RetrievalBlock, Subset, RETRIEVAL_KS};

use crate::inputs::{check_block_list, load_blocks, select_blocks, Input};

/// The protocol, printed after the options by `fungi retrieve --help`.
const PROTOCOL: &str = "\
For every non-empty combination of blocks (named as `fungi knn` names them): each block \
L2-normalised per row, the blocks concatenated, PCA fitted on the database rows (centred, no \
whitening), the database ranked for every query by decreasing dot product, then the revisited \
benchmark's compute_map (as DINO's eval_image_retrieval.py runs it): mAP and mP@1/5/10 under \
the medium (positives easy + hard, junk ignored) and hard (positives hard, junk and easy \
ignored) protocols, in percent.";

/// Arguments of `fungi retrieve` (the protocol: [`PROTOCOL`]).
#[derive(Debug, clap::Args)]
#[command(after_long_help = PROTOCOL)]
pub struct RetrieveArgs {
    /// Database features, one row per image of the ground truth's `imlist` in that order: a
    /// `fungi extract` output directory, or `FILE.safetensors#PREFIX` with tensors
    /// `PREFIX.<block>` (labels are not needed).
    #[arg(long)]
    pub db: String,
    /// Query features (same forms), one row per image of `qimlist` in that order (full images:
    /// the protocol does not crop to the query box).
    #[arg(long)]
    pub queries: String,
    /// The ground truth: `gnd_roxford5k.pkl` / `gnd_rparis6k.pkl` (a pickle), or the same
    /// structure as JSON (`{"imlist": [...], "qimlist": [...], "gnd": [{"easy": [...],
    /// "hard": [...], "junk": [...]}, ...]}`).
    #[arg(long)]
    pub gnd: PathBuf,
    /// PCA dimension fitted on the database rows (0: none; skipped when not below the database
    /// size and the feature size).
    #[arg(long, default_value_t = 512)]
    pub pca: usize,
    /// Blocks to use, in order (default: all, in file order).
    #[arg(long, value_delimiter = ',')]
    pub blocks: Option<Vec<String>>,
    /// Write the JSON report here (with every query's AP).
    #[arg(long)]
    pub report: Option<PathBuf>,
}

/// Runs `fungi retrieve` (on the CPU: faer products; no Burn backend).
pub fn run(args: &RetrieveArgs) -> Result<()> {
    check_block_list(args.blocks.as_deref())?;
    let gnd_file = args.gnd.display().to_string();
    let gt = GroundTruth::load(&args.gnd).context("loading --gnd")?;
    let db = load_blocks(&args.db).with_context(|| format!("loading --db {}", args.db))?;
    let queries = load_blocks(&args.queries)
        .with_context(|| format!("loading --queries {}", args.queries))?;
    let sel = select_blocks(
        args.blocks.as_deref(),
        &[
            Input {
                flag: "--db",
                what: "database",
                spec: &args.db,
                blocks: &db,
            },
            Input {
                flag: "--queries",
                what: "query",
                spec: &args.queries,
                blocks: &queries,
            },
        ],
    )?;
    let blocks: Vec<RetrievalBlock> = sel
        .into_iter()
        .map(|(name, [database, queries])| RetrievalBlock {
            name,
            database,
            queries,
        })
        .collect();
    if let Some(b) = blocks.first() {
        if b.database.rows != gt.imlist.len() {
            bail!(
                "--db {} has {} rows but --gnd {gnd_file} lists {} database images (`imlist`; expected one row per image, in that order)",
                args.db,
                b.database.rows,
                gt.imlist.len()
            );
        }
        if b.queries.rows != gt.qimlist.len() {
            bail!(
                "--queries {} has {} rows but --gnd {gnd_file} lists {} queries (`qimlist`; expected one row per query, in that order)",
                args.queries,
                b.queries.rows,
                gt.qimlist.len()
            );
        }
    }
    let pca_dim = (args.pca > 0).then_some(args.pca);
    let results = retrieval_map(&blocks, &gt.gnd, pca_dim).map_err(|e| {
        let what = match e.subset() {
            Some(Subset::Database) => format!("--db {} with --gnd {gnd_file}", args.db),
            Some(Subset::Queries) => format!("--queries {} with --gnd {gnd_file}", args.queries),
            _ => format!(
                "--db {} --queries {} --gnd {gnd_file}",
                args.db, args.queries
            ),
        };
        anyhow::Error::new(e).context(format!("retrieval evaluation of {what}"))
    })?;
    let ks: Vec<String> = RETRIEVAL_KS.iter().map(|k| format!("mP@{k}")).collect();
    print!("{:<40} {:>7} {:>7}", "blocks", "mAP M", "mAP H");
    for p in ["M", "H"] {
        for k in &ks {
            print!(" {:>8}", format!("{k} {p}"));
        }
    }
    println!(" {:>5}", "pca");
    for r in &results {
        let s = &r.scores;
        print!(
            "{:<40} {:>7.2} {:>7.2}",
            r.combination, s.map_medium, s.map_hard
        );
        for v in s.mp_medium.iter().chain(&s.mp_hard) {
            print!(" {v:>8.2}");
        }
        println!(" {:>5}", if r.pca { "yes" } else { "no" });
    }
    if let Some(p) = &args.report {
        let report = serde_json::json!({
            "settings": { "pca_dim": pca_dim },
            "gnd": gnd_file,
            "n_database": gt.imlist.len(),
            "n_queries": gt.qimlist.len(),
            "results": results,
        });
        std::fs::write(p, serde_json::to_string_pretty(&report)? + "\n")
            .with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(())
}
