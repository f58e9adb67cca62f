//! Helpers of the benchmarks that need no dataset (`fungi bench`, the `extract` bench):
//! deterministic noise images and latents (identical on every machine) and the process's peak
//! memory.

use fungi_aug::RgbImage;

/// xorshift64 step.
fn next(s: &mut u64) -> u64 {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    *s
}

/// Pseudo-random 320×256 RGB noise image number `i`.
pub fn noise_image(i: u64) -> RgbImage {
    let mut s = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    RgbImage::from_fn(320, 256, |_, _| {
        let v = next(&mut s);
        fungi_aug::image::Rgb([v as u8, (v >> 8) as u8, (v >> 16) as u8])
    })
}

/// `n` pseudo-random values in `[-1, 1]` (steps of 1/1000), e.g. SimCLR negatives for a
/// benchmark whose setup is not timed.
pub fn noise_latents(n: usize) -> Vec<f32> {
    let mut s = 7u64;
    (0..n)
        .map(|_| (next(&mut s) % 2001) as f32 / 1000.0 - 1.0)
        .collect()
}

/// The process's peak resident memory in MB since the last [`reset_peak_rss`] (Linux
/// `VmHWM`; `None` elsewhere).
pub fn peak_rss_mb() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let l = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    Some(l.split_whitespace().nth(1)?.parse::<f64>().ok()? / 1024.0)
}

/// Resets the peak that [`peak_rss_mb`] reports (Linux `/proc/self/clear_refs`; a no-op
/// elsewhere).
pub fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}
