//! Plain HTTPS downloads (torch.hub's `load_state_dict_from_url`), resumable.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::error::{from_ureq, Error, Result};

/// An HTTP agent for `url`: proxies from the environment except for loopback hosts, no
/// automatic redirects when `redirects` is 0.
pub(crate) fn agent(url: &str, redirects: u32) -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout_connect(Duration::from_secs(30))
        .timeout_read(Duration::from_secs(120))
        .redirects(redirects)
        .try_proxy_from_env(!is_loopback(url))
        .build()
}

fn is_loopback(url: &str) -> bool {
    let host = url.split_once("://").map_or(url, |(_, r)| r);
    let host = host.split(['/', '?', '#']).next().unwrap_or(host);
    let host = host.rsplit_once('@').map_or(host, |(_, h)| h);
    let host = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(v6),
        None => host.split(':').next().unwrap_or(host),
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// `<path><suffix>`.
pub(crate) fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// Downloads `url` to `dest` through `<dest>.part`: an existing part is resumed with an HTTP
/// range request (a server that ignores the range, or answers from another offset, sends the
/// whole file, which replaces the part); the part becomes `dest` only when complete and
/// matching `sha256_prefix` (when the source publishes one). An interrupted download keeps the
/// part; a corrupt one is deleted. `<dest>.lock` keeps a second process out meanwhile.
pub(crate) fn download(
    url: &str,
    dest: &Path,
    sha256_prefix: Option<&str>,
    progress: bool,
) -> Result<()> {
    let dir = dest.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(Error::io(dir))?;
    let lock_path = with_suffix(dest, ".lock");
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(Error::io(&lock_path))?;
    match lock.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            return Err(Error::Busy {
                path: with_suffix(dest, ".part"),
            })
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(Error::io(&lock_path)(e)),
    }
    if dest.is_file() {
        return Ok(()); // another process finished it while we waited for the lock
    }
    let part = with_suffix(dest, ".part");
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .read(true)
        .open(&part)
        .map_err(Error::io(&part))?;
    let result = transfer(url, file, &part, dest, sha256_prefix, progress);
    if result.is_err() && std::fs::metadata(&part).is_ok_and(|m| m.len() == 0) {
        let _ = std::fs::remove_file(&part);
    }
    drop(lock);
    result
}

fn transfer(
    url: &str,
    mut file: File,
    part: &Path,
    dest: &Path,
    sha256_prefix: Option<&str>,
    progress: bool,
) -> Result<()> {
    let agent = agent(url, 5);
    let name = dest
        .file_name()
        .map_or_else(|| url.to_string(), |n| n.to_string_lossy().into_owned());
    let len = |f: &File| f.metadata().map(|m| m.len()).map_err(Error::io(part));
    let mut start = len(&file)?;
    let mut restarts = 0;
    let (response, total) = loop {
        let mut request = agent.get(url).set("Accept-Encoding", "identity");
        if start > 0 {
            request = request.set("Range", &format!("bytes={start}-"));
        }
        let restart = match request.call() {
            Ok(r) if r.status() == 206 => {
                let (first, total) = r
                    .header("Content-Range")
                    .and_then(parse_content_range)
                    .ok_or_else(|| {
                        protocol(url, "206 Partial Content without a valid Content-Range")
                    })?;
                if first == start {
                    break (r, total);
                }
                true // not the bytes asked for: start over without a range
            }
            Ok(r) if r.status() == 200 => {
                // No range support (or a fresh download): the whole file replaces the part.
                file.set_len(0).map_err(Error::io(part))?;
                start = 0;
                let total = r.header("Content-Length").and_then(|v| v.parse().ok());
                break (r, total);
            }
            Ok(r) => {
                return Err(protocol(
                    url,
                    &format!("unexpected HTTP {} {}", r.status(), r.status_text()),
                ))
            }
            Err(ureq::Error::Status(416, r)) if start > 0 => {
                // Nothing left to send: the part is complete if it has the announced size.
                let total = r.header("Content-Range").and_then(parse_unsatisfied_total);
                if total == Some(start) {
                    return finish(url, file, part, dest, sha256_prefix);
                }
                true
            }
            Err(e) => return Err(from_ureq(url, dest, true, e)),
        };
        if restart {
            restarts += 1;
            if restarts > 1 || start == 0 {
                return Err(protocol(
                    url,
                    "the server does not answer range requests consistently",
                ));
            }
            file.set_len(0).map_err(Error::io(part))?;
            start = 0;
        }
    };
    if total.is_none() && sha256_prefix.is_none() {
        return Err(protocol(
            url,
            "the server announces no length and the source publishes no checksum: a complete \
             download could not be told from a cut one",
        ));
    }
    let bar = crate::progress::bar(progress, total, &name);
    bar.set_position(start);
    let mut reader = response.into_reader();
    let mut buf = vec![0u8; 1 << 20];
    let mut got = start;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                bar.abandon();
                let _ = file.sync_all();
                return Err(Error::Interrupted {
                    url: url.to_string(),
                    part: part.to_path_buf(),
                    got: len(&file)?,
                    expected: total,
                    reason: e.to_string(),
                });
            }
        };
        got += n as u64;
        if total.is_some_and(|t| got > t) {
            bar.abandon();
            drop(file);
            std::fs::remove_file(part).map_err(Error::io(part))?;
            return Err(protocol(
                url,
                &format!(
                    "the server sent more than the {} bytes it announced; the download was deleted",
                    total.unwrap_or(0)
                ),
            ));
        }
        file.write_all(&buf[..n]).map_err(Error::io(part))?;
        bar.inc(n as u64);
    }
    bar.finish_and_clear();
    file.sync_all().map_err(Error::io(part))?;
    let got = len(&file)?;
    if let Some(t) = total {
        if got != t {
            return Err(Error::Interrupted {
                url: url.to_string(),
                part: part.to_path_buf(),
                got,
                expected: total,
                reason: "the connection closed early".to_string(),
            });
        }
    }
    finish(url, file, part, dest, sha256_prefix)
}

/// Checks the complete part against the published checksum and moves it into place.
fn finish(
    url: &str,
    file: File,
    part: &Path,
    dest: &Path,
    sha256_prefix: Option<&str>,
) -> Result<()> {
    if let Some(prefix) = sha256_prefix {
        let actual = sha256_file(part)?;
        if !actual.starts_with(&prefix.to_ascii_lowercase()) {
            drop(file);
            std::fs::remove_file(part).map_err(Error::io(part))?;
            return Err(Error::Checksum {
                url: url.to_string(),
                expected: format!("{prefix}…"),
                actual,
            });
        }
    }
    std::fs::rename(part, dest).map_err(Error::io(dest))?;
    drop(file);
    Ok(())
}

fn protocol(url: &str, what: &str) -> Error {
    Error::Protocol {
        url: url.to_string(),
        what: what.to_string(),
    }
}

/// `bytes <first>-<last>/<total>` → (first, total); total `*` is unknown.
fn parse_content_range(v: &str) -> Option<(u64, Option<u64>)> {
    let (range, total) = v.trim().strip_prefix("bytes ")?.split_once('/')?;
    let first = range.split_once('-')?.0.trim().parse().ok()?;
    Some((first, total.trim().parse().ok()))
}

/// `bytes */<total>` (a 416's Content-Range) → total.
fn parse_unsatisfied_total(v: &str) -> Option<u64> {
    v.trim().strip_prefix("bytes */")?.trim().parse().ok()
}

/// Lower-case hex sha256 of a file.
pub(crate) fn sha256_file(path: &Path) -> Result<String> {
    let mut f = File::open(path).map_err(Error::io(path))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(Error::io(path))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_ranges() {
        assert_eq!(
            parse_content_range("bytes 10-99/100"),
            Some((10, Some(100)))
        );
        assert_eq!(parse_content_range("bytes 0-0/*"), Some((0, None)));
        assert_eq!(parse_content_range("items 0-1/2"), None);
        assert_eq!(parse_unsatisfied_total("bytes */100"), Some(100));
        assert_eq!(
            with_suffix(Path::new("/c/a.pth"), ".part"),
            Path::new("/c/a.pth.part")
        );
    }

    #[test]
    fn loopback_hosts_bypass_proxies() {
        assert!(is_loopback("http://127.0.0.1:8080/x"));
        assert!(is_loopback("http://localhost/x"));
        assert!(is_loopback("http://[::1]:9/x"));
        assert!(!is_loopback("https://huggingface.co/timm"));
        assert!(!is_loopback("https://127.0.0.1.example.com/x"));
    }
}
