//! Datasets: torchvision `ImageFolder` order, plain folders, file lists, label CSVs.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

use crate::images::{is_image, list_images, walk, ListingProblem};

/// The images of a run, in dataset order (global index = position).
#[derive(Debug, Clone)]
pub struct Dataset {
    /// Root the relative paths are taken from.
    pub root: PathBuf,
    /// Files.
    pub files: Vec<PathBuf>,
    /// Labels, when known.
    pub labels: Option<Vec<i64>>,
    /// Class names (ImageFolder), index = label.
    pub classes: Vec<String>,
    /// Entries that could not be listed (symlink loops, unreadable folders), when not strict.
    pub problems: Vec<ListingProblem>,
}

impl Dataset {
    /// `path`: a directory (ImageFolder when it holds only sub-directories with images, else a
    /// plain folder walked recursively) or a text file listing image paths (relative to the list).
    /// `labels_csv`: optional `path,label` lines (paths as listed or relative to the root).
    /// With `strict`, an entry that cannot be listed is an error; otherwise it is recorded in
    /// [`Dataset::problems`].
    ///
    /// A directory holding class folders with images *and* images at its top level is refused
    /// (naming the stray files): it is neither a clean ImageFolder nor meant as unlabelled.
    pub fn load(path: &Path, labels_csv: Option<&Path>, strict: bool) -> Result<Self> {
        let meta = std::fs::metadata(path).with_context(|| format!("{}", path.display()))?;
        let mut ds = if meta.is_dir() {
            let mut subdirs: Vec<PathBuf> = Vec::new();
            let mut top_images: Vec<PathBuf> = Vec::new();
            for e in
                std::fs::read_dir(path).with_context(|| format!("reading {}", path.display()))?
            {
                let p = e
                    .with_context(|| format!("reading {}", path.display()))?
                    .path();
                if p.is_dir() {
                    subdirs.push(p);
                } else if is_image(&p) {
                    top_images.push(p);
                }
            }
            subdirs.sort();
            top_images.sort();
            let mut per_class = Vec::new();
            let mut problems = Vec::new();
            for dir in &subdirs {
                let (f, p) = walk(dir, strict)?;
                per_class.push(f);
                problems.extend(p);
            }
            let class_images: usize = per_class.iter().map(Vec::len).sum();
            if class_images > 0 && !top_images.is_empty() {
                let names: Vec<String> = top_images
                    .iter()
                    .take(5)
                    .map(|p| p.display().to_string())
                    .collect();
                bail!(
                    "{} looks like an ImageFolder (class folders with images: {}) but also holds {} image(s) at its top level ({}{}): move them into a class folder for a labelled dataset, or pass a text file listing the images (--images list.txt) for an unlabelled one",
                    path.display(),
                    subdirs
                        .iter()
                        .zip(&per_class)
                        .filter(|(_, f)| !f.is_empty())
                        .filter_map(|(d, _)| d.file_name().map(|n| n.to_string_lossy().into_owned()))
                        .take(5)
                        .collect::<Vec<_>>()
                        .join(", "),
                    top_images.len(),
                    names.join(", "),
                    if top_images.len() > 5 { ", ..." } else { "" }
                );
            }
            if !subdirs.is_empty() && top_images.is_empty() {
                // torchvision ImageFolder: sorted class folders, files sorted within each.
                let mut files = Vec::new();
                let mut labels = Vec::new();
                let mut classes = Vec::new();
                for (c, (dir, f)) in subdirs.iter().zip(per_class).enumerate() {
                    labels.extend(std::iter::repeat_n(c as i64, f.len()));
                    files.extend(f);
                    classes.push(
                        dir.file_name()
                            .map(|n| n.to_string_lossy().into_owned())
                            .unwrap_or_default(),
                    );
                }
                if files.is_empty() {
                    bail!("no images found under {}", path.display());
                }
                Dataset {
                    root: path.to_path_buf(),
                    files,
                    labels: Some(labels),
                    classes,
                    problems,
                }
            } else {
                let (files, problems) = list_images(&[path.to_path_buf()], strict)?;
                Dataset {
                    root: path.to_path_buf(),
                    files,
                    labels: None,
                    classes: vec![],
                    problems,
                }
            }
        } else {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            let base = path.parent().unwrap_or(Path::new("."));
            let files: Vec<PathBuf> = text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(|l| base.join(l))
                .collect();
            if files.is_empty() {
                bail!("{}: the file list is empty", path.display());
            }
            Dataset {
                root: base.to_path_buf(),
                files,
                labels: None,
                classes: vec![],
                problems: vec![],
            }
        };
        if let Some(csv) = labels_csv {
            ds.labels = Some(read_labels(csv, &ds)?);
        }
        Ok(ds)
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.files.len()
    }

    /// A path relative to the root (for manifests).
    pub fn relative(&self, i: usize) -> String {
        self.files[i]
            .strip_prefix(&self.root)
            .unwrap_or(&self.files[i])
            .to_string_lossy()
            .into_owned()
    }

    /// SHA-256 of the listing (relative paths and labels), identifying the dataset in manifests.
    pub fn listing_hash(&self) -> String {
        let mut h = Sha256::new();
        for i in 0..self.len() {
            h.update(self.relative(i).as_bytes());
            h.update([0]);
            if let Some(l) = &self.labels {
                h.update(l[i].to_le_bytes());
            }
        }
        format!("{:x}", h.finalize())
    }
}

fn read_labels(csv: &Path, ds: &Dataset) -> Result<Vec<i64>> {
    let text =
        std::fs::read_to_string(csv).with_context(|| format!("reading {}", csv.display()))?;
    let mut map: HashMap<String, i64> = HashMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || (n == 0 && line.to_ascii_lowercase().starts_with("path")) {
            continue;
        }
        let (p, l) = line.rsplit_once(',').with_context(|| {
            format!(
                "{}:{}: expected `path,label`, found {line:?}",
                csv.display(),
                n + 1
            )
        })?;
        let l: i64 = l.trim().parse().with_context(|| {
            format!(
                "{}:{}: label {:?} is not an integer",
                csv.display(),
                n + 1,
                l.trim()
            )
        })?;
        map.insert(p.trim().to_string(), l);
    }
    (0..ds.len())
        .map(|i| {
            let rel = ds.relative(i);
            let full = ds.files[i].to_string_lossy().into_owned();
            map.get(&rel)
                .or_else(|| map.get(&full))
                .copied()
                .with_context(|| format!("{}: no label for {rel}", csv.display()))
        })
        .collect()
}
