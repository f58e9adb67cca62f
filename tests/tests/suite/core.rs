//! fungi-core + fungi-kl against the golden fungivision outputs, and the engine's invariants.

use burn::module::Param;
use burn::tensor::{Tensor, TensorData};
use fungi_aug::normalize::{chw_u8_to_normalized, ScaleFormula};
use fungi_backbone::TargetLayer;
use fungi_core::{FungiExtractor, GradPath, Projection};
use fungi_kl::{KlConfig, KlObjective};
use fungi_tests::*;

type B = TestAutodiff;

fn kl_extractor(target: &str, path: GradPath, batch: usize) -> FungiExtractor<B> {
    let kl = KlObjective::<B>::new(KlConfig::fungivision(), 64, 0, &device())
        .unwrap()
        .with_head(golden_head("kl.safetensors", "head"))
        .unwrap();
    let builder = FungiExtractor::builder(golden_vit())
        .target_layer(target)
        .grad_path(path)
        .batch_size(batch)
        .include_embedding(false)
        .objective(Box::new(kl));
    // fungivision's projection for the golden target; a seeded one of the right size elsewhere.
    let builder = if target == "blocks.3.attn.proj" {
        builder.projection(golden_projection())
    } else {
        builder
    };
    builder.build().unwrap()
}

fn kl_views() -> Vec<f32> {
    let (_, v) = Golden::open("kl.safetensors")
        .unwrap()
        .u8("views_u8")
        .unwrap();
    chw_u8_to_normalized(&v, 224 * 224, ScaleFormula::MultiplyReciprocal)
}

fn cosine_rows(a: &[f32], b: &[f64], d: usize) -> f64 {
    a.chunks(d)
        .zip(b.chunks(d))
        .map(|(x, y)| {
            let dot: f64 = x.iter().zip(y).map(|(p, q)| *p as f64 * q).sum();
            let nx: f64 = x.iter().map(|p| (*p as f64).powi(2)).sum::<f64>().sqrt();
            let ny: f64 = y.iter().map(|q| q.powi(2)).sum::<f64>().sqrt();
            dot / (nx * ny)
        })
        .fold(f64::INFINITY, f64::min)
}

#[test]
fn kl_matches_fungivision_golden() {
    let ex = kl_extractor("blocks.3.attn.proj", GradPath::Auto, 8);
    assert!(ex.engine().cls_only());
    let out = ex.objective_from_views(0, &kl_views(), 8).unwrap();
    let g = Golden::open("kl.safetensors").unwrap();
    assert_rel(
        "kl loss_per_sample",
        &out.losses,
        &g.f64("loss_per_sample_f64").unwrap().1,
        1e-2,
    );
    let grad_ref = g.f64("grad_f64").unwrap().1;
    assert_rel("kl grad", &out.grads, &grad_ref, 1e-3);
    assert!(cosine_rows(&out.grads, &grad_ref, 64 * 65) >= 0.99999);
    assert_rel(
        "kl features_raw",
        &out.features_raw,
        &g.f64("features_raw_f64").unwrap().1,
        1e-3,
    );
    let feat_ref = g.f64("features_f64").unwrap().1;
    assert_abs("kl features", &out.features, &feat_ref, 1e-4);
    assert!(cosine_rows(&out.features, &feat_ref, 64) >= 0.99999);
    // The wrapper's KL block is the same thing.
    let (_, wf) = Golden::open("wrapper.safetensors")
        .unwrap()
        .f64("features_batched")
        .unwrap();
    let block: Vec<f64> = wf.chunks(192).flat_map(|r| r[..64].to_vec()).collect();
    assert_abs("wrapper kl block", &out.features, &block, 1e-4);
}

#[test]
fn kl_from_images_matches_golden_features() {
    // Our own decode + KL view (bit-exact for PNG; JPEG through Pillow's stored decode).
    let ex = kl_extractor("blocks.3.attn.proj", GradPath::Auto, 4);
    let imgs = golden_images(true).unwrap();
    let idx: Vec<u64> = (0..8).collect();
    let f = ex.extract(&imgs, &idx).unwrap();
    let (_, feat_ref) = Golden::open("kl.safetensors")
        .unwrap()
        .f64("features_f64")
        .unwrap();
    assert_abs("kl features from images", &f, &feat_ref, 1e-4);
}

#[test]
fn batch_invariance_single_vs_batch_of_8() {
    let views = kl_views();
    let per = 3 * 224 * 224;
    let batched = kl_extractor("blocks.3.attn.proj", GradPath::Auto, 8)
        .objective_from_views(0, &views, 8)
        .unwrap();
    let single = kl_extractor("blocks.3.attn.proj", GradPath::Auto, 1);
    for i in 0..8 {
        let one = single
            .objective_from_views(0, &views[i * per..(i + 1) * per], 1)
            .unwrap();
        let want: Vec<f64> = batched.features[i * 64..(i + 1) * 64]
            .iter()
            .map(|&v| v as f64)
            .collect();
        assert_abs(
            &format!("image {i} alone vs in batch"),
            &one.features,
            &want,
            1e-5,
        );
    }
}

#[test]
fn general_path_equals_cls_fast_path() {
    let views = kl_views();
    let fast = kl_extractor("blocks.3.attn.proj", GradPath::Cls, 8)
        .objective_from_views(0, &views, 8)
        .unwrap();
    let general_ex = kl_extractor("blocks.3.attn.proj", GradPath::General, 8);
    assert!(!general_ex.engine().cls_only());
    let general = general_ex.objective_from_views(0, &views, 8).unwrap();
    let g64: Vec<f64> = general.grads.iter().map(|&v| v as f64).collect();
    assert_rel("cls vs general grads", &fast.grads, &g64, 1e-5);
    let f64s: Vec<f64> = general.features.iter().map(|&v| v as f64).collect();
    assert_abs("cls vs general features", &fast.features, &f64s, 1e-5);
}

#[test]
fn cls_path_is_refused_where_it_would_be_wrong() {
    let kl = KlObjective::<B>::new(KlConfig::fungivision(), 64, 0, &device()).unwrap();
    let err = FungiExtractor::builder(golden_vit())
        .target_layer("blocks.2.attn.proj")
        .grad_path(GradPath::Cls)
        .objective(Box::new(kl))
        .build()
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("grad_path") && err.contains("blocks.2.attn.proj"),
        "{err}"
    );
}

/// Brute force: one backward per image through the whole network with only the target layer's
/// parameters tracked, read `weight.grad` / `bias.grad` directly.
fn brute_force_grads(target: &str, views: &[f32], n: usize) -> Vec<f64> {
    let depth = 4;
    let t = TargetLayer::parse(target, depth).unwrap();
    let kl = KlObjective::<B>::new(KlConfig::fungivision(), 64, 0, &device())
        .unwrap()
        .with_head(golden_head("kl.safetensors", "head"))
        .unwrap();
    let per = 3 * 224 * 224;
    let mut out = Vec::new();
    for b in 0..n {
        let mut model = burn::module::Module::no_grad(golden_vit());
        let blk = &mut model.blocks[t.block];
        let lin = match t.site {
            fungi_backbone::Site::Qkv => &mut blk.attn.qkv,
            fungi_backbone::Site::Proj => &mut blk.attn.proj,
            fungi_backbone::Site::Fc1 => &mut blk.mlp.fc1,
            fungi_backbone::Site::Fc2 => &mut blk.mlp.fc2,
        };
        lin.weight = Param::from_tensor(lin.weight.val().require_grad());
        let bias = lin.bias.take().unwrap();
        lin.bias = Some(Param::from_tensor(bias.val().require_grad()));
        let x = Tensor::<B, 4>::from_data(
            TensorData::new(views[b * per..(b + 1) * per].to_vec(), [1, 3, 224, 224]),
            &device(),
        );
        let emb = model.forward(x);
        let loss = <KlObjective<B> as fungi_core::Objective<B>>::image_loss(&kl, emb).unwrap();
        let grads = loss.sum().backward();
        let lin = model.linear(t).unwrap();
        let gw = lin.weight.val().grad(&grads).unwrap(); // Burn layout [in, out]
        let gb = lin.bias.as_ref().unwrap().val().grad(&grads).unwrap(); // [out]
        let [i, o] = gw.dims();
        let gw: Vec<f32> = gw.into_data().convert::<f32>().into_vec().unwrap();
        let gb: Vec<f32> = gb.into_data().convert::<f32>().into_vec().unwrap();
        out.extend(linear_grad_rows(&gw, &gb, i, o));
    }
    out
}

#[test]
fn general_path_matches_brute_force_on_other_layers() {
    let views = kl_views();
    let n = 3;
    let sub = &views[..n * 3 * 224 * 224];
    for target in [
        "blocks.1.mlp.fc2",
        "blocks.2.attn.qkv",
        "blocks.0.mlp.fc1",
        "blocks.3.attn.proj",
    ] {
        let ex = kl_extractor(target, GradPath::Auto, 2);
        let out = ex.objective_from_views(0, sub, n).unwrap();
        let want = brute_force_grads(target, sub, n);
        assert_eq!(out.grads.len(), want.len(), "{target}");
        assert_rel(
            &format!("engine vs brute force, {target}"),
            &out.grads,
            &want,
            1e-4,
        );
    }
}

#[test]
fn seeded_projection_is_fixed_across_runs_and_machines() {
    // ChaCha8 streams keyed by SHA-256 are platform independent; pin the matrix's fingerprint.
    let p = Projection::rademacher(64, 4160, 1234);
    assert_eq!(p, Projection::rademacher(64, 4160, 1234));
    assert_ne!(
        p.fingerprint(),
        Projection::rademacher(64, 4160, 1235).fingerprint()
    );
    assert_eq!(
        p.fingerprint(),
        PINNED_FINGERPRINT,
        "the seeded projection changed: features of earlier runs would no longer match"
    );
    let v = p.to_i8().unwrap();
    let plus = v.iter().filter(|&&x| x == 1).count() as f64 / v.len() as f64;
    assert!(v.iter().all(|&x| x == 1 || x == -1));
    assert!((plus - 0.5).abs() < 0.01, "fraction of +1: {plus}");
    assert_eq!(p.scaling(), 1.0 / (4160f32).sqrt());
}

/// `Projection::rademacher(64, 4160, 1234)`, recorded 2026-11-28.
const PINNED_FINGERPRINT: &str = "c61bd20a57435056c0270b1d5618eb3c635ca54fec455b039d670fc15f86dcea";

#[test]
fn vit_b16_projection_fits_in_60_mb() {
    let g = 768 * 769;
    let p = Projection::rademacher(768, g, 0);
    assert!(p.memory_bytes() <= 60_000_000, "{} bytes", p.memory_bytes());
    assert_eq!(p.memory_bytes(), 768 * g.div_ceil(64) * 8);
}

#[test]
fn projection_product_matches_dense_reference() {
    let p = golden_projection();
    let (s, dense) = Golden::open("wrapper.safetensors")
        .unwrap()
        .i8("projection_i8")
        .unwrap();
    let (_, grad) = Golden::open("kl.safetensors").unwrap().f32("grad").unwrap();
    let g =
        Tensor::<TestBackend, 2>::from_data(TensorData::new(grad.clone(), [8, s[1]]), &device());
    let got: Vec<f32> = p
        .project(g)
        .unwrap()
        .into_data()
        .convert::<f32>()
        .into_vec()
        .unwrap();
    let mut want = vec![0f64; 8 * s[0]];
    for b in 0..8 {
        for e in 0..s[0] {
            let acc: f64 = (0..s[1])
                .map(|j| dense[e * s[1] + j] as f64 * grad[b * s[1] + j] as f64)
                .sum();
            want[b * s[0] + e] = acc * p.scaling() as f64;
        }
    }
    assert_rel("tiled projection vs dense f64", &got, &want, 1e-5);
    assert_eq!(p.to_i8().unwrap(), dense);
}

fn seeded_kl_extractor(seed: u64, target: &str) -> FungiExtractor<B> {
    let kl = KlObjective::<B>::new(KlConfig::paper(), 64, seed, &device()).unwrap();
    FungiExtractor::builder(golden_vit())
        .seed(seed)
        .target_layer(target)
        .batch_size(4)
        .objective(Box::new(kl))
        .build()
        .unwrap()
}

#[test]
fn state_file_makes_a_second_run_reproduce_the_first() {
    let imgs = golden_images(true).unwrap();
    let idx: Vec<u64> = (0..8).collect();
    let a = seeded_kl_extractor(11, "blocks.3.attn.proj");
    let fa = a.extract(&imgs[..3], &idx[..3]).unwrap();
    assert_eq!(a.block_names(), vec!["embedding", "kl"]);
    assert_eq!(fa.len(), 3 * 128);
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.safetensors");
    a.save_state(&state).unwrap();
    // The same extractor writes the same bytes (metadata order included), every time.
    let bytes = std::fs::read(&state).unwrap();
    a.save_state(&state).unwrap();
    assert_eq!(std::fs::read(&state).unwrap(), bytes);
    assert_eq!(
        seeded_kl_extractor(11, "blocks.3.attn.proj")
            .state_bytes(&state)
            .unwrap(),
        bytes
    );
    // A state made with another seed is refused, naming the seed, and changes nothing.
    let mut b = seeded_kl_extractor(99, "blocks.3.attn.proj");
    let before = b.extract(&imgs[..3], &idx[..3]).unwrap();
    assert_ne!(before, fa);
    let err = b.load_state(&state).unwrap_err().to_string();
    assert!(
        err.contains("`seed`") && err.contains("11") && err.contains("99"),
        "{err}"
    );
    assert_eq!(b.extract(&imgs[..3], &idx[..3]).unwrap(), before);
    // The same seed in a fresh extractor reproduces the first run.
    let mut b = seeded_kl_extractor(11, "blocks.3.attn.proj");
    b.load_state(&state).unwrap();
    assert_eq!(b.extract(&imgs[..3], &idx[..3]).unwrap(), fa);
    // An explicit (non-seeded) projection is stored as I8 and restored exactly too.
    let c = kl_extractor("blocks.3.attn.proj", GradPath::Auto, 8);
    c.save_state(&state).unwrap();
    let mut d = kl_extractor("blocks.3.attn.proj", GradPath::Auto, 8);
    d.load_state(&state).unwrap();
    assert_eq!(d.projection(), c.projection());
}

#[test]
fn state_that_does_not_fit_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.safetensors");
    seeded_kl_extractor(1, "blocks.3.attn.proj")
        .save_state(&state)
        .unwrap();
    let err = seeded_kl_extractor(1, "blocks.2.attn.proj")
        .load_state(&state)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("target_layer") && err.contains("blocks.2.attn.proj"),
        "{err}"
    );
    let err = seeded_kl_extractor(1, "blocks.3.mlp.fc1")
        .load_state(&state)
        .unwrap_err()
        .to_string();
    assert!(err.contains("target"), "{err}");
    // A head of another latent size.
    let kl = KlObjective::<B>::new(
        KlConfig {
            latent_dim: 32,
            ..KlConfig::paper()
        },
        64,
        1,
        &device(),
    )
    .unwrap();
    let mut e = FungiExtractor::builder(golden_vit())
        .seed(1)
        .objective(Box::new(kl))
        .build()
        .unwrap();
    let err = e.load_state(&state).unwrap_err().to_string();
    assert!(
        err.contains("objective `kl` settings")
            && err.contains("latent_dim")
            && err.contains("32")
            && err.contains("768"),
        "{err}"
    );
    // Not a state file at all.
    let err = e
        .load_state(&golden_dir().join("kl.safetensors"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("not a fungi state file"), "{err}");
}

#[test]
fn state_of_other_settings_or_weights_is_refused_naming_what_differs() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.safetensors");
    seeded_kl_extractor(1, "blocks.3.attn.proj")
        .save_state(&state)
        .unwrap();
    // Another KL temperature.
    let kl = KlObjective::<B>::new(KlConfig::fungivision(), 64, 1, &device()).unwrap();
    let mut e = FungiExtractor::builder(golden_vit())
        .seed(1)
        .target_layer("blocks.3.attn.proj")
        .objective(Box::new(kl))
        .build()
        .unwrap();
    let err = e.load_state(&state).unwrap_err().to_string();
    assert!(
        err.contains("objective `kl` settings") && err.contains("temperature"),
        "{err}"
    );
    // Other weights (same architecture).
    let mut vit = golden_vit();
    let b = vit.blocks[0].norm1.bias.val().inner().add_scalar(0.5);
    vit.blocks[0].norm1.bias = Param::from_tensor(Tensor::from_inner(b));
    let kl = KlObjective::<B>::new(KlConfig::paper(), 64, 1, &device()).unwrap();
    let mut e = FungiExtractor::builder(vit)
        .seed(1)
        .target_layer("blocks.3.attn.proj")
        .objective(Box::new(kl))
        .build()
        .unwrap();
    let err = e.load_state(&state).unwrap_err().to_string();
    assert!(err.contains("weights"), "{err}");
    // Another projection size.
    let kl = KlObjective::<B>::new(KlConfig::paper(), 64, 1, &device()).unwrap();
    let mut cfg = fungi_core::ExtractorConfig {
        seed: 1,
        target_layer: Some("blocks.3.attn.proj".into()),
        ..Default::default()
    };
    cfg.projection_dim = Some(32);
    let mut e = FungiExtractor::builder(golden_vit())
        .config(cfg)
        .objective(Box::new(kl))
        .build()
        .unwrap();
    let err = e.load_state(&state).unwrap_err().to_string();
    assert!(err.contains("projection_dim"), "{err}");
}

#[test]
fn sizes_that_cannot_fit_are_refused_up_front() {
    let kl = KlObjective::<B>::new(KlConfig::paper(), 64, 1, &device()).unwrap();
    let cfg = fungi_core::ExtractorConfig {
        projection_dim: Some(100_000_000),
        ..Default::default()
    };
    let err = FungiExtractor::builder(golden_vit())
        .config(cfg)
        .objective(Box::new(kl))
        .build()
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("projection [100000000, 4160]") && err.contains("would need"),
        "{err}"
    );
    let kl = KlObjective::<B>::new(KlConfig::paper(), 64, 1, &device()).unwrap();
    let cfg = fungi_core::ExtractorConfig {
        projection_dim: Some(0),
        ..Default::default()
    };
    let err = FungiExtractor::builder(golden_vit())
        .config(cfg)
        .objective(Box::new(kl))
        .build()
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("projection_dim") && err.contains("at least 1"),
        "{err}"
    );
}

#[test]
fn paper_projection_files_load() {
    // The paper's `torch.save({"scaling", "projection"})` and the same matrix as I8 safetensors.
    let a = Projection::load(&fixtures().join("paper_projection.pth")).unwrap();
    let b = Projection::load(&fixtures().join("paper_projection.safetensors")).unwrap();
    assert_eq!((a.out_dim(), a.in_dim()), (8, 65));
    assert_eq!(a, b);
    assert!((a.scaling() - 1.0 / 8f32.sqrt()).abs() < 1e-7);
    assert!(a.memory_bytes() <= 8 * 2 * 8, "±1 matrices are bit-packed");
    let e = Projection::load(&fixtures().join("dinov2_tiny_f16.safetensors"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("projection"), "{e}");
}

#[test]
fn projection_is_materialised_once_per_run_and_features_leave_the_device_once_per_batch() {
    use fungi_core::Residency;
    let imgs = golden_images(true).unwrap();
    let idx: Vec<u64> = (0..8).collect();
    let reference = kl_extractor("blocks.3.attn.proj", GradPath::Auto, 8)
        .extract(&imgs, &idx)
        .unwrap();
    for r in [Residency::Host, Residency::Dense, Residency::Packed] {
        // Batches of 2: 4 batches per call.
        let mut ex = kl_extractor("blocks.3.attn.proj", GradPath::Auto, 2);
        ex.set_projection_residency(r);
        let f = ex.extract(&imgs, &idx).unwrap();
        assert_eq!(
            ex.projection_materialisations(),
            1,
            "{r}: one device copy per run"
        );
        assert_eq!(
            ex.host_reads(),
            4,
            "{r}: one host copy per batch, no gradient copies"
        );
        let again = ex.extract(&imgs[..2], &idx[..2]).unwrap();
        assert_eq!(
            ex.projection_materialisations(),
            1,
            "{r}: reused by later calls"
        );
        assert_eq!(ex.host_reads(), 5);
        let dp = ex.device_projection().unwrap();
        assert_eq!(dp.residency(), r);
        let g: usize = 64 * 65;
        let bytes = match r {
            Residency::Host => 0,
            Residency::Dense => 64 * g * 4,
            _ => 64 * g.div_ceil(32) * 4,
        };
        assert_eq!(dp.uploaded_bytes(), bytes as u64, "{r}");
        assert_abs(
            &format!("{r} vs host"),
            &f,
            &reference.iter().map(|&v| v as f64).collect::<Vec<_>>(),
            1e-6,
        );
        assert_eq!(&again[..], &f[..again.len()], "{r}: batch-invariant");
    }
    // A new projection (load_state) is materialised again, once.
    let mut ex = kl_extractor("blocks.3.attn.proj", GradPath::Auto, 2);
    ex.set_projection_residency(Residency::Packed);
    ex.extract(&imgs[..2], &idx[..2]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.safetensors");
    ex.save_state(&state).unwrap();
    ex.load_state(&state).unwrap();
    ex.extract(&imgs[..4], &idx[..4]).unwrap();
    assert_eq!(ex.projection_materialisations(), 2);
}

#[test]
fn the_paper_kl_view_shares_its_forward_with_the_embedding_block() {
    // KL on the eval view (the paper's setting) sees exactly the embedding block's input: the
    // block is taken from that forward, and equals a separate eval forward.
    let imgs = golden_images(true).unwrap();
    let idx: Vec<u64> = (0..8).collect();
    let build = |with_embedding: bool| {
        let kl = KlObjective::<B>::new(KlConfig::paper(), 64, 0, &device()).unwrap();
        assert_eq!(fungi_core::Objective::<B>::eval_view(&kl), Some(0));
        FungiExtractor::builder(golden_vit())
            .target_layer("blocks.3.attn.proj")
            .batch_size(4)
            .include_embedding(with_embedding)
            .objective(Box::new(kl))
            .build()
            .unwrap()
    };
    let ex = build(true);
    let f = ex.extract(&imgs, &idx).unwrap();
    let emb = ex.embeddings(&imgs).unwrap();
    let kl_only = build(false).extract(&imgs, &idx).unwrap();
    let (first, second): (Vec<f32>, Vec<f32>) = (
        f.chunks(128).flat_map(|r| r[..64].to_vec()).collect(),
        f.chunks(128).flat_map(|r| r[64..].to_vec()).collect(),
    );
    let as64 = |v: &[f32]| v.iter().map(|&x| x as f64).collect::<Vec<_>>();
    assert_abs("shared embedding block", &first, &as64(&emb), 1e-5);
    assert_abs(
        "kl block with the shared forward",
        &second,
        &as64(&kl_only),
        1e-6,
    );
}

#[test]
fn a_bf16_prefix_stays_close_to_f32_and_really_runs_in_bf16() {
    use fungi_backbone::Precision;
    let imgs = golden_images(true).unwrap();
    let idx: Vec<u64> = (0..8).collect();
    let f32_features = kl_extractor("blocks.3.attn.proj", GradPath::Auto, 4)
        .extract(&imgs, &idx)
        .unwrap();
    for p in [Precision::Bf16, Precision::F16] {
        let mut ex = kl_extractor("blocks.3.attn.proj", GradPath::Auto, 4);
        let dtype = p.half_dtype().unwrap().into();
        if !<TestBackend as burn::tensor::backend::Backend>::supports_dtype(&device(), dtype) {
            // burn-ndarray has no half tensors: a clear error, and the extractor unchanged.
            let e = ex.set_prefix_precision(p).unwrap_err().to_string();
            assert!(e.contains(&p.to_string()) && e.contains("use f32"), "{e}");
            assert_eq!(ex.engine().prefix_precision(), Precision::F32);
            continue;
        }
        ex.set_prefix_precision(p).unwrap();
        assert_eq!(ex.engine().prefix_precision(), p);
        let f = ex.extract(&imgs, &idx).unwrap();
        assert!(f.iter().all(|v| v.is_finite()));
        let reference: Vec<f64> = f32_features.iter().map(|&v| v as f64).collect();
        let cos = cosine_rows(&f, &reference, 64);
        let max_diff = f
            .iter()
            .zip(&f32_features)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        // Half products move the features measurably, yet keep them pointing the same way.
        assert!(cos >= 0.99, "{p}: min cosine to f32 {cos}");
        assert!(
            max_diff > 1e-6,
            "{p}: identical to f32: the half path did not run"
        );
        eprintln!("{p}: min cosine to f32 {cos:.6}, max |diff| {max_diff:.2e}");
    }
}
