//! `fungi inspect`: shapes, dtypes and metadata of features, weights and state files.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};

use crate::npy;

/// Arguments of `fungi inspect`.
#[derive(Debug, clap::Args)]
pub struct InspectArgs {
    /// A `.npy`, `.safetensors`, `.pth`, `.onnx`, or a `fungi extract` output directory.
    pub path: PathBuf,
    /// With a weights file: check it against this architecture (preset or JSON config) and
    /// list the Linear layers that can be FUNGI's target, named as the checkpoint names them.
    #[arg(long)]
    pub arch: Option<String>,
}

/// What the architecture makes of the weights, and its valid target layers.
fn inspect_arch(arch: &str, sd: &fungi::backbone::StateDict) -> Result<()> {
    use fungi::backbone::{keys, TargetLayer, VitConfig};
    let c = VitConfig::from_preset_or_file(arch)?;
    println!(
        "architecture {arch}: layout {}, embed_dim {}, depth {}, heads {}, patch {}, img_size {}, embedding dim {}",
        c.layout.name(),
        c.embed_dim,
        c.depth,
        c.num_heads,
        c.patch_size,
        c.img_size,
        c.out_dim()
    );
    if let Some(t) = &c.transform {
        println!(
            "  model transform: resize {} ({:?}), center crop {}, mean {:?}, std {:?}",
            t.resize, t.filter, t.crop, t.mean, t.std
        );
    }
    let problems = keys::to_model_names(c.layout, sd).check(&c);
    if problems.is_empty() {
        println!("  the weights match the architecture");
    } else {
        println!(
            "  the weights do NOT match the architecture ({} problem(s)):",
            problems.len()
        );
        for p in problems.iter().take(20) {
            println!(
                "    {}",
                p.clone().renamed(|k| keys::checkpoint_name(c.layout, k))
            );
        }
    }
    let (e, h) = (c.embed_dim, c.mlp_hidden_dim());
    println!("  Linear layers (--target-layer; the default is the last attn.proj):");
    for t in TargetLayer::all(c.depth) {
        let (o, i) = match t.site {
            fungi::backbone::Site::Qkv => (3 * e, e),
            fungi::backbone::Site::Proj => (e, e),
            fungi::backbone::Site::Fc1 => (h, e),
            fungi::backbone::Site::Fc2 => (e, h),
        };
        let name = keys::target_name(c.layout, t);
        let alias = if name == t.to_string() {
            String::new()
        } else {
            format!("  (= {t})")
        };
        println!("    {name:<58} [{o}, {i}]{alias}");
    }
    Ok(())
}

/// Prints what the file holds.
pub fn run(args: &InspectArgs) -> Result<()> {
    let p = &args.path;
    if !p.exists() {
        bail!("{}: no such file or directory", p.display());
    }
    if p.is_dir() {
        let mp = p.join("manifest.json");
        let m = std::fs::read_to_string(&mp).with_context(|| {
            format!(
                "{}: cannot read it (expected a fungi extract output directory)",
                mp.display()
            )
        })?;
        let v: serde_json::Value = serde_json::from_str(&m)
            .with_context(|| format!("{}: not valid JSON", mp.display()))?;
        if !v.is_object() {
            bail!(
                "{}: expected a JSON object (a fungi extract manifest)",
                mp.display()
            );
        }
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
                let finite = v.iter().filter(|x| x.is_finite());
                let (mn, mx) = finite
                    .clone()
                    .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &x| {
                        (a.min(x), b.max(x))
                    });
                let bad = v.len() - finite.count();
                let range = if bad == v.len() {
                    "no finite values".to_string()
                } else {
                    format!("min {mn}, max {mx}")
                };
                let bad = if bad > 0 {
                    format!(
                        ", {bad} non-finite (NaN {}, +inf {}, -inf {})",
                        v.iter().filter(|x| x.is_nan()).count(),
                        v.iter().filter(|&&x| x == f32::INFINITY).count(),
                        v.iter().filter(|&&x| x == f32::NEG_INFINITY).count()
                    )
                } else {
                    String::new()
                };
                println!("{}: float32 {s:?}, {range}{bad}", p.display());
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
            let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes)
                .with_context(|| format!("{}: unreadable safetensors header", p.display()))?;
            let mut names: Vec<_> = st.names();
            names.sort();
            println!("{}: {} tensors", p.display(), names.len());
            for n in names {
                let t = st
                    .tensor(n)
                    .with_context(|| format!("{}: reading tensor `{n}`", p.display()))?;
                println!("  {n:<40} {:?} {:?}", t.dtype(), t.shape());
            }
            if let Some(m) = meta.metadata() {
                let mut keys: Vec<_> = m.keys().collect();
                keys.sort();
                for k in keys {
                    println!("  metadata {k}: {}", preview(&m[k], 300));
                }
            }
        }
        "pth" | "pt" | "bin" | "onnx" => {
            let sd = fungi::backbone::StateDict::read(p)
                .with_context(|| format!("{}: not a readable state dict or ONNX model", p.display()))?;
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
            "{}: unknown file type (expected .npy, .safetensors, .pth, .onnx or an extract directory)",
            p.display()
        ),
    }
    if let Some(arch) = &args.arch {
        let sd = fungi::backbone::StateDict::read(p)
            .with_context(|| format!("{}: --arch needs a weights file", p.display()))?;
        inspect_arch(arch, &sd)?;
    }
    Ok(())
}

/// `v` cut to at most `max` bytes on a character boundary, with `…` when cut.
fn preview(v: &str, max: usize) -> String {
    if v.len() <= max {
        return v.to_string();
    }
    let mut end = max;
    while !v.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &v[..end])
}

#[cfg(test)]
mod tests {
    use super::preview;

    #[test]
    fn preview_cuts_on_char_boundaries() {
        assert_eq!(preview("abc", 3), "abc");
        assert_eq!(preview("abcd", 3), "abc…");
        // 'é' is 2 bytes at 2..4: the cut at byte 3 moves back to 2.
        assert_eq!(preview("abéd", 3), "ab…");
        assert_eq!(preview("日本語", 4), "日…");
        assert_eq!(preview("日本語", 0), "…");
    }
}
