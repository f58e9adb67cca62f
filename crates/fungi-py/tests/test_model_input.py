"""FUNGIWrapper(model=<torch module>) end to end, against the stand-in torch (CI has no torch; the
same path against the real torch, timm, torchvision and transformers: test_torch_dropin.py)."""
import importlib
import pathlib

import numpy as np
import pytest

from fungi_rs import FUNGIWrapper, KLConfig, DINOConfig
from fungi_rs import _torch

from test_fungi_rs import gpu_check, images

HERE = pathlib.Path(__file__).resolve().parent
HAS_TORCH = importlib.util.find_spec("torch") is not None
TINY = dict(img_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=3)


def test_a_module_gives_the_features_of_its_weights_file_as_a_tensor(standin, tmp_path):
    model = standin.VisionTransformer(**TINY, num_classes=0)
    cfgs = [KLConfig(latent_dim=32), DINOConfig(latent_dim=64)]
    w = FUNGIWrapper(model, target_layer="blocks.1.attn.proj", extractor_configs=cfgs)
    assert w.return_tensors == "pt" and w.block_names == ["kl", "dino"]
    out = w(tuple(images()[:3]))  # a tuple of PIL images, as zip(*batch) yields it
    import torch  # the stand-in
    assert isinstance(out, torch.Tensor) and out.shape == (3, 2 * 48)
    # The weights= / arch= path on the same tensors, written to a file: the same features.
    arrays = dict(_torch.state_dict_arrays(model))
    st = tmp_path / "m.safetensors"
    gpu_check.st_write(st, {k: ("F32", list(a.shape), a.tobytes()) for k, a in arrays.items()}, {})
    ref = FUNGIWrapper(weights=st, arch=_torch.describe(model), target_layer="blocks.1.attn.proj",
                       extractor_configs=cfgs)
    np.testing.assert_array_equal(out.numpy(), ref(images()[:3]))
    assert isinstance(w(images()[:1], return_tensors="np"), np.ndarray)


def test_a_module_that_is_not_a_supported_vit_or_target_is_refused(standin):
    with pytest.raises(TypeError, match="ResNet"):
        FUNGIWrapper(standin.ResNet(), extractor_configs=[KLConfig()])
    model = standin.VisionTransformer(**TINY, num_classes=0)
    with pytest.raises(ValueError, match="blocks.7"):
        FUNGIWrapper(model, target_layer="blocks.7.attn.proj", extractor_configs=[KLConfig()])
    with pytest.raises(ValueError, match="norm1"):
        FUNGIWrapper(model, target_layer="blocks.1.norm1", extractor_configs=[KLConfig()])
    with pytest.raises(ValueError, match="alternatives"):
        FUNGIWrapper(model, weights="x.pth", extractor_configs=[KLConfig()])
