//! Where a checkpoint is published ([`Source`]) and a named checkpoint ([`Entry`]): plain data,
//! without the downloader (feature `download`), so that fungi-backbone's preset table can name
//! each preset's release weights without depending on an HTTP client.

/// The Hugging Face hub's address (`HF_ENDPOINT` overrides it).
pub const HF_DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// Where a checkpoint is published.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A plain HTTPS file (torch.hub `load_state_dict_from_url`: DINO, DINOv2, torchvision).
    Url {
        /// The release URL.
        url: &'static str,
        /// The checksum the source publishes: torchvision's file names carry the first hex
        /// digits of the file's sha256 (torch.hub's `check_hash`); DINO's and DINOv2's carry none.
        sha256_prefix: Option<&'static str>,
    },
    /// A file of a Hugging Face hub model repository (timm's `hf_hub_id`); the hub publishes
    /// the sha256 of large files as their `X-Linked-Etag`.
    HuggingFace {
        /// `owner/name` of the model repository.
        repo: &'static str,
        /// The file in the repository.
        file: &'static str,
        /// Branch, tag or commit.
        revision: &'static str,
    },
}

/// One downloadable checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// The name: the architecture preset these weights fit (fungi-backbone's presets).
    pub name: &'static str,
    /// Where it is published.
    pub source: Source,
    /// What it is, for `fungi fetch --list`.
    pub description: &'static str,
}

impl Entry {
    /// The original URL (before any mirror): the release URL, or the hub's `resolve` URL.
    pub fn url(&self) -> String {
        match self.source {
            Source::Url { url, .. } => url.to_string(),
            Source::HuggingFace {
                repo,
                file,
                revision,
            } => format!("{HF_DEFAULT_ENDPOINT}/{repo}/resolve/{revision}/{file}"),
        }
    }
}
