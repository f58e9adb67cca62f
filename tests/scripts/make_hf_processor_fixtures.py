#!/usr/bin/env python3
"""Adds the transformers image-processor cases to tests/fixtures/backbones/ (run after
make_backbone_fixtures.py, from the repository root, with the same venv: torch 2.9.0,
torchvision 0.24.0, transformers 5.24.0, Pillow).

The `hf_dinov2` and `hf_vit` fixture models (their JSON + save_pretrained safetensors) are fed
the 8 golden images through transformers' own image processors, both backends:
  - `BitImageProcessor` (Dinov2's; shortest_edge 37, crop 32 — odd margins, where the
    processors' `d // 2` crop offset differs from torchvision's round-half-even),
  - `ViTImageProcessor` (size 32x32, bilinear, mean/std 0.5),
each with the default torchvision backend and the PIL backend (`*ImageProcessorPil`).
Writes `<case>.json` (the model config + `"preprocessor"`: the processor's
preprocessor_config.json, `"backend": "pil"` for the PIL backend) and `hf_processors.safetensors`
with `<case>.views` (float32 pixel_values) and `<case>.embedding` (float64 model output).
"""
import json
import os
import shutil
import tempfile

import torch
import transformers
from PIL import Image
from safetensors.torch import save_file

OUT = "tests/fixtures/backbones"
IMAGES = "tests/fixtures/golden/images"


def images():
    with open(os.path.join(IMAGES, "labels.json")) as f:
        labels = json.load(f)
    return [Image.open(os.path.join(IMAGES, e["file"])).convert("RGB") for e in labels["images"]]


def load(case, cls):
    with open(os.path.join(OUT, f"{case}.json")) as f:
        cfg = json.load(f)
    with tempfile.TemporaryDirectory() as d:
        with open(os.path.join(d, "config.json"), "w") as f:
            json.dump(cfg, f)
        shutil.copy(os.path.join(OUT, f"{case}.safetensors"), os.path.join(d, "model.safetensors"))
        return cfg, cls.from_pretrained(d).eval()


def preprocessor_config(p):
    with tempfile.TemporaryDirectory() as d:
        p.save_pretrained(d)
        with open(os.path.join(d, "preprocessor_config.json")) as f:
            return json.load(f)


def main():
    imgs = images()
    ref = {}
    bit = dict(size={"shortest_edge": 37}, crop_size={"height": 32, "width": 32}, resample=3,
               image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225])
    vit = dict(size={"height": 32, "width": 32}, resample=2)
    cases = [
        ("hf_dinov2", transformers.Dinov2Model, lambda m, x: m(pixel_values=x).pooler_output,
         transformers.BitImageProcessor, transformers.BitImageProcessorPil, bit),
        ("hf_vit", transformers.ViTModel, lambda m, x: m(pixel_values=x).last_hidden_state[:, 0],
         transformers.ViTImageProcessor, transformers.ViTImageProcessorPil, vit),
    ]
    for case, model_cls, fn, fast, pil, kw in cases:
        cfg, model = load(case, model_cls)
        for backend, cls in (("torch", fast), ("pil", pil)):
            name = f"{case}_proc_{backend}"
            p = cls(**kw)
            views = p(imgs, return_tensors="pt")["pixel_values"].float().contiguous()
            with torch.no_grad():
                emb = fn(model.double(), views.double()).contiguous()
                model.float()
            pre = preprocessor_config(p)
            if backend == "pil":
                pre["backend"] = "pil"
            with open(os.path.join(OUT, f"{name}.json"), "w") as f:
                json.dump(dict(cfg, preprocessor=pre), f, indent=2)
                f.write("\n")
            ref[f"{name}.views"] = views
            ref[f"{name}.embedding"] = emb
            print(name, list(views.shape), list(emb.shape), type(p).__name__)
    save_file(ref, os.path.join(OUT, "hf_processors.safetensors"))


if __name__ == "__main__":
    main()
