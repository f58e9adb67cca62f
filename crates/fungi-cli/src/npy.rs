//! Minimal NumPy `.npy` (format 1.0) reading and writing: `float32` and `int64`, C order.

use std::io::Write;
use std::path::Path;

use anyhow::{bail, Context, Result};

fn header(shape: &[usize], descr: &str) -> Vec<u8> {
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
    let mut h = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {dims}, }}");
    // magic(6) + version(2) + len(2) + header + '\n' must be a multiple of 64.
    let total = 10 + h.len() + 1;
    h.push_str(&" ".repeat((64 - total % 64) % 64));
    h.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(h.len() as u16).to_le_bytes());
    out.extend_from_slice(h.as_bytes());
    out
}

fn write_raw(path: &Path, shape: &[usize], descr: &str, body: &[u8]) -> Result<()> {
    let tmp = path.with_extension("npy.tmp");
    {
        let mut f =
            std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        f.write_all(&header(shape, descr))?;
        f.write_all(body)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
    Ok(())
}

/// Writes a row-major `f32` array atomically (temp file + rename).
pub fn write_f32(path: &Path, shape: &[usize], data: &[f32]) -> Result<()> {
    assert_eq!(shape.iter().product::<usize>(), data.len());
    let body: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
    write_raw(path, shape, "<f4", &body)
}

/// Writes an `i64` array atomically.
pub fn write_i64(path: &Path, shape: &[usize], data: &[i64]) -> Result<()> {
    assert_eq!(shape.iter().product::<usize>(), data.len());
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

/// Reads a little-endian `float32` or `int64` `.npy` file (C order).
pub fn read(path: &Path) -> Result<Array> {
    let bytes = std::fs::read(path).with_context(|| format!("opening {}", path.display()))?;
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        bail!("{}: not a .npy file", path.display());
    }
    let (hlen, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
        v => bail!("{}: unsupported .npy version {v}", path.display()),
    };
    let h = std::str::from_utf8(bytes.get(start..start + hlen).context("truncated header")?)?;
    if h.contains("'fortran_order': True") {
        bail!("{}: Fortran-order arrays are not supported", path.display());
    }
    let shape_txt = h
        .split("'shape':")
        .nth(1)
        .and_then(|s| s.split(')').next())
        .context("no shape in .npy header")?;
    let shape: Vec<usize> = shape_txt
        .trim_start_matches([' ', '('])
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.trim().parse())
        .collect::<std::result::Result<_, _>>()?;
    let n: usize = shape.iter().product();
    let body = &bytes[start + hlen..];
    if h.contains("'<f4'") {
        if body.len() != 4 * n {
            bail!("{}: truncated .npy data", path.display());
        }
        Ok(Array::F32(
            shape,
            body.chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        ))
    } else if h.contains("'<i8'") {
        if body.len() != 8 * n {
            bail!("{}: truncated .npy data", path.display());
        }
        Ok(Array::I64(
            shape,
            body.chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
                .collect(),
        ))
    } else {
        bail!(
            "{}: expected float32 ('<f4') or int64 ('<i8'), header {h}",
            path.display()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
