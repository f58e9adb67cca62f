//! Listing image files: directories walked recursively in sorted order.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

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

/// Expands the inputs: a directory contributes its image files (recursively, sorted by path);
/// a file is taken as given, in command-line order.
pub fn list_images(inputs: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for input in inputs {
        let meta = std::fs::metadata(input).with_context(|| format!("{}", input.display()))?;
        if meta.is_dir() {
            let mut found = Vec::new();
            for entry in walkdir::WalkDir::new(input).follow_links(true) {
                let entry = entry.with_context(|| format!("walking {}", input.display()))?;
                if entry.file_type().is_file() && is_image(entry.path()) {
                    found.push(entry.into_path());
                }
            }
            found.sort();
            out.extend(found);
        } else {
            out.push(input.clone());
        }
    }
    if out.is_empty() {
        bail!(
            "no images found in {inputs:?} (extensions: {})",
            IMAGE_EXTENSIONS.join(", ")
        );
    }
    Ok(out)
}
