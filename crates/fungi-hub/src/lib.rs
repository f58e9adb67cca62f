//! Fetch backbone weights by name, as torch.hub and timm do.
//!
//! [`CATALOGUE`] lists the official release weights of every architecture preset of
//! fungi-backbone: DINO / DINOv2 (torch.hub's URLs), torchvision (`download.pytorch.org`, with
//! the sha256 prefix torch.hub checks) and timm (Hugging Face hub repos `timm/<name>`, read
//! through Hugging Face's own client, whose `X-Linked-Etag` is the file's sha256). A [`Hub`]
//! downloads them into a cache — `$FUNGI_CACHE`, else `$XDG_CACHE_HOME/fungi`, else
//! `~/.cache/fungi` — with a progress bar, resumes a partial download (`.part` + HTTP range),
//! verifies the published checksum, and reads from the cache without touching the network
//! once a file is there.
//!
//! A mirror (`FUNGI_MIRROR`, [`Hub::with_mirror`]) serves the same paths as the originals:
//! `<mirror>/dino/dino_deitsmall16_pretrain/dino_deitsmall16_pretrain.pth`,
//! `<mirror>/models/vit_b_16-c867db91.pth`, and, like a Hugging Face endpoint (`HF_ENDPOINT`),
//! `<mirror>/timm/<name>/resolve/main/model.safetensors`.
//!
//! ```no_run
//! let hub = fungi_hub::Hub::from_env()?;
//! let path = hub.fetch_name("dino_vits16")?;
//! # Ok::<(), fungi_hub::Error>(())
//! ```
#![warn(missing_docs)]

pub mod catalogue;
mod error;
mod hf;
mod http;
mod progress;

use std::path::{Path, PathBuf};

pub use catalogue::{find, names, Entry, Source, CATALOGUE};
pub use error::{Error, Result};

/// The Hugging Face hub's address (`HF_ENDPOINT` overrides it).
pub const HF_DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// A weights cache and how to fill it.
#[derive(Debug, Clone)]
pub struct Hub {
    cache_dir: PathBuf,
    mirror: Option<String>,
    hf_endpoint: String,
    progress: bool,
}

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

    /// [`Hub::fetch`] by catalogue name.
    pub fn fetch_name(&self, name: &str) -> Result<PathBuf> {
        let entry = find(name).ok_or_else(|| Error::UnknownName {
            name: name.to_string(),
        })?;
        self.fetch(entry)
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
fn url_path(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.find('/').map_or("/", |i| &rest[i..])
}

/// The last path segment of `url`.
fn file_name(url: &str) -> &str {
    let path = url_path(url);
    let path = path.split(['?', '#']).next().unwrap_or(path);
    path.rsplit('/').next().unwrap_or(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirror_keeps_the_original_path() {
        let hub = Hub::new("/c").with_mirror(Some("http://127.0.0.1:9/m/".into()));
        let e = find("dino_vits16").unwrap();
        assert_eq!(
            hub.url(e),
            "http://127.0.0.1:9/m/dino/dino_deitsmall16_pretrain/dino_deitsmall16_pretrain.pth"
        );
        assert_eq!(
            hub.cache_path(e),
            Path::new("/c/checkpoints/dino_deitsmall16_pretrain.pth")
        );
        let t = find("vit_base_patch16_224.mae").unwrap();
        assert_eq!(
            hub.url(t),
            "http://127.0.0.1:9/m/timm/vit_base_patch16_224.mae/resolve/main/model.safetensors"
        );
        let plain = Hub::new("/c");
        assert_eq!(plain.url(t), t.url());
        assert_eq!(
            plain.url(find("vit_b_16").unwrap()),
            "https://download.pytorch.org/models/vit_b_16-c867db91.pth"
        );
    }

    #[test]
    fn unknown_names_list_the_catalogue() {
        let e = Hub::new("/c")
            .fetch_name("vit_huge")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown weights `vit_huge`"), "{e}");
        assert!(e.contains("dinov2_vits14_reg"), "{e}");
    }

    #[test]
    fn torchvision_prefixes_are_in_the_file_names() {
        for e in CATALOGUE {
            if let Source::Url {
                url,
                sha256_prefix: Some(p),
            } = e.source
            {
                assert!(file_name(url).contains(&format!("-{p}.")), "{}", e.name);
            }
        }
    }
}
