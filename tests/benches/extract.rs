//! FUNGI extraction throughput and peak memory, random-weight ViTs at 224 px.
//!
//! `cargo bench -p fungi-tests --bench extract` (flex; `--no-default-features --features cuda`
//! for CUDA). Env: `FUNGI_BENCH_ARCHS` (default `dino_vits16,dino_vitb16`), `FUNGI_BENCH_BATCHES`
//! (default `1,8,32`), `FUNGI_BENCH_OBJECTIVES` (default `kl`), `FUNGI_BENCH_REPS` (default 2).
//! Timed: decoded RGB images in, features out (views, forward, backward, projection, L2 norm).
//! Peak RSS: the process high-water mark, reset before every row (`/proc/self/clear_refs`).

use std::time::Instant;

use fungi_aug::RgbImage;
use fungi_backbone::VitConfig;
use fungi_core::StateTensor;
use fungi_core::{FungiExtractor, Objective};
use fungi_dino::{DinoConfig, DinoObjective};
use fungi_kl::{KlConfig, KlObjective};
use fungi_simclr::{SimclrConfig, SimclrObjective};
use fungi_tests::{device, env_list, env_usize, TestAutodiff};

type B = TestAutodiff;

/// `kl`, `dino`, `simclr` (fungivision defaults; SimCLR's 64·49 negatives are random latents, as
/// in ../shared/docs/torch-baseline.md, so its setup is not timed) or `all` (the three).
fn objectives(name: &str, e: usize) -> Vec<Box<dyn Objective<B>>> {
    let d = device();
    let simclr = || {
        let neg = fungi::benchmark::noise_latents(64 * 49 * 96);
        Box::new(
            SimclrObjective::<B>::new(SimclrConfig::fungivision(), e, 0, &d)
                .unwrap()
                .with_negatives(StateTensor {
                    shape: vec![64 * 49, 96],
                    data: neg,
                })
                .unwrap(),
        ) as Box<dyn Objective<B>>
    };
    match name {
        "kl" => vec![Box::new(
            KlObjective::<B>::new(KlConfig::fungivision(), e, 0, &d).unwrap(),
        )],
        "dino" => vec![Box::new(
            DinoObjective::<B>::new(DinoConfig::fungivision(), e, 0, &d).unwrap(),
        )],
        "simclr" => vec![simclr()],
        "all" => {
            let mut v = objectives("kl", e);
            v.extend(objectives("dino", e));
            v.push(simclr());
            v
        }
        other => panic!("unknown objective {other} (kl, dino, simclr, all)"),
    }
}

fn main() {
    let reps = env_usize("FUNGI_BENCH_REPS", 2);
    println!("backend: {}", std::any::type_name::<B>());
    println!(
        "{:<12} {:<10} {:>5} {:>11} {:>11} {:>10} {:>12}",
        "arch", "objective", "batch", "img/s med", "img/s best", "s/batch", "peak RSS MB"
    );
    for arch in env_list("FUNGI_BENCH_ARCHS", "dino_vits16,dino_vitb16") {
        let cfg = VitConfig::preset(&arch).unwrap();
        for obj in env_list("FUNGI_BENCH_OBJECTIVES", "kl") {
            for b in env_list("FUNGI_BENCH_BATCHES", "1,8,32") {
                let b: usize = b.parse().unwrap();
                fungi::benchmark::reset_peak_rss();
                let mut builder = FungiExtractor::builder(cfg.init::<B>(&device()))
                    .batch_size(b)
                    .include_embedding(false);
                for o in objectives(&obj, cfg.embed_dim) {
                    builder = builder.objective(o);
                }
                let ex = builder.build().unwrap();
                let n_obj = ex.objectives().len();
                let imgs: Vec<RgbImage> =
                    (0..b as u64).map(fungi::benchmark::noise_image).collect();
                let idx: Vec<u64> = (0..b as u64).collect();
                let _ = ex.extract(&imgs[..1], &idx[..1]).unwrap(); // warm-up
                let mut t: Vec<f64> = (0..reps)
                    .map(|_| {
                        let s = Instant::now();
                        let f = ex.extract(&imgs, &idx).unwrap();
                        assert_eq!(f.len(), b * cfg.embed_dim * n_obj);
                        s.elapsed().as_secs_f64()
                    })
                    .collect();
                t.sort_by(|x, y| x.partial_cmp(y).unwrap());
                let med = t[t.len() / 2];
                println!(
                    "{:<12} {:<10} {:>5} {:>11.3} {:>11.3} {:>10.2} {:>12.0}",
                    arch,
                    obj,
                    b,
                    b as f64 / med,
                    b as f64 / t[0],
                    med,
                    fungi::benchmark::peak_rss_mb().unwrap_or(0.0)
                );
            }
        }
    }
}
