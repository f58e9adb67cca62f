//! Fetch backbone weights, as torch.hub and timm do.
//!
//! An [`Entry`] names a checkpoint and where it is published ([`Source`]): torch.hub's release
//! URLs (DINO / DINOv2), `download.pytorch.org` with the sha256 prefix torch.hub checks
//! (torchvision), or a Hugging Face hub repo (timm, read through Hugging Face's own client, whose
//! `X-Linked-Etag` is the file's sha256). fungi-backbone's preset table gives every architecture
//! preset its entry (`fungi_backbone::presets::find(name)?.entry()`). With the default feature
//! `download`, a [`Hub`] downloads entries into a cache — `$FUNGI_CACHE`, else
//! `$XDG_CACHE_HOME/fungi`, else `~/.cache/fungi` — with a progress bar, resumes a partial
//! download (`.part` + HTTP range), verifies the published checksum, and reads from the cache
//! without touching the network once a file is there. Without it the crate is the two data
//! types only (no HTTP client).
//!
//! A mirror (`FUNGI_MIRROR`, [`Hub::with_mirror`]) serves the same paths as the originals:
//! `<mirror>/dino/dino_deitsmall16_pretrain/dino_deitsmall16_pretrain.pth`,
//! `<mirror>/models/vit_b_16-c867db91.pth`, and, like a Hugging Face endpoint (`HF_ENDPOINT`),
//! `<mirror>/timm/<name>/resolve/main/model.safetensors`.
//!
//! ```no_run
//! # #[cfg(feature = "download")]
//! # fn main() -> Result<(), fungi_hub::Error> {
//! use fungi_hub::{Entry, Hub, Source};
//! let entry = Entry {
//!     name: "dino_vits16",
//!     source: Source::Url {
//!         url: "https://dl.fbaipublicfiles.com/dino/dino_deitsmall16_pretrain/dino_deitsmall16_pretrain.pth",
//!         sha256_prefix: None,
//!     },
//!     description: "DINO ViT-S/16 backbone",
//! };
//! let path = Hub::from_env()?.fetch(&entry)?;
//! # Ok(()) }
//! # #[cfg(not(feature = "download"))]
//! # fn main() {}
//! ```
#![warn(missing_docs)]

mod entry;
#[cfg(feature = "download")]
mod error;
#[cfg(feature = "download")]
mod hf;
#[cfg(feature = "download")]
mod http;
#[cfg(feature = "download")]
mod progress;

#[cfg(feature = "download")]
use std::path::{Path, PathBuf};

pub use entry::{Entry, Source, HF_DEFAULT_ENDPOINT};
#[cfg(feature = "download")]
pub use error::{Error, Result};

/// A weights cache and how to fill it.
#[cfg(feature = "download")]
#[derive(Debug, Clone)]
pub struct Hub {
    cache_dir: PathBuf,
    mirror: Option<String>,
    hf_endpoint: String,
    progress: bool,
}

#[cfg(feature = "download")]
impl Hub {
    /// A hub caching in `cache_dir`, downloading from the original sources, with a progress bar.
    pub fn new(cache_dir: impl Into<PathBuf>) -> Self {
        Self {
            cache_dir: cache_dir.into(),
            mirror: None,
            hf_endpoint: HF_DEFAULT_ENDPOINT.to_string(),
            progress: true,
        }
    }

    /// The hub the environment describes: `FUNGI_CACHE` (default `$XDG_CACHE_HOME/fungi`, else
    /// `~/.cache/fungi`), `FUNGI_MIRROR`, `HF_ENDPOINT`.
    pub fn from_env() -> Result<Self> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let cache = match (var("FUNGI_CACHE"), var("XDG_CACHE_HOME"), var("HOME")) {
            (Some(c), _, _) => PathBuf::from(c),
            (None, Some(x), _) => Path::new(&x).join("fungi"),
            (None, None, Some(h)) => Path::new(&h).join(".cache").join("fungi"),
            (None, None, None) => {
                return Err(Error::Io {
                    path: PathBuf::from("~/.cache/fungi"),
                    source: std::io::Error::other(
                        "no cache directory: set FUNGI_CACHE (HOME is not set)",
                    ),
                })
            }
        };
        Ok(Self::new(cache).with_env_sources())
    }

    /// The sources the environment names: `FUNGI_MIRROR` (all files), `HF_ENDPOINT` (Hugging
    /// Face files).
    pub fn with_env_sources(mut self) -> Self {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        if let Some(e) = var("HF_ENDPOINT") {
            self.hf_endpoint = e.trim_end_matches('/').to_string();
        }
        self.with_mirror(var("FUNGI_MIRROR"))
    }

    /// Download from `mirror` (a base URL serving the originals' paths) instead of the
    /// original hosts; `None` keeps the originals.
    pub fn with_mirror(mut self, mirror: Option<String>) -> Self {
        self.mirror = mirror.map(|m| m.trim_end_matches('/').to_string());
        self
    }

    /// Use another cache directory.
    pub fn with_cache_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cache_dir = dir.into();
        self
    }

    /// Show a progress bar on stderr while downloading (when stderr is a terminal).
    pub fn with_progress(mut self, progress: bool) -> Self {
        self.progress = progress;
        self
    }

    /// The cache directory.
    pub fn cache_dir(&self) -> &Path {
        &self.cache_dir
    }

    /// The URL `entry` is downloaded from (the mirror's when one is set).
    pub fn url(&self, entry: &Entry) -> String {
        match entry.source {
            Source::Url { url, .. } => match &self.mirror {
                Some(m) => format!("{m}{}", url_path(url)),
                None => url.to_string(),
            },
            Source::HuggingFace {
                repo,
                file,
                revision,
            } => format!("{}/{repo}/resolve/{revision}/{file}", self.hf_endpoint()),
        }
    }

    /// Where `entry` is (or will be) in the cache. Hugging Face files live in the hub's own
    /// cache layout under `<cache>/huggingface`; their path is known once downloaded.
    pub fn cache_path(&self, entry: &Entry) -> PathBuf {
        match entry.source {
            Source::Url { url, .. } => self.checkpoints_dir().join(file_name(url)),
            Source::HuggingFace { repo, .. } => hf::repo_dir(&self.hf_cache_dir(), repo),
        }
    }

    /// The cached file of `entry`, if it was fetched before (no network).
    pub fn cached(&self, entry: &Entry) -> Option<PathBuf> {
        match entry.source {
            Source::Url { .. } => Some(self.cache_path(entry)).filter(|p| p.is_file()),
            Source::HuggingFace {
                repo,
                file,
                revision,
            } => hf::cached(&self.hf_cache_dir(), repo, file, revision),
        }
    }

    /// The local file of `entry`: the cached one, else downloaded (resuming a partial
    /// download, verifying the published checksum).
    pub fn fetch(&self, entry: &Entry) -> Result<PathBuf> {
        if let Some(p) = self.cached(entry) {
            return Ok(p);
        }
        match entry.source {
            Source::Url { sha256_prefix, .. } => {
                let dest = self.cache_path(entry);
                http::download(&self.url(entry), &dest, sha256_prefix, self.progress)?;
                Ok(dest)
            }
            Source::HuggingFace {
                repo,
                file,
                revision,
            } => hf::download(
                &self.hf_cache_dir(),
                &self.hf_endpoint(),
                repo,
                file,
                revision,
                self.progress,
            ),
        }
    }

    fn checkpoints_dir(&self) -> PathBuf {
        self.cache_dir.join("checkpoints")
    }

    fn hf_cache_dir(&self) -> PathBuf {
        self.cache_dir.join("huggingface")
    }

    fn hf_endpoint(&self) -> String {
        self.mirror
            .clone()
            .unwrap_or_else(|| self.hf_endpoint.clone())
    }
}

/// The path (and query) of `url`, from the `/` after its host.
#[cfg(feature = "download")]
fn url_path(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.find('/').map_or("/", |i| &rest[i..])
}

/// The last path segment of `url`.
#[cfg(feature = "download")]
fn file_name(url: &str) -> &str {
    let path = url_path(url);
    let path = path.split(['?', '#']).next().unwrap_or(path);
    path.rsplit('/').next().unwrap_or(path)
}

#[cfg(all(test, feature = "download"))]
mod tests {
    use super::*;

    const DINO: Entry = Entry {
        name: "dino_vits16",
        source: Source::Url {
            url: "https://dl.fbaipublicfiles.com/dino/dino_deitsmall16_pretrain/dino_deitsmall16_pretrain.pth",
            sha256_prefix: None,
        },
        description: "",
    };
    const MAE: Entry = Entry {
        name: "vit_base_patch16_224.mae",
        source: Source::HuggingFace {
            repo: "timm/vit_base_patch16_224.mae",
            file: "model.safetensors",
            revision: "main",
        },
        description: "",
    };
    const TV: Entry = Entry {
        name: "vit_b_16",
        source: Source::Url {
            url: "https://download.pytorch.org/models/vit_b_16-c867db91.pth",
            sha256_prefix: Some("c867db91"),
        },
        description: "",
    };

    #[test]
    fn mirror_keeps_the_original_path() {
        let hub = Hub::new("/c").with_mirror(Some("http://127.0.0.1:9/m/".into()));
        assert_eq!(
            hub.url(&DINO),
            "http://127.0.0.1:9/m/dino/dino_deitsmall16_pretrain/dino_deitsmall16_pretrain.pth"
        );
        assert_eq!(
            hub.cache_path(&DINO),
            Path::new("/c/checkpoints/dino_deitsmall16_pretrain.pth")
        );
        assert_eq!(
            hub.url(&MAE),
            "http://127.0.0.1:9/m/timm/vit_base_patch16_224.mae/resolve/main/model.safetensors"
        );
        let plain = Hub::new("/c");
        assert_eq!(plain.url(&MAE), MAE.url());
        assert_eq!(
            plain.url(&TV),
            "https://download.pytorch.org/models/vit_b_16-c867db91.pth"
        );
        assert!(
            file_name("https://download.pytorch.org/models/vit_b_16-c867db91.pth?x=1")
                .contains("-c867db91.")
        );
    }
}
