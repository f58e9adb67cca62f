#!/usr/bin/env python3
"""fungivision 0.0.2 on PyTorch CPU, for docs/performance.md next to `cargo bench --bench extract`.

    pip install torch==2.9.0 torchvision==0.24.0 pillow==13.0.0 timm fungivision==0.0.2
    python tests/scripts/bench_fungivision.py [objectives] [batches] [archs]

ViT-S/16 (or dino_vitb16) with DINO's architecture (timm VisionTransformer, LayerNorm eps 1e-6, CLS pooling, no head),
random weights, target blocks.11.attn.proj, float32, torch.set_num_threads(2). Timed: PIL images in,
features out (one warm-up call on one image, then one timed call; wall seconds). SimCLR's comparison
batch is a random [64*49, 96] tensor (as in ../shared/docs/torch-baseline.md), so setup() is skipped.
"""
import sys, time, resource
from functools import partial
import numpy as np, torch, torch.nn as nn
from PIL import Image
from timm.models.vision_transformer import VisionTransformer
from fungivision.wrapper import FUNGIWrapper
from fungivision.config import KLConfig, DINOConfig, SimCLRConfig

torch.set_num_threads(2)
torch.manual_seed(0)
objs = (sys.argv[1] if len(sys.argv) > 1 else "kl,dino,simclr,all").split(",")
batches = [int(b) for b in (sys.argv[2] if len(sys.argv) > 2 else "1,8").split(",")]
archs = (sys.argv[3] if len(sys.argv) > 3 else "dino_vits16").split(",")
dims = {"dino_vits16": (384, 6), "dino_vitb16": (768, 12)}
rng = np.random.default_rng(0)
images = [Image.fromarray(rng.integers(0, 256, (256, 320, 3), dtype=np.uint8)) for _ in range(max(batches))]
print(f"torch {torch.__version__} threads {torch.get_num_threads()}")
print(f"{'arch':<12} {'objective':<8} {'batch':>5} {'img/s':>8} {'s/call':>8} {'maxrss MB':>10}")
for arch, obj in [(a, o) for a in archs for o in objs]:
    e, h = dims[arch]
    cfgs = {"kl": [KLConfig()], "dino": [DINOConfig()], "simclr": [SimCLRConfig()],
            "all": [KLConfig(), DINOConfig(), SimCLRConfig()]}[obj]
    model = VisionTransformer(patch_size=16, embed_dim=e, depth=12, num_heads=h, mlp_ratio=4, qkv_bias=True,
                              norm_layer=partial(nn.LayerNorm, eps=1e-6), num_classes=0, global_pool="token")
    w = FUNGIWrapper(model=model, target_layer="blocks.11.attn.proj", device=torch.device("cpu"),
                     use_fp16=False, extractor_configs=cfgs)
    for e in w.extractors:
        if hasattr(e, "comparison_batch") or type(e).__name__.startswith("SimCLR"):
            e.comparison_batch = torch.randn(64 * 49, 96)
    for b in batches:
        w(images[:1])
        t = time.perf_counter()
        out = w(images[:b])
        dt = time.perf_counter() - t
        assert out.shape[0] == b
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"{arch:<12} {obj:<8} {b:>5} {b / dt:>8.3f} {dt:>8.2f} {rss:>10.0f}", flush=True)
