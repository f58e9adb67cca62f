//! Class-id masks (one `u8` per pixel) under the same geometry as their image: PIL's nearest
//! resampling (a pixel takes the source pixel under its centre), so class ids are never mixed.

use image::GrayImage;

use crate::CropBox;

/// PIL `NEAREST` resize of a crop `b` of `mask` to `width × height`: output pixel `x` reads
/// source column `left + ⌊(x + 0.5) · w_b / width⌋` (rows alike).
pub fn crop_resize_nearest(mask: &GrayImage, b: CropBox, width: u32, height: u32) -> GrayImage {
    let (mw, mh) = mask.dimensions();
    let col: Vec<u32> = (0..width)
        .map(|x| {
            let s = ((x as f64 + 0.5) * b.width as f64 / width.max(1) as f64).floor() as u32;
            (b.left + s.min(b.width.saturating_sub(1))).min(mw.saturating_sub(1))
        })
        .collect();
    let row: Vec<u32> = (0..height)
        .map(|y| {
            let s = ((y as f64 + 0.5) * b.height as f64 / height.max(1) as f64).floor() as u32;
            (b.top + s.min(b.height.saturating_sub(1))).min(mh.saturating_sub(1))
        })
        .collect();
    GrayImage::from_fn(width, height, |x, y| {
        *mask.get_pixel(col[x as usize], row[y as usize])
    })
}

/// PIL `NEAREST` resize of a whole mask to `width × height`.
pub fn resize_nearest(mask: &GrayImage, width: u32, height: u32) -> GrayImage {
    let (w, h) = mask.dimensions();
    if (w, h) == (width, height) {
        return mask.clone();
    }
    crop_resize_nearest(
        mask,
        CropBox {
            top: 0,
            left: 0,
            height: h,
            width: w,
        },
        width,
        height,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_takes_the_pixel_under_each_centre() {
        let m = GrayImage::from_raw(4, 1, vec![1, 2, 3, 4]).unwrap();
        assert_eq!(resize_nearest(&m, 2, 1).as_raw(), &vec![2, 4]);
        assert_eq!(
            resize_nearest(&m, 8, 1).as_raw(),
            &vec![1, 1, 2, 2, 3, 3, 4, 4]
        );
        let b = CropBox {
            top: 0,
            left: 1,
            height: 1,
            width: 2,
        };
        assert_eq!(
            crop_resize_nearest(&m, b, 4, 2).as_raw(),
            &vec![2, 2, 3, 3, 2, 2, 3, 3]
        );
    }
}
