#!/usr/bin/env python3
"""Regenerates tests/fixtures/dense/{state,reference}.safetensors: an independent torch reference of
dense FUNGI (the paper's eval_gradients.py `combined_token_features`, with its bugs fixed as
crates/objectives/fungi-dense does: exact neighbour search, the k-th neighbour is the k-th row,
f32/f64 loss instead of float16) on the golden tiny DINO model (tests/fixtures/golden).

Pinned: torch 2.9 (CPU), safetensors 0.7, Pillow 13. Run from the repo root:
    /tmp/torchenv/bin/python tests/scripts/make_dense_fixtures.py

Everything is computed in float64 from float32 inputs; per-token gradients are MATERIALISED
(`einsum` like the paper's autograd hack) and projected by a dense +-1 matrix: the brute force
the Rust code avoids. The state file holds only what a state made elsewhere would: the
projection (I8), its scaling, the head and the support bank, with a config of just
target_layer / target_shape / embed_dim.
"""
import json
import math
import os

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file, save_file

torch.manual_seed(31)
G = "tests/fixtures/golden"
OUT = "tests/fixtures/dense"
S, PATCH, DEPTH, HEADS = 64, 16, 4, 4
L, NEIGH, K, M, N_IMG = 16, 2, 24, 12, 2
TAU, C = 0.07, -1e4
TARGET = 3  # blocks.3.attn.proj
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.255)  # the paper code's std (typo kept)


def tokens_with_target(sd, x):
    """DINO forward (vision_transformer.py @7c446df) returning every token after the final norm
    and the target Linear's input a and output y (y tracked)."""
    B = x.shape[0]
    t = F.conv2d(x, sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"], stride=PATCH)
    t = t.flatten(2).transpose(1, 2)
    E = t.shape[-1]
    t = torch.cat((sd["cls_token"].expand(B, -1, -1), t), dim=1)
    pos = sd["pos_embed"]
    n = pos.shape[1] - 1
    cls_pos, patch_pos = pos[:, 0], pos[:, 1:]
    m = int(math.sqrt(n))
    w0 = S // PATCH + 0.1
    patch_pos = F.interpolate(patch_pos.reshape(1, m, m, E).permute(0, 3, 1, 2),
                              scale_factor=(w0 / m, w0 / m), mode="bicubic")
    patch_pos = patch_pos.permute(0, 2, 3, 1).reshape(1, -1, E)
    t = t + torch.cat((cls_pos.unsqueeze(0), patch_pos), dim=1)
    hd = E // HEADS
    a_keep = y_keep = None
    for i in range(DEPTH):
        p = f"blocks.{i}."
        ln = lambda z, nm: F.layer_norm(z, (E,), sd[p + nm + ".weight"], sd[p + nm + ".bias"], 1e-6)
        h = ln(t, "norm1")
        T = h.shape[1]
        qkv = F.linear(h, sd[p + "attn.qkv.weight"], sd[p + "attn.qkv.bias"])
        qkv = qkv.reshape(B, T, 3, HEADS, hd).permute(2, 0, 3, 1, 4)
        att = ((qkv[0] @ qkv[1].transpose(-2, -1)) * hd ** -0.5).softmax(dim=-1)
        a = (att @ qkv[2]).transpose(1, 2).reshape(B, T, E)
        if i == TARGET:
            a = a.detach()
            y = F.linear(a, sd[p + "attn.proj.weight"], sd[p + "attn.proj.bias"]).requires_grad_()
            a_keep, y_keep = a, y
        else:
            y = F.linear(a, sd[p + "attn.proj.weight"], sd[p + "attn.proj.bias"])
        t = t + y
        t = t + F.linear(F.gelu(F.linear(ln(t, "norm2"), sd[p + "mlp.fc1.weight"], sd[p + "mlp.fc1.bias"])),
                         sd[p + "mlp.fc2.weight"], sd[p + "mlp.fc2.bias"])
    t = F.layer_norm(t, (E,), sd["norm.weight"], sd["norm.bias"], 1e-6)
    return t, a_keep, y_keep


def info_nce(neg, pos):
    """The paper's / fungivision's info_nce_loss (src/utils/simclr.py:46-85) in float64: tau divides
    only the positive term, self-similarity -1e4, mean over the positive rows."""
    f = F.normalize(torch.cat([neg, pos]), dim=1)
    nn_, T = neg.shape[0], pos.shape[0]
    c = f[nn_:] @ f.T
    c[torch.arange(T), nn_ + torch.arange(T)] = C
    ppos = c[:, nn_:] / TAU
    nll = -(ppos - torch.diag(torch.diag(ppos))).sum(1) / (T - 1) + torch.logsumexp(c, dim=-1)
    return nll.mean()


def main():
    os.makedirs(OUT, exist_ok=True)
    sd32 = load_file(f"{G}/model.safetensors")
    sd = {k: v.double() for k, v in sd32.items()}
    E = sd["norm.weight"].shape[0]
    views32 = torch.randn(N_IMG, 3, S, S)
    support32 = F.normalize(torch.randn(M, E), dim=1)
    head = torch.nn.Linear(E, L)
    hw32, hb32 = head.weight.detach().clone(), head.bias.detach().clone()
    proj8 = torch.where(torch.rand(K, E * (E + 1)) > 0.5, 1, -1).to(torch.int8)
    scaling = 1.0 / math.sqrt(K)

    tokens, a, y = tokens_with_target(sd, views32.double())
    T = tokens.shape[1]
    hw, hb, support = hw32.double(), hb32.double(), support32.double()
    latent = tokens @ hw.T + hb
    # Exact neighbours of the RAW tokens by dot product, best first (the paper: ScaNN + scramble).
    scores = tokens.detach() @ support.T
    nbr = scores.topk(NEIGH, dim=-1).indices  # [B, T, N]
    negs = support[nbr] @ hw.T + hb  # [B, T, N, L]: the k-th negative IS the k-th row
    n_keep = T * NEIGH - int(math.floor(0.5 * T * NEIGH))
    kept = torch.stack([torch.randperm(T * NEIGH)[:n_keep].sort().values for _ in range(N_IMG)])
    loss = sum(info_nce(negs[b].reshape(T * NEIGH, L)[kept[b]], latent[b]) for b in range(N_IMG))
    loss.backward()
    delta = y.grad  # [B, T, O]
    a1 = torch.cat([a, torch.ones(N_IMG, T, 1, dtype=a.dtype)], -1)
    grads = torch.einsum("bto,bti->btoi", delta, a1)[:, 1:]  # materialised, CLS dropped
    g = scaling * grads.reshape(N_IMG, T - 1, -1) @ proj8.double().T
    feat = F.normalize(torch.cat([F.normalize(tokens[:, 1:], dim=-1), F.normalize(g, dim=-1)], -1), dim=-1)
    per_image = torch.einsum("bto,bti->boi", delta, a1)

    # The transform: PIL RGB, bilinear resize to S x S, ToTensor, the paper's normalisation.
    img = Image.open(f"{G}/images/01_coffee.png").convert("RGB").resize((S, S), Image.BILINEAR)
    arr = torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1).float() / 255
    tin = (arr - torch.tensor(MEAN).view(3, 1, 1)) / torch.tensor(STD).view(3, 1, 1)

    cfg = {"target_layer": "blocks.3.attn.proj", "target_shape": [E, E], "embed_dim": E}
    save_file({
        "projection": proj8.contiguous(),
        "projection_scaling": torch.tensor(scaling, dtype=torch.float32),
        "dense.head.weight": hw32.contiguous(),
        "dense.head.bias": hb32.contiguous(),
        "dense.support": support32.contiguous(),
    }, f"{OUT}/state.safetensors", metadata={"format": "fungi-state/1", "config": json.dumps(cfg)})
    settings = {"seed": 0, "target_layer": "blocks.3.attn.proj", "batch_size": 2,
                "dense": {"image_size": S, "latent_dim": L, "temperature": TAU, "neighbours": NEIGH,
                          "drop": 0.5}}
    save_file({
        "views": views32.contiguous(),
        "kept": kept.to(torch.int64).contiguous(),
        "neighbours": nbr.to(torch.int64).contiguous(),
        "features_f64": feat.detach().contiguous(),
        "per_image_grad_f64": per_image.detach().contiguous(),
        "transform_01_coffee": tin.contiguous(),
    }, f"{OUT}/reference.safetensors", metadata={"settings": json.dumps(settings)})
    for f in ("state", "reference"):
        print(f, os.path.getsize(f"{OUT}/{f}.safetensors"), "bytes")


if __name__ == "__main__":
    main()
