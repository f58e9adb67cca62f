//! Errors of the weights fetcher.

use std::path::PathBuf;

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, Error>;

/// Why a checkpoint could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server could not be reached (no network, DNS, refused connection).
    #[error(
        "could not reach {url}: {reason}. You look offline, and nothing is cached at {}: pass a \
         downloaded copy to --weights, or point FUNGI_MIRROR (or --mirror) at a server that has \
         it{}",
        cache.display(),
        if *placeable { ", or put the file at that path" } else { "" }
    )]
    Offline {
        /// The URL asked for.
        url: String,
        /// Where the file would be cached.
        cache: PathBuf,
        /// Whether a file put at `cache` by hand is used (release URLs; not the hub's layout).
        placeable: bool,
        /// The transport error, in words.
        reason: String,
    },
    /// The server answered with an HTTP error.
    #[error("{url}: HTTP {status} {text}{}", if *status == 404 { " (not on this server: check the mirror URL)" } else { "" })]
    Http {
        /// The URL asked for.
        url: String,
        /// HTTP status code.
        status: u16,
        /// Status text.
        text: String,
    },
    /// The server's answer is not what a file download should be.
    #[error("{url}: {what}")]
    Protocol {
        /// The URL asked for.
        url: String,
        /// What was wrong.
        what: String,
    },
    /// The connection ended before the whole file arrived; the part is kept for a resume.
    #[error(
        "{url}: the download stopped after {got} of {} bytes ({reason}); the part is kept in {} and \
         the next run resumes it",
        expected.map_or("?".to_string(), |e| e.to_string()),
        part.display()
    )]
    Interrupted {
        /// The URL asked for.
        url: String,
        /// The partial file.
        part: PathBuf,
        /// Bytes on disk.
        got: u64,
        /// Bytes the server announced.
        expected: Option<u64>,
        /// The I/O error, in words.
        reason: String,
    },
    /// A Hugging Face download stopped part-way; the hub client keeps its part for a resume.
    #[error("{url}: the download stopped ({reason}); the part is kept in {} and the next run resumes it", part.display())]
    HubInterrupted {
        /// The URL asked for.
        url: String,
        /// The hub client's partial file.
        part: PathBuf,
        /// The I/O error, in words.
        reason: String,
    },
    /// The downloaded bytes do not match the checksum the source publishes; they were removed.
    #[error(
        "{url}: checksum mismatch: expected sha256 {expected}, got {actual}; the corrupt download was \
         deleted (run again to download it anew)"
    )]
    Checksum {
        /// The URL asked for.
        url: String,
        /// The published digest (or its prefix, for torch.hub file names).
        expected: String,
        /// The digest of the bytes received.
        actual: String,
    },
    /// Another process is downloading the same file.
    #[error("{}: another process is downloading this file; wait for it to finish", path.display())]
    Busy {
        /// The partial file that is locked.
        path: PathBuf,
    },
    /// A cache file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The Hugging Face client failed for another reason.
    #[error("{url}: {source}")]
    Hub {
        /// The URL asked for.
        url: String,
        /// hf-hub's error.
        source: Box<hf_hub::api::sync::ApiError>,
    },
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { path, source }
    }
}

/// Maps a ureq error of a request for `url` (cached at `cache`; `placeable`: see
/// [`Error::Offline`]) onto [`Error`]: only failures to reach the server read as offline.
pub(crate) fn from_ureq(
    url: &str,
    cache: &std::path::Path,
    placeable: bool,
    e: ureq::Error,
) -> Error {
    use ureq::ErrorKind as K;
    match e {
        ureq::Error::Status(status, response) => Error::Http {
            url: url.to_string(),
            status,
            text: response.status_text().to_string(),
        },
        ureq::Error::Transport(t) => match t.kind() {
            K::Dns | K::ConnectionFailed | K::Io | K::ProxyConnect => Error::Offline {
                url: url.to_string(),
                cache: cache.to_path_buf(),
                placeable,
                reason: t.to_string(),
            },
            _ => Error::Protocol {
                url: url.to_string(),
                what: t.to_string(),
            },
        },
    }
}
