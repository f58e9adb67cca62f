//! Feature inputs of the evaluation commands (`knn`, `probe`, `retrieve`): a `fungi extract`
//! output directory (`manifest.json` + `features.npy` [+ `labels.npy`]) or
//! `FILE.safetensors#PREFIX` (tensors `PREFIX.<block>` [+ `PREFIX_labels`]), read into named
//! `f64` blocks. Every error names the file, the tensor or the field at fault.

use std::path::Path;

use anyhow::{bail, Context, Result};
use fungi_eval::Matrix;

use crate::npy;

/// Named blocks of one input, in file order (`[rows, dim]` each, all with the same rows).
pub type Blocks = Vec<(String, Matrix)>;

/// A labelled input: its blocks and one label per row.
pub struct Split {
    /// Blocks, in file order.
    pub blocks: Blocks,
    /// One label per row.
    pub labels: Vec<i64>,
}

/// The only part of `manifest.json` read here (every other field is ignored, so the manifest
/// may come from any version of `fungi extract`).
#[derive(Debug, serde::Deserialize)]
struct ManifestLayout {
    /// Columns `[offset, offset + dim)` of `features.npy`, as `fungi extract` writes them.
    blocks: Vec<fungi::Block>,
}

/// Order of the blocks of a safetensors input (the paper's; other names after, sorted).
const ORDER: &[&str] = &["embedding", "kl", "dino", "simclr", "deepcluster"];

/// The one name of a block: `embeddings` (the paper's HDF5 dataset name, which other tools
/// write as a safetensors key too) is the `embedding` block.
fn block_name(key: &str) -> &str {
    if key == "embeddings" {
        "embedding"
    } else {
        key
    }
}

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

fn load_safetensors(
    file: &str,
    prefix: &str,
    need_labels: bool,
) -> Result<(Blocks, Option<Vec<i64>>)> {
    let bytes = std::fs::read(file).with_context(|| format!("reading {file}"))?;
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .with_context(|| format!("{file}: not a safetensors file"))?;
    let label_name = format!("{prefix}_labels");
    let labels = if need_labels {
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
        Some(labels)
    } else {
        None
    };
    let mut names: Vec<String> = st
        .names()
        .into_iter()
        .filter_map(|n| n.strip_prefix(&format!("{prefix}.")).map(str::to_string))
        .collect();
    names.sort_by_key(|n| {
        (
            ORDER
                .iter()
                .position(|o| *o == block_name(n))
                .unwrap_or(ORDER.len()),
            n.clone(),
        )
    });
    if names.is_empty() {
        bail!("{file}: no tensors named `{prefix}.<block>`");
    }
    if names.iter().any(|n| n == "embedding") && names.iter().any(|n| n == "embeddings") {
        bail!("{file}: both `{prefix}.embedding` and `{prefix}.embeddings`: one embedding block expected");
    }
    let mut blocks: Blocks = Vec::new();
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
        match (&labels, blocks.first()) {
            (Some(labels), _) if s[0] != labels.len() => bail!(
                "{file}: `{name}` has shape {s:?}, expected [{}, {}] (`{label_name}` has {} rows)",
                labels.len(),
                s[1],
                labels.len()
            ),
            (None, Some((first, m))) if s[0] != m.rows => bail!(
                "{file}: `{name}` has shape {s:?}, expected [{}, {}] (`{prefix}.{first}` has {} rows)",
                m.rows,
                s[1],
                m.rows
            ),
            _ => {}
        }
        let v = t
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64)
            .collect();
        let m = Matrix::new(s[0], s[1], v).with_context(|| format!("{file}: `{name}`"))?;
        check_finite(file, &n, &m)?;
        blocks.push((block_name(&n).to_string(), m));
    }
    Ok((blocks, labels))
}

fn load_dir(spec: &str, need_labels: bool) -> Result<(Blocks, Option<Vec<i64>>)> {
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
    let labels = if need_labels {
        if !lpath.exists() {
            bail!(
                "{lfile}: missing (extract with an ImageFolder dataset or --labels to get labels)"
            );
        }
        Some(match npy::read(&lpath)? {
            npy::Array::I64(s, l) if s.len() == 1 => l,
            npy::Array::I64(s, _) => {
                bail!("{lfile}: labels have shape {s:?}, expected a 1-D int64 array [rows]")
            }
            a @ npy::Array::F32(..) => bail!(
                "{lfile}: labels must be int64, found {} {:?}",
                a.dtype(),
                a.shape()
            ),
        })
    } else {
        None
    };

    let fpath = dir.join("features.npy");
    let ffile = fpath.display().to_string();
    let rows_hint = labels
        .as_ref()
        .map_or_else(|| "rows".to_string(), |l| l.len().to_string());
    let (shape, f) = match npy::read(&fpath)? {
        npy::Array::F32(s, f) if s.len() == 2 => (s, f),
        a => bail!(
            "{ffile}: found {} {:?}, expected a 2-D float32 array [{rows_hint}, {width}] (rows of labels.npy, sum of manifest.json's block dims)",
            a.dtype(),
            a.shape(),
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
    if let Some(labels) = &labels {
        if rows != labels.len() {
            bail!(
                "{ffile}: shape {shape:?}, expected [{}, {d}] ({lfile} has {} labels)",
                labels.len(),
                labels.len()
            );
        }
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
    Ok((blocks, labels))
}

fn read(spec: &str, need_labels: bool) -> Result<(Blocks, Option<Vec<i64>>)> {
    if !Path::new(spec).is_dir() {
        if let Some((file, prefix)) = spec.split_once('#') {
            return load_safetensors(file, prefix, need_labels);
        }
    }
    load_dir(spec, need_labels)
}

/// Reads a labelled input (labels are required: `labels.npy` or `PREFIX_labels`).
pub fn load_labelled(spec: &str) -> Result<Split> {
    let (blocks, labels) = read(spec, true)?;
    let labels = labels.with_context(|| format!("{spec}: no labels"))?;
    Ok(Split { blocks, labels })
}

/// Reads the blocks of an input; its labels, if any, are not read.
pub fn load_blocks(spec: &str) -> Result<Blocks> {
    Ok(read(spec, false)?.0)
}

/// An error when `--blocks` names a block twice.
pub fn check_block_list(blocks: Option<&[String]>) -> Result<()> {
    if let Some(w) = blocks {
        if let Some((i, b)) = w.iter().enumerate().find(|(i, b)| w[..*i].contains(b)) {
            bail!(
                "--blocks: block `{b}` is listed twice (at positions {} and {})",
                w.iter().position(|x| x == b).unwrap_or(0) + 1,
                i + 1
            );
        }
    }
    Ok(())
}

/// One input of a command, to match blocks across.
pub struct Input<'a> {
    /// The flag it came from (`--train`).
    pub flag: &'a str,
    /// What the flag names (`training`).
    pub what: &'a str,
    /// The value of the flag.
    pub spec: &'a str,
    /// Its blocks.
    pub blocks: &'a [(String, Matrix)],
}

/// The blocks `wanted` (default: every block of the first input, in its order), taken from
/// every input: one `(name, [matrix of input 0, matrix of input 1, ...])` per block. Errors name
/// a block missing from an input and a block whose width differs from the first input's.
pub fn select_blocks<const N: usize>(
    wanted: Option<&[String]>,
    inputs: &[Input<'_>; N],
) -> Result<Vec<(String, [Matrix; N])>> {
    let Some(first) = inputs.first() else {
        bail!("no feature inputs");
    };
    let wanted: Vec<String> = wanted.map_or_else(
        || first.blocks.iter().map(|b| b.0.clone()).collect(),
        <[String]>::to_vec,
    );
    let mut out = Vec::with_capacity(wanted.len());
    for w in wanted {
        let mut mats: Vec<Matrix> = Vec::with_capacity(inputs.len());
        for input in inputs {
            let m = input.blocks.iter().find(|b| b.0 == w).with_context(|| {
                format!(
                    "block `{w}` not in the {} features {} {} ({:?})",
                    input.what,
                    input.flag,
                    input.spec,
                    input.blocks.iter().map(|b| &b.0).collect::<Vec<_>>()
                )
            })?;
            if let Some(m0) = mats.first() {
                if m.1.cols != m0.cols {
                    bail!(
                        "block `{w}`: {} columns in {} {}, {} in {} {} (expected equal)",
                        m0.cols,
                        first.flag,
                        first.spec,
                        m.1.cols,
                        input.flag,
                        input.spec
                    );
                }
            }
            mats.push(m.1.clone());
        }
        let mats: [Matrix; N] = mats
            .try_into()
            .map_err(|_| anyhow::anyhow!("block `{w}`: one matrix per input expected"))?;
        out.push((w, mats));
    }
    Ok(out)
}
