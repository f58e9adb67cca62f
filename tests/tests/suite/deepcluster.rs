//! The DeepCluster objective: memory bank + k-means in setup, targets, loss value, invariances.

use burn::tensor::{Tensor, TensorData};
use fungi_core::{FungiExtractor, Objective};
use fungi_deepcluster::{DeepClusterConfig, DeepClusterObjective};
use fungi_tests::*;

type B = TestAutodiff;

fn config() -> DeepClusterConfig {
    DeepClusterConfig {
        nmb_prototypes: vec![4, 3, 5],
        ..Default::default()
    }
}

fn extractor(batch: usize) -> FungiExtractor<B> {
    FungiExtractor::builder(golden_vit())
        .seed(5)
        .target_layer("blocks.3.attn.proj")
        .batch_size(batch)
        .include_embedding(false)
        .objective(Box::new(
            DeepClusterObjective::<B>::new(config(), 64, 5, &device()).unwrap(),
        ))
        .build()
        .unwrap()
}

fn set_up(batch: usize) -> (FungiExtractor<B>, Vec<fungi_aug::RgbImage>) {
    let imgs = golden_images(true).unwrap();
    let mut ex = extractor(batch);
    let load = |i: usize| Ok(imgs[i].clone());
    ex.setup(imgs.len(), &load).unwrap();
    (ex, imgs)
}

struct Ctx {
    imgs: Vec<fungi_aug::RgbImage>,
    vit: fungi_backbone::Vit<fungi_tests::TestBackend>,
}

impl fungi_core::SetupContext<B> for Ctx {
    fn len(&self) -> usize {
        self.imgs.len()
    }
    fn image(&self, i: usize) -> fungi_core::Result<fungi_aug::RgbImage> {
        Ok(self.imgs[i].clone())
    }
    fn embed(&self, v: Tensor<fungi_tests::TestBackend, 4>) -> Tensor<fungi_tests::TestBackend, 2> {
        self.vit.forward(v)
    }
    fn device(&self) -> <fungi_tests::TestBackend as burn::tensor::backend::BackendTypes>::Device {
        device()
    }
    fn seed(&self) -> u64 {
        5
    }
}

#[test]
fn training_images_are_assigned_to_their_kmeans_clusters() {
    // Setup draws each training image's memory crops from the image's own stream; extraction
    // draws the same crops, so the loss targets are exactly the final k-means assignments.
    let ctx = Ctx {
        imgs: golden_images(true).unwrap(),
        vit: burn::module::AutodiffModule::valid(&golden_vit()),
    };
    let mut dc = DeepClusterObjective::<B>::new(config(), 64, 5, &device()).unwrap();
    dc.setup(&ctx).unwrap();
    let a = dc.assignments().to_vec();
    assert_eq!(a.len(), 3);
    for (i, img) in ctx.imgs.iter().enumerate() {
        let mut rng = fungi_core::rng::stream(5, "deepcluster", i as u64);
        let views = dc.views(img, &mut rng);
        let x = Tensor::<fungi_tests::TestBackend, 4>::from_data(
            TensorData::new(views, [10, 3, 224, 224]),
            &device(),
        );
        let t = dc
            .image_targets(Tensor::<B, 2>::from_inner(ctx.vit.forward(x)))
            .unwrap();
        assert_eq!(t, vec![a[0][i], a[1][i], a[2][i]], "image {i}");
    }
    // Clusters are used (not all images in one cluster).
    assert!(a[0].iter().collect::<std::collections::BTreeSet<_>>().len() > 1);
    let state = dc.state();
    assert_eq!(state["prototypes.0.weight"].shape, vec![4, 128]);
    assert_eq!(state["projection.weight"].shape, vec![128, 64]);
}

#[test]
fn loss_value_matches_a_host_computation() {
    let (ex, imgs) = set_up(8);
    let mut dc = DeepClusterObjective::<B>::new(config(), 64, 5, &device()).unwrap();
    let state = ex.objectives()[0].state();
    dc.load_state(&state).unwrap();
    let views = ex.views(0, &imgs[2..3], &[2]).unwrap();
    let x = Tensor::<fungi_tests::TestBackend, 4>::from_data(
        TensorData::new(views, [10, 3, 224, 224]),
        &device(),
    );
    let emb_inner = ex.engine().inner().forward(x);
    let emb: Vec<f32> = emb_inner
        .clone()
        .into_data()
        .convert::<f32>()
        .into_vec()
        .unwrap();
    let got: f32 = dc
        .image_loss(Tensor::<B, 2>::from_inner(emb_inner.clone()))
        .unwrap()
        .into_scalar();
    let targets = dc
        .image_targets(Tensor::<B, 2>::from_inner(emb_inner))
        .unwrap();
    // Host: z = normalize(W e); scores_h = z · P_hᵀ / 0.1; mean CE over 8 crops x 3 heads.
    let w = &state["projection.weight"].data;
    let mut total = 0.0f64;
    for (h, t) in targets.iter().enumerate() {
        let p = &state[&format!("prototypes.{h}.weight")];
        let k = p.shape[0];
        for v in 0..8 {
            let e = &emb[v * 64..(v + 1) * 64];
            let mut z: Vec<f64> = (0..128)
                .map(|r| (0..64).map(|c| w[r * 64 + c] as f64 * e[c] as f64).sum())
                .collect();
            let n = z.iter().map(|a| a * a).sum::<f64>().sqrt();
            z.iter_mut().for_each(|a| *a /= n);
            let s: Vec<f64> = (0..k)
                .map(|j| {
                    (0..128)
                        .map(|r| z[r] * p.data[j * 128 + r] as f64)
                        .sum::<f64>()
                        / 0.1
                })
                .collect();
            let m = s.iter().cloned().fold(f64::MIN, f64::max);
            let lse = m + s.iter().map(|a| (a - m).exp()).sum::<f64>().ln();
            total += lse - s[*t];
        }
    }
    let want = total / 24.0;
    assert!(
        (got as f64 - want).abs() <= 1e-4 * want.abs().max(1.0),
        "loss {got} vs host {want}"
    );
}

#[test]
fn deepcluster_is_batch_invariant_and_restored_from_a_state() {
    let (ex8, imgs) = set_up(8);
    let idx: Vec<u64> = (0..8).collect();
    let f8 = ex8.extract(&imgs, &idx).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let s = dir.path().join("dc.safetensors");
    ex8.save_state(&s).unwrap();
    let mut ex1 = extractor(1);
    ex1.load_state(&s).unwrap();
    let f1 = ex1.extract(&imgs, &idx).unwrap();
    let want: Vec<f64> = f8.iter().map(|&v| v as f64).collect();
    assert_abs(
        "deepcluster batch 1 (restored state) vs batch 8",
        &f1,
        &want,
        1e-5,
    );
    // Without setup or state it refuses clearly: an error naming the objective, not a panic.
    let msg = extractor(2)
        .extract(&imgs[..1], &[0])
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("deepcluster") && msg.contains("setup"),
        "{msg}"
    );
}

#[test]
fn batched_losses_equal_the_per_image_losses() {
    // The batched loss (targets as one argmax on the device) is the per-image loss, row by row.
    let (ex, imgs) = set_up(8);
    let dc = &ex.objectives()[0];
    let idx: Vec<u64> = (0..8).collect();
    let views = ex.views(0, &imgs, &idx).unwrap();
    let x = Tensor::<fungi_tests::TestBackend, 4>::from_data(
        TensorData::new(views, [80, 3, 224, 224]),
        &device(),
    );
    let emb = Tensor::<B, 2>::from_inner(ex.engine().inner().forward(x)).reshape([8, 10, 64]);
    let batched: Vec<f32> = dc
        .batch_losses(emb.clone())
        .unwrap()
        .into_data()
        .convert::<f32>()
        .into_vec()
        .unwrap();
    for (b, got) in batched.iter().enumerate() {
        let one: f32 = dc
            .image_loss(
                emb.clone()
                    .slice([b..b + 1, 0..10, 0..64])
                    .reshape([10, 64]),
            )
            .unwrap()
            .into_scalar();
        assert!(
            (got - one).abs() <= 1e-5 * one.abs().max(1.0),
            "image {b}: batched {got} vs per image {one}"
        );
    }
}
