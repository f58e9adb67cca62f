#!/usr/bin/env python3
"""timm's ViT forward on PyTorch CPU, next to `cargo bench -p fungi-tests --bench vit_forward`.

    pip install torch==2.9.0 timm
    python tests/scripts/bench_timm_forward.py [archs] [batches]

timm `VisionTransformer` with DINO's architecture (patch 16, qkv bias, LayerNorm eps 1e-6, CLS
token after the final norm, no head), fused attention on (`F.scaled_dot_product_attention`),
random weights, 224 px, float32, eval + inference_mode, torch.set_num_threads(2) unless
FUNGI_BENCH_THREADS says otherwise. Protocol as the Rust bench: one warm-up, FUNGI_BENCH_REPS
(default 3) timed runs, best and median images/s. Also prints the machine's f32 GEMM rate
(4096² matmul) so that both benches can be read as a fraction of the GEMM peak.
"""
import os, sys, time
from functools import partial
import torch, torch.nn as nn
from timm.models.vision_transformer import VisionTransformer
import timm.layers

threads = int(os.environ.get("FUNGI_BENCH_THREADS", "2"))
torch.set_num_threads(threads)
reps = int(os.environ.get("FUNGI_BENCH_REPS", "3"))
archs = (sys.argv[1] if len(sys.argv) > 1 else "dino_vits16,dino_vitb16").split(",")
batches = [int(b) for b in (sys.argv[2] if len(sys.argv) > 2 else "1,8").split(",")]
dims = {"dino_vits16": (384, 6), "dino_vitb16": (768, 12)}

a = torch.randn(4096, 4096); b = torch.randn(4096, 4096)
a @ b
ts = []
for _ in range(3):
    t = time.perf_counter(); a @ b; ts.append(time.perf_counter() - t)
print(f"torch {torch.__version__} threads {torch.get_num_threads()} "
      f"gemm_f32_4096 {2 * 4096 ** 3 / min(ts) / 1e9:.1f} GFLOP/s "
      f"fused_attn {timm.layers.use_fused_attn()}")
print(f"{'arch':<14} {'batch':>5} {'best img/s':>12} {'median img/s':>12} {'ms/batch':>12}")
for arch in archs:
    e, h = dims[arch]
    model = VisionTransformer(patch_size=16, embed_dim=e, depth=12, num_heads=h, mlp_ratio=4,
                              qkv_bias=True, norm_layer=partial(nn.LayerNorm, eps=1e-6),
                              num_classes=0, global_pool="token").eval()
    for bsz in batches:
        x = torch.randn(bsz, 3, 224, 224)
        with torch.inference_mode():
            model(x)
            ts = []
            for _ in range(reps):
                t = time.perf_counter(); model(x); ts.append(time.perf_counter() - t)
        ts.sort()
        med = ts[len(ts) // 2]
        print(f"{arch:<14} {bsz:>5} {bsz / ts[0]:>12.2f} {bsz / med:>12.2f} {med * 1e3:>12.1f}", flush=True)
