//! The on-disk layout of a `fungi extract` output directory, shared by the command line
//! (`extract`, `merge`, `knn`, `inspect`) and library users who read or produce such outputs.
//!
//! ```text
//! OUT/
//!   run.json                 RunIdentity: what a --resume or a merge must match
//!   state.safetensors        the extractor state used (projection, heads, SimCLR negatives)
//!   setup-skipped.json       training images the setup skipped (only when there were some)
//!   chunks/chunk-NNNNNN.safetensors   finished chunks (written atomically)
//!   features.npy | features.safetensors | *.h5, indices.npy, labels.npy   the final outputs
//!   manifest.json            Manifest: written last, describes complete files
//! ```
//!
//! Chunk `c` always holds the global indices `[c·C, (c+1)·C)` ([`RunIdentity::chunk_range`]),
//! so a resumed or sharded run computes every image in the same batch as an uninterrupted one.

use std::path::{Path, PathBuf};

use fungi_backbone::{Precision, VitConfig};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::dataset::ListingProblem;
use crate::{Block, FungiConfig};

mod chunk;
pub mod npy;
mod outdir;
mod outputs;

pub use chunk::{read_chunk, write_chunk, Chunk};
pub use outdir::{OutDir, LOCK_FILE};
pub use outputs::{block_columns, finish, write_outputs, Extras};

/// `run.json`: the run's identity.
pub const RUN_FILE: &str = "run.json";
/// `state.safetensors`: the state the run used.
pub const STATE_FILE: &str = "state.safetensors";
/// `manifest.json`: the finished run's description.
pub const MANIFEST_FILE: &str = "manifest.json";
/// `setup-skipped.json`: training images the objectives' setup skipped.
pub const SETUP_SKIPPED_FILE: &str = "setup-skipped.json";
/// The folder of finished chunks.
pub const CHUNKS_DIR: &str = "chunks";

/// Output format of the features.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// `features.npy` `[N, D]`, `indices.npy`, `labels.npy`.
    Npy,
    /// `features.safetensors`: one tensor per block, plus `indices`, `labels`.
    Safetensors,
    /// The paper repo's HDF5 layout: `embeddings.h5` with `targets` (uint32) and `embeddings`,
    /// and one `<objective>.h5` per gradient block with dataset `attn_proj` (and `targets`),
    /// as `train_knn_concat_grads.py` reads them.
    Hdf5,
}

impl Format {
    /// Every format, by name.
    pub const ALL: [(&'static str, Format); 3] = [
        ("npy", Format::Npy),
        ("safetensors", Format::Safetensors),
        ("hdf5", Format::Hdf5),
    ];
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .iter()
            .find(|(n, _)| *n == s)
            .map(|(_, f)| *f)
            .ok_or_else(|| format!("unknown format {s:?}: expected npy, safetensors or hdf5"))
    }
}

/// What identifies a run; a resume or a merge must see the same values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunIdentity {
    /// fungi-rs version.
    pub tool_version: String,
    /// The full configuration.
    pub config: FungiConfig,
    /// Architecture.
    pub arch: VitConfig,
    /// SHA-256 of the weights file.
    pub weights_sha256: String,
    /// SHA-256 of the dataset listing (relative paths and labels).
    pub dataset_sha256: String,
    /// Images in the dataset.
    pub dataset_len: usize,
    /// Class names (ImageFolder).
    pub classes: Vec<String>,
    /// SHA-256 of the state file used.
    pub state_sha256: String,
    /// Projection fingerprint.
    pub projection_fingerprint: String,
    /// Images per chunk.
    pub chunk_size: usize,
    /// Output format.
    pub format: Format,
    /// Precision of the prefix (`--precision`); f32 in manifests written before it existed.
    #[serde(default)]
    pub precision: Precision,
}

impl RunIdentity {
    /// Reads `dir/run.json`.
    ///
    /// # Errors
    /// A missing, unreadable or malformed file (naming it).
    pub fn read(dir: &Path) -> Result<Self, LayoutError> {
        read_json(&dir.join(RUN_FILE), "run identity")
    }
    /// Number of chunks of the dataset.
    pub fn total_chunks(&self) -> usize {
        self.dataset_len.div_ceil(self.chunk_size.max(1))
    }
    /// Global indices of chunk `c`: `[c·C, min((c+1)·C, N))`.
    pub fn chunk_range(&self, c: usize) -> std::ops::Range<usize> {
        chunk_range(c, self.chunk_size, self.dataset_len)
    }
}

/// An image left out of the features, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Skipped {
    /// Global index.
    pub index: usize,
    /// File (relative to the dataset root).
    pub file: String,
    /// Why.
    pub error: String,
}

/// `manifest.json` of a finished run (or shard, or merge).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Identity.
    pub run: RunIdentity,
    /// Feature layout: columns `[offset, offset + dim)` of a row.
    pub blocks: Vec<Block>,
    /// Rows written.
    pub rows: usize,
    /// Chunks covered `[first, end)`.
    pub chunks: (usize, usize),
    /// Total chunks of the dataset.
    pub total_chunks: usize,
    /// Shard `(index, count)`, or `None` for a whole run / merged output.
    pub shard: Option<(usize, usize)>,
    /// Images skipped under a skip policy.
    pub skipped: Vec<Skipped>,
    /// Training images skipped by the objectives' setup (SimCLR negatives, DeepCluster memory
    /// bank) under a skip policy.
    #[serde(default)]
    pub setup_skipped: Vec<Skipped>,
    /// Entries of the dataset folder that could not be listed (symlink loops, unreadable
    /// folders) under a skip policy.
    #[serde(default)]
    pub not_listed: Vec<ListingProblem>,
    /// Files written.
    pub files: Vec<String>,
}

/// Why a layout file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    /// The file could not be read.
    #[error("reading {}: {source}", path.display())]
    Io {
        /// File.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A `.npy` file that cannot be read or written as asked (header, dtype, shape, size).
    #[error("{}: {reason}", path.display())]
    Npy {
        /// File.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A finished chunk that is not whole or not consistent.
    #[error("{}: damaged chunk ({reason}); delete it and rerun with --resume to recompute it", path.display())]
    DamagedChunk {
        /// The chunk file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A chunk that should exist does not.
    #[error("chunk {chunk} is missing (looked for chunk-{chunk:06}.safetensors in {looked})")]
    MissingChunk {
        /// Chunk number.
        chunk: usize,
        /// The folders looked in.
        looked: String,
    },
    /// `--format hdf5` in a build without the `hdf5` feature.
    #[error("--format hdf5 needs a build with `--features hdf5` (and Debian's libhdf5-dev)")]
    NoHdf5,
    /// Writing an HDF5 file failed.
    #[error("{}: {reason}", path.display())]
    Hdf5 {
        /// File.
        path: PathBuf,
        /// The HDF5 library's message.
        reason: String,
    },
    /// A tensor file could not be written or read.
    #[error(transparent)]
    Tensor(#[from] fungi_core::Error),
    /// Another process writes this output directory.
    #[error("{} is in use by another fungi process (pid {holder}; lock {}): wait for it to finish, or choose another --out", dir.display(), lock.display())]
    Locked {
        /// The output directory.
        dir: PathBuf,
        /// The lock file.
        lock: PathBuf,
        /// The pid written by the holder (`unknown` if it wrote none).
        holder: String,
    },
    /// The file is not what it should be.
    #[error("{}: not a fungi {what} ({reason})", path.display())]
    Invalid {
        /// File.
        path: PathBuf,
        /// `manifest`, `run identity`.
        what: &'static str,
        /// The parser's message.
        reason: String,
    },
}

/// Global indices of chunk `c` of chunks of `chunk_size` over `len` images:
/// `[c·C, min((c+1)·C, N))`.
pub fn chunk_range(c: usize, chunk_size: usize, len: usize) -> std::ops::Range<usize> {
    let start = c.saturating_mul(chunk_size).min(len);
    start..c.saturating_add(1).saturating_mul(chunk_size).min(len)
}

/// The chunk file of chunk `c` in the first of `dirs` that holds it.
///
/// # Errors
/// [`LayoutError::MissingChunk`] naming every `chunks/` folder looked in.
pub fn find_chunk(dirs: &[PathBuf], c: usize) -> Result<PathBuf, LayoutError> {
    dirs.iter()
        .map(|d| chunk_path(d, c))
        .find(|p| p.exists())
        .ok_or_else(|| LayoutError::MissingChunk {
            chunk: c,
            looked: dirs
                .iter()
                .map(|d| d.join("chunks").display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// Reads a JSON layout file, naming it on error.
pub(crate) fn read_json<T: for<'de> Deserialize<'de>>(
    path: &Path,
    what: &'static str,
) -> Result<T, LayoutError> {
    let text = std::fs::read_to_string(path).map_err(|source| LayoutError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|e| LayoutError::Invalid {
        path: path.to_path_buf(),
        what,
        reason: e.to_string(),
    })
}

impl Manifest {
    /// Reads `dir/manifest.json`.
    ///
    /// # Errors
    /// A missing, unreadable or malformed manifest (naming the file).
    pub fn read(dir: &Path) -> Result<Self, LayoutError> {
        read_json(&dir.join(MANIFEST_FILE), "manifest")
    }
    /// Width of a row.
    pub fn dim(&self) -> usize {
        self.blocks.iter().map(|b| b.dim).sum()
    }
}

/// Chunks `[a, b)` of shard `i` of `n` over `total` chunks (contiguous, sizes differing by at
/// most one).
pub fn shard_chunks(i: usize, n: usize, total: usize) -> (usize, usize) {
    (i * total / n, (i + 1) * total / n)
}

/// The file of finished chunk `c` under output directory `out`.
pub fn chunk_path(out: &Path, c: usize) -> PathBuf {
    out.join(CHUNKS_DIR)
        .join(format!("chunk-{c:06}.safetensors"))
}

/// Whether a file name is a chunk's.
pub fn is_chunk_file(name: &str) -> bool {
    name.starts_with("chunk-") && name.ends_with(".safetensors")
}

/// SHA-256 (hex) of a file, read in 1 MiB pieces (weights hashes in [`RunIdentity`]).
///
/// # Errors
/// When the file cannot be read.
pub fn sha256_file(path: &Path) -> fungi_core::Result<String> {
    use std::io::Read;
    let io = |source| fungi_core::Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut f = std::fs::File::open(path).map_err(io)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(format!("{:x}", h.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_cover_the_dataset_once() {
        let run = RunIdentity {
            tool_version: "x".into(),
            config: FungiConfig::preset(crate::Preset::Fungivision),
            arch: VitConfig::preset("dino_vits16").unwrap(),
            weights_sha256: String::new(),
            dataset_sha256: String::new(),
            dataset_len: 10,
            classes: vec![],
            state_sha256: String::new(),
            projection_fingerprint: String::new(),
            chunk_size: 4,
            format: Format::Npy,
            precision: Precision::F32,
        };
        assert_eq!(run.total_chunks(), 3);
        let ranges: Vec<_> = (0..4).map(|c| run.chunk_range(c)).collect();
        assert_eq!(ranges, [0..4, 4..8, 8..10, 10..10]);
        for n in 1..5 {
            let mut next = 0;
            for i in 0..n {
                let (a, b) = shard_chunks(i, n, 3);
                assert_eq!(a, next);
                next = b;
            }
            assert_eq!(next, 3);
        }
        assert!(is_chunk_file(
            chunk_path(Path::new("o"), 7)
                .file_name()
                .unwrap()
                .to_str()
                .unwrap()
        ));
        assert_eq!("hdf5".parse::<Format>(), Ok(Format::Hdf5));
        assert!("h5".parse::<Format>().unwrap_err().contains("npy"));
        let d = tempfile::tempdir().unwrap();
        let e = Manifest::read(d.path()).unwrap_err();
        assert!(matches!(e, LayoutError::Io { .. }) && e.to_string().contains("manifest.json"));
        std::fs::write(d.path().join(MANIFEST_FILE), "{}").unwrap();
        let e = Manifest::read(d.path()).unwrap_err();
        assert!(e.to_string().contains("not a fungi manifest"), "{e}");
    }
}
