//! FUNGI features through the [`fungi::Fungi`] facade:
//! `cargo run --release -p quickstart -- [arch weights image...]` (default: the bundled tiny
//! random-weight model and two golden images; KL + DINO need no training-set setup).

use burn::backend::{Autodiff, Flex};
use fungi::{Fungi, ObjectiveConfig};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/golden");
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 3 {
        args = vec![
            format!("{root}/model.json"),
            format!("{root}/model.safetensors"),
        ];
        args.extend(["01_coffee.png", "04_astronaut_P.png"].map(|f| format!("{root}/images/{f}")));
    }
    let images: Vec<std::path::PathBuf> = args[2..].iter().map(Into::into).collect();

    let fungi = Fungi::<Autodiff<Flex>>::builder(&Default::default())
        .arch_and_weights(&args[0], &args[1])
        .objectives(vec![
            ObjectiveConfig::Kl(fungi::kl::KlConfig::paper()),
            ObjectiveConfig::Dino(fungi::dino::DinoConfig::fungivision()),
        ])
        .build()?
        .ready()?; // SimCLR / DeepCluster would need `.setup(&train_images)?` here instead
    let features = fungi.extract(&images)?;

    println!("{} images x {} features", features.rows, features.dim());
    for b in &features.blocks {
        println!(
            "  {:<10} columns {:>4}..{:<4}",
            b.name,
            b.offset,
            b.offset + b.dim
        );
    }
    Ok(())
}
