//! Runs KL + the custom flip-consistency objective over a folder of images.
//!
//! `cargo run --release -p custom-objective -- <weights> <arch|config.json> <image>...`
//! (defaults to the bundled tiny random-weight model and the golden images).

use anyhow::Result;
use burn::backend::{Autodiff, Flex};
use custom_objective::FlipConsistency;
use fungi::kl::KlConfig;
use fungi::{Fungi, ObjectiveConfig};

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
    let images: Vec<std::path::PathBuf> = files.iter().map(Into::into).collect();
    let fungi = Fungi::<B>::builder(&Default::default())
        .arch_and_weights(&arch, &weights)
        .objectives(vec![ObjectiveConfig::Kl(KlConfig::paper())])
        .custom_objective(|e, seed, device| {
            Ok(Box::new(FlipConsistency::<B>::new(e, 128, seed, device)))
        })
        .build()?
        .ready()?;
    let features = fungi.extract(&images)?;
    println!(
        "blocks {:?}: {} images x {} features",
        features
            .blocks
            .iter()
            .map(|b| format!("{} {}", b.name, b.dim))
            .collect::<Vec<_>>(),
        features.rows,
        features.dim()
    );
    for (i, f) in files.iter().enumerate() {
        println!("{f}: {:?} ...", &features.row(i)[..4]);
    }
    Ok(())
}
