//! The `Fungi` facade: typestate, block layout, parity with the extractor it wraps, the golden
//! embeddings, state round trips and clear errors.

use std::path::PathBuf;

use fungi::core::FungiExtractor;
use fungi::{Fungi, ObjectiveConfig, Preset};
use fungi_tests::*;

type B = TestAutodiff;

fn arch() -> String {
    golden_dir().join("model.json").display().to_string()
}

fn weights() -> PathBuf {
    golden_dir().join("model.safetensors")
}

fn kl_dino() -> Vec<ObjectiveConfig> {
    vec![
        ObjectiveConfig::Kl(fungi::kl::KlConfig::fungivision()),
        ObjectiveConfig::Dino(fungi::dino::DinoConfig::fungivision()),
    ]
}

fn small_simclr() -> ObjectiveConfig {
    ObjectiveConfig::Simclr(fungi::simclr::SimclrConfig {
        comparison_batch_size: 4,
        ..fungi::simclr::SimclrConfig::fungivision()
    })
}

#[test]
fn objectives_that_need_a_setup_are_refused_until_they_have_one() {
    let e = Fungi::<B>::builder(&device())
        .arch_and_weights(&arch(), weights())
        .preset(Preset::Fungivision)
        .target_layer("blocks.3.attn.proj")
        .build()
        .unwrap()
        .ready()
        .err()
        .expect("SimCLR has no negatives yet")
        .to_string();
    assert!(e.contains("simclr") && e.contains("setup"), "{e}");
    let e = Fungi::<B>::builder(&device())
        .build()
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("backbone"), "{e}");
    let e = Fungi::<B>::builder(&device())
        .arch_and_weights(&arch(), "/nonexistent/w.safetensors")
        .build()
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("/nonexistent/w.safetensors"), "{e}");
}

#[test]
fn features_equal_the_extractor_and_carry_their_layout() {
    let imgs = golden_images(true).unwrap();
    let fungi = Fungi::<B>::builder(&device())
        .backbone(golden_vit())
        .objectives(kl_dino())
        .target_layer("blocks.3.attn.proj")
        .seed(3)
        .batch_size(3)
        .build()
        .unwrap()
        .ready()
        .unwrap();
    let f = fungi.extract(&imgs).unwrap();
    assert_eq!(f.rows, 8);
    let names: Vec<_> = f.blocks.iter().map(|b| b.name.as_str()).collect();
    assert_eq!(names, ["embedding", "kl", "dino"]);
    assert_eq!(
        f.blocks
            .iter()
            .map(|b| (b.dim, b.offset))
            .collect::<Vec<_>>(),
        [(64, 0), (64, 64), (64, 128)]
    );
    assert_eq!(f.dim(), 192);
    // Each block is L2-normalised.
    for name in names {
        let n: f32 = f.block(5, name).unwrap().iter().map(|v| v * v).sum();
        assert!((n - 1.0).abs() < 1e-5, "{name}: |x|² = {n}");
    }
    // The same as the extractor built by hand with the same settings.
    let mut b = FungiExtractor::builder(golden_vit())
        .seed(3)
        .batch_size(8)
        .target_layer("blocks.3.attn.proj");
    for o in kl_dino() {
        b = b.objective(o.build::<B>(64, 3, &device()).unwrap());
    }
    let idx: Vec<u64> = (0..8).collect();
    let by_hand = b.build().unwrap().extract(&imgs, &idx).unwrap();
    let as64: Vec<f64> = by_hand.iter().map(|&v| v as f64).collect();
    assert_abs("facade vs extractor", &f.data, &as64, 1e-6);
    // In two pieces with their dataset indices: the same rows.
    let (a, b) = imgs.split_at(5);
    let fa = fungi.extract_at(a, &[0, 1, 2, 3, 4]).unwrap();
    let fb = fungi.extract_at(b, &[5, 6, 7]).unwrap();
    let want: Vec<f64> = f.data.iter().map(|&v| v as f64).collect();
    assert_abs(
        "two pieces vs one call",
        &[fa.data, fb.data].concat(),
        &want,
        1e-6,
    );
}

#[test]
fn embed_gives_the_golden_eval_embeddings() {
    let fungi = Fungi::<B>::builder(&device())
        .arch_and_weights(&arch(), weights())
        .objectives(kl_dino())
        .build()
        .unwrap()
        .ready()
        .unwrap();
    let imgs = golden_images(true).unwrap();
    let e = fungi.embed(&imgs).unwrap();
    let (_, want) = Golden::open("eval.safetensors")
        .unwrap()
        .f64("embeddings_f64")
        .unwrap();
    assert_rel("facade embed", &e, &want, 1e-4);
    // Paths work as a source too; a missing one is an error naming it.
    let mut paths: Vec<PathBuf> = ["01_coffee.png", "02_camera_L.png"]
        .iter()
        .map(|f| golden_dir().join("images").join(f))
        .collect();
    let from_paths = fungi.embed(&paths).unwrap();
    assert_eq!(&from_paths[..], &e[64..192]);
    paths.push(golden_dir().join("images/missing.png"));
    let err = fungi.embed(&paths).unwrap_err().to_string();
    assert!(err.contains("missing.png"), "{err}");
}

#[test]
fn a_setup_state_round_trips_through_a_new_facade() {
    let imgs = golden_images(true).unwrap();
    let build = || {
        Fungi::<B>::builder(&device())
            .backbone(golden_vit())
            .objectives(vec![small_simclr()])
            .target_layer("blocks.3.attn.proj")
            .include_embedding(false)
            .build()
            .unwrap()
    };
    let trained = build().setup(&imgs).unwrap();
    let f = trained.extract(&imgs[..3]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.safetensors");
    trained.save_state(&state).unwrap();
    let restored = build().load_state(&state).unwrap();
    let again = restored.extract(&imgs[..3]).unwrap();
    assert_eq!(again.blocks, f.blocks);
    let want: Vec<f64> = f.data.iter().map(|&v| v as f64).collect();
    assert_abs("restored state vs trained", &again.data, &want, 1e-6);
    // A state for other settings is refused, naming what differs.
    let e = Fungi::<B>::builder(&device())
        .backbone(golden_vit())
        .objectives(vec![small_simclr()])
        .target_layer("blocks.2.attn.proj")
        .include_embedding(false)
        .build()
        .unwrap()
        .load_state(&state)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("blocks.2.attn.proj") || e.contains("target"),
        "{e}"
    );
}
