//! The custom objective works through the extractor: unit-norm blocks, per-image gradients
//! independent of the batch, state round-trip.

use burn::backend::{Autodiff, Flex};
use custom_objective::FlipConsistency;
use fungi::backbone::{Vit, VitConfig};
use fungi::core::FungiExtractor;

type B = Autodiff<Flex>;

fn extractor(batch: usize, seed: u64) -> FungiExtractor<B> {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/golden");
    let cfg = VitConfig::from_json_file(format!("{root}/model.json")).unwrap();
    let vit = Vit::<B>::from_file(
        &cfg,
        format!("{root}/model.safetensors"),
        &Default::default(),
    )
    .unwrap();
    FungiExtractor::builder(vit)
        .seed(seed)
        .batch_size(batch)
        .objective(Box::new(FlipConsistency::<B>::new(
            64,
            32,
            seed,
            &Default::default(),
        )))
        .build()
        .unwrap()
}

#[test]
fn custom_objective_through_the_extractor() {
    let root = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/golden/images"
    );
    let imgs: Vec<_> = ["01_coffee.png", "04_astronaut_P.png", "06_large.png"]
        .iter()
        .map(|f| fungi::aug::decode_rgb(format!("{root}/{f}"), &Default::default()).unwrap())
        .collect();
    let a = extractor(3, 1);
    assert_eq!(a.block_names(), vec!["embedding", "flip"]);
    let f = a.extract(&imgs, &[0, 1, 2]).unwrap();
    for row in f.chunks(128) {
        for block in row.chunks(64) {
            let n: f32 = block.iter().map(|v| v * v).sum::<f32>().sqrt();
            assert!((n - 1.0).abs() < 1e-5, "block norm {n}");
        }
    }
    let single = extractor(1, 1).extract(&imgs[1..2], &[1]).unwrap();
    let d = single
        .iter()
        .zip(&f[128..256])
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max);
    assert!(d < 1e-5, "batch invariance: {d}");
    let dir = std::env::temp_dir().join(format!("flip-state-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let state = dir.join("s.safetensors");
    a.save_state(&state).unwrap();
    // A state of another seed is refused (heads and views would disagree) ...
    let err = extractor(3, 2).load_state(&state).unwrap_err().to_string();
    assert!(err.contains("seed"), "{err}");
    // ... one of the same seed restores the run, whatever the batch size.
    let mut b = extractor(3, 1);
    b.load_state(&state).unwrap();
    assert_eq!(b.extract(&imgs, &[0, 1, 2]).unwrap(), f);
    std::fs::remove_dir_all(&dir).ok();
}
