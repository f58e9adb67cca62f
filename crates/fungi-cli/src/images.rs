//! Listing image files: directories walked recursively in sorted order.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

/// Extensions treated as images when walking directories.
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

/// An entry of a directory that could not be listed (a symlink loop, an unreadable folder).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ListingProblem {
    /// The entry.
    pub path: String,
    /// Why it was left out.
    pub error: String,
}

/// The image files of `inputs` and the entries that could not be listed.
///
/// A directory contributes its image files (recursively, following symlinks, sorted by path); a
/// file is taken as given, in command-line order. A dangling symlink with an image extension is
/// listed (reading it fails later, under the bad-image policy, with its index). With `strict`,
/// an entry that cannot be listed (symlink loop, unreadable folder) is an error naming it;
/// otherwise it is returned as a [`ListingProblem`] and the walk goes on.
pub fn list_images(
    inputs: &[PathBuf],
    strict: bool,
) -> Result<(Vec<PathBuf>, Vec<ListingProblem>)> {
    let mut out = Vec::new();
    let mut problems = Vec::new();
    for input in inputs {
        let meta = std::fs::metadata(input).with_context(|| format!("{}", input.display()))?;
        if meta.is_dir() {
            let (found, p) = walk(input, strict)?;
            out.extend(found);
            problems.extend(p);
        } else {
            out.push(input.clone());
        }
    }
    if out.is_empty() {
        bail!(
            "no images found in {} (extensions: {})",
            inputs
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
            IMAGE_EXTENSIONS.join(", ")
        );
    }
    Ok((out, problems))
}

/// The image files under directory `input` (recursively, sorted), possibly none; see
/// [`list_images`] for symlinks and `strict`.
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
            bail!(
                "listing {}: {}: {why} (with --on-error skip such entries are left out and listed in the manifest)",
                input.display(),
                path.display()
            );
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
