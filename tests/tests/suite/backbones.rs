//! The non-DINO ViT families (timm, torchvision, Hugging Face) against their original libraries:
//! tiny random models made by `tests/scripts/make_backbone_fixtures.py`, their native state
//! dicts, their eval transforms on the golden images (bit-exact views), their `model(x)`
//! (<= 1e-4 relative), ONNX exports, and per-image gradients of each family's target layer
//! against a brute-force backward.

use burn::module::Param;
use burn::tensor::{Tensor, TensorData};
use fungi_backbone::keys::parse_target;
use fungi_backbone::{Layout, Site, StateDict, Vit, VitConfig};
use fungi_core::{EmbeddingTransform, FungiExtractor, GradPath};
use fungi_kl::{KlConfig, KlObjective};
use fungi_tests::*;

type B = TestBackend;
type A = TestAutodiff;

const CASES: &[&str] = &[
    "timm_augreg",
    "timm_clip",
    "timm_deit3",
    "timm_mae",
    "timm_reg",
    "timm_misc",
    "tv_vit",
    "tv_vit_head",
    "hf_dinov2",
    "hf_dinov2_interp",
    "hf_vit",
];

fn dir() -> std::path::PathBuf {
    fixtures().join("backbones")
}

fn arch(case: &str) -> VitConfig {
    VitConfig::from_json_file(dir().join(format!("{case}.json")))
        .unwrap_or_else(|e| panic!("{case}.json: {e}"))
}

fn model<Bk: fungi_backbone::VitOps>(case: &str, weights: &str) -> Vit<Bk> {
    Vit::from_file(&arch(case), dir().join(weights), &Default::default())
        .unwrap_or_else(|e| panic!("{case}: {weights}: {e}"))
}

fn reference() -> Golden {
    Golden::open(dir().join("reference.safetensors")).unwrap()
}

fn embed(m: &Vit<B>, views: &[f32], n: usize, side: usize) -> Vec<f32> {
    let x = Tensor::<B, 4>::from_data(
        TensorData::new(views.to_vec(), [n, 3, side, side]),
        &device(),
    );
    m.forward(x)
        .into_data()
        .convert::<f32>()
        .into_vec()
        .unwrap()
}

#[test]
fn every_arch_json_parses_with_its_family_layout_and_transform() {
    for case in CASES {
        let c = arch(case);
        let want = match &case[..2] {
            "ti" => Layout::Timm,
            "tv" => Layout::Torchvision,
            _ if case.starts_with("hf_vit") => Layout::HfVit,
            _ => Layout::HfDinov2,
        };
        assert_eq!(c.layout, want, "{case}");
        // timm and torchvision archs carry their eval transform; HF configs only with a
        // `preprocessor` (PROCESSOR_CASES).
        assert_eq!(c.transform.is_some(), !case.starts_with("hf_"), "{case}");
    }
    let c = arch("timm_clip");
    assert!(c.pre_norm && !c.patch_bias && c.num_classes == 16 && c.layer_norm_eps == 1e-5);
    let c = arch("timm_mae");
    assert!(
        c.fc_norm && !c.final_norm,
        "global_pool avg with fc_norm None: fc_norm, no norm"
    );
    assert_eq!(arch("timm_reg").num_prefix_tokens(), 5);
    assert_eq!(arch("timm_misc").num_prefix_tokens(), 0);
}

#[test]
fn model_transforms_give_the_original_views_bit_exactly() {
    let r = reference();
    let images = golden_images(true).unwrap();
    for case in CASES.iter().filter(|c| !c.starts_with("hf_")) {
        let c = arch(case);
        let t = c.transform.unwrap();
        let got: Vec<f32> = images.iter().flat_map(|im| t.apply(im)).collect();
        let (shape, want) = r.f32(&format!("{case}.views")).unwrap();
        assert_eq!(shape, vec![8, 3, 32, 32], "{case}");
        let bad = got
            .iter()
            .zip(&want)
            .filter(|(a, b)| a.to_bits() != b.to_bits())
            .count();
        assert_eq!(
            bad,
            0,
            "{case}: {bad} of {} values differ from the original transform",
            want.len()
        );
    }
}

/// transformers' image processors (tests/scripts/make_hf_processor_fixtures.py): Dinov2's
/// `BitImageProcessor` and `ViTImageProcessor`, torchvision and PIL backends.
const PROCESSOR_CASES: &[(&str, &str)] = &[
    ("hf_dinov2_proc_torch", "hf_dinov2"),
    ("hf_dinov2_proc_pil", "hf_dinov2"),
    ("hf_vit_proc_torch", "hf_vit"),
    ("hf_vit_proc_pil", "hf_vit"),
];

#[test]
fn hugging_face_image_processors_give_their_views_bit_exactly_and_their_embeddings() {
    let r = Golden::open(dir().join("hf_processors.safetensors")).unwrap();
    let images = golden_images(true).unwrap();
    for (case, weights) in PROCESSOR_CASES {
        let c = arch(case);
        let t = c
            .transform
            .unwrap_or_else(|| panic!("{case}: no transform"));
        let et = t;
        let got: Vec<f32> = images.iter().flat_map(|im| et.apply(im)).collect();
        let (shape, want) = r.f32(&format!("{case}.views")).unwrap();
        assert_eq!(shape, vec![8, 3, 32, 32], "{case}");
        let bad: Vec<usize> = (0..want.len())
            .filter(|&i| got[i].to_bits() != want[i].to_bits())
            .collect();
        assert!(
            bad.is_empty(),
            "{case}: {} of {} values differ from transformers' processor (first at {}: {} vs {})",
            bad.len(),
            want.len(),
            bad[0],
            got[bad[0]],
            want[bad[0]]
        );
        let m = model::<B>(case, &format!("{weights}.safetensors"));
        let (_, want) = r.f64(&format!("{case}.embedding")).unwrap();
        assert_rel(
            &format!("{case} model(x)"),
            &embed(&m, &got, 8, 32),
            &want,
            1e-4,
        );
    }
}

#[test]
fn embeddings_match_the_original_models() {
    let r = reference();
    for case in CASES {
        let m = model::<B>(case, &format!("{case}.safetensors"));
        let (_, views) = r.f32(&format!("{case}.views")).unwrap();
        let (shape, want) = r.f64(&format!("{case}.embedding")).unwrap();
        assert_eq!(m.out_dim(), shape[1], "{case}");
        let got = embed(&m, &views, 8, 32);
        assert_rel(&format!("{case} model(x)"), &got, &want, 1e-4);
    }
}

#[test]
fn transformers_5_state_dict_names_load_as_the_saved_layout() {
    // `ViTModel.state_dict()` in transformers 5 (`layers.N.attention.q_proj`, `mlp.fc1`) vs the
    // file `save_pretrained` writes (`encoder.layer.N.attention.attention.query`, ...).
    let a = model::<B>("hf_vit", "hf_vit.safetensors");
    let b = model::<B>("hf_vit", "hf_vit_v5.safetensors");
    let (_, views) = reference().f32("hf_vit.views").unwrap();
    assert_eq!(embed(&a, &views, 8, 32), embed(&b, &views, 8, 32));
}

#[test]
fn onnx_exports_load_the_same_parameters_as_the_state_dict() {
    for case in ["timm_augreg", "hf_dinov2_interp"] {
        let from_onnx = model::<B>(case, &format!("{case}.onnx"));
        let from_st = model::<B>(case, &format!("{case}.safetensors"));
        let a = from_onnx.to_state_dict();
        let b = from_st.to_state_dict();
        assert_eq!(
            a.tensors.keys().collect::<Vec<_>>(),
            b.tensors.keys().collect::<Vec<_>>(),
            "{case}"
        );
        for (k, t) in &a.tensors {
            let u = &b.tensors[k];
            assert_eq!(t.shape, u.shape, "{case}: {k}");
            assert_eq!(
                t.data.as_ref().unwrap(),
                u.data.as_ref().unwrap(),
                "{case}: {k}"
            );
        }
        // The raw reader names every initializer the ViT needs (and only the backbone's).
        let sd = StateDict::read(dir().join(format!("{case}.onnx"))).unwrap();
        assert!(!sd.tensors.is_empty(), "{case}");
        let r = reference();
        let (_, views) = r.f32(&format!("{case}.views")).unwrap();
        let (_, want) = r.f64(&format!("{case}.embedding")).unwrap();
        assert_rel(
            &format!("{case} from ONNX"),
            &embed(&from_onnx, &views, 8, 32),
            &want,
            1e-4,
        );
    }
}

#[test]
fn targets_are_named_as_in_each_checkpoint() {
    let cases = [
        (
            Layout::Torchvision,
            "encoder.layers.encoder_layer_1.self_attention.out_proj",
            1,
            Site::Proj,
        ),
        (
            Layout::Torchvision,
            "encoder.layers.encoder_layer_0.mlp.3",
            0,
            Site::Fc2,
        ),
        (
            Layout::HfDinov2,
            "encoder.layer.1.attention.output.dense",
            1,
            Site::Proj,
        ),
        (Layout::HfDinov2, "encoder.layer.0.mlp.fc1", 0, Site::Fc1),
        (
            Layout::HfVit,
            "encoder.layer.1.intermediate.dense",
            1,
            Site::Fc1,
        ),
        (Layout::HfVit, "layers.1.attention.o_proj", 1, Site::Proj),
        (Layout::Timm, "blocks.1.attn.qkv", 1, Site::Qkv),
        (
            Layout::Torchvision,
            "backbone.blocks.1.attn.proj",
            1,
            Site::Proj,
        ),
    ];
    for (layout, path, block, site) in cases {
        let t = parse_target(layout, path, 2).unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!((t.block, t.site), (block, site), "{path}");
    }
    let e = parse_target(
        Layout::Torchvision,
        "encoder.layers.encoder_layer_2.mlp.3",
        2,
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("encoder_layer_2") && e.contains("encoder.layers.encoder_layer_"),
        "{e}"
    );
}

/// The KL objective's 224 px views of the first `n` golden images (the tiny models interpolate
/// their position embeddings to the 14 x 14 ... 28 x 28 grid).
fn kl_views(n: usize) -> Vec<f32> {
    let (_, v) = Golden::open("kl.safetensors")
        .unwrap()
        .u8("views_u8")
        .unwrap();
    let per = 3 * 224 * 224;
    fungi_aug::normalize::chw_u8_to_normalized(
        &v[..n * per],
        224 * 224,
        fungi_aug::normalize::ScaleFormula::MultiplyReciprocal,
    )
}

fn kl(e: usize) -> KlObjective<A> {
    KlObjective::<A>::new(KlConfig::fungivision(), e, 5, &device()).unwrap()
}

/// One backward per image through the whole network with only the target Linear tracked (a
/// zero bias added where the layer has none: fungivision's `[O, I+1]` layout always carries the
/// bias column, `Σ δ`).
fn brute_force(case: &str, target: &str, views: &[f32], n: usize) -> Vec<f64> {
    let base = model::<A>(case, &format!("{case}.safetensors"));
    let t = parse_target(base.config.layout, target, base.blocks.len()).unwrap();
    let obj = kl(base.out_dim());
    let per = 3 * 224 * 224;
    let mut out = Vec::new();
    for b in 0..n {
        let mut m = burn::module::Module::no_grad(model::<A>(case, &format!("{case}.safetensors")));
        let blk = &mut m.blocks[t.block];
        let lin = match t.site {
            Site::Qkv => &mut blk.attn.qkv,
            Site::Proj => &mut blk.attn.proj,
            Site::Fc1 => &mut blk.mlp.fc1,
            Site::Fc2 => &mut blk.mlp.fc2,
        };
        let [_, o] = lin.weight.val().dims();
        lin.weight = Param::from_tensor(lin.weight.val().require_grad());
        let bias = match lin.bias.take() {
            Some(b) => b.val(),
            None => Tensor::zeros([o], &device()),
        };
        lin.bias = Some(Param::from_tensor(bias.require_grad()));
        let x = Tensor::<A, 4>::from_data(
            TensorData::new(views[b * per..(b + 1) * per].to_vec(), [1, 3, 224, 224]),
            &device(),
        );
        let loss =
            <KlObjective<A> as fungi_core::Objective<A>>::image_loss(&obj, m.forward(x)).unwrap();
        let grads = loss.sum().backward();
        let lin = m.linear(t).unwrap();
        let gw = lin.weight.val().grad(&grads).unwrap(); // [in, out]
        let gb = lin.bias.as_ref().unwrap().val().grad(&grads).unwrap();
        let [i, o] = gw.dims();
        let gw: Vec<f32> = gw.into_data().convert::<f32>().into_vec().unwrap();
        let gb: Vec<f32> = gb.into_data().convert::<f32>().into_vec().unwrap();
        out.extend(linear_grad_rows(&gw, &gb, i, o));
    }
    out
}

#[test]
fn per_image_gradients_of_each_family_match_brute_force() {
    let n = 2;
    let views = kl_views(n);
    for (case, target) in [
        ("timm_augreg", "blocks.1.attn.proj"),
        ("timm_clip", "blocks.1.mlp.fc2"),
        ("timm_deit3", "blocks.1.attn.proj"),
        ("timm_mae", "blocks.1.attn.proj"),
        ("timm_reg", "blocks.0.attn.qkv"),
        ("timm_misc", "blocks.1.attn.proj"),
        (
            "tv_vit",
            "encoder.layers.encoder_layer_1.self_attention.out_proj",
        ),
        ("hf_dinov2", "encoder.layer.1.attention.output.dense"),
        ("hf_vit", "encoder.layer.0.intermediate.dense"),
    ] {
        let m = model::<A>(case, &format!("{case}.safetensors"));
        let e = m.out_dim();
        let ex = FungiExtractor::builder(m)
            .target_layer(target)
            .grad_path(GradPath::Auto)
            .batch_size(2)
            .include_embedding(false)
            .objective(Box::new(kl(e)))
            .build()
            .unwrap_or_else(|err| panic!("{case} {target}: {err}"));
        let got = ex.objective_from_views(0, &views, n).unwrap();
        let want = brute_force(case, target, &views, n);
        assert_eq!(got.grads.len(), want.len(), "{case}");
        assert_rel(
            &format!("{case} {target}: engine vs brute force"),
            &got.grads,
            &want,
            1e-4,
        );
    }
}

#[test]
fn the_embedding_block_uses_the_model_transform_unless_told_otherwise() {
    let images = golden_images(true).unwrap();
    let r = reference();
    for case in ["timm_augreg", "tv_vit"] {
        let (_, want) = r.f64(&format!("{case}.embedding")).unwrap();
        let build = |t: EmbeddingTransform| {
            let m = model::<A>(case, &format!("{case}.safetensors"));
            let e = m.out_dim();
            FungiExtractor::builder(m)
                .transform(t)
                .batch_size(3)
                .objective(Box::new(kl(e)))
                .build()
                .unwrap()
        };
        let auto = build(EmbeddingTransform::Auto);
        assert_eq!(auto.eval_transform().crop, 32, "{case}");
        let raw = auto.raw_embeddings(&images).unwrap();
        assert_rel(
            &format!("{case}: raw embeddings, model transform"),
            &raw,
            &want,
            1e-4,
        );
        let model_t = build(EmbeddingTransform::Model);
        assert_eq!(model_t.eval_transform(), auto.eval_transform());
        let eval = build(EmbeddingTransform::Eval);
        assert_eq!(eval.eval_transform().crop, 224);
        assert_ne!(
            eval.raw_embeddings(&images[..1]).unwrap(),
            raw[..want.len() / 8]
        );
    }
    // An arch without a transform of its own refuses `model`, naming the choice.
    let m = model::<A>("hf_dinov2", "hf_dinov2.safetensors");
    let e = m.out_dim();
    let err = FungiExtractor::builder(m)
        .transform(EmbeddingTransform::Model)
        .objective(Box::new(kl(e)))
        .build()
        .unwrap_err()
        .to_string();
    assert!(err.contains("transform") && err.contains("eval"), "{err}");
}

/// `timm_augreg_moco_style.pth`: the `timm_augreg` weights inside a MoCo v3-style training
/// checkpoint (`state_dict` → `module.base_encoder.` with a projector head, a momentum encoder,
/// a predictor, an optimizer state), read through `state_dict_prefix`.
#[test]
fn a_training_checkpoint_loads_through_its_state_dict_prefix() {
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir().join("timm_augreg.json")).unwrap())
            .unwrap();
    let with_prefix = |json: &mut serde_json::Value, prefix: &str| {
        json["state_dict_prefix"] = serde_json::Value::String(prefix.into());
        VitConfig::from_json_str(&json.to_string(), Some("moco")).unwrap()
    };
    let file = dir().join("timm_augreg_moco_style.pth");
    let c = with_prefix(&mut json, "state_dict.module.base_encoder.");
    let m = Vit::<B>::from_file(&c, &file, &device()).unwrap();
    let want = model::<B>("timm_augreg", "timm_augreg.safetensors").to_state_dict();
    let got = m.to_state_dict();
    assert_eq!(got.tensors.len(), want.tensors.len());
    for (k, t) in &want.tensors {
        assert_eq!(
            got.tensors[k].data.as_ref().unwrap(),
            t.data.as_ref().unwrap(),
            "{k}"
        );
    }
    // Without the prefix: every key is unexpected, a clear mismatch; a wrong prefix names the
    // keys' beginnings.
    let err = Vit::<B>::from_file(&arch("timm_augreg"), &file, &device())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("state_dict.module.base_encoder.cls_token"),
        "{err}"
    );
    let c = with_prefix(&mut json, "model.");
    let err = Vit::<B>::from_file(&c, &file, &device())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("`model.`") && err.contains("state_dict.module."),
        "{err}"
    );
}
