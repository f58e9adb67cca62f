//! Hugging Face hub files, through Hugging Face's `hf-hub` client (its cache layout, its
//! resumable `.part` downloads), with the sha256 the hub publishes checked on arrival.
//!
//! The client trusts the server's answer more than a cache should (it panics on some malformed
//! answers and makes paths of the etag and commit it is sent), so the metadata request it makes
//! is made first here and checked; the client itself runs under `catch_unwind`.

use std::path::{Path, PathBuf};

use hf_hub::api::sync::{ApiBuilder, ApiError};
use hf_hub::{Cache, Repo, RepoType};

use crate::error::{from_ureq, Error, Result};
use crate::http::{agent, sha256_file, with_suffix};

fn repo(repo: &str, revision: &str) -> Repo {
    Repo::with_revision(repo.to_string(), RepoType::Model, revision.to_string())
}

/// `<cache>/models--<owner>--<name>`: the client's directory of `repo_id`.
pub(crate) fn repo_dir(cache_dir: &Path, repo_id: &str) -> PathBuf {
    cache_dir.join(format!("models--{}", repo_id.replace('/', "--")))
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The cached `file` of `repo` at `revision`, if any. A large file whose blob (named by its
/// sha256) has not been verified yet — a run killed between download and check — is hashed now,
/// and removed if it does not match.
pub(crate) fn cached(
    cache_dir: &Path,
    repo_id: &str,
    file: &str,
    revision: &str,
) -> Option<PathBuf> {
    let link = Cache::new(cache_dir.to_path_buf())
        .repo(repo(repo_id, revision))
        .get(file)
        .filter(|p| p.is_file())?;
    let blob = std::fs::canonicalize(&link).ok()?;
    let etag = blob.file_name()?.to_string_lossy().to_ascii_lowercase();
    if !is_hex(&etag, 64) || with_suffix(&blob, ".verified").exists() {
        return Some(link);
    }
    verify("", &blob, &link, &etag).ok().map(|()| link)
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
    let dir = repo_dir(cache_dir, repo_id);
    let etag = metadata(&url, &dir)?;
    let blob = dir.join("blobs").join(&etag);
    let api = ApiBuilder::from_cache(Cache::new(cache_dir.to_path_buf()))
        .with_endpoint(endpoint.to_string())
        .with_progress(false)
        .build()
        .map_err(|e| map(&url, &dir, &blob, e))?;
    let api_repo = api.repo(repo(repo_id, revision));
    let run = || {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            api_repo.download_with_progress(file, crate::progress::HfBar::new(progress))
        }))
        .map_err(|_| Error::Protocol {
            url: url.clone(),
            what: "the Hugging Face client failed on the server's answer".into(),
        })
    };
    let link = match run()? {
        // A part longer than the file: start that file over.
        Err(ApiError::InvalidResume) => {
            let part = with_suffix(&blob, ".part");
            std::fs::remove_file(&part).map_err(Error::io(&part))?;
            run()?
        }
        r => r,
    }
    .map_err(|e| map(&url, &dir, &blob, e))?;
    if is_hex(&etag, 64) {
        verify(&url, &blob, &link, &etag)?;
    }
    Ok(link)
}

/// The client's metadata request (`Range: bytes=0-0`, relative redirects followed), checked:
/// a status the client can handle, a `Location` on every redirect, an etag and a commit that
/// are hashes. Returns the etag (the blob's name).
fn metadata(url: &str, dir: &Path) -> Result<String> {
    let protocol = |what: String| Error::Protocol {
        url: url.to_string(),
        what,
    };
    let origin = {
        let rest = url.split_once("://").map_or(0, |(s, _)| s.len() + 3);
        let end = url[rest..].find('/').map_or(url.len(), |i| rest + i);
        &url[..end]
    };
    let no_redirects = agent(url, 0);
    let mut current = url.to_string();
    for _ in 0..10 {
        let r = no_redirects
            .get(&current)
            .set("Range", "bytes=0-0")
            .call()
            .map_err(|e| from_ureq(url, dir, false, e))?;
        let status = r.status();
        let location = r.header("Location").map(str::to_string);
        match (status, location) {
            (200 | 206, _) => {
                if r.header("Content-Range").is_none() {
                    return Err(protocol(
                        "no Content-Range in the answer to a range request (is this a Hugging Face endpoint?)".into(),
                    ));
                }
                return hashes(&r).map_err(protocol);
            }
            (301 | 302 | 303 | 307 | 308, Some(loc)) if loc.starts_with('/') => {
                current = format!("{origin}{loc}");
            }
            (301 | 302 | 303 | 307 | 308, Some(loc)) => {
                let etag = hashes(&r).map_err(protocol)?;
                let r = agent(&loc, 5)
                    .get(&loc)
                    .set("Range", "bytes=0-0")
                    .call()
                    .map_err(|e| from_ureq(&loc, dir, false, e))?;
                if r.header("Content-Range").is_none() {
                    return Err(protocol(format!("{loc}: no Content-Range")));
                }
                return Ok(etag);
            }
            (s, _) => {
                return Err(protocol(format!(
                    "unexpected HTTP {s} {} (a redirect needs a Location)",
                    r.status_text()
                )))
            }
        }
    }
    Err(protocol("more than 10 redirects".into()))
}

/// The etag (`X-Linked-Etag`, else `ETag`) and commit (`X-Repo-Commit`) of a hub answer, which
/// the client turns into paths: they must be hashes.
fn hashes(r: &ureq::Response) -> std::result::Result<String, String> {
    let etag = r
        .header("x-linked-etag")
        .or_else(|| r.header("etag"))
        .ok_or("no ETag / X-Linked-Etag header")?
        .replace('"', "")
        .to_ascii_lowercase();
    if !is_hex(&etag, 64) && !is_hex(&etag, 40) {
        return Err(format!("etag `{etag}` is not a sha256 or git hash"));
    }
    let commit = r.header("x-repo-commit").ok_or("no X-Repo-Commit header")?;
    if !is_hex(commit, 40) {
        return Err(format!("X-Repo-Commit `{commit}` is not a git commit hash"));
    }
    Ok(etag)
}

/// The hub names a large (LFS) file's blob by its sha256: a blob whose bytes disagree is
/// removed, with its snapshot link; one that agrees is marked `<blob>.verified`.
fn verify(url: &str, blob: &Path, link: &Path, etag: &str) -> Result<()> {
    let actual = sha256_file(blob)?;
    if actual != etag {
        std::fs::remove_file(blob).map_err(Error::io(blob))?;
        if link != blob {
            let _ = std::fs::remove_file(link);
        }
        return Err(Error::Checksum {
            url: url.to_string(),
            expected: etag.to_string(),
            actual,
        });
    }
    let marker = with_suffix(blob, ".verified");
    std::fs::write(&marker, b"").map_err(Error::io(&marker))
}

fn map(url: &str, dir: &Path, blob: &Path, e: ApiError) -> Error {
    use std::io::ErrorKind as K;
    match e {
        ApiError::RequestError(e) => from_ureq(url, dir, false, *e),
        ApiError::TooManyRetries(inner) => map(url, dir, blob, *inner),
        ApiError::IoError(e)
            if matches!(
                e.kind(),
                K::UnexpectedEof
                    | K::ConnectionReset
                    | K::ConnectionAborted
                    | K::TimedOut
                    | K::BrokenPipe
                    | K::Interrupted
            ) =>
        {
            Error::HubInterrupted {
                url: url.to_string(),
                part: with_suffix(blob, ".part"),
                reason: e.to_string(),
            }
        }
        ApiError::IoError(source) => Error::Io {
            path: dir.to_path_buf(),
            source,
        },
        ApiError::LockAcquisition(path) => Error::Busy { path },
        e => Error::Hub {
            url: url.to_string(),
            source: Box::new(e),
        },
    }
}
