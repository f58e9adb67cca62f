//! Bad input to the decoder: truncated files are errors (PIL: `image file is truncated`),
//! decompression bombs are refused from the header (PIL: `DecompressionBombError`), full files
//! still decode bit-identically, and every error names the file.

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use fungi_aug::{decode_rgb_bytes, DecodeError, DecodeOptions, Error, Limit, MAX_IMAGE_PIXELS};
use sha2::Digest;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

fn read(rel: &str) -> Vec<u8> {
    std::fs::read(fixtures().join(rel)).unwrap()
}

fn sha(img: &fungi_aug::RgbImage) -> String {
    format!("{:x}", sha2::Sha256::digest(img.as_raw()))
}

const P: &str = "/data/x/img.bin";

fn decode(bytes: &[u8]) -> fungi_aug::Result<fungi_aug::RgbImage> {
    decode_rgb_bytes(bytes, Path::new(P), &DecodeOptions::default())
}

/// The error, or a panic naming the decoded size (never the pixels: `RgbImage`'s `Debug` prints
/// the whole buffer).
fn err<T: Dims>(r: fungi_aug::Result<T>, what: &str) -> Error {
    match r {
        Ok(img) => panic!(
            "{what}: decoded a {:?} image, expected an error",
            img.dims()
        ),
        Err(e) => e,
    }
}

trait Dims {
    fn dims(&self) -> (u32, u32);
}

impl Dims for fungi_aug::RgbImage {
    fn dims(&self) -> (u32, u32) {
        self.dimensions()
    }
}

/// sha256 of the RGB decode of every fixture before the truncation and limit checks were added
/// (default build: pure-Rust JPEG). With `turbojpeg`, JPEGs are Pillow's hashes
/// (tests/fixtures/golden/meta.json, tests/fixtures/formats/expected.json).
const HASHES: &[(&str, (u32, u32), &str)] = &[
    (
        "formats/cmyk.jpg",
        (37, 23),
        "69a03472b338d1fb12f7bc0ea17a4be5b50a7047c2b762f5b7b099c7c914ff82",
    ),
    (
        "formats/gray.jpg",
        (37, 23),
        "b2b009d7830885a25b372aa4f95fc215e01383475ad035ddad609c94f0260e21",
    ),
    (
        "formats/i16.png",
        (37, 23),
        "049b1409839071e78ba395e8d52d7c730f21bccdee84871335d599d5e6ae26c7",
    ),
    (
        "formats/l.pgm",
        (37, 23),
        "de26b43d096b3704a0b4df8853cf5c63f3171282f312d69e978ed8d7a22572c1",
    ),
    (
        "formats/l.png",
        (37, 23),
        "de26b43d096b3704a0b4df8853cf5c63f3171282f312d69e978ed8d7a22572c1",
    ),
    (
        "formats/la.png",
        (37, 23),
        "de26b43d096b3704a0b4df8853cf5c63f3171282f312d69e978ed8d7a22572c1",
    ),
    (
        "formats/la16.png",
        (37, 23),
        "1a3c0bef8f193af8579aad82e11d43b3776a56b0076e4e838a7479c0b5d2ff80",
    ),
    (
        "formats/p.png",
        (37, 23),
        "22d3e8ae7285068e28507e5e2d67e1a8bb7c060727689107d58952d1a1cd88af",
    ),
    (
        "formats/p_transparency.png",
        (37, 23),
        "22d3e8ae7285068e28507e5e2d67e1a8bb7c060727689107d58952d1a1cd88af",
    ),
    (
        "formats/rgb.bmp",
        (37, 23),
        "4f3a1f321bae24b12e792eb1c31be34af94d6c8637389e2685d229ddef4c0024",
    ),
    (
        "formats/rgb.png",
        (37, 23),
        "4f3a1f321bae24b12e792eb1c31be34af94d6c8637389e2685d229ddef4c0024",
    ),
    (
        "formats/rgb.ppm",
        (37, 23),
        "4f3a1f321bae24b12e792eb1c31be34af94d6c8637389e2685d229ddef4c0024",
    ),
    (
        "formats/rgb.tif",
        (37, 23),
        "4f3a1f321bae24b12e792eb1c31be34af94d6c8637389e2685d229ddef4c0024",
    ),
    (
        "formats/rgb16.png",
        (37, 23),
        "b569e9f248c34a401c7e792f5c268ea17dc3d26d0f1d7401bd1c0bd59eb99695",
    ),
    (
        "formats/rgb_lossless.webp",
        (37, 23),
        "4f3a1f321bae24b12e792eb1c31be34af94d6c8637389e2685d229ddef4c0024",
    ),
    (
        "formats/rgba.png",
        (37, 23),
        "4f3a1f321bae24b12e792eb1c31be34af94d6c8637389e2685d229ddef4c0024",
    ),
    (
        "formats/rgba16.png",
        (37, 23),
        "b569e9f248c34a401c7e792f5c268ea17dc3d26d0f1d7401bd1c0bd59eb99695",
    ),
    (
        "formats/smooth.jpg",
        (37, 23),
        "102a2df913008335c7e86e0b10f1ecf48727a8e5ce38d7337cd2bcb2b8820fbe",
    ),
    (
        "golden/images/00_chelsea.jpg",
        (451, 300),
        "eb340c14d38fc9ceee567375c5fb039d57d750b0fa7d69bcfeb47f14bd16e1dd",
    ),
    (
        "golden/images/01_coffee.png",
        (320, 240),
        "5d89cc46704b471dd59d9e7f225a168eee29d005414f5072538574097a8e2d98",
    ),
    (
        "golden/images/02_camera_L.png",
        (256, 320),
        "08e1f987e069dde5d278f96703b4f8c7ad950a3aa44683c15cf6e4f9e4c94696",
    ),
    (
        "golden/images/03_logo_RGBA.png",
        (400, 300),
        "fa0a85480671782d07d585c7833b6a74a801a631d0616fbf9fcf7673cbf306e9",
    ),
    (
        "golden/images/04_astronaut_P.png",
        (256, 192),
        "7e49435e7e02bb865fe30072a717b91ac816703ec6e3f7051b1f2f63a5c90ba8",
    ),
    (
        "golden/images/05_tiny.png",
        (20, 13),
        "fe9df6919716b317e39ea3f9aff8819717240459ba09b834fb5a0540155a0c00",
    ),
    (
        "golden/images/06_large.png",
        (900, 600),
        "5266664db90a9dd540b41fd08f3714e54e38c10d095fb3155aeb8239ea123207",
    ),
    (
        "golden/images/07_panorama.jpg",
        (480, 96),
        "98dec1f5cec3fd172f52190fbf5371177626ca0912de78333b645e4205d721b6",
    ),
];

const PIL_JPEG_HASHES: &[(&str, &str)] = &[
    (
        "formats/cmyk.jpg",
        "c9f8e71beeccd430b083f9d36cbf971eb4d9d2ecb6fb5c12c97c7fc774122559",
    ),
    (
        "formats/gray.jpg",
        "b2b009d7830885a25b372aa4f95fc215e01383475ad035ddad609c94f0260e21",
    ),
    (
        "formats/smooth.jpg",
        "c47b2aaa8f2333988cfd4101c809f227b0310b6d4595842709274b565ca10209",
    ),
    (
        "golden/images/00_chelsea.jpg",
        "a76287ceacd550f2ee0fb00e872fc9a9d8ea310170a965c04ea624072c289876",
    ),
    (
        "golden/images/07_panorama.jpg",
        "488c9df6b325469c9ec158f29a25c34db220409f8a3e905b588530e5259350b6",
    ),
];

fn expected_hash(rel: &str) -> (u32, u32, &'static str) {
    let &(_, (w, h), mut hash) = HASHES.iter().find(|e| e.0 == rel).unwrap();
    if cfg!(feature = "turbojpeg") && rel.ends_with(".jpg") {
        hash = PIL_JPEG_HASHES.iter().find(|e| e.0 == rel).unwrap().1;
    }
    (w, h, hash)
}

#[test]
fn full_files_decode_bit_identically_to_before() {
    for &(rel, ..) in HASHES {
        let img = decode(&read(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
        let (w, h, hash) = expected_hash(rel);
        assert_eq!((img.width(), img.height()), (w, h), "{rel}");
        assert_eq!(sha(&img), hash, "{rel}");
    }
}

fn assert_truncated(r: fungi_aug::Result<fungi_aug::RgbImage>, cut: usize, what: &str) {
    match Err::<(), _>(err(r, what)) {
        Err(
            ref e @ Error::Decode {
                reason: DecodeError::Truncated { size, .. },
                ..
            },
        ) => {
            assert_eq!(size, cut as u64, "{what}");
            let msg = e.to_string();
            assert!(
                msg.contains(P)
                    && msg.contains("image file is truncated")
                    && msg.contains(&format!("{cut} bytes")),
                "{what}: {msg}"
            );
        }
        other => panic!("{what}: expected a truncation error, got {other:?}"),
    }
}

/// Offset just after the first start-of-scan header.
fn after_sos(b: &[u8]) -> usize {
    let mut i = 2;
    loop {
        assert_eq!(b[i], 0xFF);
        let len = u16::from_be_bytes([b[i + 2], b[i + 3]]) as usize;
        if b[i + 1] == 0xDA {
            return i + 2 + len;
        }
        i += 2 + len;
    }
}

#[test]
fn truncated_golden_jpegs_are_errors_at_every_point() {
    for rel in [
        "golden/images/00_chelsea.jpg",
        "golden/images/07_panorama.jpg",
    ] {
        let b = read(rel);
        let n = b.len();
        let sos = after_sos(&b);
        let mut cuts = vec![3, 4, 20, 200, sos - 1, sos, sos + 1, n - 2, n - 1];
        cuts.extend((1..16).map(|k| k * n / 16));
        for cut in cuts {
            assert_truncated(
                decode(&b[..cut]),
                cut,
                &format!("{rel} cut at {cut} of {n}"),
            );
        }
        // Trailing bytes after the end-of-image marker are ignored, as in PIL.
        let mut trailing = b.clone();
        trailing.extend_from_slice(b"trailing garbage \xFF\xD8\xFF\x00");
        assert_eq!(
            sha(&decode(&trailing).unwrap()),
            expected_hash(rel).2,
            "{rel}"
        );
    }
}

#[test]
fn an_end_marker_inside_a_segment_is_not_the_end() {
    // A comment segment holding FF D9 (like an EXIF thumbnail in APP1) before the scan.
    let b = read("golden/images/00_chelsea.jpg");
    let mut with_com = b[..2].to_vec();
    let payload = b"thumbnail \xFF\xD8 ... \xFF\xD9 end";
    with_com.extend_from_slice(&[0xFF, 0xFE]);
    with_com.extend_from_slice(&((payload.len() + 2) as u16).to_be_bytes());
    with_com.extend_from_slice(payload);
    with_com.extend_from_slice(&b[2..]);
    let full = decode(&with_com).unwrap();
    assert_eq!(sha(&full), expected_hash("golden/images/00_chelsea.jpg").2);
    let n = with_com.len();
    for cut in [30, n / 2, n - 2] {
        assert_truncated(decode(&with_com[..cut]), cut, &format!("cut {cut}"));
    }
}

#[test]
fn truncated_png_webp_bmp_tiff_pnm_are_errors() {
    for rel in [
        "golden/images/01_coffee.png",
        "golden/images/02_camera_L.png",
        "golden/images/04_astronaut_P.png",
        "formats/rgb16.png",
        "formats/rgb_lossless.webp",
        "formats/rgb.bmp",
        "formats/rgb.tif",
        "formats/rgb.ppm",
        "formats/l.pgm",
        "formats/gray.jpg",
        "formats/cmyk.jpg",
    ] {
        let b = read(rel);
        let n = b.len();
        // From 16 bytes (past every signature) to 16 bytes before the end (a PNG missing only its
        // IEND chunk's CRC, or a WebP missing only its padding byte, is complete, as in PIL).
        let mut cuts: Vec<usize> = (1..16).map(|k| 16 + k * (n - 32) / 16).collect();
        cuts.extend([16, n - 16]);
        for cut in cuts {
            assert_truncated(
                decode(&b[..cut]),
                cut,
                &format!("{rel} cut at {cut} of {n}"),
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Decompression bombs.

fn crc32(data: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in data {
        c ^= b as u32;
        for _ in 0..8 {
            c = if c & 1 == 1 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
    }
    !c
}

/// A real 8x8 RGB PNG made by `image`, with the IHDR size patched to `w x h` (and its CRC
/// recomputed): the header claims `w x h`, the data holds 8x8.
fn png_claiming(w: u32, h: u32) -> Vec<u8> {
    let img = fungi_aug::RgbImage::from_pixel(8, 8, image::Rgb([1, 2, 3]));
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    let mut b = out.into_inner();
    assert_eq!(&b[12..16], b"IHDR");
    b[16..20].copy_from_slice(&w.to_be_bytes());
    b[20..24].copy_from_slice(&h.to_be_bytes());
    let crc = crc32(&b[12..29]);
    b[29..33].copy_from_slice(&crc.to_be_bytes());
    b
}

/// The golden chelsea JPEG with its frame header patched to `w x h`.
fn jpeg_claiming(w: u16, h: u16) -> Vec<u8> {
    let mut b = read("golden/images/00_chelsea.jpg");
    let mut i = 2;
    loop {
        let m = b[i + 1];
        let len = u16::from_be_bytes([b[i + 2], b[i + 3]]) as usize;
        if (0xC0..=0xC2).contains(&m) {
            b[i + 5..i + 7].copy_from_slice(&h.to_be_bytes());
            b[i + 7..i + 9].copy_from_slice(&w.to_be_bytes());
            return b;
        }
        i += 2 + len;
    }
}

/// Runs `f` with a subscriber collecting warnings; returns them.
fn warnings_of<T>(f: impl FnOnce() -> T) -> (T, String) {
    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buf = Buf::default();
    let w = buf.clone();
    let sub = tracing_subscriber::fmt()
        .with_writer(move || w.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::WARN)
        .finish();
    let out = tracing::subscriber::with_default(sub, f);
    let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
    (out, text)
}

fn is_limit_error(e: &Error) -> bool {
    matches!(e, Error::TooLarge { .. } | Error::LimitExceeded { .. })
}

#[test]
fn headers_above_twice_max_image_pixels_are_refused_before_decoding() {
    assert_eq!(MAX_IMAGE_PIXELS, 89_478_485);
    let o = DecodeOptions::default();
    assert_eq!(o.max_image_pixels, Some(MAX_IMAGE_PIXELS));
    for (what, bytes, (w, h)) in [
        ("png", png_claiming(16_000, 16_000), (16_000u32, 16_000u32)),
        ("png", png_claiming(200_000, 1_000), (200_000, 1_000)),
        ("jpeg", jpeg_claiming(65_000, 65_000), (65_000, 65_000)),
        ("jpeg", jpeg_claiming(60_000, 3_000), (60_000, 3_000)),
    ] {
        let e = err(decode(&bytes), what);
        let pixels = w as u64 * h as u64;
        match &e {
            Error::TooLarge {
                path,
                width,
                height,
                pixels: p,
                limit,
            } => {
                assert_eq!(path, Path::new(P));
                assert_eq!((*width, *height, *p), (w, h, pixels), "{what}");
                assert_eq!(*limit, 2 * MAX_IMAGE_PIXELS);
            }
            other => panic!("{what} {w}x{h}: expected TooLarge, got {other:?}"),
        }
        let msg = e.to_string();
        for part in [
            P.to_string(),
            format!("{w}x{h}"),
            pixels.to_string(),
            "178956970".into(),
            "max_image_pixels".into(),
            "too large".into(),
        ] {
            assert!(msg.contains(&part), "{what}: {part:?} not in {msg}");
        }
        // `None` disables the check, like `Image.MAX_IMAGE_PIXELS = None`: the header passes it
        // and reaches the allocation limit (1 MiB here, so nothing large is allocated).
        let none = DecodeOptions {
            max_image_pixels: None,
            max_alloc: 1 << 20,
            ..o
        };
        let e = err(decode_rgb_bytes(&bytes, Path::new(P), &none), what);
        match e {
            Error::LimitExceeded {
                limit:
                    Limit::Alloc {
                        width,
                        height,
                        bytes,
                        max_alloc: 1048576,
                    },
                ..
            } => assert_eq!((width, height, bytes), (w, h, pixels * 3), "{what}"),
            other => panic!("{what}: {other}"),
        }
    }
}

#[test]
fn images_pil_accepts_are_not_refused_by_any_limit() {
    // PIL has no side limit: a 20000x4000 image (80 M pixels) or a 100000x1 one are accepted, so
    // their headers must pass every limit (the 8x8 data then fails to decode, quietly).
    for (w, h) in [
        (20_000, 4_000),
        (100_000, 1),
        (1, 89_478_485),
        (16_384, 5_461),
    ] {
        let (r, warn) = warnings_of(|| decode(&png_claiming(w, h)));
        let e = err(r, &format!("{w}x{h}"));
        assert!(!is_limit_error(&e), "{w}x{h}: {e}");
        assert!(matches!(e, Error::Decode { .. }), "{w}x{h}: {e}");
        assert!(warn.is_empty(), "{w}x{h}: unexpected warning {warn}");
    }
    // A real 20000x4000 image decodes (grey, so it stays small in memory: 80 MB + 240 MB RGB).
    let img = image::GrayImage::from_fn(20_000, 4_000, |x, y| image::Luma([((x ^ y) & 1) as u8]));
    let mut png = Cursor::new(Vec::new());
    img.write_to(&mut png, image::ImageFormat::Png).unwrap();
    drop(img);
    let rgb = decode(png.get_ref()).unwrap();
    assert_eq!((rgb.width(), rgb.height()), (20_000, 4_000));
    assert_eq!(rgb.get_pixel(1, 0).0, [1, 1, 1]);
}

#[test]
fn between_one_and_two_times_the_limit_decodes_with_a_warning() {
    // 10000x10000 = 100 M pixels: PIL's DecompressionBombWarning, not an error.
    let (r, warn) = warnings_of(|| decode(&png_claiming(10_000, 10_000)));
    let e = err(r, "10000x10000");
    assert!(!is_limit_error(&e), "{e}");
    assert!(
        warn.contains("WARN")
            && warn.contains("100000000")
            && warn.contains("89478485")
            && warn.contains(P),
        "{warn}"
    );
    // A small limit: a real image above it decodes, with the warning; above 2x it is refused.
    let b = read("golden/images/05_tiny.png"); // 20x13 = 260 pixels
    let small = |max| DecodeOptions {
        max_image_pixels: Some(max),
        ..Default::default()
    };
    let (r, warn) = warnings_of(|| decode_rgb_bytes(&b, Path::new(P), &small(200)));
    assert_eq!(
        sha(&r.unwrap()),
        expected_hash("golden/images/05_tiny.png").2
    );
    assert!(warn.contains("260 pixels"), "{warn}");
    let (r, warn) = warnings_of(|| decode_rgb_bytes(&b, Path::new(P), &small(130)));
    assert_eq!(
        sha(&r.unwrap()),
        expected_hash("golden/images/05_tiny.png").2
    );
    assert!(!warn.is_empty());
    let e = err(decode_rgb_bytes(&b, Path::new(P), &small(129)), "129");
    assert!(
        matches!(
            e,
            Error::TooLarge {
                pixels: 260,
                limit: 258,
                ..
            }
        ),
        "{e}"
    );
    let jpg = read("formats/gray.jpg"); // 37x23 = 851 pixels
    let e = err(
        decode_rgb_bytes(&jpg, Path::new(P), &small(400)),
        "jpeg 400",
    );
    assert!(matches!(e, Error::TooLarge { pixels: 851, .. }), "{e}");
}

#[test]
fn side_and_allocation_limits_name_what_was_exceeded() {
    let b = read("golden/images/05_tiny.png"); // 20x13 RGB: 780 bytes decoded
    let o = DecodeOptions {
        max_side: Some(19),
        ..Default::default()
    };
    let e = err(decode_rgb_bytes(&b, Path::new(P), &o), "tiny");
    assert!(
        matches!(
            e,
            Error::LimitExceeded {
                limit: Limit::Side {
                    width: 20,
                    height: 13,
                    max_side: 19
                },
                ..
            }
        ),
        "{e}"
    );
    assert!(
        e.to_string().contains(P) && e.to_string().contains("max_side"),
        "{e}"
    );
    let o = DecodeOptions {
        max_alloc: 779,
        ..Default::default()
    };
    let e = err(decode_rgb_bytes(&b, Path::new(P), &o), "tiny");
    assert!(
        matches!(
            e,
            Error::LimitExceeded {
                limit: Limit::Alloc {
                    bytes: 780,
                    max_alloc: 779,
                    ..
                },
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("max_alloc"), "{e}");
    // JPEG (both decoders): 37x23 RGB = 2553 bytes.
    let jpg = read("formats/gray.jpg");
    let o = DecodeOptions {
        max_alloc: 100,
        ..Default::default()
    };
    let e = err(decode_rgb_bytes(&jpg, Path::new(P), &o), "gray.jpg");
    assert!(
        matches!(
            e,
            Error::LimitExceeded {
                limit: Limit::Alloc { .. },
                ..
            }
        ),
        "{e}"
    );
    // The default allocation limit admits 16-bit RGBA at twice the pixel limit.
    let d = DecodeOptions::default();
    assert!(d.max_alloc >= 8 * 2 * MAX_IMAGE_PIXELS);
    assert_eq!(d.max_side, None);
}

#[test]
fn zero_sized_and_garbage_headers_are_errors() {
    for bytes in [
        png_claiming(0, 10),
        png_claiming(10, 0),
        jpeg_claiming(0, 10),
    ] {
        let e = err(decode(&bytes), "zero-sized");
        assert!(e.to_string().contains(P), "{e}");
        assert!(!is_limit_error(&e), "{e}");
    }
    for bytes in [
        &b""[..],
        b"\xFF\xD8\xFF",
        b"\x89PNG\r\n\x1a\n",
        b"RIFF\xFF\xFF\xFF\xFFWEBP",
    ] {
        let e = err(decode(bytes), "garbage");
        assert!(matches!(e, Error::Decode { .. }), "{e}");
    }
}
