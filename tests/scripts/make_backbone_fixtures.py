#!/usr/bin/env python3
"""Regenerates tests/fixtures/backbones/ (golden tests of the non-DINO ViT families).

Tiny random-initialised models built by the ORIGINAL libraries (no downloaded weights): timm's
`VisionTransformer` in six configurations, torchvision's `VisionTransformer`, Hugging Face
transformers' `Dinov2Model` and `ViTModel`. For each case the script writes the model's native
`state_dict()` (`<case>.safetensors`), the arch JSON a user would write (`<case>.json`), and
into `reference.safetensors` the model's eval-transform views of the 8 golden images
(`<case>.views`, float32) and `model(views)` computed in float64 (`<case>.embedding`). Two
models are also exported to ONNX (`timm_augreg.onnx`, `hf_dinov2_interp.onnx`).

Pinned: torch 2.9.0, torchvision 0.24.0, timm 1.0.31, transformers 5.24.0, onnx 1.23.2,
safetensors 0.8, Pillow 13.0.0, numpy 2.x (onnxruntime optional: `<case>.onnx_embedding`).
Run from the repo root:
    python tests/scripts/make_backbone_fixtures.py
"""
import json
import math
import os
import shutil
import tempfile
from functools import partial

import numpy as np
import torch
import torch.nn as nn
from PIL import Image
from safetensors.torch import save_file

import timm
import timm.data
from timm.models.vision_transformer import VisionTransformer
import torchvision
from torchvision.transforms import InterpolationMode, transforms as T
from torchvision.transforms._presets import ImageClassification
import transformers

OUT = "tests/fixtures/backbones"
IMAGES = "tests/fixtures/golden/images"
IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
HALF = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
CLIP = ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))


def images():
    labels = json.load(open(os.path.join(IMAGES, "labels.json")))
    return [Image.open(os.path.join(IMAGES, e["file"])).convert("RGB") for e in labels["images"]]


def randomise(model, seed):
    """Every floating state-dict entry gets seeded values of its kind's scale, so a key mapped
    to the wrong parameter changes the output."""
    g = torch.Generator().manual_seed(seed)
    sd = model.state_dict()
    names = {n for n, _ in model.named_parameters()}
    with torch.no_grad():
        for name, p in model.named_parameters():
            r = torch.randn(p.shape, generator=g, dtype=p.dtype)
            leaf = name.rsplit(".", 1)[-1]
            owner = model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else model
            if isinstance(owner, nn.LayerNorm):
                v = 1 + 0.2 * r if leaf == "weight" else 0.2 * r
            elif "bias" in leaf:
                v = 0.2 * r
            elif leaf in ("gamma", "lambda1") or "layer_scale" in name or name.endswith(".ls1.gamma") or name.endswith(".ls2.gamma"):
                v = 0.1 + 0.05 * r
            elif p.dim() <= 1 or "token" in name or "pos" in name or "position" in name:
                v = 0.5 * r
            else:
                fan_in = p[0].numel() if p.dim() > 1 else p.numel()
                v = r / math.sqrt(fan_in)
            p.copy_(v)
    assert names <= set(sd), "every parameter is in the state dict"
    return model.eval()


def to_tensor_views(transform, imgs):
    return torch.stack([transform(im) for im in imgs]).float().contiguous()


def timm_case(name, kwargs, cfg, seed, norm_eps=None):
    build = dict(kwargs)
    if norm_eps is not None:
        build["norm_layer"] = partial(nn.LayerNorm, eps=norm_eps)
    if build.get("fc_norm", "unset") is None:
        build.pop("fc_norm")  # timm's default None
    model = VisionTransformer(**build)
    model.pretrained_cfg = dict(cfg, num_classes=kwargs.get("num_classes", 0))
    randomise(model, seed)
    data_cfg = timm.data.resolve_data_config({}, model=model)
    transform = timm.data.create_transform(**data_cfg)
    steps = [type(t).__name__ for t in transform.transforms]
    assert steps == ["Resize", "CenterCrop", "MaybeToTensor", "Normalize"], steps  # ToTensor on PIL
    assert transform.transforms[0].size == math.floor(cfg["input_size"][1] / cfg["crop_pct"]), transform
    arch = {"family": "timm", **kwargs}
    if norm_eps is not None:
        arch["norm_eps"] = norm_eps
    arch["pretrained_cfg"] = cfg
    return name, model, arch, transform, lambda m, x: m(x)


def timm_cfg(stats, interpolation, crop_pct):
    return {
        "mean": list(stats[0]),
        "std": list(stats[1]),
        "interpolation": interpolation,
        "crop_pct": crop_pct,
        "input_size": [3, 32, 32],
    }


TINY = dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2)


def hf_transform():
    return T.Compose([
        T.Resize(36, interpolation=InterpolationMode.BICUBIC),
        T.CenterCrop(32),
        T.ToTensor(),
        T.Normalize(*IMAGENET),
    ])


def cases():
    out = [
        timm_case("timm_augreg", dict(TINY, num_classes=0), timm_cfg(HALF, "bicubic", 0.9), 1),
        timm_case(
            "timm_clip",
            dict(TINY, pre_norm=True, num_classes=16, act_layer="quick_gelu"),
            timm_cfg(CLIP, "bicubic", 1.0),
            2,
            norm_eps=1e-5,
        ),
        timm_case(
            "timm_deit3",
            dict(TINY, init_values=1e-2, no_embed_class=True, num_classes=0),
            timm_cfg(IMAGENET, "bilinear", 0.875),
            3,
        ),
        timm_case(
            "timm_mae",
            dict(TINY, global_pool="avg", fc_norm=None, num_classes=0),
            timm_cfg(IMAGENET, "bicubic", 0.9),
            4,
        ),
        timm_case(
            "timm_reg",
            dict(TINY, reg_tokens=4, no_embed_class=True, class_token=True, num_classes=0),
            timm_cfg(HALF, "bicubic", 0.9),
            5,
        ),
        timm_case(
            "timm_misc",
            dict(
                TINY,
                qk_norm=True,
                proj_bias=False,
                qkv_bias=False,
                mlp_ratio=2.0,
                act_layer="gelu_tanh",
                class_token=False,
                global_pool="avg",
                fc_norm=False,
                num_classes=0,
            ),
            timm_cfg(IMAGENET, "bicubic", 0.95),
            6,
        ),
    ]
    # torchvision: the checkpoint keeps its 10-class head; `tv_vit` embeds with the head off
    # (`heads = Identity`, the CLS token after encoder.ln), `tv_vit_head` returns the logits.
    tv = torchvision.models.VisionTransformer(
        image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64, num_classes=10
    )
    randomise(tv, 7)
    tv_t = ImageClassification(crop_size=32, resize_size=36, interpolation=InterpolationMode.BILINEAR)
    tv_arch = {
        "family": "torchvision",
        "image_size": 32,
        "patch_size": 8,
        "num_layers": 2,
        "num_heads": 2,
        "hidden_dim": 32,
        "mlp_dim": 64,
        "num_classes": 0,
        "transforms": {
            "crop_size": 32,
            "resize_size": 36,
            "interpolation": "bilinear",
            "mean": list(IMAGENET[0]),
            "std": list(IMAGENET[1]),
        },
    }

    def tv_features(m, x):
        heads, m.heads = m.heads, nn.Identity()
        try:
            return m(x)
        finally:
            m.heads = heads

    out.append(("tv_vit", tv, tv_arch, tv_t, tv_features))
    out.append(("tv_vit_head", tv, dict(tv_arch, num_classes=10), tv_t, lambda m, x: m(x)))

    hf = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, patch_size=8)
    for name, size, seed in (("hf_dinov2", 32, 8), ("hf_dinov2_interp", 64, 9)):
        cfg = transformers.Dinov2Config(mlp_ratio=4, image_size=size, **hf)
        m = randomise(transformers.Dinov2Model(cfg), seed)
        out.append((name, m, json.loads(cfg.to_json_string()), hf_transform(),
                    lambda m, x: m(pixel_values=x).pooler_output))
    cfg = transformers.ViTConfig(intermediate_size=64, image_size=32, **hf)
    m = randomise(transformers.ViTModel(cfg, add_pooling_layer=True), 10)
    out.append(("hf_vit", m, json.loads(cfg.to_json_string()), hf_transform(),
                lambda m, x: m(pixel_values=x).last_hidden_state[:, 0]))
    return out


def save_training_checkpoint(sd, path):
    """A MoCo v3-style training checkpoint around the state dict `sd`: the backbone under
    `state_dict` -> `module.base_encoder.` with a projection-MLP head (Linear + BatchNorm), a
    momentum encoder and a predictor next to it, and an optimizer state (int keys) beside."""
    torch.manual_seed(1)
    dim = sd["cls_token"].shape[-1]
    head = nn.Sequential(nn.Linear(dim, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 4))
    pred = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8))
    nested = {}
    for prefix in ("module.base_encoder.", "module.momentum_encoder."):
        nested.update({prefix + k: v.clone() for k, v in sd.items()})
        nested.update({prefix + "head." + k: v.clone() for k, v in head.state_dict().items()})
    nested.update({"module.predictor." + k: v for k, v in pred.state_dict().items()})
    opt = torch.optim.AdamW(head.parameters())
    head(torch.randn(4, dim)).sum().backward()
    opt.step()
    torch.save({"epoch": 300, "arch": "vit_base", "state_dict": nested,
                "optimizer": opt.state_dict()}, path)


class Wrap(nn.Module):
    def __init__(self, model, fn):
        super().__init__()
        self.model, self.fn = model, fn

    def forward(self, x):
        return self.fn(self.model, x)


def onnx_report(path):
    import onnx
    from onnx import numpy_helper

    m = onnx.load(path)
    consumers = {}
    for node in m.graph.node:
        for i in node.input:
            consumers.setdefault(i, []).append(f"{node.op_type} `{node.name}`")
    lines = [f"### `{os.path.basename(path)}`", "", "Initializers:", ""]
    for init in m.graph.initializer:
        shape = list(init.dims)
        lines.append(f"- `{init.name}` {shape} -> {', '.join(consumers.get(init.name, ['(unused)']))}")
    consts = []
    for node in m.graph.node:
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value":
                    t = numpy_helper.to_array(a.t)
                    if t.ndim >= 2:
                        consts.append(f"- Constant `{node.name}` -> `{node.output[0]}` {list(t.shape)} "
                                      f"-> {', '.join(consumers.get(node.output[0], ['(unused)']))}")
    if consts:
        lines += ["", "Constant nodes of rank >= 2:", ""] + consts
    return "\n".join(lines)


def main():
    torch.manual_seed(0)
    os.makedirs(OUT, exist_ok=True)
    imgs = images()
    ref = {}
    archs = {}
    models = {}
    for name, model, arch, transform, fn in cases():
        views = to_tensor_views(transform, imgs)
        with torch.no_grad():
            emb = fn(model.double(), views.double())
            model.float()
            emb32 = fn(model, views)
        assert emb.dim() == 2 and emb.shape[0] == len(imgs), (name, emb.shape)
        assert (emb32.double() - emb).abs().max() < 1e-4 * emb.abs().max(), name
        ref[f"{name}.views"] = views
        ref[f"{name}.embedding"] = emb.contiguous()
        sd = {k: v.detach().float().contiguous().clone() for k, v in model.state_dict().items()}
        if isinstance(model, transformers.PreTrainedModel):
            # The file users have is what save_pretrained writes (the hub's key layout:
            # `attention.attention.query`, `attention.output.dense`, ...); transformers 5's
            # in-memory state_dict names (`attention.q_proj`, ...) differ and are kept too.
            with tempfile.TemporaryDirectory() as d:
                model.save_pretrained(d)
                shutil.copy(os.path.join(d, "model.safetensors"), os.path.join(OUT, f"{name}.safetensors"))
            if name == "hf_vit":
                save_file(sd, os.path.join(OUT, f"{name}_v5.safetensors"))
        else:
            save_file(sd, os.path.join(OUT, f"{name}.safetensors"))
            if name == "timm_deit3":
                # The same state dict as timm users save it (torch.save of a plain dict).
                torch.save(sd, os.path.join(OUT, f"{name}.pth"))
            if name == "timm_augreg":
                save_training_checkpoint(sd, os.path.join(OUT, "timm_augreg_moco_style.pth"))
        with open(os.path.join(OUT, f"{name}.json"), "w") as f:
            json.dump(arch, f, indent=2)
            f.write("\n")
        archs[name] = arch
        models[name] = (model, fn)
        n_tensors = len(sd)
        print(f"{name}: embedding {list(emb.shape)}, {len(sd)} tensors, transform {transform}")

    reports = []
    for name in ("timm_augreg", "hf_dinov2_interp"):
        model, fn = models[name]
        path = os.path.join(OUT, f"{name}.onnx")
        torch.onnx.export(
            Wrap(model, fn).eval(),
            (torch.zeros(1, 3, 32, 32),),
            path,
            dynamo=False,
            opset_version=17,
            do_constant_folding=True,
            input_names=["pixel_values"],
            output_names=["embedding"],
        )
        reports.append(onnx_report(path))
        try:
            import onnxruntime as ort

            sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
            views = ref[f"{name}.views"].numpy()
            rows = [sess.run(None, {"pixel_values": views[i:i + 1]})[0] for i in range(len(views))]
            ref[f"{name}.onnx_embedding"] = torch.from_numpy(np.concatenate(rows)).float().contiguous()
        except ImportError:
            print("onnxruntime not installed: no onnx_embedding")
    save_file(ref, os.path.join(OUT, "reference.safetensors"))
    with open(os.path.join(OUT, "onnx_report.md"), "w") as f:
        f.write("\n\n".join(reports) + "\n")
    print("\n\n".join(reports))


if __name__ == "__main__":
    main()
