//! Dense FUNGI speed (docs/dense.md): ViT-S/16-shaped random weights at 512 px, a random
//! 102 400-row support bank, one image per pass; each phase timed alone (best of
//! `FUNGI_BENCH_REPS`, default 2), the f32 GEMM rate of the backend on the per-token
//! projection's shape, and the process's peak memory.
//!
//! `cargo bench -p fungi-tests --bench dense`. Env: `FUNGI_BENCH_REPS`, `FUNGI_DENSE_SIZE`
//! (512), `FUNGI_DENSE_SUPPORT` (102400), `FUNGI_DENSE_ARCH` (dino_vits16),
//! `FUNGI_DENSE_SEARCH_BUDGET` / `FUNGI_DENSE_TOKEN_BUDGET` (bytes of one score block / one
//! projection chunk; the library's defaults).

use std::time::Instant;

use burn::tensor::{Distribution, Tensor};
use fungi_backbone::VitConfig;
use fungi_core::StateTensor;
use fungi_dense::{DenseExtractor, DenseSettings};
use fungi_tests::{device, env_usize, TestAutodiff, TestBackend};

/// Best wall time of `reps` runs of `f` (after one warm-up run).
fn best<T>(reps: usize, mut f: impl FnMut() -> T) -> f64 {
    let _ = f();
    (0..reps.max(1))
        .map(|_| {
            let t = Instant::now();
            let _ = f();
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

fn main() {
    let reps = env_usize("FUNGI_BENCH_REPS", 2);
    let size = env_usize("FUNGI_DENSE_SIZE", 512);
    let m = env_usize("FUNGI_DENSE_SUPPORT", 102_400);
    let arch = std::env::var("FUNGI_DENSE_ARCH").unwrap_or_else(|_| "dino_vits16".into());
    let dev = device();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "backend {} threads {threads} arch {arch} size {size} support {m}",
        std::any::type_name::<TestBackend>()
    );
    let cfg = VitConfig::preset(&arch).expect("preset");
    let (e, p) = (cfg.embed_dim, (size / cfg.patch_size).pow(2));
    let t = p + 1;

    // The backend's f32 GEMM rate on the per-token projection's shape and on a square one.
    let (o, j) = (e, e + 1);
    let kc = 10;
    let a = Tensor::<TestBackend, 2>::random([p, o], Distribution::Default, &dev);
    let b = Tensor::<TestBackend, 2>::random([o, kc * j], Distribution::Default, &dev);
    let s = best(reps, || a.clone().matmul(b.clone()).into_data());
    let proj_rate = 2.0 * (p * o * kc * j) as f64 / s / 1e9;
    let sq = Tensor::<TestBackend, 2>::random([2048, 2048], Distribution::Default, &dev);
    let s = best(reps, || sq.clone().matmul(sq.clone()).into_data());
    let sq_rate = 2.0 * 2048f64.powi(3) / s / 1e9;
    println!(
        "gemm f32: [{p}x{o}]x[{o}x{}] {proj_rate:.1} GFLOP/s; 2048^3 {sq_rate:.1} GFLOP/s",
        kc * j
    );

    let settings = DenseSettings::parse(
        &format!("batch_size = 1\n[dense]\nimage_size = {size}\n"),
        "bench.toml",
    )
    .expect("settings");
    let vit = cfg.init::<TestAutodiff>(&dev);
    let mut ex = DenseExtractor::new(vit, settings).expect("extractor");
    let token_budget = env_usize(
        "FUNGI_DENSE_TOKEN_BUDGET",
        fungi_core::token_projection::DEFAULT_TOKEN_BUDGET,
    );
    ex.set_budgets(
        token_budget,
        env_usize(
            "FUNGI_DENSE_SEARCH_BUDGET",
            fungi_dense::DEFAULT_SEARCH_BUDGET,
        ),
    );
    let rows = Tensor::<TestBackend, 2>::random([m, e], Distribution::Normal(0.0, 1.0), &dev);
    let data: Vec<f32> = rows.into_data().convert::<f32>().into_vec().unwrap();
    ex.set_support(StateTensor {
        shape: vec![m, e],
        data,
    })
    .expect("support");
    let x = Tensor::<TestBackend, 4>::random([1, 3, size, size], Distribution::Default, &dev);
    let views: Vec<f32> = x.clone().into_data().convert::<f32>().into_vec().unwrap();

    let fwd = best(reps, || {
        ex.engine().inner().forward_tokens(x.clone()).into_data()
    });
    let tokens = ex
        .engine()
        .inner()
        .forward_tokens(x.clone())
        .reshape([t, e]);
    let search = best(reps, || ex.neighbours(tokens.clone()).unwrap());
    let bank_t = Tensor::<TestBackend, 2>::random([e, 4096], Distribution::Default, &dev);
    let score_gemm = best(reps, || {
        (0..m.div_ceil(4096))
            .map(|_| {
                tokens
                    .clone()
                    .matmul(bank_t.clone())
                    .into_data()
                    .num_elements()
            })
            .sum::<usize>()
    });
    println!("support scores alone (GEMMs + read back): {score_gemm:.3} s");
    let per_token = best(reps, || {
        let r = ex.per_token(x.clone(), &[0], None).unwrap();
        r.delta.into_data()
    });
    let delta = Tensor::<TestBackend, 2>::random([p, o], Distribution::Default, &dev);
    let a1 = Tensor::<TestBackend, 2>::random([p, j], Distribution::Default, &dev);
    let proj = best(reps, || {
        ex.projection()
            .project_tokens(delta.clone(), a1.clone(), token_budget)
            .unwrap()
            .into_data()
    });
    let whole = best(reps, || ex.extract_prepared(views.clone(), &[0]).unwrap());
    let gflop = |s: f64, f: f64| f / s / 1e9;
    let f_fwd = 2.0 * 12.0 * (t * e * e * 12) as f64 + 2.0 * 12.0 * 2.0 * (t * t * e) as f64;
    let f_search = 2.0 * (t * m * e) as f64;
    let f_proj = 2.0 * (p * o * e * j) as f64;
    println!("phase                 s/image   GFLOP   GFLOP/s");
    println!(
        "forward (tokens)      {fwd:7.3} {:7.1} {:9.1}",
        f_fwd / 1e9,
        gflop(fwd, f_fwd)
    );
    println!(
        "support search        {search:7.3} {:7.1} {:9.1}",
        f_search / 1e9,
        gflop(search, f_search)
    );
    println!("per-token (fwd+search+loss+bwd) {per_token:7.3}");
    println!(
        "token projection      {proj:7.3} {:7.1} {:9.1}",
        f_proj / 1e9,
        gflop(proj, f_proj)
    );
    let total = f_fwd + f_search + f_proj;
    println!(
        "whole image           {whole:7.3} {:7.1} {:9.1}   -> {:.3} image/s, {:.0} % of the 2048^3 GEMM rate",
        total / 1e9,
        gflop(whole, total),
        1.0 / whole,
        100.0 * gflop(whole, total) / sq_rate
    );
    println!(
        "peak memory (VmHWM)   {:.0} MiB",
        fungi::benchmark::peak_rss_mb().unwrap_or(f64::NAN)
    );
}
