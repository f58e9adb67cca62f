//! [`Features`]: rows of FUNGI features with their block layout, saved and loaded in the formats
//! of `fungi extract`'s outputs.

use std::path::Path;

use fungi_core::tensor_file;

use crate::layout::{npy, write_outputs, Format, LayoutError, Manifest, MANIFEST_FILE};

/// One block of the feature vector.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Block {
    /// `embedding`, or the objective's name (`kl`, `dino`, `simclr`, `deepcluster`).
    pub name: String,
    /// Width.
    pub dim: usize,
    /// First column in a row.
    pub offset: usize,
}

/// Features `[rows, dim]` (row-major `f32`, each block L2-normalised) and their block layout.
#[derive(Debug, Clone, PartialEq)]
pub struct Features {
    /// Row-major values.
    pub data: Vec<f32>,
    /// Number of images.
    pub rows: usize,
    /// The blocks, in column order.
    pub blocks: Vec<Block>,
    /// The images' labels, when the source has a label for every image.
    pub labels: Option<Vec<i64>>,
}

impl Features {
    /// Row width.
    pub fn dim(&self) -> usize {
        self.blocks.iter().map(|b| b.dim).sum()
    }
    /// Row `i`.
    pub fn row(&self, i: usize) -> &[f32] {
        let d = self.dim();
        &self.data[i * d..(i + 1) * d]
    }
    /// Block `name` of row `i`, if there is such a block.
    pub fn block(&self, i: usize, name: &str) -> Option<&[f32]> {
        let b = self.blocks.iter().find(|b| b.name == name)?;
        Some(&self.row(i)[b.offset..b.offset + b.dim])
    }
}

/// `features.json`, written by [`Features::save`] next to the outputs: the block layout.
const FEATURES_FILE: &str = "features.json";

#[derive(serde::Serialize, serde::Deserialize)]
struct Layout {
    blocks: Vec<Block>,
    rows: usize,
}

impl Features {
    /// Writes the rows into `dir` (made when missing) in `format`, as `fungi extract` writes its
    /// final outputs (`features.npy` + `indices.npy` + `labels.npy`; `features.safetensors`
    /// with one tensor per block; or the paper's HDF5 files, feature `hdf5`), plus
    /// `features.json` (the block layout). Row `i` gets global index `i`.
    ///
    /// # Errors
    /// A file that cannot be written, naming it.
    pub fn save(&self, dir: &Path, format: Format) -> Result<Vec<String>, LayoutError> {
        std::fs::create_dir_all(dir).map_err(|source| LayoutError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let indices: Vec<i64> = (0..self.rows as i64).collect();
        let labels = self.labels.clone().unwrap_or_default();
        let mut files = write_outputs(dir, format, &self.blocks, &self.data, &indices, &labels)?;
        let layout = Layout {
            blocks: self.blocks.clone(),
            rows: self.rows,
        };
        let text = serde_json::to_string_pretty(&layout).map_err(|e| LayoutError::Invalid {
            path: dir.join(FEATURES_FILE),
            what: "features layout",
            reason: e.to_string(),
        })?;
        tensor_file::write_bytes_atomic(&dir.join(FEATURES_FILE), (text + "\n").as_bytes())?;
        files.push(FEATURES_FILE.into());
        Ok(files)
    }

    /// Reads rows saved by [`Features::save`] or written by `fungi extract` (its
    /// `manifest.json` gives the layout): `features.safetensors`, else `features.npy` (+
    /// `labels.npy`), else the HDF5 files (feature `hdf5`).
    ///
    /// # Errors
    /// No layout file, no features file, or files that do not agree with the layout (naming
    /// them).
    pub fn load(dir: &Path) -> Result<Self, LayoutError> {
        let blocks = if dir.join(MANIFEST_FILE).exists() {
            Manifest::read(dir)?.blocks
        } else {
            let p = dir.join(FEATURES_FILE);
            let text = std::fs::read_to_string(&p).map_err(|source| LayoutError::Io {
                path: p.clone(),
                source,
            })?;
            serde_json::from_str::<Layout>(&text)
                .map_err(|e| LayoutError::Invalid {
                    path: p,
                    what: "features layout",
                    reason: e.to_string(),
                })?
                .blocks
        };
        let dim: usize = blocks.iter().map(|b| b.dim).sum();
        let bad = |path: &Path, reason: String| LayoutError::Invalid {
            path: path.to_path_buf(),
            what: "features file",
            reason,
        };
        let (data, labels) = if dir.join("features.safetensors").exists() {
            let p = dir.join("features.safetensors");
            let bytes = std::fs::read(&p).map_err(|source| LayoutError::Io {
                path: p.clone(),
                source,
            })?;
            let st = safetensors::SafeTensors::deserialize(&bytes)
                .map_err(|e| bad(&p, e.to_string()))?;
            let mut cols = Vec::with_capacity(blocks.len());
            for b in &blocks {
                let t = st
                    .tensor(&b.name)
                    .map_err(|e| bad(&p, format!("block `{}`: {e}", b.name)))?;
                cols.push(tensor_file::read_f32(&p, &b.name, &t)?);
            }
            let n = cols.first().map_or(0, |c| c.len() / blocks[0].dim.max(1));
            let mut data = Vec::with_capacity(n * dim);
            for r in 0..n {
                for (b, c) in blocks.iter().zip(&cols) {
                    let row = c.get(r * b.dim..(r + 1) * b.dim).ok_or_else(|| {
                        bad(&p, format!("block `{}` has fewer than {n} rows", b.name))
                    })?;
                    data.extend_from_slice(row);
                }
            }
            let labels = match st.tensor("labels") {
                Ok(t) => Some(tensor_file::read_i64(&p, "labels", &t)?),
                Err(_) => None,
            };
            (data, labels)
        } else if dir.join("features.npy").exists() {
            let p = dir.join("features.npy");
            let data = match npy::read(&p)? {
                npy::Array::F32(s, v) if s.len() == 2 && s[1] == dim => v,
                a => {
                    return Err(bad(
                        &p,
                        format!(
                            "expected float32 [N, {dim}], found {} {:?}",
                            a.dtype(),
                            a.shape()
                        ),
                    ))
                }
            };
            let lp = dir.join("labels.npy");
            let labels = if lp.exists() {
                match npy::read(&lp)? {
                    npy::Array::I64(s, v) if s.len() == 1 => Some(v),
                    a => {
                        return Err(bad(
                            &lp,
                            format!("expected int64 [N], found {} {:?}", a.dtype(), a.shape()),
                        ))
                    }
                }
            } else {
                None
            };
            (data, labels)
        } else {
            read_hdf5(dir, &blocks)?
        };
        let rows = data.len() / dim.max(1);
        if rows * dim != data.len() || labels.as_ref().is_some_and(|l| l.len() != rows) {
            return Err(bad(
                dir,
                format!(
                    "{} values and {} labels for rows of width {dim}",
                    data.len(),
                    labels.as_ref().map_or(0, Vec::len)
                ),
            ));
        }
        Ok(Self {
            data,
            rows,
            blocks,
            labels,
        })
    }
}

/// The paper's HDF5 files: `embeddings.h5` (`embeddings`, `targets`) and `<block>.h5`
/// (`attn_proj`, `targets`).
#[cfg(feature = "hdf5")]
fn read_hdf5(dir: &Path, blocks: &[Block]) -> Result<(Vec<f32>, Option<Vec<i64>>), LayoutError> {
    let mut cols = Vec::new();
    let mut labels = None;
    for b in blocks {
        let (file, key) = if b.name == "embedding" {
            ("embeddings.h5".to_string(), "embeddings")
        } else {
            (format!("{}.h5", b.name), "attn_proj")
        };
        let p = dir.join(&file);
        let h5 = |e: &dyn std::fmt::Display| LayoutError::Hdf5 {
            path: p.clone(),
            reason: e.to_string(),
        };
        let f = hdf5_metno::File::open(&p).map_err(|e| h5(&e))?;
        let a: ndarray::Array2<f32> = f
            .dataset(key)
            .and_then(|d| d.read_2d())
            .map_err(|e| h5(&e))?;
        if labels.is_none() {
            let t: Vec<u32> = f
                .dataset("targets")
                .and_then(|d| d.read_raw())
                .map_err(|e| h5(&e))?;
            labels = Some(t.into_iter().map(i64::from).collect());
        }
        cols.push(a);
    }
    let n = cols.first().map_or(0, |c| c.nrows());
    let mut data = Vec::new();
    for r in 0..n {
        for c in &cols {
            data.extend(c.row(r).iter().copied());
        }
    }
    Ok((data, labels))
}

#[cfg(not(feature = "hdf5"))]
fn read_hdf5(dir: &Path, _: &[Block]) -> Result<(Vec<f32>, Option<Vec<i64>>), LayoutError> {
    if dir.join("embeddings.h5").exists() {
        return Err(LayoutError::NoHdf5);
    }
    Err(LayoutError::Io {
        path: dir.join("features.npy"),
        source: std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "no features.safetensors, features.npy or HDF5 files here",
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Features {
        Features {
            data: (0..12).map(|v| v as f32 * 0.5).collect(),
            rows: 3,
            blocks: vec![
                Block {
                    name: "embedding".into(),
                    dim: 1,
                    offset: 0,
                },
                Block {
                    name: "kl".into(),
                    dim: 3,
                    offset: 1,
                },
            ],
            labels: Some(vec![7, 8, 9]),
        }
    }

    #[test]
    fn features_round_trip_through_npy_and_safetensors() {
        for format in [Format::Npy, Format::Safetensors] {
            let d = tempfile::tempdir().unwrap();
            let f = sample();
            let files = f.save(d.path(), format).unwrap();
            assert!(files.contains(&"features.json".to_string()));
            assert_eq!(Features::load(d.path()).unwrap(), f, "{format:?}");
        }
        let d = tempfile::tempdir().unwrap();
        let e = Features::load(d.path()).unwrap_err().to_string();
        assert!(e.contains("features.json"), "{e}");
    }
}
