//! Hugging Face hub files, through Hugging Face's `hf-hub` client (its cache layout, its
//! resumable `.part` downloads), with the sha256 the hub publishes checked on arrival.

use std::path::{Path, PathBuf};

use hf_hub::api::sync::{ApiBuilder, ApiError};
use hf_hub::{Cache, Repo, RepoType};

use crate::error::{from_ureq, Error, Result};

fn repo(repo: &str, revision: &str) -> Repo {
    Repo::with_revision(repo.to_string(), RepoType::Model, revision.to_string())
}

/// The cached `file` of `repo` at `revision`, if any.
pub(crate) fn cached(
    cache_dir: &Path,
    repo_id: &str,
    file: &str,
    revision: &str,
) -> Option<PathBuf> {
    Cache::new(cache_dir.to_path_buf())
        .repo(repo(repo_id, revision))
        .get(file)
        .filter(|p| p.is_file())
}

/// Downloads `file` of `repo` from `endpoint` into the hub cache under `cache_dir`.
pub(crate) fn download(
    cache_dir: &Path,
    endpoint: &str,
    repo_id: &str,
    file: &str,
    revision: &str,
    progress: bool,
) -> Result<PathBuf> {
    let url = format!("{endpoint}/{repo_id}/resolve/{revision}/{file}");
    let api = ApiBuilder::from_cache(Cache::new(cache_dir.to_path_buf()))
        .with_endpoint(endpoint.to_string())
        .with_progress(false)
        .build()
        .map_err(|e| map(&url, cache_dir, e))?;
    let path = api
        .repo(repo(repo_id, revision))
        .download_with_progress(file, crate::progress::HfBar::new(progress))
        .map_err(|e| map(&url, cache_dir, e))?;
    verify(&url, &path)?;
    Ok(path)
}

/// The hub names a file's blob by its etag, which for large (LFS) files is their sha256:
/// a blob whose bytes disagree is removed, with its snapshot link.
fn verify(url: &str, path: &Path) -> Result<()> {
    let blob = std::fs::canonicalize(path).map_err(Error::io(path))?;
    let etag = blob
        .file_name()
        .map(|n| n.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    if etag.len() != 64 || !etag.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(()); // a small (git) file: its etag is a git hash, not a sha256.
    }
    let actual = crate::http::sha256_file(&blob)?;
    if actual != etag {
        std::fs::remove_file(&blob).map_err(Error::io(&blob))?;
        if path != blob {
            let _ = std::fs::remove_file(path);
        }
        return Err(Error::Checksum {
            url: url.to_string(),
            expected: etag,
            actual,
        });
    }
    Ok(())
}

fn map(url: &str, cache_dir: &Path, e: ApiError) -> Error {
    match e {
        ApiError::RequestError(e) => from_ureq(url, cache_dir, *e),
        ApiError::TooManyRetries(inner) => map(url, cache_dir, *inner),
        ApiError::IoError(e) if e.kind() != std::io::ErrorKind::PermissionDenied => {
            Error::HubInterrupted {
                url: url.to_string(),
                cache: cache_dir.to_path_buf(),
                reason: e.to_string(),
            }
        }
        e => Error::Hub {
            url: url.to_string(),
            source: Box::new(e),
        },
    }
}
