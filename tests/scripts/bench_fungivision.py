#!/usr/bin/env python3
"""fungivision 0.0.2 throughput, next to `cargo bench --bench extract` / `fungi bench`.

    pip install torch==2.9.0 torchvision==0.24.0 pillow==13.0.0 timm fungivision==0.0.2
    python tests/scripts/bench_fungivision.py [objectives] [batches] [archs] \
        [--device cpu|cuda] [--fp16 0|1|0,1] [--tf32 0|1|0,1] [--iters N] [--threads T]
        [--json FILE] [--jsonl FILE]

ViT-S/16 (or dino_vitb16) with DINO's architecture (timm VisionTransformer, LayerNorm eps 1e-6, CLS
pooling, no head, fused attention), random weights, target blocks.11.attn.proj. Timed: PIL images
in, features out (one warm-up call on the batch, then `--iters` timed calls, median; on CUDA each
call ends with torch.cuda.synchronize()). SimCLR's comparison batch is a random [64*49, 96] tensor
(as in ../shared/docs/torch-baseline.md), so setup() is skipped. `--fp16 1` is fungivision's
`use_fp16=True` (its autocast). `--tf32 1` allows TF32 for f32 matmuls and convolutions on CUDA
(torch's default is strict FP32 for matmuls; cubecl, under fungi-rs, always uses TF32 on sm_80+):
rows for both make the f32 speed comparison like for like. Peak memory: the process's max RSS on CPU, and
torch.cuda.max_memory_allocated on CUDA.
"""
import argparse, json, os, resource, statistics, sys, time
from functools import partial

import numpy as np, torch, torch.nn as nn
from PIL import Image
from timm.models.vision_transformer import VisionTransformer
from fungivision.wrapper import FUNGIWrapper
from fungivision.config import KLConfig, DINOConfig, SimCLRConfig

ap = argparse.ArgumentParser()
ap.add_argument("objectives", nargs="?", default="kl,dino,simclr,all")
ap.add_argument("batches", nargs="?", default="1,8")
ap.add_argument("archs", nargs="?", default="dino_vits16")
ap.add_argument("--device", default="cpu")
ap.add_argument("--fp16", default="0")
ap.add_argument("--iters", type=int, default=1)
ap.add_argument("--threads", type=int, default=int(os.environ.get("FUNGI_BENCH_THREADS", "2")))
ap.add_argument("--tf32", default="0", help="f32 rows with TF32 off/on (CUDA): 0, 1 or 0,1")
ap.add_argument("--json", default=None, help="also write the rows to this JSON file at the end")
ap.add_argument("--jsonl", default=None, help="append each row to this file as a JSON line when timed")
a = ap.parse_args()

dev = torch.device(a.device)
if dev.type == "cpu":
    torch.set_num_threads(a.threads)
torch.manual_seed(0)
objs = a.objectives.split(",")
batches = [int(b) for b in a.batches.split(",")]
archs = a.archs.split(",")
fp16s = [bool(int(x)) for x in a.fp16.split(",")]
tf32s = [bool(int(x)) for x in a.tf32.split(",")]
dims = {"dino_vits16": (384, 6), "dino_vitb16": (768, 12)}
rng = np.random.default_rng(0)
images = [Image.fromarray(rng.integers(0, 256, (256, 320, 3), dtype=np.uint8)) for _ in range(max(batches))]
sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
print(f"torch {torch.__version__} device {dev} threads {torch.get_num_threads()}"
      + (f" gpu {torch.cuda.get_device_name(dev)}" if dev.type == "cuda" else ""))
print(f"{'arch':<12} {'objective':<8} {'batch':>5} {'img/s':>8} {'s/call':>8} {'maxrss MB':>10} {'fp16':>5} {'tf32':>5} {'gpu MB':>8}")
rows = []
# TF32 matters for the f32 rows; use_fp16 rows keep torch's default (strict FP32 matmuls).
configs = [(x, o, f, t) for x in archs for o in objs for f in fp16s for t in (tf32s if not f else [False])]
for arch, obj, fp16, tf32 in configs:
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32
    e, h = dims[arch]
    cfgs = {"kl": [KLConfig()], "dino": [DINOConfig()], "simclr": [SimCLRConfig()],
            "all": [KLConfig(), DINOConfig(), SimCLRConfig()]}[obj]
    model = VisionTransformer(patch_size=16, embed_dim=e, depth=12, num_heads=h, mlp_ratio=4, qkv_bias=True,
                              norm_layer=partial(nn.LayerNorm, eps=1e-6), num_classes=0, global_pool="token")
    w = FUNGIWrapper(model=model, target_layer="blocks.11.attn.proj", device=dev,
                     use_fp16=fp16, extractor_configs=cfgs)
    for ex in w.extractors:
        if hasattr(ex, "comparison_batch") or type(ex).__name__.startswith("SimCLR"):
            ex.comparison_batch = torch.randn(64 * 49, 96, device=dev)
    for b in batches:
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        w(images[:b])
        sync()
        ts = []
        for _ in range(a.iters):
            t = time.perf_counter()
            out = w(images[:b])
            sync()
            ts.append(time.perf_counter() - t)
        assert out.shape[0] == b
        dt = statistics.median(ts)
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        gpu = torch.cuda.max_memory_allocated(dev) / 2**20 if dev.type == "cuda" else None
        row = dict(arch=arch, objective=obj, batch=b, use_fp16=fp16, tf32=tf32, images_per_s=b / dt,
                   s_per_call=dt, max_rss_mb=rss, gpu_max_allocated_mb=gpu, torch=torch.__version__,
                   device=str(dev) + (f" {torch.cuda.get_device_name(dev)}" if dev.type == "cuda" else ""))
        rows.append(row)
        if a.jsonl:
            with open(a.jsonl, "a") as f:
                f.write(json.dumps(row) + "\n")
        print(f"{arch:<12} {obj:<8} {b:>5} {b / dt:>8.3f} {dt:>8.2f} {rss:>10.0f} {int(fp16):>5} {int(tf32):>5} "
              f"{'-' if gpu is None else f'{gpu:.0f}':>8}", flush=True)
    del w, model
    if dev.type == "cuda":
        torch.cuda.empty_cache()
if a.json:
    with open(a.json, "w") as f:
        json.dump(dict(torch=torch.__version__, device=str(dev), rows=rows), f, indent=2)
