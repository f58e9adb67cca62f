#!/usr/bin/env python3
"""PyTorch CPU reference for `cargo bench -p fungi-tests --bench vit_forward`: the same DINO ViT
forward (functional copy of DINO's VisionTransformer, random weights, 224 px), batch 1 and 8,
torch.set_num_threads(2), no_grad, float32. Same warm-up/3 reps/best+median protocol."""
import sys, time, torch, torch.nn.functional as F
sys.path.insert(0, "tests/scripts")
from make_fixtures import vit_forward  # noqa: E402  (runs the fixture checks on import? no: guarded)

torch.set_num_threads(2)
reps = 3
print(f"torch {torch.__version__} threads {torch.get_num_threads()}")
for name, E, heads in [("dino_vits16", 384, 6), ("dino_vitb16", 768, 12)]:
    g = 14
    sd = {"cls_token": torch.randn(1, 1, E) * .02, "pos_embed": torch.randn(1, 1 + g * g, E) * .02,
          "patch_embed.proj.weight": torch.randn(E, 3, 16, 16) * .02, "patch_embed.proj.bias": torch.zeros(E),
          "norm.weight": torch.ones(E), "norm.bias": torch.zeros(E)}
    for i in range(12):
        p = f"blocks.{i}."
        for n, s in {"attn.qkv": (3 * E, E), "attn.proj": (E, E), "mlp.fc1": (4 * E, E), "mlp.fc2": (E, 4 * E)}.items():
            sd[p + n + ".weight"] = torch.randn(*s) * .02
            sd[p + n + ".bias"] = torch.zeros(s[0])
        for n in ("norm1", "norm2"):
            sd[p + n + ".weight"], sd[p + n + ".bias"] = torch.ones(E), torch.zeros(E)
    for b in (1, 8):
        x = torch.randn(b, 3, 224, 224)
        with torch.no_grad():
            vit_forward(sd, x, 12, heads, 16)
            ts = []
            for _ in range(reps):
                t = time.perf_counter(); vit_forward(sd, x, 12, heads, 16); ts.append(time.perf_counter() - t)
        ts.sort()
        print(f"{name:<14} {b:>5} {b / ts[0]:>12.2f} {b / ts[len(ts) // 2]:>12.2f} {ts[len(ts) // 2] * 1e3:>12.1f}")
