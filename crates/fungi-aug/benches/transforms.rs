//! Views/s of every transform, on 1 thread and on all threads (`cargo bench -p fungi-aug`).
//! Input: 16 decoded 500x375 RGB images (the size of a typical ImageNet photo).

use std::time::Instant;

use fungi_aug::{DinoTransform, EvalTransform, KlTransform, Patchify, RgbImage};
use rand::SeedableRng;
use rayon::prelude::*;

fn images() -> Vec<RgbImage> {
    (0..16u64)
        .map(|i| {
            let mut s = (i + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            RgbImage::from_fn(500, 375, |x, y| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                image::Rgb([
                    (x as u64 + (s & 15)) as u8,
                    (y as u64 + (s >> 8 & 15)) as u8,
                    (s >> 16) as u8,
                ])
            })
        })
        .collect()
}

fn run(
    name: &str,
    views_per_image: usize,
    imgs: &[RgbImage],
    f: &(dyn Fn(usize, &RgbImage) -> usize + Sync),
) {
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let mut cols = vec![];
    for t in [1, threads] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(t)
            .build()
            .unwrap();
        let _ = pool.install(|| {
            imgs[..2]
                .par_iter()
                .enumerate()
                .map(|(i, im)| f(i, im))
                .sum::<usize>()
        });
        let start = Instant::now();
        let n: usize = pool.install(|| imgs.par_iter().enumerate().map(|(i, im)| f(i, im)).sum());
        let secs = start.elapsed().as_secs_f64();
        assert_eq!(n, imgs.len() * views_per_image * 3 * 224 * 224);
        cols.push(format!(
            "{:>10.1}",
            (imgs.len() * views_per_image) as f64 / secs
        ));
    }
    println!("{name:<28} {:>6} {}", views_per_image, cols.join(" "));
}

fn main() {
    let imgs = images();
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    println!(
        "{:<28} {:>6} {:>10} {:>10}",
        "transform (500x375 input)",
        "views",
        "1 thread",
        format!("{threads} threads")
    );
    run("eval (resize 256 + crop)", 1, &imgs, &|_, im| {
        EvalTransform::default().apply(im).len()
    });
    run("kl (torch u8 squash)", 1, &imgs, &|_, im| {
        KlTransform::default().apply(im).len()
    });
    let d = DinoTransform::default();
    run("dino (2+10 crops)", 12, &imgs, &|i, im| {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(i as u64);
        let p = d.sample_params(im.width(), im.height(), &mut rng);
        d.apply(im, &p).len()
    });
    run("simclr patchify (7x7)", 49, &imgs, &|_, im| {
        Patchify::default().apply(im).unwrap().len()
    });
}
