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

fn golden_png(name: &str) -> PathBuf {
    golden_dir().join("images").join(name)
}

#[test]
fn a_dataset_is_an_image_source_with_labels() {
    let dir = tempfile::tempdir().unwrap();
    let files = [
        ("cat/1.png", "01_coffee.png"),
        ("cat/2.png", "02_camera_L.png"),
        ("dog/1.png", "04_astronaut_P.png"),
    ];
    for (to, from) in files {
        let to = dir.path().join(to);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(golden_png(from), to).unwrap();
    }
    let ds = fungi::Dataset::load(dir.path(), None, true).unwrap();
    assert_eq!(ds.classes, ["cat", "dog"]);
    let fungi = Fungi::<B>::builder(&device())
        .backbone(golden_vit())
        .objectives(kl_dino())
        .target_layer("blocks.3.attn.proj")
        .batch_size(2)
        .build()
        .unwrap()
        .ready()
        .unwrap();
    let f = fungi.extract(&ds).unwrap();
    assert_eq!(f.labels.as_deref(), Some(&[0, 0, 1][..]));
    // The same rows as the image files given as paths; unlabelled sources carry no labels.
    let paths: Vec<PathBuf> = files.iter().map(|(_, from)| golden_png(from)).collect();
    let g = fungi.extract(&paths).unwrap();
    assert_eq!(g.labels, None);
    let want: Vec<f64> = g.data.iter().map(|&v| v as f64).collect();
    assert_abs("dataset vs paths", &f.data, &want, 1e-6);
}

#[test]
fn a_custom_objective_joins_the_configured_ones() {
    let imgs = golden_images(true).unwrap();
    let kl = || ObjectiveConfig::Kl(fungi::kl::KlConfig::fungivision());
    let built = |custom: bool| {
        let b = Fungi::<B>::builder(&device())
            .backbone(golden_vit())
            .target_layer("blocks.3.attn.proj")
            .seed(5);
        let b = if custom {
            let k = kl();
            b.objectives(vec![])
                .custom_objective(move |e, seed, d| k.build::<B>(e, seed, d))
        } else {
            b.objectives(vec![kl()])
        };
        b.build().unwrap().ready().unwrap()
    };
    let (a, b) = (built(true), built(false));
    assert_eq!(a.blocks(), b.blocks());
    let fa = a.extract(&imgs[..2]).unwrap();
    let fb = b.extract(&imgs[..2]).unwrap();
    let want: Vec<f64> = fb.data.iter().map(|&v| v as f64).collect();
    assert_abs("custom objective vs configured", &fa.data, &want, 1e-6);
    // A factory's error is the build's error.
    let e = Fungi::<B>::builder(&device())
        .backbone(golden_vit())
        .objectives(vec![])
        .custom_objective(|_, _, _| {
            Err(fungi::core::Error::Config {
                key: "custom".into(),
                value: "x".into(),
                expected: "y".into(),
            })
        })
        .build()
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("`custom` = x"), "{e}");
}

#[test]
fn setup_skips_unreadable_images_only_when_asked_and_states_round_trip_as_bytes() {
    let mut paths: Vec<PathBuf> = ["01_coffee.png", "02_camera_L.png", "04_astronaut_P.png"]
        .iter()
        .map(|f| golden_png(f))
        .collect();
    paths.insert(1, golden_png("missing.png"));
    let build = || {
        Fungi::<B>::builder(&device())
            .backbone(golden_vit())
            .objectives(vec![ObjectiveConfig::Simclr(fungi::simclr::SimclrConfig {
                // Every listed image is needed, so the setup must read the missing one.
                comparison_batch_size: 4,
                ..fungi::simclr::SimclrConfig::fungivision()
            })])
            .target_layer("blocks.3.attn.proj")
            .build()
            .unwrap()
    };
    let e = build().setup(&paths).err().unwrap().to_string();
    assert!(e.contains("missing.png"), "{e}");
    let skipped = std::sync::Mutex::new(Vec::new());
    let record =
        |i: usize, e: &fungi::core::Error| skipped.lock().unwrap().push((i, e.to_string()));
    let fungi = build().setup_with(&paths, None, Some(&record)).unwrap();
    let skipped = skipped.into_inner().unwrap();
    assert_eq!(skipped.len(), 1);
    assert_eq!(skipped[0].0, 1);
    assert!(skipped[0].1.contains("missing.png"));

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.safetensors");
    fungi.save_state(&path).unwrap();
    let bytes = fungi.state_bytes(&path).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
    let restored = build().load_state_bytes(&bytes, &path).unwrap();
    let imgs = &paths[2..];
    let want: Vec<f64> = fungi
        .extract(imgs)
        .unwrap()
        .data
        .iter()
        .map(|&v| v as f64)
        .collect();
    assert_abs(
        "restored from bytes",
        &restored.extract(imgs).unwrap().data,
        &want,
        1e-6,
    );
    let e = build()
        .load_state_bytes(b"not a state", "junk.safetensors")
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("junk.safetensors"), "{e}");
}

#[test]
fn empty_in_memory_images_are_errors_naming_the_image_not_panics() {
    let mut imgs = golden_images(true).unwrap();
    imgs.truncate(2);
    imgs.push(fungi::aug::RgbImage::new(0, 0));
    let kl = Fungi::<B>::builder(&device())
        .backbone(golden_vit())
        .objectives(kl_dino())
        .target_layer("blocks.3.attn.proj")
        .build()
        .unwrap()
        .ready()
        .unwrap();
    for e in [
        kl.extract(&imgs).err().unwrap().to_string(),
        kl.embed(&imgs).err().unwrap().to_string(),
    ] {
        assert!(e.contains("image #2 is empty (0x0)"), "{e}");
    }
    // The extractor itself checks too, naming the dataset index (or the position).
    let ex = kl.extractor();
    for (e, name) in [
        (ex.prepare(&imgs, &[0, 1, 7]).err(), "at dataset index 7"),
        (ex.extract(&imgs, &[0, 1, 7]).err(), "at dataset index 7"),
        (ex.raw_embeddings(&imgs).err(), "at position 2 of the call"),
        (ex.views(0, &imgs, &[0, 1, 7]).err(), "at dataset index 7"),
    ] {
        let e = e.unwrap().to_string();
        assert!(e.contains(name) && e.contains("empty (0x0)"), "{e}");
    }
    let e = ex.views(2, &imgs[..1], &[0]).err().unwrap().to_string();
    assert!(
        e.contains("objective index") && e.contains("below 2"),
        "{e}"
    );
    let e = ex.views(0, &imgs[..2], &[0]).err().unwrap().to_string();
    assert!(e.contains("global indices"), "{e}");
    let e = Fungi::<B>::builder(&device())
        .backbone(golden_vit())
        .objectives(vec![small_simclr()])
        .target_layer("blocks.3.attn.proj")
        .build()
        .unwrap()
        .setup(&vec![fungi::aug::RgbImage::new(5, 0); 4])
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("at training index") && e.contains("empty (5x0)"),
        "{e}"
    );
}
