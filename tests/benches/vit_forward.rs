//! Images/s of a ViT forward (random weights, 224 px) on the backend selected by feature.
//!
//! `cargo bench -p fungi-tests --bench vit_forward` (flex); add
//! `--no-default-features --features cuda` for CUDA. Env: `FUNGI_BENCH_REPS` (default 3),
//! `FUNGI_BENCH_ARCHS` (default `dino_vits16,dino_vitb16`), `FUNGI_BENCH_BATCHES` (default `1,8`).

use std::time::Instant;

use burn::tensor::{Distribution, Tensor};
use fungi_backbone::VitConfig;
use fungi_tests::{device, env_list, env_usize, TestBackend};

fn main() {
    // `cargo bench` passes `--bench`; ignore arguments.
    let reps = env_usize("FUNGI_BENCH_REPS", 3);
    let dev = device();
    println!(
        "backend: {}  threads: {}",
        std::any::type_name::<TestBackend>(),
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );
    println!(
        "{:<14} {:>5} {:>12} {:>12} {:>12}",
        "arch", "batch", "best img/s", "median img/s", "ms/batch"
    );
    for arch in env_list("FUNGI_BENCH_ARCHS", "dino_vits16,dino_vitb16") {
        let cfg = VitConfig::preset(&arch).expect("preset");
        let model = cfg.init::<TestBackend>(&dev);
        for b in env_list("FUNGI_BENCH_BATCHES", "1,8") {
            let b: usize = b.parse().expect("batch size");
            let x = Tensor::<TestBackend, 4>::random([b, 3, 224, 224], Distribution::Default, &dev);
            // Warm-up (and synchronise by reading the result back).
            let _ = model.forward(x.clone()).into_data();
            let mut times: Vec<f64> = (0..reps)
                .map(|_| {
                    let t = Instant::now();
                    let _ = model.forward(x.clone()).into_data();
                    t.elapsed().as_secs_f64()
                })
                .collect();
            times.sort_by(|a, b| a.partial_cmp(b).unwrap());
            let med = times[times.len() / 2];
            println!(
                "{:<14} {:>5} {:>12.2} {:>12.2} {:>12.1}",
                arch,
                b,
                b as f64 / times[0],
                b as f64 / med,
                med * 1e3
            );
        }
    }
}
