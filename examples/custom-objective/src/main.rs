//! Runs KL + the custom flip-consistency objective over a folder of images.
//!
//! `cargo run --release -p custom-objective -- <weights> <arch|config.json> <image>...`
//! (defaults to the bundled tiny random-weight model and the golden images).

use anyhow::Result;
use burn::backend::{Autodiff, Flex};
use custom_objective::FlipConsistency;
use fungi::backbone::{Vit, VitConfig};
use fungi::core::FungiExtractor;
use fungi::kl::{KlConfig, KlObjective};

type B = Autodiff<Flex>;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/golden");
    let weights = args
        .first()
        .cloned()
        .unwrap_or(format!("{root}/model.safetensors"));
    let arch = args.get(1).cloned().unwrap_or(format!("{root}/model.json"));
    let files: Vec<String> = if args.len() > 2 {
        args[2..].to_vec()
    } else {
        ["01_coffee.png", "02_camera_L.png", "05_tiny.png"]
            .iter()
            .map(|f| format!("{root}/images/{f}"))
            .collect()
    };
    let device = Default::default();
    let config = VitConfig::from_preset_or_file(&arch)?;
    let vit = Vit::<B>::from_file(&config, &weights, &device)?;
    let e = vit.embed_dim();
    let extractor = FungiExtractor::builder(vit)
        .seed(0)
        .objective(Box::new(KlObjective::<B>::new(
            KlConfig::paper(),
            e,
            0,
            &device,
        )?))
        .objective(Box::new(FlipConsistency::<B>::new(e, 128, 0, &device)))
        .build()?;
    let images = files
        .iter()
        .map(|f| fungi::aug::decode_rgb(f, &Default::default()))
        .collect::<Result<Vec<_>, _>>()?;
    let idx: Vec<u64> = (0..images.len() as u64).collect();
    let features = extractor.extract(&images, &idx)?;
    let d = extractor.feature_dim();
    println!(
        "blocks {:?} ({:?} wide): {} images x {d} features",
        extractor.block_names(),
        extractor.block_dims(),
        images.len()
    );
    for (f, row) in files.iter().zip(features.chunks(d)) {
        println!("{f}: {:?} ...", &row[..4]);
    }
    Ok(())
}
