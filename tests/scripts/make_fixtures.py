#!/usr/bin/env python3
"""Regenerates tests/fixtures/backbone_extra.safetensors (not part of ../shared/golden).

Pinned: torch 2.9.0, safetensors 0.7+, numpy 2.x. Run from the repo root:
    python tests/scripts/make_fixtures.py
The ViT code below mirrors facebookresearch/dino `vision_transformer.py` (@7c446df) and
facebookresearch/dinov2 (`DinoVisionTransformer`, LayerScale, `interpolate_pos_encoding` with
interpolate_offset=0.1, antialias=False). It is checked against the golden eval embeddings first.
"""
import math
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

torch.manual_seed(0)
G = "tests/fixtures/golden"


def vit_forward(sd, x, depth, heads, patch, eps=1e-6, layer_scale=False):
    B, nc, w, h = x.shape  # DINO's naming: w = dim 2, h = dim 3
    t = F.conv2d(x, sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"], stride=patch)
    t = t.flatten(2).transpose(1, 2)
    E = t.shape[-1]
    t = torch.cat((sd["cls_token"].expand(B, -1, -1), t), dim=1)
    pos = sd["pos_embed"]
    npatch, N = t.shape[1] - 1, pos.shape[1] - 1
    if not (npatch == N and w == h):
        cls_pos, patch_pos = pos[:, 0], pos[:, 1:]
        M = int(math.sqrt(N))
        w0, h0 = w // patch + 0.1, h // patch + 0.1
        patch_pos = F.interpolate(
            patch_pos.reshape(1, M, M, E).permute(0, 3, 1, 2),
            scale_factor=(w0 / math.sqrt(N), h0 / math.sqrt(N)), mode="bicubic")
        assert int(w0) == patch_pos.shape[-2] and int(h0) == patch_pos.shape[-1]
        patch_pos = patch_pos.permute(0, 2, 3, 1).reshape(1, -1, E)
        pos = torch.cat((cls_pos.unsqueeze(0), patch_pos), dim=1)
    t = t + pos
    hd = E // heads
    for i in range(depth):
        p = f"blocks.{i}."
        ln = lambda z, n: F.layer_norm(z, (E,), sd[p + n + ".weight"], sd[p + n + ".bias"], eps)
        y = ln(t, "norm1")
        Bn, T, _ = y.shape
        qkv = F.linear(y, sd[p + "attn.qkv.weight"], sd[p + "attn.qkv.bias"])
        qkv = qkv.reshape(Bn, T, 3, heads, hd).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        a = ((q @ k.transpose(-2, -1)) * hd ** -0.5).softmax(dim=-1)
        y = (a @ v).transpose(1, 2).reshape(Bn, T, E)
        y = F.linear(y, sd[p + "attn.proj.weight"], sd[p + "attn.proj.bias"])
        if layer_scale:
            y = y * sd[p + "ls1.gamma"]
        t = t + y
        m = F.linear(F.gelu(F.linear(ln(t, "norm2"), sd[p + "mlp.fc1.weight"], sd[p + "mlp.fc1.bias"])),
                     sd[p + "mlp.fc2.weight"], sd[p + "mlp.fc2.bias"])
        if layer_scale:
            m = m * sd[p + "ls2.gamma"]
        t = t + m
    t = F.layer_norm(t, (E,), sd["norm.weight"], sd["norm.bias"], eps)
    return t[:, 0]


def main():
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    golden = load_file(f"{G}/model.safetensors")
    ev = load_file(f"{G}/eval.safetensors")
    x = (ev["views_u8"].float() / 255 - mean) / std
    ref = ev["embeddings"][ev["views_image_index"]]
    got = vit_forward(golden, x, 4, 4, 16)
    assert (got - ref).abs().max() < 1e-5, (got - ref).abs().max()

    out = {}
    # DINO v1 golden model at other input sizes (pos-embed interpolation, non-square inputs).
    for name, (H, W) in {"dino_160x224": (160, 224), "dino_288x288": (288, 288), "dino_230x100": (230, 100)}.items():
        xi = torch.randn(2, 3, H, W).half()  # stored as f16, computed on the up-cast values
        out[f"{name}.input"] = xi
        out[f"{name}.cls"] = vit_forward(golden, xi.float(), 4, 4, 16)

    # A tiny random DINOv2-style model: patch 14, 518-px grid (37x37), LayerScale, 2 blocks.
    E, depth, heads, P, M = 32, 2, 4, 14, 37
    sd = {"cls_token": torch.randn(1, 1, E) * 0.02, "pos_embed": torch.randn(1, 1 + M * M, E) * 0.5,
          "patch_embed.proj.weight": torch.randn(E, 3, P, P) * 0.05, "patch_embed.proj.bias": torch.randn(E) * 0.02,
          "norm.weight": 1 + 0.1 * torch.randn(E), "norm.bias": 0.05 * torch.randn(E),
          "mask_token": torch.zeros(1, E)}
    for i in range(depth):
        p = f"blocks.{i}."
        for n, shape in {"attn.qkv": (3 * E, E), "attn.proj": (E, E), "mlp.fc1": (4 * E, E), "mlp.fc2": (E, 4 * E)}.items():
            sd[p + n + ".weight"] = torch.randn(*shape) * 0.1
            sd[p + n + ".bias"] = torch.randn(shape[0]) * 0.02
        for n in ("norm1", "norm2"):
            sd[p + n + ".weight"] = 1 + 0.1 * torch.randn(E)
            sd[p + n + ".bias"] = 0.05 * torch.randn(E)
        sd[p + "ls1.gamma"] = 0.5 + 0.1 * torch.randn(E)
        sd[p + "ls2.gamma"] = 0.5 + 0.1 * torch.randn(E)
    save_file({k: v.half() for k, v in sd.items()}, "tests/fixtures/dinov2_tiny_f16.safetensors",
              metadata={"arch": "tiny DINOv2: embed 32, depth 2, heads 4, patch 14, img 518, layer scale"})
    sd16 = {k: v.half().float() for k, v in sd.items()}  # the test loads the f16 file, up-cast
    for name, (H, W) in {"dinov2_224": (224, 224), "dinov2_518": (518, 518), "dinov2_112x168": (112, 168)}.items():
        xi = torch.randn(1 if H > 300 else 2, 3, H, W).half()
        out[f"{name}.input"] = xi
        out[f"{name}.cls"] = vit_forward(sd16, xi.float(), depth, heads, P, layer_scale=True)
    save_file({k: v.contiguous() for k, v in out.items()}, "tests/fixtures/backbone_extra.safetensors",
              metadata={"generator": "tests/scripts/make_fixtures.py", "torch": torch.__version__})
    print("ok", {k: tuple(v.shape) for k, v in out.items()})


if __name__ == "__main__":
    main()
