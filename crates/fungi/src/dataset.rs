//! Datasets: what [`Fungi`](crate::Fungi) reads images (and labels) from.
//!
//! [`ImageSource`] is the abstraction: a numbered sequence of images, optionally labelled. It is
//! implemented for images in memory (`[RgbImage]`, `[(RgbImage, i64)]` with labels), for lists
//! of paths, and for [`Dataset`]: a torchvision `ImageFolder` (sorted class folders → labels), a
//! plain folder walked recursively, or a text file listing image paths, with optional labels
//! from a `path,label` CSV. `fungi extract` reads its `--images` through [`Dataset::load`], so a
//! library user gets the same order, labels and listing hash (the dataset identity recorded in
//! `run.json`) as the command line.
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use fungi::dataset::{Dataset, ImageSource};
//! let train = Dataset::load("imagenette/train".as_ref(), None, true)?;
//! println!("{} images, classes {:?}, first label {:?}", train.len(), train.classes, train.label(0));
//! let first = train.image(0)?; // decoded like PIL's .convert("RGB")
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use fungi_aug::{DecodeOptions, RgbImage};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Images a [`Fungi`](crate::Fungi) can read one at a time: decoded images in memory, image
/// files (decoded like PIL's `.convert("RGB")`), or a [`Dataset`].
pub trait ImageSource: Sync {
    /// Number of images.
    fn len(&self) -> usize;
    /// Whether there are none.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Image `i`, decoded.
    ///
    /// # Errors
    /// When it cannot be read or decoded (naming the file).
    fn image(&self, i: usize) -> fungi_core::Result<RgbImage>;
    /// The label of image `i`, when the source has labels.
    fn label(&self, _i: usize) -> Option<i64> {
        None
    }
    /// A name for image `i` in messages and manifests (its path, or `#i` in memory).
    fn name(&self, i: usize) -> String {
        format!("#{i}")
    }
}

impl ImageSource for [RgbImage] {
    fn len(&self) -> usize {
        <[RgbImage]>::len(self)
    }
    fn image(&self, i: usize) -> fungi_core::Result<RgbImage> {
        Ok(self[i].clone())
    }
}

impl ImageSource for Vec<RgbImage> {
    fn len(&self) -> usize {
        <[RgbImage]>::len(self)
    }
    fn image(&self, i: usize) -> fungi_core::Result<RgbImage> {
        Ok(self[i].clone())
    }
}

/// Labelled images in memory (what a torch `Dataset` yields: `(image, label)` pairs).
impl ImageSource for [(RgbImage, i64)] {
    fn len(&self) -> usize {
        <[(RgbImage, i64)]>::len(self)
    }
    fn image(&self, i: usize) -> fungi_core::Result<RgbImage> {
        Ok(self[i].0.clone())
    }
    fn label(&self, i: usize) -> Option<i64> {
        Some(self[i].1)
    }
}

impl ImageSource for Vec<(RgbImage, i64)> {
    fn len(&self) -> usize {
        <[(RgbImage, i64)]>::len(self)
    }
    fn image(&self, i: usize) -> fungi_core::Result<RgbImage> {
        self.as_slice().image(i)
    }
    fn label(&self, i: usize) -> Option<i64> {
        self.as_slice().label(i)
    }
}

impl ImageSource for [PathBuf] {
    fn len(&self) -> usize {
        <[PathBuf]>::len(self)
    }
    fn image(&self, i: usize) -> fungi_core::Result<RgbImage> {
        Ok(fungi_aug::decode_rgb(&self[i], &Default::default())?)
    }
    fn name(&self, i: usize) -> String {
        self[i].display().to_string()
    }
}

impl ImageSource for Vec<PathBuf> {
    fn len(&self) -> usize {
        <[PathBuf]>::len(self)
    }
    fn image(&self, i: usize) -> fungi_core::Result<RgbImage> {
        self.as_slice().image(i)
    }
    fn name(&self, i: usize) -> String {
        self.as_slice().name(i)
    }
}

/// Why a dataset could not be listed or labelled.
#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    /// A file or folder could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A folder with class folders of images and images at its top level.
    #[error(
        "{root} looks like an ImageFolder (class folders with images: {}) but also holds {stray_count} image(s) at its top level ({}{}): move them into a class folder for a labelled dataset, or pass a text file listing the images for an unlabelled one",
        classes.join(", "),
        stray.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "),
        if *stray_count > stray.len() { ", ..." } else { "" }
    )]
    MixedFolder {
        /// The folder.
        root: PathBuf,
        /// Class folders that hold images (the first five).
        classes: Vec<String>,
        /// Top-level images (the first five).
        stray: Vec<PathBuf>,
        /// Number of top-level images.
        stray_count: usize,
    },
    /// No image files.
    #[error("no images found in {} (extensions: {})", path.display(), IMAGE_EXTENSIONS.join(", "))]
    NoImages {
        /// Where they were looked for.
        path: PathBuf,
    },
    /// A file list with no entries.
    #[error("{}: the file list is empty", path.display())]
    EmptyList {
        /// The list.
        path: PathBuf,
    },
    /// An entry of a folder that could not be listed, in a strict listing.
    #[error("listing {}: {}: {reason} (a non-strict listing leaves such entries out and reports them)", root.display(), entry.display())]
    Listing {
        /// The folder being walked.
        root: PathBuf,
        /// The entry.
        entry: PathBuf,
        /// Why (a symlink loop, a permission error).
        reason: String,
    },
    /// A line of a label CSV that is not `path,label`.
    #[error("{}:{line}: expected `path,label`, found {found:?}", file.display())]
    LabelLine {
        /// The CSV.
        file: PathBuf,
        /// 1-based line.
        line: usize,
        /// The line.
        found: String,
    },
    /// A label that is not an integer.
    #[error("{}:{line}: label {value:?} is not an integer", file.display())]
    LabelValue {
        /// The CSV.
        file: PathBuf,
        /// 1-based line.
        line: usize,
        /// The value.
        value: String,
    },
    /// An image the label CSV does not list.
    #[error("{}: no label for {image}", file.display())]
    MissingLabel {
        /// The CSV.
        file: PathBuf,
        /// The image, relative to the dataset root.
        image: String,
    },
}

impl From<DatasetError> for fungi_core::Error {
    fn from(e: DatasetError) -> Self {
        match e {
            DatasetError::Io { path, source } => fungi_core::Error::Io { path, source },
            other => fungi_core::Error::Input(other.to_string()),
        }
    }
}

type Result<T> = std::result::Result<T, DatasetError>;

/// Extensions treated as images when walking folders.
pub const IMAGE_EXTENSIONS: &[&str] = &[
    "jpg", "jpeg", "png", "webp", "bmp", "tif", "tiff", "pnm", "pgm", "ppm", "pbm",
];

/// Whether the extension is one of [`IMAGE_EXTENSIONS`].
pub fn is_image(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .map(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
        .unwrap_or(false)
}

/// An entry of a folder that could not be listed (a symlink loop, an unreadable folder).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ListingProblem {
    /// The entry.
    pub path: String,
    /// Why it was left out.
    pub error: String,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> DatasetError + '_ {
    move |source| DatasetError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The image files of `inputs` and the entries that could not be listed.
///
/// A folder contributes its image files (recursively, following symlinks, sorted by path); a
/// file is taken as given, in the order of `inputs`. A dangling symlink with an image extension
/// is listed (reading it fails later, under the caller's bad-image policy, with its index). With
/// `strict`, an entry that cannot be listed (symlink loop, unreadable folder) is an error naming
/// it; otherwise it is returned as a [`ListingProblem`] and the walk goes on.
///
/// # Errors
/// An input that does not exist, no images at all, or (strict) an entry that cannot be listed.
pub fn list_images(
    inputs: &[PathBuf],
    strict: bool,
) -> Result<(Vec<PathBuf>, Vec<ListingProblem>)> {
    let mut out = Vec::new();
    let mut problems = Vec::new();
    for input in inputs {
        let meta = std::fs::metadata(input).map_err(io(input))?;
        if meta.is_dir() {
            let (found, p) = walk(input, strict)?;
            out.extend(found);
            problems.extend(p);
        } else {
            out.push(input.clone());
        }
    }
    if out.is_empty() {
        return Err(DatasetError::NoImages {
            path: PathBuf::from(
                inputs
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            ),
        });
    }
    Ok((out, problems))
}

/// The image files under folder `input` (recursively, sorted), possibly none; see
/// [`list_images`] for symlinks and `strict`.
///
/// # Errors
/// (strict) An entry that cannot be listed.
pub fn walk(input: &Path, strict: bool) -> Result<(Vec<PathBuf>, Vec<ListingProblem>)> {
    let mut found = Vec::new();
    let mut problems = Vec::new();
    for entry in walkdir::WalkDir::new(input).follow_links(true) {
        let e = match entry {
            Ok(entry) => {
                if entry.file_type().is_file() && is_image(entry.path()) {
                    found.push(entry.into_path());
                }
                continue;
            }
            Err(e) => e,
        };
        let path = e
            .path()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| input.to_path_buf());
        let is_link = std::fs::symlink_metadata(&path)
            .map(|m| m.file_type().is_symlink())
            .unwrap_or(false);
        if is_link
            && e.loop_ancestor().is_none()
            && std::fs::metadata(&path).is_err()
            && is_image(&path)
        {
            // Dangling: listed, so that it keeps its index and fails under the image policy.
            found.push(path);
            continue;
        }
        let why = match e.loop_ancestor() {
            Some(a) => format!("symlink loop back to {}", a.display()),
            None => e
                .io_error()
                .map(|io| io.to_string())
                .unwrap_or_else(|| e.to_string()),
        };
        if strict {
            return Err(DatasetError::Listing {
                root: input.to_path_buf(),
                entry: path,
                reason: why,
            });
        }
        tracing::warn!("not listed: {}: {why}", path.display());
        problems.push(ListingProblem {
            path: path.display().to_string(),
            error: why,
        });
    }
    found.sort();
    Ok((found, problems))
}

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
    /// How [`ImageSource::image`] decodes (EXIF orientation, size limits).
    pub decode: DecodeOptions,
}

impl Dataset {
    /// `path`: a folder (an ImageFolder when it holds only sub-folders with images, else a
    /// plain folder walked recursively) or a text file listing image paths (relative to the
    /// list; blank lines and `#` comments skipped). `labels_csv`: optional `path,label` lines
    /// (paths as listed or relative to the root; a `path,...` header is skipped). With
    /// `strict`, an entry that cannot be listed is an error; otherwise it is recorded in
    /// [`Dataset::problems`].
    ///
    /// A folder holding class folders with images *and* images at its top level is refused
    /// (naming the stray files): it is neither a clean ImageFolder nor meant as unlabelled.
    ///
    /// # Errors
    /// See [`DatasetError`].
    pub fn load(path: &Path, labels_csv: Option<&Path>, strict: bool) -> Result<Self> {
        let meta = std::fs::metadata(path).map_err(io(path))?;
        let mut ds = if meta.is_dir() {
            Self::from_folder(path, strict)?
        } else {
            let text = std::fs::read_to_string(path).map_err(io(path))?;
            let base = path.parent().unwrap_or(Path::new("."));
            let files: Vec<PathBuf> = text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(|l| base.join(l))
                .collect();
            if files.is_empty() {
                return Err(DatasetError::EmptyList {
                    path: path.to_path_buf(),
                });
            }
            Self::from_files(base, files)
        };
        if let Some(csv) = labels_csv {
            ds.labels = Some(read_labels(csv, &ds)?);
        }
        Ok(ds)
    }

    /// Unlabelled files, named relative to `root` in manifests.
    pub fn from_files(root: &Path, files: Vec<PathBuf>) -> Self {
        Dataset {
            root: root.to_path_buf(),
            files,
            labels: None,
            classes: vec![],
            problems: vec![],
            decode: DecodeOptions::default(),
        }
    }

    fn from_folder(path: &Path, strict: bool) -> Result<Self> {
        let mut subdirs: Vec<PathBuf> = Vec::new();
        let mut top_images: Vec<PathBuf> = Vec::new();
        for e in std::fs::read_dir(path).map_err(io(path))? {
            let p = e.map_err(io(path))?.path();
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
        let name = |d: &Path| {
            d.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        };
        if class_images > 0 && !top_images.is_empty() {
            return Err(DatasetError::MixedFolder {
                root: path.to_path_buf(),
                classes: subdirs
                    .iter()
                    .zip(&per_class)
                    .filter(|(_, f)| !f.is_empty())
                    .map(|(d, _)| name(d))
                    .take(5)
                    .collect(),
                stray_count: top_images.len(),
                stray: top_images.into_iter().take(5).collect(),
            });
        }
        if !subdirs.is_empty() && top_images.is_empty() {
            // torchvision ImageFolder: sorted class folders, files sorted within each.
            let mut files = Vec::new();
            let mut labels = Vec::new();
            let mut classes = Vec::new();
            for (c, (dir, f)) in subdirs.iter().zip(per_class).enumerate() {
                labels.extend(std::iter::repeat_n(c as i64, f.len()));
                files.extend(f);
                classes.push(name(dir));
            }
            if files.is_empty() {
                return Err(DatasetError::NoImages {
                    path: path.to_path_buf(),
                });
            }
            Ok(Dataset {
                labels: Some(labels),
                classes,
                problems,
                ..Self::from_files(path, files)
            })
        } else {
            let (files, problems) = list_images(&[path.to_path_buf()], strict)?;
            Ok(Dataset {
                problems,
                ..Self::from_files(path, files)
            })
        }
    }

    /// The same dataset, decoded with `opts`.
    pub fn with_decode_options(mut self, opts: DecodeOptions) -> Self {
        self.decode = opts;
        self
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.files.len()
    }

    /// Whether it holds no images (never, for a loaded dataset).
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
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

impl ImageSource for Dataset {
    fn len(&self) -> usize {
        self.files.len()
    }
    fn image(&self, i: usize) -> fungi_core::Result<RgbImage> {
        Ok(fungi_aug::decode_rgb(&self.files[i], &self.decode)?)
    }
    fn label(&self, i: usize) -> Option<i64> {
        self.labels.as_ref().map(|l| l[i])
    }
    fn name(&self, i: usize) -> String {
        self.relative(i)
    }
}

fn read_labels(csv: &Path, ds: &Dataset) -> Result<Vec<i64>> {
    let text = std::fs::read_to_string(csv).map_err(io(csv))?;
    let mut map: HashMap<String, i64> = HashMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || (n == 0 && line.to_ascii_lowercase().starts_with("path")) {
            continue;
        }
        let (p, l) = line
            .rsplit_once(',')
            .ok_or_else(|| DatasetError::LabelLine {
                file: csv.to_path_buf(),
                line: n + 1,
                found: line.to_string(),
            })?;
        let l: i64 = l.trim().parse().map_err(|_| DatasetError::LabelValue {
            file: csv.to_path_buf(),
            line: n + 1,
            value: l.trim().to_string(),
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
                .ok_or(DatasetError::MissingLabel {
                    file: csv.to_path_buf(),
                    image: rel,
                })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(path: &Path) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        RgbImage::from_pixel(4, 3, fungi_aug::image::Rgb([10, 20, 30]))
            .save(path)
            .unwrap();
    }

    #[test]
    fn image_folder_order_labels_and_hash() {
        let d = tempfile::tempdir().unwrap();
        for f in ["b/2.png", "b/1.png", "a/x.png", "a/sub/y.png"] {
            png(&d.path().join(f));
        }
        let ds = Dataset::load(d.path(), None, true).unwrap();
        let rel: Vec<String> = (0..ds.len()).map(|i| ds.relative(i)).collect();
        assert_eq!(rel, ["a/sub/y.png", "a/x.png", "b/1.png", "b/2.png"]);
        assert_eq!(ds.labels.as_deref(), Some(&[0, 0, 1, 1][..]));
        assert_eq!(ds.classes, ["a", "b"]);
        assert_eq!((ds.label(2), ds.name(2)), (Some(1), "b/1.png".to_string()));
        assert_eq!(ds.image(0).unwrap().dimensions(), (4, 3));
        // The hash covers labels: relabelling changes the dataset identity.
        let csv = d.path().join("labels.csv");
        std::fs::write(
            &csv,
            "path,label\na/sub/y.png,5\na/x.png,0\nb/1.png,1\nb/2.png,1\n",
        )
        .unwrap();
        let relabelled = Dataset::load(d.path(), Some(&csv), true).unwrap();
        assert_eq!(relabelled.labels.as_deref(), Some(&[5, 0, 1, 1][..]));
        assert_ne!(relabelled.listing_hash(), ds.listing_hash());
        assert_eq!(
            Dataset::load(d.path(), None, true).unwrap().listing_hash(),
            ds.listing_hash()
        );
    }

    #[test]
    fn file_list_plain_folder_and_errors() {
        let d = tempfile::tempdir().unwrap();
        png(&d.path().join("imgs/q.png"));
        png(&d.path().join("imgs/p.png"));
        let list = d.path().join("list.txt");
        std::fs::write(&list, "# two images\nimgs/q.png\n\nimgs/p.png\n").unwrap();
        let ds = Dataset::load(&list, None, true).unwrap();
        assert_eq!(ds.relative(0), "imgs/q.png");
        assert!(ds.labels.is_none());
        let plain = Dataset::load(&d.path().join("imgs"), None, true).unwrap();
        assert_eq!(plain.relative(0), "p.png");

        std::fs::write(&list, "# nothing\n").unwrap();
        let e = Dataset::load(&list, None, true).unwrap_err();
        assert!(matches!(e, DatasetError::EmptyList { .. }), "{e}");
        let csv = d.path().join("l.csv");
        std::fs::write(&csv, "p.png,1\nq.png,one\n").unwrap();
        let e = Dataset::load(&d.path().join("imgs"), Some(&csv), true).unwrap_err();
        assert!(
            matches!(&e, DatasetError::LabelValue { line: 2, value, .. } if value == "one"),
            "{e}"
        );
        std::fs::write(&csv, "p.png,1\n").unwrap();
        let e = Dataset::load(&d.path().join("imgs"), Some(&csv), true).unwrap_err();
        assert!(e.to_string().contains("no label for q.png"), "{e}");
        let e = Dataset::load(&d.path().join("missing"), None, true).unwrap_err();
        assert!(matches!(e, DatasetError::Io { .. }) && e.to_string().contains("missing"));

        // Class folders plus stray top-level images: refused, naming them.
        png(&d.path().join("mixed/cls/a.png"));
        png(&d.path().join("mixed/stray.png"));
        let e = Dataset::load(&d.path().join("mixed"), None, true).unwrap_err();
        assert!(
            matches!(&e, DatasetError::MixedFolder { stray_count: 1, .. })
                && e.to_string().contains("stray.png"),
            "{e}"
        );
    }

    #[test]
    fn in_memory_sources() {
        let im = RgbImage::new(2, 2);
        let labelled = vec![(im.clone(), 3), (im.clone(), 4)];
        assert_eq!((labelled.len(), labelled.label(1)), (2, Some(4)));
        let plain = vec![im];
        assert_eq!((plain.label(0), plain.name(0)), (None, "#0".to_string()));
    }
}
