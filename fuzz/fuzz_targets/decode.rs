//! `fungi_aug::decode_rgb_bytes` on arbitrary bytes: `Ok` or `Err`, never a panic, and an `Ok`
//! image is consistent (non-empty, `w * h * 3` bytes, within the pixel limit).
#![no_main]

use std::path::Path;

use fungi_aug::{decode_rgb_bytes, DecodeOptions};
use libfuzzer_sys::fuzz_target;

/// Small limits so that headers claiming huge images are refused before allocation and the
/// fuzzer is not slowed down by large buffers: at most 2 x 2^18 pixels, 16 MiB decoded.
const MAX_PIXELS: u64 = 1 << 18;

fuzz_target!(|data: &[u8]| {
    let opts = DecodeOptions {
        max_image_pixels: Some(MAX_PIXELS),
        max_alloc: 16 << 20,
        // Both orientation paths, chosen by the input so that a crash replays.
        apply_exif_orientation: data.len() % 2 == 1,
        ..Default::default()
    };
    if let Ok(img) = decode_rgb_bytes(data, Path::new("fuzz-input"), &opts) {
        let (w, h) = (img.width() as u64, img.height() as u64);
        assert!(w > 0 && h > 0, "empty image accepted");
        assert!(w * h <= 2 * MAX_PIXELS, "pixel limit bypassed: {w}x{h}");
        assert_eq!(img.as_raw().len() as u64, w * h * 3);
    }
});
