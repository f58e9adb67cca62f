//! Minimal NumPy `.npy` reading and writing: `float32` and `int64`, little-endian, C order.
//!
//! The reader never panics and never allocates more than the file holds: every header access is
//! bounds-checked, the shape product and byte counts use checked arithmetic, and every error
//! names the file and what was expected.

use std::io::Write;
use std::path::Path;

use super::LayoutError;

type Result<T> = std::result::Result<T, LayoutError>;

/// `reason` about the file `path`.
fn npy_err(path: &Path, reason: String) -> LayoutError {
    LayoutError::Npy {
        path: path.to_path_buf(),
        reason,
    }
}

macro_rules! bail_at {
    ($path:expr, $($arg:tt)*) => {
        return Err(npy_err($path, format!($($arg)*)))
    };
}

const MAGIC: &[u8] = b"\x93NUMPY";

/// The header of a `.npy` file; format 1.0, or 2.0 when the header does not fit a `u16`.
fn header(shape: &[usize], descr: &str) -> std::result::Result<Vec<u8>, String> {
    let dims = match shape {
        [n] => format!("({n},)"),
        _ => format!(
            "({})",
            shape
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let dict = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {dims}, }}");
    for (version, prefix) in [(1u8, 10usize), (2, 12)] {
        // magic(6) + version(2) + len(2 or 4) + header + '\n' must be a multiple of 64.
        let mut h = dict.clone();
        let total = prefix + h.len() + 1;
        h.push_str(&" ".repeat((64 - total % 64) % 64));
        h.push('\n');
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&[version, 0]);
        if version == 1 {
            let Ok(n) = u16::try_from(h.len()) else {
                continue;
            };
            out.extend_from_slice(&n.to_le_bytes());
        } else {
            let n =
                u32::try_from(h.len()).map_err(|_| ".npy header longer than 4 GiB".to_string())?;
            out.extend_from_slice(&n.to_le_bytes());
        }
        out.extend_from_slice(h.as_bytes());
        return Ok(out);
    }
    Err(format!(
        ".npy header of shape {shape:?} does not fit the format"
    ))
}

fn write_raw(path: &Path, shape: &[usize], descr: &str, body: &[u8]) -> Result<()> {
    let tmp = path.with_extension("npy.tmp");
    let head = header(shape, descr).map_err(|e| npy_err(path, e))?;
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |source| LayoutError::Io { path: p, source }
    };
    {
        let mut f = std::fs::File::create(&tmp).map_err(io(&tmp))?;
        f.write_all(&head)
            .and_then(|_| f.write_all(body))
            .and_then(|_| f.sync_all())
            .map_err(io(&tmp))?;
    }
    std::fs::rename(&tmp, path).map_err(io(path))?;
    Ok(())
}

/// Elements of `shape`, `None` on overflow.
fn elements(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d))
}

fn check_len(path: &Path, shape: &[usize], len: usize) -> Result<()> {
    if elements(shape) != Some(len) {
        bail_at!(
            path,
            "shape {shape:?} needs {} values, got {len}",
            elements(shape).map_or_else(|| "more than usize::MAX".to_string(), |n| n.to_string())
        );
    }
    Ok(())
}

/// Writes a row-major `f32` array atomically (temp file + rename); an error when `data` does
/// not hold `shape`'s element count.
pub fn write_f32(path: &Path, shape: &[usize], data: &[f32]) -> Result<()> {
    check_len(path, shape, data.len())?;
    let body: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
    write_raw(path, shape, "<f4", &body)
}

/// Writes a row-major `f32` array atomically from consecutive parts (`next()` gives the next
/// part, `None` at the end), so that an array larger than memory never exists at once; an error
/// when the parts do not hold `shape`'s element count (the file is then not written).
pub fn write_f32_parts(
    path: &Path,
    shape: &[usize],
    mut next: impl FnMut() -> Result<Option<Vec<f32>>>,
) -> Result<()> {
    let tmp = path.with_extension("npy.tmp");
    let head = header(shape, "<f4").map_err(|e| npy_err(path, e))?;
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |source| LayoutError::Io { path: p, source }
    };
    let mut written = 0usize;
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&tmp).map_err(io(&tmp))?);
        f.write_all(&head).map_err(io(&tmp))?;
        while let Some(part) = next()? {
            let body: Vec<u8> = part.iter().flat_map(|v| v.to_le_bytes()).collect();
            f.write_all(&body).map_err(io(&tmp))?;
            written += part.len();
        }
        if let Err(e) = check_len(path, shape, written) {
            drop(f);
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        f.into_inner()
            .map_err(|e| e.into_error())
            .and_then(|f| f.sync_all())
            .map_err(io(&tmp))?;
    }
    std::fs::rename(&tmp, path).map_err(io(path))?;
    Ok(())
}

/// Writes an `i64` array atomically; an error when `data` does not hold `shape`'s element count.
pub fn write_i64(path: &Path, shape: &[usize], data: &[i64]) -> Result<()> {
    check_len(path, shape, data.len())?;
    let body: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
    write_raw(path, shape, "<i8", &body)
}

/// A `.npy` array read back.
#[derive(Debug, Clone, PartialEq)]
pub enum Array {
    /// `float32`.
    F32(Vec<usize>, Vec<f32>),
    /// `int64`.
    I64(Vec<usize>, Vec<i64>),
}

impl Array {
    /// The shape.
    pub fn shape(&self) -> &[usize] {
        match self {
            Array::F32(s, _) | Array::I64(s, _) => s,
        }
    }
    /// NumPy's name of the dtype.
    pub fn dtype(&self) -> &'static str {
        match self {
            Array::F32(..) => "float32",
            Array::I64(..) => "int64",
        }
    }
}

/// Reads a little-endian `float32` or `int64` `.npy` file (C order).
pub fn read(path: &Path) -> Result<Array> {
    let bytes = std::fs::read(path).map_err(|source| LayoutError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse(&bytes, path)
}

/// A value of the header dictionary.
#[derive(Debug, Clone, PartialEq)]
enum Value {
    Str(String),
    Bool(bool),
    Tuple(Vec<usize>),
}

/// Parses the Python dict literal of a `.npy` header (`{'descr': '<f4', 'fortran_order': False,
/// 'shape': (3, 4), }`): string keys; string, `True`/`False` or integer-tuple values.
fn parse_dict(h: &str) -> std::result::Result<Vec<(String, Value)>, String> {
    let mut c = h.trim().chars().peekable();
    let skip_ws = |c: &mut std::iter::Peekable<std::str::Chars>| {
        while c.peek().is_some_and(|x| x.is_whitespace()) {
            c.next();
        }
    };
    let string =
        |c: &mut std::iter::Peekable<std::str::Chars>| -> std::result::Result<String, String> {
            let q = match c.next() {
                Some(q @ ('\'' | '"')) => q,
                other => return Err(format!("expected a quoted string, found {other:?}")),
            };
            let mut s = String::new();
            loop {
                match c.next() {
                    Some(x) if x == q => return Ok(s),
                    Some('\\') => return Err("escapes in header strings are not supported".into()),
                    Some(x) => s.push(x),
                    None => return Err("unterminated string".into()),
                }
            }
        };
    if c.next() != Some('{') {
        return Err("expected `{`".into());
    }
    let mut out = Vec::new();
    loop {
        skip_ws(&mut c);
        if c.peek() == Some(&'}') {
            c.next();
            break;
        }
        let key = string(&mut c)?;
        skip_ws(&mut c);
        if c.next() != Some(':') {
            return Err(format!("expected `:` after '{key}'"));
        }
        skip_ws(&mut c);
        let value = match c.peek() {
            Some('\'' | '"') => Value::Str(string(&mut c)?),
            Some('(') => {
                c.next();
                let mut dims = Vec::new();
                loop {
                    skip_ws(&mut c);
                    match c.peek() {
                        Some(')') => {
                            c.next();
                            break;
                        }
                        Some(x) if x.is_ascii_digit() => {
                            let mut t = String::new();
                            while c.peek().is_some_and(|x| x.is_ascii_digit()) {
                                t.extend(c.next());
                            }
                            dims.push(t.parse::<usize>().map_err(|_| {
                                format!("shape dimension {t} does not fit in usize")
                            })?);
                            skip_ws(&mut c);
                            match c.next() {
                                Some(',') => {}
                                Some(')') => break,
                                other => {
                                    return Err(format!(
                                        "expected `,` or `)` in the shape, found {other:?}"
                                    ))
                                }
                            }
                        }
                        other => {
                            return Err(format!(
                                "expected a non-negative integer in the shape, found {other:?}"
                            ))
                        }
                    }
                }
                Value::Tuple(dims)
            }
            _ => {
                let mut w = String::new();
                while c.peek().is_some_and(|x| x.is_ascii_alphabetic()) {
                    w.extend(c.next());
                }
                match w.as_str() {
                    "True" => Value::Bool(true),
                    "False" => Value::Bool(false),
                    _ => return Err(format!("unsupported value for '{key}'")),
                }
            }
        };
        if out.iter().any(|(k, _)| *k == key) {
            return Err(format!("duplicate key '{key}'"));
        }
        out.push((key, value));
        skip_ws(&mut c);
        match c.next() {
            Some(',') => {}
            Some('}') => break,
            other => return Err(format!("expected `,` or `}}`, found {other:?}")),
        }
    }
    skip_ws(&mut c);
    if c.next().is_some() {
        return Err("text after the closing `}`".into());
    }
    Ok(out)
}

/// Parses the bytes of a `.npy` file; `path` only names the file in errors.
pub fn parse(bytes: &[u8], path: &Path) -> Result<Array> {
    if bytes.get(..6) != Some(MAGIC) {
        bail_at!(
            path,
            "not a .npy file (expected the magic bytes \\x93NUMPY)"
        );
    }
    let (version, len_bytes) = match bytes.get(6..8) {
        Some(&[1, 0]) => ("1.0", 2usize),
        Some(&[2, 0]) => ("2.0", 4),
        Some(&[3, 0]) => ("3.0", 4),
        Some(&[a, b]) => {
            bail_at!(
                path,
                "unsupported .npy format version {a}.{b} (expected 1.0, 2.0 or 3.0)"
            )
        }
        _ => bail_at!(
            path,
            "truncated .npy file ({} bytes, expected a version after the magic)",
            bytes.len()
        ),
    };
    let start = 8 + len_bytes;
    let hlen = match bytes.get(8..start) {
        Some(&[a, b]) => u16::from_le_bytes([a, b]) as usize,
        Some(&[a, b, c, d]) => u32::from_le_bytes([a, b, c, d]) as usize,
        _ => bail_at!(path, "truncated .npy file ({} bytes, expected at least {start} for a format {version} header length)",
            bytes.len()
        ),
    };
    let end = start
        .checked_add(hlen)
        .filter(|&e| e <= bytes.len())
        .ok_or_else(|| {
            npy_err(
                path,
                format!(
                    "truncated .npy header ({} bytes, the header claims {hlen} bytes after byte {start})",
                    bytes.len()
                ),
            )
        })?;
    let raw = &bytes[start..end];
    // Formats 1.0 and 2.0 are latin-1, 3.0 is UTF-8; a valid dtype/shape header is ASCII.
    let h = std::str::from_utf8(raw)
        .ok()
        .filter(|h| version == "3.0" || h.is_ascii())
        .ok_or_else(|| {
            npy_err(
                path,
                ".npy header is not text (expected an ASCII Python dict)".into(),
            )
        })?;
    let dict = parse_dict(h).map_err(|e| {
        npy_err(
            path,
            format!(
                "malformed .npy header ({e}); expected {{'descr': ..., 'fortran_order': ..., 'shape': (...)}}, found {:?}",
                h.trim_end()
            ),
        )
    })?;
    let get = |k: &str| dict.iter().find(|(key, _)| key == k).map(|(_, v)| v);
    let descr = match get("descr") {
        Some(Value::Str(d)) => d.as_str(),
        _ => bail_at!(path, ".npy header has no string 'descr'"),
    };
    match get("fortran_order") {
        Some(Value::Bool(false)) => {}
        Some(Value::Bool(true)) => {
            bail_at!(
                path,
                "Fortran-order arrays are not supported (expected 'fortran_order': False)"
            )
        }
        _ => bail_at!(path, ".npy header has no boolean 'fortran_order'"),
    }
    let shape = match get("shape") {
        Some(Value::Tuple(s)) => s.clone(),
        _ => bail_at!(path, ".npy header has no integer-tuple 'shape'"),
    };
    let size = match descr {
        "<f4" => 4,
        "<i8" => 8,
        other => bail_at!(path, "dtype '{other}' is not supported (expected little-endian float32 '<f4' or int64 '<i8')"
        ),
    };
    let body = &bytes[end..];
    let want = elements(&shape).and_then(|n| n.checked_mul(size));
    if want != Some(body.len()) {
        bail_at!(
            path,
            ".npy data is {} bytes, expected {} for shape {shape:?} of '{descr}'",
            body.len(),
            want.map_or_else(|| "more than usize::MAX".to_string(), |n| n.to_string())
        );
    }
    Ok(if size == 4 {
        Array::F32(
            shape,
            body.chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        )
    } else {
        Array::I64(
            shape,
            body.chunks_exact(8)
                .map(|c| i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
                .collect(),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn arrays_written_in_parts_read_back_and_a_short_one_is_not_written() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f.npy");
        let mut parts = vec![vec![1.0f32, 2.0, 3.0], vec![4.0, 5.0, 6.0]].into_iter();
        write_f32_parts(&p, &[2, 1, 3], || Ok(parts.next())).unwrap();
        assert_eq!(
            read(&p).unwrap(),
            Array::F32(vec![2, 1, 3], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
        );
        let q = d.path().join("g.npy");
        let mut parts = vec![vec![1.0f32; 5]].into_iter();
        let e = write_f32_parts(&q, &[2, 3], || Ok(parts.next())).unwrap_err();
        assert!(e.to_string().contains("needs 6 values"), "{e}");
        assert!(!q.exists() && !q.with_extension("npy.tmp").exists());
    }

    fn encode_f32(shape: &[usize], data: &[f32]) -> Vec<u8> {
        let mut b = header(shape, "<f4").unwrap();
        b.extend(data.iter().flat_map(|v| v.to_le_bytes()));
        b
    }

    fn encode_i64(shape: &[usize], data: &[i64]) -> Vec<u8> {
        let mut b = header(shape, "<i8").unwrap();
        b.extend(data.iter().flat_map(|v| v.to_le_bytes()));
        b
    }

    fn path() -> &'static Path {
        Path::new("x.npy")
    }

    fn err(bytes: &[u8]) -> String {
        format!("{:#}", parse(bytes, path()).unwrap_err())
    }

    #[test]
    fn round_trip_and_aligned_header() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.npy");
        let data: Vec<f32> = (0..12).map(|i| i as f32 * 0.5).collect();
        write_f32(&p, &[3, 4], &data).unwrap();
        let bytes = std::fs::read(&p).unwrap();
        assert_eq!((bytes.len() - 48) % 64, 0);
        assert_eq!(read(&p).unwrap(), Array::F32(vec![3, 4], data));
        assert!(!p.with_extension("npy.tmp").exists());
        write_i64(&p, &[3], &[1, -2, 3]).unwrap();
        assert_eq!(read(&p).unwrap(), Array::I64(vec![3], vec![1, -2, 3]));
    }

    #[test]
    fn writers_reject_shape_data_mismatches() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.npy");
        let e = write_f32(&p, &[2, 3], &[0.0; 5]).unwrap_err().to_string();
        assert!(
            e.contains("a.npy") && e.contains("[2, 3] needs 6 values, got 5"),
            "{e}"
        );
        let e = write_i64(&p, &[usize::MAX, 2], &[0; 2])
            .unwrap_err()
            .to_string();
        assert!(e.contains("more than usize::MAX"), "{e}");
        assert!(!p.exists());
    }

    #[test]
    fn reads_numpy_written_headers() {
        // As written by numpy 1.26 `np.save` (version 1.0 and a forced 2.0 header).
        let mut b = b"\x93NUMPY\x01\x00\x76\x00".to_vec();
        let mut h = "{'descr': '<i8', 'fortran_order': False, 'shape': (2,), }".to_string();
        h.push_str(&" ".repeat(0x76 - h.len() - 1));
        h.push('\n');
        b.extend(h.as_bytes());
        b.extend(7i64.to_le_bytes());
        b.extend((-1i64).to_le_bytes());
        assert_eq!(parse(&b, path()).unwrap(), Array::I64(vec![2], vec![7, -1]));
        let mut v2 = b"\x93NUMPY\x02\x00\x76\x00\x00\x00".to_vec();
        v2.extend(&b[10..]);
        assert_eq!(
            parse(&v2, path()).unwrap(),
            Array::I64(vec![2], vec![7, -1])
        );
    }

    #[test]
    fn malformed_files_are_errors_naming_the_file() {
        assert!(err(b"").contains("x.npy: not a .npy file"));
        assert!(err(b"\x93NUMPY").contains("truncated"));
        // 10 bytes of a version 2.0 file: the 4-byte header length is cut.
        let e = err(b"\x93NUMPY\x02\x00\x10\x00");
        assert!(
            e.contains("x.npy: truncated .npy file (10 bytes, expected at least 12"),
            "{e}"
        );
        assert!(err(b"\x93NUMPY\x04\x00\x10\x00").contains("unsupported .npy format version 4.0"));
        assert!(err(b"\x93NUMPY\x01\x00\xff\xff{}").contains("truncated .npy header"));
        // A huge shape: an error, no overflow, no allocation.
        let mut b = header(&[99999999999, 99999999999], "<f4").unwrap();
        b.extend([0; 16]);
        let e = err(&b);
        assert!(e.contains("expected more than usize::MAX"), "{e}");
        let b = header(&[3, 4], "<f4").unwrap();
        let e = err(&b);
        assert!(
            e.contains("data is 0 bytes, expected 48 for shape [3, 4]"),
            "{e}"
        );
        let e = err(&encode_f32(&[2], &[1.0, 2.0, 3.0]));
        assert!(e.contains("data is 12 bytes, expected 8"), "{e}");
        let b = header(&[2], ">f4").unwrap();
        assert!(err(&b).contains("dtype '>f4' is not supported"));
        let b = header(&[2], "<f8").unwrap();
        assert!(err(&b).contains("dtype '<f8' is not supported"));
        let mut b = encode_f32(&[1], &[1.0]);
        let i = b.windows(5).position(|w| w == b"False").unwrap();
        b[i..i + 5].copy_from_slice(b"True ");
        assert!(err(&b).contains("Fortran-order"));
        let mut b = encode_f32(&[1], &[1.0]);
        let i = b.windows(7).position(|w| w == b"'shape'").unwrap();
        b[i + 1] = b'x';
        assert!(err(&b).contains("no integer-tuple 'shape'"));
        let mut b = encode_f32(&[1], &[1.0]);
        let i = b.windows(4).position(|w| w == b"(1,)").unwrap();
        b[i + 1] = b'-';
        assert!(err(&b).contains("malformed .npy header"));
    }

    fn valid() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            (prop::collection::vec(0usize..4, 0..4), any::<u64>()).prop_map(|(shape, seed)| {
                let n = shape.iter().product::<usize>();
                let data: Vec<f32> = (0..n).map(|i| (seed as f32) * i as f32).collect();
                encode_f32(&shape, &data)
            }),
            prop::collection::vec(any::<i64>(), 0..6).prop_map(|d| encode_i64(&[d.len()], &d)),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
            let _ = parse(&bytes, path());
        }

        #[test]
        fn random_bytes_after_the_magic_never_panic(
            version in 0u8..5,
            rest in prop::collection::vec(any::<u8>(), 0..200),
        ) {
            let mut b = MAGIC.to_vec();
            b.extend([version, 0]);
            b.extend(rest);
            let _ = parse(&b, path());
        }

        #[test]
        fn random_header_text_never_panics(
            v2 in any::<bool>(),
            text in "[{}()'\",: a-zA-Z0-9<>_|]{0,120}",
            body in prop::collection::vec(any::<u8>(), 0..64),
        ) {
            let mut b = MAGIC.to_vec();
            if v2 {
                b.extend([2, 0]);
                b.extend((text.len() as u32).to_le_bytes());
            } else {
                b.extend([1, 0]);
                b.extend((text.len() as u16).to_le_bytes());
            }
            b.extend(text.as_bytes());
            b.extend(body);
            if let Ok(a) = parse(&b, path()) {
                let n = match &a { Array::F32(_, v) => v.len(), Array::I64(_, v) => v.len() };
                prop_assert_eq!(Some(n), elements(a.shape()));
            }
        }

        #[test]
        fn random_shapes_never_panic(
            dims in prop::collection::vec(any::<usize>(), 0..4),
            f32_ in any::<bool>(),
            body in prop::collection::vec(any::<u8>(), 0..64),
        ) {
            let mut b = header(&dims, if f32_ { "<f4" } else { "<i8" }).unwrap();
            b.extend(body);
            if let Ok(a) = parse(&b, path()) {
                prop_assert_eq!(a.shape(), &dims[..]);
            }
        }

        #[test]
        fn mutated_valid_files_never_panic(
            bytes in valid(),
            cut in any::<prop::sample::Index>(),
            flips in prop::collection::vec((any::<prop::sample::Index>(), 0u8..8), 0..4),
        ) {
            let truncated = &bytes[..cut.index(bytes.len() + 1)];
            let _ = parse(truncated, path());
            let mut flipped = bytes.clone();
            for (i, bit) in flips {
                let i = i.index(flipped.len());
                flipped[i] ^= 1 << bit;
            }
            if let Ok(a) = parse(&flipped, path()) {
                let n = match &a { Array::F32(_, v) => v.len(), Array::I64(_, v) => v.len() };
                prop_assert_eq!(Some(n), elements(a.shape()));
            }
        }

        #[test]
        fn valid_arrays_round_trip(
            shape in prop::collection::vec(0usize..5, 0..4),
            seed in any::<u32>(),
            ints in prop::collection::vec(any::<i64>(), 0..10),
        ) {
            let n = shape.iter().product::<usize>();
            let data: Vec<f32> = (0..n).map(|i| f32::from_bits(seed.wrapping_mul(2654435761).wrapping_add(i as u32) & 0x7f7f_ffff)).collect();
            prop_assert_eq!(parse(&encode_f32(&shape, &data), path()).unwrap(), Array::F32(shape.clone(), data));
            prop_assert_eq!(parse(&encode_i64(&[ints.len()], &ints), path()).unwrap(), Array::I64(vec![ints.len()], ints));
        }
    }

    #[test]
    fn files_round_trip_through_disk() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("b.npy");
        write_f32(&p, &[0, 3], &[]).unwrap();
        assert_eq!(read(&p).unwrap(), Array::F32(vec![0, 3], vec![]));
        let e = format!("{:#}", read(&dir.path().join("missing.npy")).unwrap_err());
        assert!(e.contains("missing.npy"), "{e}");
    }
}
