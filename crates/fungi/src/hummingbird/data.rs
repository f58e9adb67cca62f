//! Segmentation data for HummingBird: image / class-id mask pairs from a Pascal VOC folder
//! (`JPEGImages/`, `SegmentationClass/`, `ImageSets/Segmentation/<split>.txt`) or from any pair
//! of folders matched by file stem; masks as palette or 8-bit grey PNGs whose values are class
//! ids (255 ignored); predictions written back as palette PNGs and side-by-side overlays.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use fungi_aug::image::{GrayImage, Rgb, RgbImage};
use fungi_aug::DecodeOptions;

use super::{HummingbirdError, Result};

/// One image and its mask.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegItem {
    /// Name (the file stem, or the VOC id).
    pub name: String,
    /// The image file.
    pub image: PathBuf,
    /// The class-id mask file.
    pub mask: PathBuf,
}

/// A list of image / mask pairs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SegSplit {
    /// The pairs, in listing order.
    pub items: Vec<SegItem>,
}

const IMAGE_EXTS: [&str; 6] = ["jpg", "jpeg", "png", "webp", "bmp", "tif"];

impl SegSplit {
    /// The split `split` (`train`, `val`, `trainaug`, … : the ids of
    /// `ImageSets/Segmentation/<split>.txt`) of a Pascal VOC folder; each id's image is
    /// `JPEGImages/<id>.jpg` and its mask `SegmentationClass/<id>.png` (or
    /// `SegmentationClassAug/<id>.png` when that folder exists and the first does not hold it).
    ///
    /// # Errors
    /// A missing list, an empty list, or an id whose image or mask is missing (the first is
    /// named).
    pub fn voc(root: &Path, split: &str) -> Result<Self> {
        let list = root
            .join("ImageSets")
            .join("Segmentation")
            .join(format!("{split}.txt"));
        let text = std::fs::read_to_string(&list).map_err(|source| HummingbirdError::Io {
            path: list.clone(),
            what: format!("the VOC split list of `{split}`"),
            source,
        })?;
        let mut items = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let id = line.split_whitespace().next().unwrap_or("");
            if id.is_empty() {
                continue;
            }
            let image = root.join("JPEGImages").join(format!("{id}.jpg"));
            let mut mask = root.join("SegmentationClass").join(format!("{id}.png"));
            if !mask.exists() {
                let aug = root.join("SegmentationClassAug").join(format!("{id}.png"));
                if aug.exists() {
                    mask = aug;
                }
            }
            for (p, what) in [(&image, "image"), (&mask, "mask")] {
                if !p.is_file() {
                    return Err(HummingbirdError::Listing {
                        file: list.clone(),
                        line: n + 1,
                        reason: format!("id `{id}`: its {what} {} does not exist", p.display()),
                    });
                }
            }
            items.push(SegItem {
                name: id.to_string(),
                image,
                mask,
            });
        }
        if items.is_empty() {
            return Err(HummingbirdError::Listing {
                file: list,
                line: 0,
                reason: "no ids listed".into(),
            });
        }
        Ok(Self { items })
    }

    /// The pairs of two folders matched by file stem: every image of `images` (jpg, png, webp,
    /// bmp, tif) with the `.png` of the same stem in `masks`.
    ///
    /// # Errors
    /// Unreadable folders, no images, or an image without a mask (named).
    pub fn folders(images: &Path, masks: &Path) -> Result<Self> {
        let read = |dir: &Path, what: &str, exts: &[&str]| -> Result<BTreeMap<String, PathBuf>> {
            let rd = std::fs::read_dir(dir).map_err(|source| HummingbirdError::Io {
                path: dir.to_path_buf(),
                what: what.to_string(),
                source,
            })?;
            let mut out = BTreeMap::new();
            for e in rd.flatten() {
                let p = e.path();
                let ext = p
                    .extension()
                    .and_then(|e| e.to_str())
                    .map(str::to_ascii_lowercase);
                if p.is_file() && ext.is_some_and(|e| exts.contains(&e.as_str())) {
                    if let Some(stem) = p.file_stem().and_then(|s| s.to_str()).map(String::from) {
                        if let Some(other) = out.insert(stem.clone(), p.clone()) {
                            return Err(HummingbirdError::Listing {
                                file: p,
                                line: 0,
                                reason: format!(
                                    "two files of stem `{stem}` (also {}): pairs are matched by stem",
                                    other.display()
                                ),
                            });
                        }
                    }
                }
            }
            Ok(out)
        };
        let imgs = read(images, "the images folder", &IMAGE_EXTS)?;
        let msks = read(masks, "the masks folder", &["png"])?;
        if imgs.is_empty() {
            return Err(HummingbirdError::Listing {
                file: images.to_path_buf(),
                line: 0,
                reason: "no images (jpg, png, webp, bmp, tif)".into(),
            });
        }
        let mut items = Vec::with_capacity(imgs.len());
        for (name, image) in imgs {
            let Some(mask) = msks.get(&name) else {
                return Err(HummingbirdError::Listing {
                    file: image,
                    line: 0,
                    reason: format!("no mask `{name}.png` in {}", masks.display()),
                });
            };
            items.push(SegItem {
                name,
                image,
                mask: mask.clone(),
            });
        }
        Ok(Self { items })
    }

    /// The first `n` pairs (all when `n` is larger).
    pub fn truncated(mut self, n: Option<usize>) -> Self {
        if let Some(n) = n {
            self.items.truncate(n);
        }
        self
    }
}

/// Reads a class-id mask: a palette PNG (its indices) or an 8-bit greyscale PNG (its values).
///
/// # Errors
/// An unreadable file, a PNG of another colour type or depth (RGB masks must be converted to
/// class ids first), or a corrupt file.
pub fn read_mask(path: &Path) -> Result<GrayImage> {
    let bad = |reason: String| HummingbirdError::Mask {
        file: path.to_path_buf(),
        reason,
    };
    let file = std::fs::File::open(path).map_err(|source| HummingbirdError::Io {
        path: path.to_path_buf(),
        what: "a mask".into(),
        source,
    })?;
    let mut dec = png::Decoder::new(std::io::BufReader::new(file));
    dec.set_transformations(png::Transformations::IDENTITY);
    let mut reader = dec
        .read_info()
        .map_err(|e| bad(format!("not a readable PNG: {e}")))?;
    let size = reader
        .output_buffer_size()
        .ok_or_else(|| bad("image too large".into()))?;
    let mut buf = vec![0u8; size];
    let info = reader
        .next_frame(&mut buf)
        .map_err(|e| bad(format!("corrupt PNG data: {e}")))?;
    let (w, h) = (info.width as usize, info.height as usize);
    let bits = info.bit_depth as usize;
    match (info.color_type, bits) {
        (png::ColorType::Indexed | png::ColorType::Grayscale, 1 | 2 | 4 | 8) => {}
        (c, b) => {
            return Err(bad(format!(
                "{c:?} with {b}-bit samples: expected a palette PNG or an 8-bit greyscale PNG of class ids (convert colour masks to class ids first)"
            )))
        }
    }
    let mut data = Vec::with_capacity(w * h);
    for row in buf.chunks(info.line_size).take(h) {
        if bits == 8 {
            data.extend_from_slice(&row[..w]);
        } else {
            let per = 8 / bits;
            let mask = ((1u16 << bits) - 1) as u8;
            for x in 0..w {
                let byte = row[x / per];
                let shift = 8 - bits * (x % per + 1);
                data.push((byte >> shift) & mask);
            }
        }
    }
    GrayImage::from_raw(w as u32, h as u32, data).ok_or_else(|| bad("truncated pixel data".into()))
}

/// Decodes one pair and checks it: the mask's size must equal the image's, and its values must
/// be class ids below `num_classes` or 255.
///
/// # Errors
/// [`HummingbirdError::MaskSize`], [`HummingbirdError::ClassId`], and unreadable files.
pub fn load_pair(
    item: &SegItem,
    num_classes: usize,
    decode: &DecodeOptions,
) -> Result<(RgbImage, GrayImage)> {
    let img = fungi_aug::decode_rgb(&item.image, decode).map_err(fungi_core::Error::from)?;
    let mask = read_mask(&item.mask)?;
    if img.dimensions() != mask.dimensions() {
        return Err(HummingbirdError::MaskSize {
            mask: item.mask.clone(),
            image: item.image.clone(),
            mask_size: mask.dimensions(),
            image_size: img.dimensions(),
        });
    }
    if let Some(&id) = mask
        .as_raw()
        .iter()
        .find(|&&v| v != fungi_eval::segmentation::IGNORE && v as usize >= num_classes)
    {
        return Err(HummingbirdError::ClassId {
            file: item.mask.clone(),
            id,
            num_classes,
        });
    }
    Ok((img, mask))
}

/// Pascal VOC's colour map (`bitget` construction), 256 entries.
pub fn voc_palette() -> [[u8; 3]; 256] {
    let mut p = [[0u8; 3]; 256];
    for (i, c) in p.iter_mut().enumerate() {
        let mut id = i;
        let (mut r, mut g, mut b) = (0u8, 0u8, 0u8);
        for j in 0..8 {
            r |= ((id & 1) as u8) << (7 - j);
            g |= (((id >> 1) & 1) as u8) << (7 - j);
            b |= (((id >> 2) & 1) as u8) << (7 - j);
            id >>= 3;
        }
        *c = [r, g, b];
    }
    p
}

/// Writes a class-id mask as a palette PNG with [`voc_palette`].
///
/// # Errors
/// The file cannot be written.
pub fn write_palette_png(path: &Path, mask: &GrayImage) -> Result<()> {
    let io = |source: std::io::Error| HummingbirdError::Io {
        path: path.to_path_buf(),
        what: "a prediction".into(),
        source,
    };
    let mut bytes = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut bytes, mask.width(), mask.height());
        enc.set_color(png::ColorType::Indexed);
        enc.set_depth(png::BitDepth::Eight);
        enc.set_palette(voc_palette().concat());
        let mut w = enc
            .write_header()
            .map_err(|e| io(std::io::Error::other(e)))?;
        w.write_image_data(mask.as_raw())
            .map_err(|e| io(std::io::Error::other(e)))?;
    }
    fungi_core::tensor_file::write_bytes_atomic(path, &bytes).map_err(HummingbirdError::from)
}

/// `image | ground truth | prediction` side by side, the masks drawn in [`voc_palette`] colours
/// at half opacity over the image (ignored pixels in white).
pub fn overlay(image: &RgbImage, truth: &GrayImage, prediction: &GrayImage) -> RgbImage {
    let (w, h) = image.dimensions();
    let pal = voc_palette();
    let mut out = RgbImage::new(w * 3, h);
    for (x, y, p) in image.enumerate_pixels() {
        out.put_pixel(x, y, *p);
        for (panel, m) in [(1, truth), (2, prediction)] {
            let id = m.get_pixel(x, y)[0] as usize;
            let c = if id == 255 { [255, 255, 255] } else { pal[id] };
            let mix = |a: u8, b: u8| ((a as u16 + b as u16) / 2) as u8;
            out.put_pixel(
                panel * w + x,
                y,
                Rgb([mix(p[0], c[0]), mix(p[1], c[1]), mix(p[2], c[2])]),
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn palette_masks_round_trip_and_voc_colours_are_the_standard_ones() {
        let pal = voc_palette();
        assert_eq!(pal[0], [0, 0, 0]);
        assert_eq!(pal[1], [128, 0, 0]);
        assert_eq!(pal[15], [192, 128, 128]);
        assert_eq!(pal[255], [224, 224, 192]);
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.png");
        let m = GrayImage::from_raw(3, 2, vec![0, 1, 20, 255, 7, 0]).unwrap();
        write_palette_png(&p, &m).unwrap();
        assert_eq!(read_mask(&p).unwrap(), m);
        // An RGB PNG is refused, naming the file.
        let rgb = dir.path().join("rgb.png");
        RgbImage::new(2, 2).save(&rgb).unwrap();
        let e = read_mask(&rgb).unwrap_err().to_string();
        assert!(e.contains("rgb.png") && e.contains("class ids"), "{e}");
    }

    #[test]
    fn packed_palette_masks_are_unpacked_most_significant_bits_first() {
        // 3 x 2 pixels at 4 bits: rows [1, 2, 15] and [0, 7, 3], each row padded to a byte.
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m4.png");
        let mut bytes = Vec::new();
        {
            let mut enc = png::Encoder::new(&mut bytes, 3, 2);
            enc.set_color(png::ColorType::Indexed);
            enc.set_depth(png::BitDepth::Four);
            enc.set_palette(voc_palette()[..16].concat());
            let mut w = enc.write_header().unwrap();
            w.write_image_data(&[0x12, 0xF0, 0x07, 0x30]).unwrap();
        }
        std::fs::write(&p, bytes).unwrap();
        assert_eq!(read_mask(&p).unwrap().as_raw(), &vec![1, 2, 15, 0, 7, 3]);
    }

    #[test]
    fn folder_pairs_take_png_masks_and_refuse_two_files_of_one_stem() {
        let dir = tempfile::tempdir().unwrap();
        let (imgs, masks) = (dir.path().join("i"), dir.path().join("m"));
        std::fs::create_dir_all(&imgs).unwrap();
        std::fs::create_dir_all(&masks).unwrap();
        RgbImage::new(2, 2).save(imgs.join("a.jpg")).unwrap();
        write_palette_png(&masks.join("a.png"), &GrayImage::new(2, 2)).unwrap();
        // A JPEG in the masks folder is not a mask.
        RgbImage::new(2, 2).save(masks.join("b.jpg")).unwrap();
        let s = SegSplit::folders(&imgs, &masks).unwrap();
        assert_eq!(s.items.len(), 1);
        assert_eq!(s.items[0].mask, masks.join("a.png"));
        RgbImage::new(2, 2).save(imgs.join("a.png")).unwrap();
        let e = SegSplit::folders(&imgs, &masks).unwrap_err().to_string();
        assert!(e.contains("two files of stem `a`"), "{e}");
    }
}
