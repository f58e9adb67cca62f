//! Dense FUNGI (fungi-dense) on the golden tiny DINO model: per-token gradients against the
//! ordinary per-image gradient, the unmaterialised projection against the materialised one,
//! batch invariance, the neighbour fix, and an independent torch reference
//! (`tests/scripts/make_dense_fixtures.py`).

use burn::module::{Module, Param};
use burn::tensor::{Tensor, TensorData};
use fungi_core::StateTensor;
use fungi_dense::{paper_transform, DenseExtractor, DenseSettings};
use fungi_tests::*;

type B = TestAutodiff;
type I = TestBackend;

fn settings(target: &str, batch: usize) -> DenseSettings {
    DenseSettings::parse(
        &format!(
            "target_layer = \"{target}\"\nbatch_size = {batch}\nprojection_dim = 24\n\
             [dense]\nimage_size = 64\nlatent_dim = 16\nneighbours = 2\ndrop = 0.5\n"
        ),
        "test.toml",
    )
    .unwrap()
}

/// Deterministic pseudo-random values in [-1, 1).
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

fn extractor(target: &str, batch: usize) -> DenseExtractor<B> {
    let mut ex = DenseExtractor::new(golden_vit(), settings(target, batch)).unwrap();
    ex.set_support(StateTensor {
        shape: vec![12, 64],
        data: values(12 * 64, 7),
    })
    .unwrap();
    ex
}

fn views(n: usize) -> Vec<f32> {
    values(n * 3 * 64 * 64, 3)
        .into_iter()
        .map(|v| 2.0 * v)
        .collect()
}

fn host<const D: usize>(t: Tensor<I, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().into_vec().unwrap()
}

fn tensor4(v: Vec<f32>, n: usize) -> Tensor<I, 4> {
    Tensor::from_data(TensorData::new(v, [n, 3, 64, 64]), &device())
}

/// `Σ_t δ_t ⊗ [a_t, 1]` per image, `[n, O·(I+1)]` (fungivision's layout).
fn summed_token_grads(ex: &DenseExtractor<B>, v: Vec<f32>, idx: &[u64]) -> Vec<f32> {
    let n = idx.len();
    let r = ex.per_token(tensor4(v, n), idx, None).unwrap();
    let [_, t, _] = r.input.dims();
    let a1 = Tensor::cat(vec![r.input, Tensor::ones([n, t, 1], &device())], 2);
    host(r.delta.swap_dims(1, 2).matmul(a1))
}

/// The same loss with the target Linear's weight and bias tracked on a whole-network autodiff
/// pass, one image at a time: `[n, O·(I+1)]`.
fn brute_force_grads(ex: &DenseExtractor<B>, target: &str, v: &[f32], idx: &[u64]) -> Vec<f64> {
    let t = fungi_backbone::TargetLayer::parse(target, 4).unwrap();
    let per = 3 * 64 * 64;
    let mut out = Vec::new();
    for (b, &gi) in idx.iter().enumerate() {
        let mut model = golden_vit().no_grad();
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
            TensorData::new(v[b * per..(b + 1) * per].to_vec(), [1, 3, 64, 64]),
            &device(),
        );
        let tokens = model.forward_tokens(x);
        let [_, tt, e] = tokens.dims();
        let tokens = tokens.reshape([tt, e]);
        let nb = ex.neighbours(tokens.clone().inner()).unwrap();
        let neg = ex.negatives(&nb, &ex.kept_negatives(gi, tt * 2)).unwrap();
        let grads = ex.image_loss(tokens, neg).sum().backward();
        let lin = model.linear(t).unwrap();
        let gw = lin.weight.val().grad(&grads).unwrap();
        let gb = lin.bias.as_ref().unwrap().val().grad(&grads).unwrap();
        let [i, o] = gw.dims();
        out.extend(linear_grad_rows(&host(gw), &host(gb), i, o));
    }
    out
}

#[test]
fn per_token_gradients_sum_to_the_per_image_gradient() {
    let idx = [0u64, 5, 9];
    for target in ["blocks.3.attn.proj", "blocks.1.mlp.fc1"] {
        let ex = extractor(target, 3);
        let got = summed_token_grads(&ex, views(3), &idx);
        let want = brute_force_grads(&ex, target, &views(3), &idx);
        assert_eq!(got.len(), want.len());
        assert_rel(
            &format!("Σ_t per-token grads vs per-image grad, {target}"),
            &got,
            &want,
            1e-4,
        );
    }
}

#[test]
fn projected_features_equal_the_materialised_computation() {
    let ex = extractor("blocks.3.attn.proj", 2);
    let idx = [1u64, 2];
    let r = ex.per_token(tensor4(views(2), 2), &idx, None).unwrap();
    let (d, a, tok) = (host(r.delta), host(r.input), host(r.tokens));
    let (t, o, i, e) = (17, 64, 64, 64);
    // Brute force: every patch token's gradient [O·(I+1)] formed, then the ordinary projection.
    let mut g = Vec::new();
    for b in 0..2 {
        for tt in 1..t {
            let row = (b * t + tt) * o;
            for oo in 0..o {
                for ii in 0..=i {
                    let ai = if ii < i {
                        a[(b * t + tt) * i + ii]
                    } else {
                        1.0
                    };
                    g.push(d[row + oo] * ai);
                }
            }
        }
    }
    let g = Tensor::<I, 2>::from_data(TensorData::new(g, [32, o * (i + 1)]), &device());
    let proj = host(fungi_core::l2_normalize(
        ex.projection().project(g).unwrap(),
    ));
    let toks: Vec<f32> = (0..2)
        .flat_map(|b| tok[(b * t + 1) * e..(b + 1) * t * e].to_vec())
        .collect();
    let toks = host(fungi_core::l2_normalize(Tensor::<I, 2>::from_data(
        TensorData::new(toks, [32, e]),
        &device(),
    )));
    let want: Vec<f64> = (0..32)
        .flat_map(|p| {
            let h = std::f64::consts::FRAC_1_SQRT_2;
            let mut row: Vec<f64> = toks[p * e..(p + 1) * e]
                .iter()
                .map(|&v| v as f64 * h)
                .collect();
            row.extend(proj[p * 24..(p + 1) * 24].iter().map(|&v| v as f64 * h));
            row
        })
        .collect();
    // One projection chunk, and one row of the projection at a time.
    let mut ex = ex;
    for budget in [64 << 20, 1] {
        ex.set_budgets(budget, 1);
        let got = host(ex.features_from_views(views(2), &idx, None).unwrap());
        assert_eq!(got.len(), 2 * 16 * 88);
        assert_abs(
            &format!("dense features, budget {budget}"),
            &got,
            &want,
            2e-6,
        );
    }
}

#[test]
fn features_do_not_depend_on_the_batch() {
    let imgs = golden_images(true).unwrap()[..3].to_vec();
    let idx = [10u64, 11, 12];
    let batched = extractor("blocks.3.attn.proj", 3)
        .extract(&imgs, &idx)
        .unwrap();
    let single = extractor("blocks.3.attn.proj", 1);
    let per = 16 * 88;
    for k in 0..3 {
        let one = single.extract(&imgs[k..k + 1], &idx[k..k + 1]).unwrap();
        let want: Vec<f64> = batched[k * per..(k + 1) * per]
            .iter()
            .map(|&v| v as f64)
            .collect();
        assert_abs(
            &format!("image {k} alone vs in a batch of 3"),
            &one,
            &want,
            1e-5,
        );
    }
    // Another global index draws other dropped negatives: the features move.
    let other = single.extract(&imgs[..1], &[99]).unwrap();
    let (dmax, _) = max_abs_diff(
        &other,
        &batched[..per].iter().map(|&v| v as f64).collect::<Vec<_>>(),
    );
    assert!(
        dmax > 1e-4,
        "the dropped negatives did not depend on the image index ({dmax})"
    );
}

#[test]
fn the_k_th_negative_is_the_k_th_neighbour_row() {
    let ex = extractor("blocks.3.attn.proj", 1);
    let v = views(1);
    let tokens = ex
        .engine()
        .inner()
        .forward_tokens(tensor4(v, 1))
        .reshape([17, 64]);
    let nb = ex.neighbours(tokens.clone()).unwrap();
    let support = ex.support().unwrap().clone();
    let s = host(
        tokens.matmul(
            Tensor::<I, 2>::from_data(TensorData::new(support.data.clone(), [12, 64]), &device())
                .transpose(),
        ),
    );
    for t in 0..17 {
        let (first, second) = (nb[2 * t] as usize, nb[2 * t + 1] as usize);
        // Exact: the best and second-best rows, in that order.
        let mut order: Vec<usize> = (0..12).collect();
        order.sort_by(|&x, &y| s[t * 12 + y].total_cmp(&s[t * 12 + x]));
        assert_eq!((first, second), (order[0], order[1]), "token {t}");
    }
    let all: Vec<usize> = (0..34).collect();
    let neg = host(ex.negatives(&nb, &all).unwrap());
    let rows: Vec<f32> = nb
        .iter()
        .flat_map(|&r| support.data[r as usize * 64..(r as usize + 1) * 64].to_vec())
        .collect();
    let bank = Tensor::<I, 2>::from_data(TensorData::new(rows.clone(), [34, 64]), &device());
    let want = host(fungi_core::l2_normalize(ex.head().apply_inner(bank)));
    let want64: Vec<f64> = want.iter().map(|&v| v as f64).collect();
    assert_abs(
        "negative t·N + k = head(row of neighbour k of t)",
        &neg,
        &want64,
        1e-6,
    );
    // The paper's `memory[idx].reshape(B, T, E, N).permute(0, 1, 3, 2)` reads each token's
    // 2 x 64 block as 64 x 2: its "negative k" is a strided mix of both rows, not row k.
    let scrambled: Vec<f32> = (0..17)
        .flat_map(|t| {
            let block = &rows[t * 128..(t + 1) * 128];
            (0..2).flat_map(move |k| (0..64).map(move |c| block[c * 2 + k]))
        })
        .collect();
    let sb = Tensor::<I, 2>::from_data(TensorData::new(scrambled, [34, 64]), &device());
    let paper = host(fungi_core::l2_normalize(ex.head().apply_inner(sb)));
    let (d, _) = max_abs_diff(&paper, &want64);
    assert!(
        d > 0.1,
        "the scramble would not have changed the negatives ({d})"
    );
}

fn reference() -> (Golden, DenseSettings) {
    let g = Golden::fixture("dense/reference.safetensors").unwrap();
    let bytes = std::fs::read(fixtures().join("dense/reference.safetensors")).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let text = meta.metadata().as_ref().unwrap()["settings"].clone();
    (g, DenseSettings::parse(&text, "settings.json").unwrap())
}

#[test]
fn a_state_made_elsewhere_gives_the_torch_reference_features() {
    let (g, settings) = reference();
    let mut ex = DenseExtractor::new(golden_vit(), settings).unwrap();
    ex.load_state(&fixtures().join("dense/state.safetensors"))
        .unwrap();
    assert_eq!(ex.feature_dim(), 64 + 24);
    let (_, v) = g.f32("views").unwrap();
    let (ks, kept) = g.i64("kept").unwrap();
    let kept: Vec<Vec<usize>> = kept
        .chunks(ks[1])
        .map(|c| c.iter().map(|&x| x as usize).collect())
        .collect();
    // Neighbours as torch's exact top-k.
    let tokens = ex
        .engine()
        .inner()
        .forward_tokens(tensor4(v.clone(), 2))
        .reshape([34, 64]);
    let nb: Vec<i64> = ex
        .neighbours(tokens)
        .unwrap()
        .into_iter()
        .map(i64::from)
        .collect();
    assert_eq!(nb, g.i64("neighbours").unwrap().1);
    // Summed over the tokens, the per-token gradients are torch's per-image gradient.
    let r = ex
        .per_token(tensor4(v.clone(), 2), &[0, 1], Some(&kept))
        .unwrap();
    let a1 = Tensor::cat(vec![r.input, Tensor::ones([2, 17, 1], &device())], 2);
    let summed = host(r.delta.swap_dims(1, 2).matmul(a1));
    let want = g.f64("per_image_grad_f64").unwrap().1;
    assert_rel(
        "Σ_t per-token grads vs torch's per-image grad",
        &summed,
        &want,
        1e-4,
    );
    let f = host(ex.features_from_views(v, &[0, 1], Some(&kept)).unwrap());
    let want = g.f64("features_f64").unwrap().1;
    assert_abs(
        "dense features vs torch (f64, materialised)",
        &f,
        &want,
        1e-4,
    );
    // The paper's transform: Pillow bilinear resize and its normalisation (std 0.255).
    let img = golden_images(true).unwrap()[1].clone();
    let t = paper_transform(&img, 64);
    assert_abs(
        "paper transform",
        &t,
        &g.f64("transform_01_coffee").unwrap().1,
        1e-6,
    );
}

#[test]
fn states_round_trip_and_bad_inputs_are_clear_errors() {
    let ex = extractor("blocks.3.attn.proj", 2);
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("s.safetensors");
    ex.save_state(&p).unwrap();
    let mut other = DenseExtractor::new(golden_vit(), settings("blocks.3.attn.proj", 2)).unwrap();
    other.load_state(&p).unwrap();
    let a = ex
        .extract(&golden_images(true).unwrap()[..1], &[4])
        .unwrap();
    let b = other
        .extract(&golden_images(true).unwrap()[..1], &[4])
        .unwrap();
    assert!(a == b, "a saved and reloaded state gives other features");
    assert_eq!(std::fs::read(&p).unwrap(), other.state_bytes(&p).unwrap());
    // Another target layer, other [dense] settings.
    let mut wrong = DenseExtractor::new(golden_vit(), settings("blocks.2.attn.proj", 2)).unwrap();
    let e = wrong.load_state(&p).unwrap_err().to_string();
    assert!(e.contains("target_layer"), "{e}");
    let mut s = settings("blocks.3.attn.proj", 2);
    s.dense.latent_dim = 8;
    let e = DenseExtractor::new(golden_vit(), s)
        .unwrap()
        .load_state(&p)
        .unwrap_err()
        .to_string();
    assert!(e.contains("latent_dim"), "{e}");
    // No views, views of another size.
    let e = ex
        .features_from_views(vec![], &[], None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("at least one"), "{e}");
    assert!(ex.features_from_views(vec![0.0; 10], &[0], None).is_err());
    // Not ready, empty support, sizes.
    let mut fresh = DenseExtractor::new(golden_vit(), settings("blocks.3.attn.proj", 2)).unwrap();
    let e = fresh
        .extract(&golden_images(true).unwrap()[..1], &[0])
        .unwrap_err()
        .to_string();
    assert!(e.contains("support bank"), "{e}");
    let e = fresh
        .set_support(StateTensor {
            shape: vec![0, 64],
            data: vec![],
        })
        .unwrap_err()
        .to_string();
    assert!(e.contains("empty support bank"), "{e}");
    let e = fresh
        .set_support(StateTensor {
            shape: vec![1, 64],
            data: vec![0.5; 64],
        })
        .unwrap_err()
        .to_string();
    assert!(e.contains("neighbours"), "{e}");
    let mut s = settings("blocks.3.attn.proj", 2);
    s.dense.image_size = 72;
    let e = DenseExtractor::new(golden_vit(), s)
        .unwrap_err()
        .to_string();
    assert!(e.contains("dense.image_size") && e.contains("16"), "{e}");
}
