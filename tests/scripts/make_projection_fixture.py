#!/usr/bin/env python3
"""tests/fixtures/paper_projection.pth: the paper repo's projection file format
(generate_projection_matrix.py: torch.save({"scaling": 1/sqrt(proj_dim), "projection": +-1 f32}))
for a [8, 65] matrix, seed 42, and the same matrix as I8 safetensors."""
import torch
from safetensors.torch import save_file
torch.manual_seed(42)
p = ((torch.rand(8, 65) - 0.5) > 0).to(torch.int8)
p[p == 0] = -1
torch.save({"scaling": 1.0 / torch.sqrt(torch.tensor(8.0)), "projection": p.to(torch.float32)}, "tests/fixtures/paper_projection.pth")
save_file({"projection": p.contiguous(), "projection_scaling": (1.0 / torch.sqrt(torch.tensor(8.0))).reshape(())}, "tests/fixtures/paper_projection.safetensors")
print(p[:2, :8])
