//! HummingBird's nearest-neighbour search (docs/dense.md, docs/performance.md): a synthetic
//! memory bank of unit rows drawn around 21 × 40 cluster centres (the structure of patch
//! features: classes, parts), queries from the same distribution; the exact GEMM search and
//! the HNSW graph each build their index and label one image's patches (`k = 30`,
//! `τ = 0.02`); recall@30 of HNSW against exact; peak memory.
//!
//! `cargo bench -p fungi-tests --bench hummingbird`. Env: `FUNGI_HB_ROWS` (102400),
//! `FUNGI_HB_DIM` (768, dense FUNGI of ViT-S/16), `FUNGI_HB_QUERIES` (1024, one 512-px image),
//! `FUNGI_HB_EF` (128, HNSW ef_search), `FUNGI_HB_EFC` (100, ef_construction), `FUNGI_HB_HNSW`
//! (1; 0 times the exact search alone).

use std::time::Instant;

use fungi::hummingbird::{HnswSettings, IndexChoice, LabelIndex, MemoryBank};
use fungi_eval::Matrix;
use fungi_tests::{env_usize, TestBackend};
use rand::RngExt;

/// `n` rows around `centres` (class = centre / 40), noise of norm ≈ 0.8 of a centre's.
fn rows(centres: &[Vec<f32>], n: usize, d: usize, seed: u64) -> (Vec<f32>, Vec<usize>) {
    let mut rng = fungi_core::rng::stream(seed, "bench", 0);
    let mut out = Vec::with_capacity(n * d);
    let mut class = Vec::with_capacity(n);
    let noise = 0.8 / (d as f32).sqrt() * 3f32.sqrt() * 2.0;
    for _ in 0..n {
        let c = rng.random_range(0..centres.len());
        let r: Vec<f32> = centres[c]
            .iter()
            .map(|v| v + noise * (rng.random::<f32>() - 0.5))
            .collect();
        let s = r.iter().map(|x| x * x).sum::<f32>().sqrt();
        out.extend(r.iter().map(|x| x / s));
        class.push(c / 40);
    }
    (out, class)
}

fn main() {
    let (m, d, q) = (
        env_usize("FUNGI_HB_ROWS", 102_400),
        env_usize("FUNGI_HB_DIM", 768),
        env_usize("FUNGI_HB_QUERIES", 1024),
    );
    let hnsw = HnswSettings {
        ef_search: env_usize("FUNGI_HB_EF", 128),
        ef_construction: env_usize("FUNGI_HB_EFC", 100),
        ..Default::default()
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "rows {m} dim {d} queries {q} threads {threads} ef_search {} ef_construction {}",
        hnsw.ef_search, hnsw.ef_construction
    );
    let mut rng = fungi_core::rng::stream(7, "centres", 0);
    let centres: Vec<Vec<f32>> = (0..21 * 40)
        .map(|_| {
            let v: Vec<f32> = (0..d).map(|_| rng.random::<f32>() - 0.5).collect();
            let s = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            v.iter().map(|x| x / s).collect()
        })
        .collect();
    let (mem, class) = rows(&centres, m, d, 1);
    let (queries, _) = rows(&centres, q, d, 2);
    let mut bank = MemoryBank::new(d, 21, 1, 0);
    for (i, (r, &c)) in mem.chunks(d).zip(&class).enumerate() {
        let mut l = vec![0.0; 21];
        l[c] = 1.0;
        bank.add(i as u64, r, &Matrix::new(1, 21, l).expect("labels"))
            .expect("row");
    }
    let dev = Default::default();
    let choices = if env_usize("FUNGI_HB_HNSW", 1) == 0 {
        vec![IndexChoice::Exact]
    } else {
        vec![IndexChoice::Exact, IndexChoice::Hnsw]
    };
    for choice in choices {
        let t = Instant::now();
        let index = LabelIndex::<TestBackend>::build(bank.clone(), choice, u64::MAX, hnsw, &dev)
            .expect("index");
        let build = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let labels = index.transfer(&queries, 30, 0.02).expect("transfer");
        let search = t.elapsed().as_secs_f64();
        assert_eq!(labels.len(), q * 21);
        let recall = index.recall(&queries, 30).expect("recall");
        println!(
            "{:>5}: build {build:8.2} s  label {q} queries {search:7.3} s ({:8.0} queries/s)  recall@30 {recall:.4}",
            index.kind(),
            q as f64 / search
        );
    }
    println!(
        "peak memory {:.0} MiB",
        fungi::benchmark::peak_rss_mb().unwrap_or(f64::NAN)
    );
}
