"""fungi_rs._torch: torch-module introspection (arch JSON, weights, targets).

Two kinds of tests:

* real torch (skipped without torch; timm / torchvision / transformers each skip their cases):
  tiny random models of every family; ``describe()`` + ``state_dict_arrays()`` written as an arch
  JSON and a safetensors file and run through the release CLI (``fungi embed --transform none``,
  FUNGI_BIN, else <repo>/target/release/fungi, skipped when absent; device FUNGI_TEST_DEVICE,
  default flex), whose embedding must equal the original model's output computed in float64
  within 1e-4 of its largest value. DINO's and DINOv2's torch.hub classes come from
  tests/torch_hub_dino.py / torch_hub_dinov2.py.
* stand-in (runs without torch, as in CI): a fake ``torch`` under tests/standin, put on sys.path
  only by the ``standin`` fixture, and skipped when the real torch is importable so the two never
  mix.

``fungi_rs._torch`` is imported from the installed package when it imports, else loaded by path
(the compiled extension need not be built to test it).
"""
import copy
import importlib
import importlib.util
import json
import math
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parents[2]
SRC = HERE.parent / "python" / "fungi_rs" / "_torch.py"
HAS_TORCH = importlib.util.find_spec("torch") is not None
IMAGENET = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
TOL = 1e-4


def _load():
    try:
        from fungi_rs import _torch

        return _torch
    except ImportError:
        spec = importlib.util.spec_from_file_location("fungi_rs_torch_by_path", SRC)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod


ft = _load()


def test_importing_and_is_torch_module_never_import_torch():
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('t', {str(SRC)!r})\n"
        "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
        "assert not m.is_torch_module(object()) and not m.is_torch_module(3)\n"
        "assert 'torch' not in sys.modules and 'numpy' not in sys.modules, sorted(sys.modules)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# --------------------------------------------------------------------------------------------
# Real torch: every family against the release CLI


def fungi_bin():
    p = pathlib.Path(os.environ.get("FUNGI_BIN") or ROOT / "target" / "release" / "fungi")
    if not p.is_file():
        pytest.skip(f"no fungi binary at {p} (set FUNGI_BIN)")
    return str(p)


def randomise(model, seed):
    """Seeded values of each parameter kind's scale, so a key mapped to the wrong tensor shows."""
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.numel() == 0:
                continue
            r = torch.randn(p.shape, generator=g, dtype=p.dtype)
            owner = model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else model
            leaf = name.rsplit(".", 1)[-1]
            if isinstance(owner, torch.nn.LayerNorm):
                v = 1 + 0.2 * r if leaf == "weight" else 0.2 * r
            elif "bias" in leaf:
                v = 0.2 * r
            elif leaf in ("gamma", "lambda1"):
                v = 0.1 + 0.05 * r
            elif p.dim() <= 1 or "token" in name or "pos" in name or "position" in name:
                v = 0.5 * r
            else:
                v = r / math.sqrt(p[0].numel())
            p.copy_(v)
    return model.eval()


def mean_std(arch):
    cfg = arch.get("pretrained_cfg", {})
    return cfg.get("mean", IMAGENET[0]), cfg.get("std", IMAGENET[1])


def check_against_cli(tmp_path, model, forward, size=32, seed=0):
    """describe() + state_dict_arrays() -> `fungi embed --transform none` on 3 random PNGs;
    returns (arch, max error relative to the largest |reference|)."""
    import torch
    from PIL import Image

    safetensors_numpy = pytest.importorskip("safetensors.numpy")
    binary = fungi_bin()
    tmp_path.mkdir(parents=True, exist_ok=True)
    arch = ft.describe(model)
    arrays = ft.state_dict_arrays(model)
    assert all(a.dtype == np.float32 and a.flags.c_contiguous for _, a in arrays)
    (tmp_path / "arch.json").write_text(json.dumps(arch))
    safetensors_numpy.save_file(dict(arrays), str(tmp_path / "w.safetensors"))
    imgs = np.random.default_rng(seed).integers(0, 256, size=(3, size, size, 3), dtype=np.uint8)
    (tmp_path / "img").mkdir()
    for i, im in enumerate(imgs):
        Image.fromarray(im).save(tmp_path / "img" / f"{i}.png")
    out = tmp_path / "out.npy"
    r = subprocess.run(
        [binary, "embed", "--weights", str(tmp_path / "w.safetensors"), "--arch", str(tmp_path / "arch.json"),
         "--images", str(tmp_path / "img"), "--out", str(out), "--transform", "none",
         "--device", os.environ.get("FUNGI_TEST_DEVICE", "flex")],
        capture_output=True, text=True,
    )
    assert r.returncode == 0, f"{json.dumps(arch)}\n{r.stderr}"
    got = np.load(out).astype(np.float64)
    mean, std = mean_std(arch)
    x = (imgs.astype(np.float64) / 255.0 - np.array(mean)) / np.array(std)
    x = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()
    ref = copy.deepcopy(model).double().eval()
    with torch.no_grad():
        want = forward(ref, x).numpy()
    assert got.shape == want.shape
    err = float(np.abs(got - want).max() / np.abs(want).max())
    print(f"{type(model).__name__}: max relative error {err:.2e}")
    return arch, err


TINY = dict(img_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=3)


def timm_vit(seed, cfg=None, norm_eps=None, **kw):
    pytest.importorskip("torch")
    pytest.importorskip("timm")
    from functools import partial

    import torch
    from timm.models.vision_transformer import VisionTransformer

    if norm_eps is not None:
        kw["norm_layer"] = partial(torch.nn.LayerNorm, eps=norm_eps)
    m = VisionTransformer(**dict(TINY, **kw))
    m.pretrained_cfg = cfg or {"mean": (0.5,) * 3, "std": (0.5,) * 3, "interpolation": "bicubic",
                               "crop_pct": 0.9, "input_size": (3, 32, 32), "crop_mode": "center"}
    return randomise(m, seed)


CLIP = {"mean": (0.48145466, 0.4578275, 0.40821073), "std": (0.26862954, 0.26130258, 0.27577711),
        "interpolation": "bicubic", "crop_pct": 1.0, "input_size": (3, 32, 32)}

TIMM_CASES = {
    "augreg": dict(num_classes=0),
    "deit3": dict(init_values=1e-2, no_embed_class=True, num_classes=0),
    "mae": dict(global_pool="avg", fc_norm=None, num_classes=0),
    "clip": dict(pre_norm=True, num_classes=16, act_layer="quick_gelu", norm_eps=1e-5, cfg=CLIP),
    "reg": dict(reg_tokens=4, no_embed_class=True, num_classes=0),
    "misc": dict(qk_norm=True, proj_bias=False, qkv_bias=False, mlp_ratio=2.0, act_layer="gelu_tanh",
                 class_token=False, global_pool="avg", fc_norm=False, num_classes=0),
    "maxpool_head": dict(global_pool="avgmax", fc_norm=True, num_classes=7),
}


@pytest.mark.parametrize("case", list(TIMM_CASES))
def test_timm_families_embed_like_the_model(tmp_path, case):
    kw = dict(TIMM_CASES[case])
    model = timm_vit(seed=len(case), **kw)
    arch, err = check_against_cli(tmp_path, model, lambda m, x: m(x))
    assert err <= TOL, (case, err)
    assert arch["family"] == "timm" and arch["depth"] == 2 and arch["embed_dim"] == 48
    if case == "clip":
        assert arch["pre_norm"] and arch["act_layer"] == "quick_gelu" and arch["norm_eps"] == 1e-5
        assert arch["num_classes"] == 16 and arch["pretrained_cfg"]["mean"] == list(CLIP["mean"])
    if case == "deit3":
        assert arch["init_values"] == 1e-2 and arch["no_embed_class"]
    if case == "mae":
        assert arch["fc_norm"] and arch["final_norm"] and arch["global_pool"] == "avg"


def test_timm_create_model_with_its_registry_pretrained_cfg(tmp_path):
    pytest.importorskip("timm")
    import timm

    model = randomise(timm.create_model("vit_tiny_patch16_224.augreg_in21k", pretrained=False, num_classes=0,
                                        img_size=32, patch_size=8, depth=2), 11)
    arch, err = check_against_cli(tmp_path, model, lambda m, x: m(x))
    assert err <= TOL
    assert arch["pretrained_cfg"] == {"mean": [0.5] * 3, "std": [0.5] * 3, "interpolation": "bicubic",
                                      "crop_pct": 0.9, "input_size": [3, 224, 224]}


def torchvision_vit(seed, num_classes=10):
    pytest.importorskip("torchvision")
    from torchvision.models.vision_transformer import VisionTransformer

    return randomise(VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=3, hidden_dim=48,
                                       mlp_dim=96, num_classes=num_classes), seed)


@pytest.mark.parametrize("head", ["linear", "identity", "zero_classes"])
def test_torchvision_embeds_like_the_model(tmp_path, head):
    """The head kept (logits), replaced by Identity (the paper's), or built with num_classes=0 (an
    empty Linear whose [0, D] weights fungi-rs ignores)."""
    torch = pytest.importorskip("torch")

    model = torchvision_vit(7, num_classes=0 if head == "zero_classes" else 10)
    if head == "identity":
        model.heads = torch.nn.Identity()

    def forward(m, x):
        if head == "zero_classes":  # model(x) is [B, 0]: describe() takes it as no head
            m.heads = torch.nn.Identity()
        return m(x)

    arch, err = check_against_cli(tmp_path, model, forward)
    assert err <= TOL
    assert arch == {"family": "torchvision", "image_size": 32, "patch_size": 8, "num_layers": 2, "num_heads": 3,
                    "hidden_dim": 48, "mlp_dim": 96, "num_classes": 10 if head == "linear" else 0}


def test_hugging_face_models_embed_like_the_model(tmp_path):
    pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    hf = dict(hidden_size=48, num_hidden_layers=2, num_attention_heads=3, patch_size=8, image_size=32)
    d2 = randomise(transformers.Dinov2Model(transformers.Dinov2Config(mlp_ratio=4, **hf)), 8)
    arch, err = check_against_cli(tmp_path / "d", d2, lambda m, x: m(pixel_values=x).pooler_output)
    assert err <= TOL and arch["model_type"] == "dinov2"
    vit = randomise(transformers.ViTModel(transformers.ViTConfig(intermediate_size=96, **hf), add_pooling_layer=True), 9)
    arch, err = check_against_cli(tmp_path / "v", vit, lambda m, x: m(pixel_values=x).last_hidden_state[:, 0])
    assert err <= TOL and arch["model_type"] == "vit" and arch["intermediate_size"] == 96


def hub(name):
    pytest.importorskip("torch")
    sys.path.insert(0, str(HERE))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(HERE))


@pytest.mark.parametrize("img_size", [32, 48])
def test_dino_v1_embeds_like_the_model(tmp_path, img_size):
    """48: the 6x6 position grid interpolated to 4x4 with DINO's +0.1 scale factor."""
    model = randomise(hub("torch_hub_dino").vit_tiny_test(img_size=img_size, num_classes=5), 12)
    arch, err = check_against_cli(tmp_path, model, lambda m, x: m(x))
    assert err <= TOL
    assert not any(k.startswith("head.") for k, _ in ft.state_dict_arrays(model))


DINOV2_CASES = {
    "plain": dict(),
    "reg4": dict(num_register_tokens=4, interpolate_antialias=True, interpolate_offset=0.0),
    "reg4_interp": dict(img_size=48, num_register_tokens=4, interpolate_antialias=True, interpolate_offset=0.0),
    "interp_chunked": dict(img_size=48, block_chunks=2),
}


@pytest.mark.parametrize("case", list(DINOV2_CASES))
def test_dinov2_embeds_like_the_model(tmp_path, case):
    model = randomise(hub("torch_hub_dinov2").vit_tiny_test(**DINOV2_CASES[case]), 13)
    arch, err = check_against_cli(tmp_path, model, lambda m, x: m(x))
    assert err <= TOL, err
    assert arch["layer_scale"] and arch["family"] == "dino"


def test_real_describe_dicts():
    """The exact dicts of one timm and one DINOv2 model (what the report shows)."""
    timm_model = timm_vit(1, **TIMM_CASES["deit3"])
    assert ft.describe(timm_model) == {
        "family": "timm", "img_size": 32, "patch_size": 8, "in_chans": 3, "embed_dim": 48, "depth": 2,
        "num_heads": 3, "mlp_ratio": 4.0, "qkv_bias": True, "qk_norm": False, "proj_bias": True,
        "init_values": 0.01, "class_token": True, "no_embed_class": True, "reg_tokens": 0, "pre_norm": False,
        "final_norm": True, "fc_norm": False, "global_pool": "token", "num_classes": 0, "act_layer": "gelu",
        "norm_eps": 1e-6,
        "pretrained_cfg": {"mean": [0.5] * 3, "std": [0.5] * 3, "interpolation": "bicubic", "crop_pct": 0.9,
                           "input_size": [3, 32, 32]},
    }
    dinov2 = hub("torch_hub_dinov2").vit_tiny_test(**DINOV2_CASES["reg4"])
    assert ft.describe(dinov2) == {
        "family": "dino", "img_size": 32, "patch_size": 8, "in_chans": 3, "embed_dim": 48, "depth": 2,
        "num_heads": 3, "mlp_ratio": 4.0, "qkv_bias": True, "layer_norm_eps": 1e-6, "layer_scale": True,
        "interpolate_offset": 0.0, "num_register_tokens": 4, "interpolate_antialias": True,
    }


def test_real_unsupported_models_are_refused():
    pytest.importorskip("timm")
    import timm
    import torch
    from timm.layers import SwiGLUPacked

    with pytest.raises(TypeError, match=r"timm\.models\.eva\.Eva .*accepted classes: timm\.models\.vision_transformer"):
        ft.describe(timm.models.eva.Eva(img_size=32, patch_size=8, embed_dim=48, depth=1, num_heads=3))
    with pytest.raises(ValueError, match=r"`global_pool` = 'map'"):
        ft.describe(timm_vit(1, global_pool="map", num_classes=0))
    with pytest.raises(ValueError, match=r"`blocks\.0\.mlp` = 'GluMlp'"):
        ft.describe(timm_vit(1, mlp_layer=SwiGLUPacked, num_classes=0))
    with pytest.raises(ValueError, match=r"`global_pool` = ''"):
        ft.describe(timm_vit(1, global_pool="", num_classes=0))
    with pytest.raises(TypeError, match=r"torch\.nn\.modules\.container\.Sequential"):
        ft.describe(torch.nn.Sequential(torch.nn.Linear(2, 2)))
    with pytest.raises(TypeError, match=r"not a torch\.nn\.Module|expected a torch\.nn\.Module"):
        ft.describe(object())
    tv = pytest.importorskip("torchvision")
    with pytest.raises(TypeError, match=r"torchvision\.models\.resnet\.ResNet"):
        ft.describe(tv.models.resnet18())
    with pytest.raises(ValueError, match=r"`representation_size` = 16"):
        ft.describe(tv.models.vision_transformer.VisionTransformer(32, 8, 1, 3, 48, 96, representation_size=16))
    transformers = pytest.importorskip("transformers")
    hfkw = dict(hidden_size=48, num_hidden_layers=1, num_attention_heads=3, intermediate_size=96, image_size=32,
                patch_size=8)
    with pytest.raises(TypeError, match=r"ViTForImageClassification.*pass `model\.vit`"):
        ft.describe(transformers.ViTForImageClassification(transformers.ViTConfig(**hfkw)))
    with pytest.raises(ValueError, match=r"`config\.hidden_act` = 'relu'"):
        ft.describe(transformers.ViTModel(transformers.ViTConfig(hidden_act="relu", **hfkw)))


def test_real_targets_devices_and_arrays():
    torch = pytest.importorskip("torch")

    tv = torchvision_vit(1)
    assert "encoder.layers.encoder_layer_1.self_attention.out_proj" in ft.linear_layers(tv)
    for ok in ("blocks.1.attn.proj", "backbone.blocks.0.attn.qkv",
               "encoder.layers.encoder_layer_1.self_attention.out_proj",
               "encoder.layers.encoder_layer_0.self_attention.in_proj", "encoder.layers.encoder_layer_0.mlp.3"):
        ft.check_target(tv, ok)
    with pytest.raises(ValueError, match=r"MultiheadAttention, not a Linear; .*self_attention\.out_proj"):
        ft.check_target(tv, "encoder.layers.encoder_layer_1.self_attention")
    with pytest.raises(ValueError, match=r"not a submodule .*closest names: .*blocks\.1\.attn\.proj"):
        ft.check_target(tv, "blocks.2.attn.proj")
    with pytest.raises(ValueError, match=r"cannot target"):
        ft.check_target(tv, "heads.head")

    t = timm_vit(1, num_classes=0)
    ft.check_target(t, "blocks.1.attn.proj")
    with pytest.raises(ValueError, match=r"Attention, not a Linear; .*blocks\.1\.attn\.qkv"):
        ft.check_target(t, "blocks.1.attn")
    with pytest.raises(ValueError, match=r"closest names: blocks\.1\.attn\.proj"):
        ft.check_target(t, "blocks.1.attn.prj")
    transformers = pytest.importorskip("transformers")
    d2 = transformers.Dinov2Model(transformers.Dinov2Config(hidden_size=48, num_hidden_layers=2,
                                                            num_attention_heads=3, patch_size=8, image_size=32))
    for ok in ("encoder.layer.1.attention.o_proj", "encoder.layer.1.attention.output.dense", "blocks.1.attn.qkv",
               "encoder.layer.0.mlp.fc2"):
        ft.check_target(d2, ok)
    with pytest.raises(ValueError, match=r"cannot target"):
        ft.check_target(d2, "encoder.layer.1.attention.q_proj")

    assert ft.model_device_dtype(t) == ("cpu", "float32")
    arrays = dict(ft.state_dict_arrays(t))
    assert np.shares_memory(arrays["blocks.0.attn.qkv.weight"], t.blocks[0].attn.qkv.weight.detach().numpy())
    half = copy.deepcopy(t).half()
    assert ft.model_device_dtype(half) == ("cpu", "float16")
    h = dict(ft.state_dict_arrays(half))
    assert h["pos_embed"].dtype == np.float32
    np.testing.assert_allclose(h["pos_embed"], t.pos_embed.detach().half().float().numpy())
    vit = transformers.ViTModel(transformers.ViTConfig(hidden_size=48, num_hidden_layers=1, num_attention_heads=3,
                                                       intermediate_size=96, image_size=32, patch_size=8))
    vit.register_buffer("position_ids", torch.arange(5))
    assert "position_ids" in vit.state_dict()
    assert "position_ids" not in dict(ft.state_dict_arrays(vit))


# --------------------------------------------------------------------------------------------
# Stand-in torch (environments without torch)


def test_standin_is_torch_module(standin):
    assert "torch" not in sys.modules or "standin" in str(sys.modules["torch"].__file__)
    assert not ft.is_torch_module(standin.PlainObject())
    assert ft.is_torch_module(standin.VisionTransformer(**TINY, num_classes=0))


def test_standin_timm_describe(standin):
    m = standin.VisionTransformer(**TINY, num_classes=0, init_values=1e-6, no_embed_class=True)
    m.pretrained_cfg = {"mean": (0.5,) * 3, "std": (0.5,) * 3, "interpolation": "bicubic", "crop_pct": 0.9,
                        "input_size": (3, 32, 32), "crop_mode": "center", "num_classes": 0}
    assert ft.describe(m) == {
        "family": "timm", "img_size": 32, "patch_size": 8, "in_chans": 3, "embed_dim": 48, "depth": 2,
        "num_heads": 3, "mlp_ratio": 4.0, "qkv_bias": True, "qk_norm": False, "proj_bias": True,
        "init_values": 1e-6, "class_token": True, "no_embed_class": True, "reg_tokens": 0, "pre_norm": False,
        "final_norm": True, "fc_norm": False, "global_pool": "token", "num_classes": 0, "act_layer": "gelu",
        "norm_eps": 1e-6,
        "pretrained_cfg": {"mean": [0.5] * 3, "std": [0.5] * 3, "interpolation": "bicubic", "crop_pct": 0.9,
                           "input_size": [3, 32, 32]},
    }
    clip = standin.VisionTransformer(**TINY, num_classes=16, pre_norm=True, act_layer="quick_gelu", norm_eps=1e-5,
                                     reg_tokens=2, global_pool="avg")
    d = ft.describe(clip)
    assert (d["pre_norm"], d["act_layer"], d["norm_eps"], d["num_classes"], d["reg_tokens"]) == (
        True, "quick_gelu", 1e-5, 16, 2)
    assert (d["global_pool"], d["fc_norm"], d["final_norm"], d["init_values"]) == ("avg", True, True, None)
    assert "pretrained_cfg" not in d


def test_standin_torchvision_describe(standin):
    m = standin.TorchvisionVisionTransformer(32, 8, 2, 3, 48, 96, num_classes=10)
    assert ft.describe(m) == {"family": "torchvision", "image_size": 32, "patch_size": 8, "num_layers": 2,
                              "num_heads": 3, "hidden_dim": 48, "mlp_dim": 96, "num_classes": 10}
    import torch

    m.heads = torch.nn.Identity()
    assert ft.describe(m)["num_classes"] == 0
    with pytest.raises(ValueError, match=r"`representation_size` = 16"):
        ft.describe(standin.TorchvisionVisionTransformer(32, 8, 2, 3, 48, 96, representation_size=16))
    with pytest.raises(ValueError, match=r"`norm_layer\.eps` = 1e-05"):
        ft.describe(standin.TorchvisionVisionTransformer(32, 8, 2, 3, 48, 96, eps=1e-5))


def test_standin_unsupported_classes_and_options(standin):
    with pytest.raises(TypeError) as e:
        ft.describe(standin.ResNet())
    msg = str(e.value)
    assert "torchvision.models.resnet.ResNet" in msg
    for accepted in ft.ACCEPTED:
        assert accepted in msg
    with pytest.raises(TypeError, match=r"expected a torch\.nn\.Module, got .*PlainObject"):
        ft.describe(standin.PlainObject())
    with pytest.raises(ValueError, match=r"`blocks\.0\.mlp` = 'SwiGLU'"):
        ft.describe(standin.VisionTransformer(**TINY, num_classes=0, mlp_layer=standin.SwiGLU))
    with pytest.raises(ValueError, match=r"`global_pool` = 'map'"):
        ft.describe(standin.VisionTransformer(**TINY, num_classes=0, global_pool="map", attn_pool=True))
    bad_cfg = standin.VisionTransformer(**TINY, num_classes=0)
    bad_cfg.pretrained_cfg = {"crop_mode": "squash"}
    with pytest.raises(ValueError, match=r"crop_mode.*'squash'"):
        ft.describe(bad_cfg)
    no_bias = standin.VisionTransformer(**TINY, num_classes=0)
    no_bias.patch_embed.proj.bias = None
    with pytest.raises(ValueError, match=r"`patch_embed\.proj\.bias` = None"):
        ft.describe(no_bias)


def test_standin_check_target(standin):
    m = standin.VisionTransformer(**TINY, num_classes=4)
    ft.check_target(m, "blocks.1.attn.proj")
    ft.check_target(m, "backbone.blocks.0.mlp.fc2")
    with pytest.raises(ValueError) as e:
        ft.check_target(m, "blocks.1.atn.proj")
    assert "not a submodule" in str(e.value) and "blocks.1.attn.proj" in str(e.value)
    assert f"({len(ft.linear_layers(m))} Linear layers" in str(e.value)
    with pytest.raises(ValueError, match=r"is a torch\.nn\.modules\.normalization\.LayerNorm, not a Linear; "
                                         r"Linear layers of the same block: blocks\.1\.attn\.qkv, blocks\.1\.attn\.proj"):
        ft.check_target(m, "blocks.1.norm1")
    with pytest.raises(ValueError, match="cannot target"):
        ft.check_target(m, "head")

    tv = standin.TorchvisionVisionTransformer(32, 8, 2, 3, 48, 96)
    assert "encoder.layers.encoder_layer_0.self_attention.out_proj" in ft.linear_layers(tv)
    ft.check_target(tv, "blocks.1.attn.proj")  # fungi-rs's canonical name
    ft.check_target(tv, "encoder.layers.encoder_layer_1.self_attention.out_proj")
    ft.check_target(tv, "encoder.layers.encoder_layer_1.self_attention.in_proj")  # not a module, but fungi-rs's
    with pytest.raises(ValueError, match=r"MultiheadAttention, not a Linear; .*encoder_layer_1\.mlp\.0"):
        ft.check_target(tv, "encoder.layers.encoder_layer_1.self_attention")
    with pytest.raises(ValueError, match="not a submodule"):
        ft.check_target(tv, "blocks.2.attn.proj")

    cnn = standin.ResNet()  # not describable: any Linear passes, the rest is refused
    ft.check_target(cnn, "fc")
    with pytest.raises(ValueError, match="not a Linear"):
        ft.check_target(cnn, "conv1")


def test_standin_state_dict_arrays_and_device(standin):
    import torch

    m = standin.VisionTransformer(**TINY, num_classes=0)
    m.register_buffer("position_ids", torch.Tensor(np.arange(5)))
    arrays = ft.state_dict_arrays(m)
    keys = [k for k, _ in arrays]
    assert keys == [k for k in m.state_dict() if k != "position_ids"]
    assert all(a.dtype == np.float32 and a.flags.c_contiguous for _, a in arrays)
    w = m.blocks[0].attn.qkv.weight
    assert dict(arrays)["blocks.0.attn.qkv.weight"] is w.numpy()  # no copy
    assert ft.model_device_dtype(m) == ("cpu", "float32")

    gpu = standin.VisionTransformer(**TINY, num_classes=0)
    for mod in gpu.modules():
        for n, p in list(mod._parameters.items()):
            if p is not None:
                setattr(mod, n, torch.nn.Parameter(torch.Tensor(p.numpy().astype(np.float16), "cuda:0")))
    assert ft.model_device_dtype(gpu) == ("cuda:0", "float16")
    g = dict(ft.state_dict_arrays(gpu))
    assert g["pos_embed"].dtype == np.float32
    np.testing.assert_array_equal(g["blocks.1.mlp.fc2.weight"],
                                  gpu.blocks[1].mlp.fc2.weight._a.astype(np.float32))
