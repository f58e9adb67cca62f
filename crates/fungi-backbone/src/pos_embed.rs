//! Position-embedding interpolation for inputs whose patch grid differs from the trained one,
//! exactly as DINO's and DINOv2's `interpolate_pos_encoding`.
//!
//! Both call `torch.nn.functional.interpolate(grid, scale_factor=((h0 + 0.1) / M, (w0 + 0.1) / M),
//! mode="bicubic", align_corners=False)` (no antialias). Because a scale factor (not a size) is
//! passed, PyTorch maps output index `i` to the source coordinate `(i + 0.5) / s - 0.5` with the
//! *given* `s`, not `M / h0`; the `+0.1` therefore shifts the sampling grid slightly, and we
//! reproduce that. The kernel is Keys' cubic convolution with `A = -0.75`, source indices clamped
//! to the border. Bicubic interpolation is separable, so it is applied as two small matrices
//! (built on the host in `f32` like PyTorch's CPU kernel) multiplied on the device.

use burn::prelude::*;

const A: f32 = -0.75;

fn cubic1(x: f32) -> f32 {
    ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
}
fn cubic2(x: f32) -> f32 {
    ((A * x - 5.0 * A) * x + 8.0 * A) * x - 4.0 * A
}

/// Output length PyTorch computes for `scale_factor`: `floor(input * scale)` in f64.
pub fn output_len(input: usize, scale_factor: f64) -> usize {
    (input as f64 * scale_factor).floor() as usize
}

/// Row-stochastic `[out, input]` matrix of PyTorch's bicubic (`align_corners=False`)
/// interpolation along one axis, for a given scale factor.
pub fn bicubic_matrix(input: usize, out: usize, scale_factor: f64) -> Vec<f32> {
    // area_pixel_compute_scale: 1 / scale_factor when a scale factor is given.
    bicubic_matrix_scaled(input, out, (1.0 / scale_factor) as f32)
}

/// As [`bicubic_matrix`] for an output *size* (`interpolate(size=...)`, timm's
/// `resample_abs_pos_embed`, Hugging Face's `interpolate_pos_encoding`): the source scale is
/// `input / out` in `f32`.
pub fn bicubic_matrix_sized(input: usize, out: usize) -> Vec<f32> {
    bicubic_matrix_scaled(input, out, input as f32 / out as f32)
}

/// Row-stochastic `[out, input]` matrix of PyTorch's *antialiased* bicubic interpolation to an
/// output size (`interpolate(size=..., mode="bicubic", antialias=True)`, DINOv2 with registers):
/// Keys' kernel with `a = -0.5`, widened by the scale when downsampling, weights normalised per
/// row (PyTorch's `_upsample_bicubic2d_aa`, computed in `f32` as its CPU kernel does).
pub fn bicubic_aa_matrix_sized(input: usize, out: usize) -> Vec<f32> {
    const AA: f32 = -0.5;
    let filter = |x: f32| {
        let x = x.abs();
        if x < 1.0 {
            ((AA + 2.0) * x - (AA + 3.0)) * x * x + 1.0
        } else if x < 2.0 {
            ((AA * x - 5.0 * AA) * x + 8.0 * AA) * x - 4.0 * AA
        } else {
            0.0
        }
    };
    let scale = input as f32 / out as f32;
    let support = if scale >= 1.0 { 2.0 * scale } else { 2.0 };
    let invscale = if scale >= 1.0 { 1.0 / scale } else { 1.0 };
    let mut m = vec![0f32; out * input];
    for i in 0..out {
        let center = scale * (i as f32 + 0.5);
        let xmin = ((center - support + 0.5) as i64).max(0);
        let xmax = ((center + support + 0.5) as i64).min(input as i64);
        let row = &mut m[i * input..(i + 1) * input];
        let mut total = 0f32;
        for j in xmin..xmax {
            let w = filter((j as f32 - center + 0.5) * invscale);
            row[j as usize] = w;
            total += w;
        }
        if total != 0.0 {
            for j in xmin..xmax {
                row[j as usize] /= total;
            }
        }
    }
    m
}

fn bicubic_matrix_scaled(input: usize, out: usize, scale: f32) -> Vec<f32> {
    let mut m = vec![0f32; out * input];
    for i in 0..out {
        let real = scale * (i as f32 + 0.5) - 0.5;
        let base = real.floor();
        let t = real - base;
        let w = [cubic2(t + 1.0), cubic1(t), cubic1(1.0 - t), cubic2(2.0 - t)];
        for (k, wk) in w.iter().enumerate() {
            let src = (base as i64 - 1 + k as i64).clamp(0, input as i64 - 1) as usize;
            m[i * input + src] += wk;
        }
    }
    m
}

/// The position embedding for an input with a `grid_h x grid_w` patch grid.
///
/// `prefix` leading rows (class / register positions) are kept as they are; the `M x M` grid
/// after them is interpolated. Returns `pos_embed` unchanged when DINO would (`grid_h * grid_w
/// == M * M` and a square input, `square_input`). `offset > 0` is DINO's and DINOv2's
/// `scale_factor = (g + offset) / M`; `offset == 0` interpolates to the size `g` (timm,
/// Hugging Face), with `antialias` PyTorch's antialiased bicubic (DINOv2 with registers).
///
/// # Shapes
/// - `pos_embed`: `[1, prefix + M*M, D]`
/// - output: `[1, prefix + grid_h*grid_w, D]`
///
/// # Panics
/// If the grid rows are not a square number or `prefix` exceeds the rows (the model's
/// configuration guarantees both).
pub fn interpolate_pos_embed<B: Backend>(
    pos_embed: Tensor<B, 3>,
    prefix: usize,
    grid_h: usize,
    grid_w: usize,
    square_input: bool,
    offset: f64,
    antialias: bool,
) -> Tensor<B, 3> {
    let [_, rows, d] = pos_embed.dims();
    assert!(prefix <= rows, "position embedding shorter than its prefix");
    let n = rows - prefix;
    let m = (n as f64).sqrt() as usize;
    assert_eq!(
        m * m,
        n,
        "position embedding of {n} patches is not a square grid"
    );
    if grid_h * grid_w == n && square_input {
        return pos_embed;
    }
    let device = pos_embed.device();
    let (wy, wx, oh, ow) = if offset > 0.0 {
        let sy = (grid_h as f64 + offset) / m as f64;
        let sx = (grid_w as f64 + offset) / m as f64;
        let (oh, ow) = (output_len(m, sy), output_len(m, sx));
        assert_eq!(
            (oh, ow),
            (grid_h, grid_w),
            "interpolated position grid does not match the patch grid"
        );
        (bicubic_matrix(m, oh, sy), bicubic_matrix(m, ow, sx), oh, ow)
    } else if antialias {
        (
            bicubic_aa_matrix_sized(m, grid_h),
            bicubic_aa_matrix_sized(m, grid_w),
            grid_h,
            grid_w,
        )
    } else {
        (
            bicubic_matrix_sized(m, grid_h),
            bicubic_matrix_sized(m, grid_w),
            grid_h,
            grid_w,
        )
    };
    let wy = Tensor::<B, 2>::from_data(TensorData::new(wy, [oh, m]), &device);
    let wx = Tensor::<B, 2>::from_data(TensorData::new(wx, [ow, m]), &device);
    let grid = pos_embed
        .clone()
        .slice([0..1, prefix..rows, 0..d])
        .reshape([m, m * d]);
    // rows: [oh, M*D] -> [oh, M, D] -> [oh, D, M] x [M, ow] -> [oh, D, ow] -> [oh, ow, D]
    let rows_t = wy.matmul(grid).reshape([oh, m, d]).swap_dims(1, 2);
    let out = rows_t
        .matmul(wx.transpose().unsqueeze::<3>())
        .swap_dims(1, 2)
        .reshape([1, oh * ow, d]);
    if prefix == 0 {
        return out;
    }
    let head = pos_embed.slice([0..1, 0..prefix, 0..d]);
    Tensor::cat(vec![head, out], 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_scale_copies_rows() {
        let m = bicubic_matrix(5, 5, 1.0);
        for i in 0..5 {
            for j in 0..5 {
                assert_eq!(m[i * 5 + j], if i == j { 1.0 } else { 0.0 });
            }
        }
    }

    #[test]
    fn rows_sum_to_one() {
        for (inp, out, s) in [
            (37, 16, 16.1 / 37.0),
            (14, 32, 32.1 / 14.0),
            (14, 5, 5.1 / 14.0),
        ] {
            let m = bicubic_matrix(inp, out, s);
            for i in 0..out {
                let sum: f32 = m[i * inp..(i + 1) * inp].iter().sum();
                assert!((sum - 1.0).abs() < 1e-6, "row {i}: {sum}");
            }
        }
    }

    #[test]
    fn output_len_matches_dino_assertion() {
        for m in [14usize, 37] {
            for g in 1..80usize {
                assert_eq!(output_len(m, (g as f64 + 0.1) / m as f64), g);
            }
        }
    }
}
