//! GFLOP/s of the GEMM libraries on ViT shapes (f32, row-major, all threads of rayon's pool).
//!
//! `cargo bench -p fungi-backbone --features flex --bench gemm`. Rows: the `gemm` crate as
//! [`fungi_backbone::ops::cpu::linear`] calls it (AVX-512 kernels with feature `x86-v4`), and
//! `faer` (0.24, its own kernels). Shapes: `M = 8·197` tokens of a batch of 8, the four
//! Linear layers of ViT-S/16 and ViT-B/16, and a 4096³ square for the machine's peak.

use std::time::Instant;

use faer::linalg::matmul::matmul;
use faer::{Accum, MatMut, MatRef, Par};

fn time(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut best = f64::INFINITY;
    for _ in 0..reps {
        let t = Instant::now();
        f();
        best = best.min(t.elapsed().as_secs_f64());
    }
    best
}

fn main() {
    let threads = rayon::current_num_threads();
    println!("threads: {threads}");
    println!(
        "{:<22} {:>6} {:>6} {:>6} {:>12} {:>12}",
        "shape", "M", "K", "N", "gemm GF/s", "faer GF/s"
    );
    let shapes: &[(&str, usize, usize, usize)] = &[
        ("vits qkv", 1576, 384, 1152),
        ("vits proj", 1576, 384, 384),
        ("vits fc1", 1576, 384, 1536),
        ("vits fc2", 1576, 1536, 384),
        ("vitb qkv", 1576, 768, 2304),
        ("vitb proj", 1576, 768, 768),
        ("vitb fc1", 1576, 768, 3072),
        ("vitb fc2", 1576, 3072, 768),
        ("square", 4096, 4096, 4096),
    ];
    for &(name, m, k, n) in shapes {
        let x: Vec<f32> = (0..m * k).map(|i| ((i * 7) % 13) as f32 * 0.01).collect();
        let w: Vec<f32> = (0..k * n).map(|i| ((i * 5) % 11) as f32 * 0.01).collect();
        let mut out = vec![0.0f32; m * n];
        let reps = if m * n * k > 1 << 32 { 2 } else { 5 };
        let flops = 2.0 * (m * n * k) as f64;
        let g = time(reps, || {
            let y = fungi_backbone::ops::cpu::linear(
                &x,
                m,
                k,
                &w,
                n,
                None,
                fungi_backbone::ops::cpu::Epilogue::None,
            );
            std::hint::black_box(y);
        });
        let f = time(reps, || {
            let a = MatRef::from_row_major_slice(&x, m, k);
            let b = MatRef::from_row_major_slice(&w, k, n);
            let c = MatMut::from_row_major_slice_mut(&mut out, m, n);
            matmul(c, Accum::Replace, a, b, 1.0f32, Par::rayon(0));
            std::hint::black_box(&out);
        });
        println!(
            "{:<22} {:>6} {:>6} {:>6} {:>12.1} {:>12.1}",
            name,
            m,
            k,
            n,
            flops / g / 1e9,
            flops / f / 1e9
        );
    }
}
