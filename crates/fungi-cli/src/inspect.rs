//! `fungi inspect`: shapes, dtypes and metadata of features, weights and state files.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};

use crate::npy;

/// Arguments of `fungi inspect`.
#[derive(Debug, clap::Args)]
pub struct InspectArgs {
    /// A `.npy`, `.safetensors`, `.pth`, or a `fungi extract` output directory.
    pub path: PathBuf,
}

/// Prints what the file holds.
pub fn run(args: &InspectArgs) -> Result<()> {
    let p = &args.path;
    if p.is_dir() {
        let m = std::fs::read_to_string(p.join("manifest.json"))
            .with_context(|| format!("{}: no manifest.json", p.display()))?;
        let v: serde_json::Value = serde_json::from_str(&m)?;
        println!("fungi extract output {}", p.display());
        println!(
            "  rows: {}  blocks: {}",
            v["rows"],
            v["blocks"]
                .as_array()
                .map(|b| b
                    .iter()
                    .map(|x| format!("{} {}", x["name"].as_str().unwrap_or("?"), x["dim"]))
                    .collect::<Vec<_>>()
                    .join(", "))
                .unwrap_or_default()
        );
        println!(
            "  dataset: {} images, sha256 {}",
            v["run"]["dataset_len"], v["run"]["dataset_sha256"]
        );
        println!(
            "  weights sha256 {}  projection {}",
            v["run"]["weights_sha256"], v["run"]["projection_fingerprint"]
        );
        println!(
            "  shard: {}  skipped: {}",
            v["shard"],
            v["skipped"].as_array().map(|a| a.len()).unwrap_or(0)
        );
        println!("  config: {}", v["run"]["config"]);
        return Ok(());
    }
    let ext = p.extension().and_then(|e| e.to_str()).unwrap_or("");
    match ext {
        "npy" => match npy::read(p)? {
            npy::Array::F32(s, v) => {
                let (mn, mx) = v
                    .iter()
                    .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &x| {
                        (a.min(x), b.max(x))
                    });
                println!("{}: float32 {s:?}, min {mn}, max {mx}", p.display());
            }
            npy::Array::I64(s, v) => println!(
                "{}: int64 {s:?}, first {:?}",
                p.display(),
                &v[..v.len().min(8)]
            ),
        },
        "safetensors" => {
            let bytes = std::fs::read(p).with_context(|| format!("reading {}", p.display()))?;
            let st = safetensors::SafeTensors::deserialize(&bytes)
                .with_context(|| format!("{}: not a safetensors file", p.display()))?;
            let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes)?;
            let mut names: Vec<_> = st.names();
            names.sort();
            println!("{}: {} tensors", p.display(), names.len());
            for n in names {
                let t = st.tensor(n)?;
                println!("  {n:<40} {:?} {:?}", t.dtype(), t.shape());
            }
            if let Some(m) = meta.metadata() {
                let mut keys: Vec<_> = m.keys().collect();
                keys.sort();
                for k in keys {
                    let v = &m[k];
                    println!(
                        "  metadata {k}: {}",
                        if v.len() > 300 {
                            format!("{}…", &v[..300])
                        } else {
                            v.clone()
                        }
                    );
                }
            }
        }
        "pth" | "pt" | "bin" => {
            let sd = fungi::backbone::StateDict::read(p)?;
            println!("{}: {} tensors", p.display(), sd.tensors.len());
            for (k, t) in &sd.tensors {
                println!(
                    "  {k:<40} {:?}{}",
                    t.shape,
                    t.data
                        .as_ref()
                        .err()
                        .map(|d| format!(" ({d})"))
                        .unwrap_or_default()
                );
            }
        }
        _ => bail!(
            "{}: unknown file type (expected .npy, .safetensors, .pth or an extract directory)",
            p.display()
        ),
    }
    Ok(())
}
