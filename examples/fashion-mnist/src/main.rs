//! `fashion-mnist SRC_DIR OUT_DIR TRAIN_PER_CLASS TEST_PER_CLASS`
//!
//! Reads `{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz` (Debian `dataset-fashion-mnist`, or
//! `../shared/tools/fetch-real-assets.sh`) and writes the first N images of every class, in file
//! order, to `OUT_DIR/{train,test}/<label>_<name>/<index>.png` (28×28 greyscale PNG).

use std::io::Read;
use std::path::Path;

use anyhow::{bail, Context, Result};

const CLASSES: [&str; 10] = [
    "tshirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot",
];

fn gunzip(p: &Path) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(
        std::fs::File::open(p).with_context(|| format!("{}", p.display()))?,
    )
    .read_to_end(&mut out)?;
    Ok(out)
}

fn split(src: &Path, out: &Path, prefix: &str, name: &str, per_class: usize) -> Result<()> {
    let images = gunzip(&src.join(format!("{prefix}-images-idx3-ubyte.gz")))?;
    let labels = gunzip(&src.join(format!("{prefix}-labels-idx1-ubyte.gz")))?;
    if images.len() < 16
        || u32::from_be_bytes(images[..4].try_into()?) != 2051
        || u32::from_be_bytes(labels[..4].try_into()?) != 2049
    {
        bail!("{}: not idx files", src.display());
    }
    let n = u32::from_be_bytes(images[4..8].try_into()?) as usize;
    let mut counts = [0usize; 10];
    for i in 0..n {
        let l = labels[8 + i] as usize;
        if counts[l] >= per_class {
            continue;
        }
        counts[l] += 1;
        let dir = out.join(name).join(format!("{l}_{}", CLASSES[l]));
        std::fs::create_dir_all(&dir)?;
        let px = images[16 + i * 784..16 + (i + 1) * 784].to_vec();
        image::GrayImage::from_raw(28, 28, px)
            .context("pixels")?
            .save(dir.join(format!("{i:05}.png")))?;
        if counts.iter().all(|&c| c >= per_class) {
            break;
        }
    }
    println!("{name}: {counts:?} images per class");
    Ok(())
}

fn main() -> Result<()> {
    let a: Vec<String> = std::env::args().skip(1).collect();
    if a.len() != 4 {
        bail!("usage: fashion-mnist SRC_DIR OUT_DIR TRAIN_PER_CLASS TEST_PER_CLASS");
    }
    let (src, out) = (Path::new(&a[0]), Path::new(&a[1]));
    split(src, out, "train", "train", a[2].parse()?)?;
    split(src, out, "t10k", "test", a[3].parse()?)?;
    Ok(())
}
