"""fungivision's README, line by line, with ``fungi_rs`` in place of ``fungivision``, and every
torch ViT family through ``FUNGIWrapper(model=...)`` against the weights-file path.

Opt-in: needs torch (and timm / torchvision / transformers for their families); CI has none of
them (torch's wheels are GBs) and runs test_model_input.py against a stand-in instead. Here:
``/tmp/torchenv/bin/python -m pytest crates/fungi-py/tests/test_torch_dropin.py``."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from fungi_rs import DINOConfig, FUNGIWrapper, KLConfig  # noqa: E402
from fungi_rs import _torch  # noqa: E402

import test_torch_describe as td  # noqa: E402
from test_fungi_rs import gpu_check, images  # noqa: E402

CFGS = [KLConfig(latent_dim=32), DINOConfig(latent_dim=64)]


def same_as_weights_file(tmp_path, model, target):
    w = FUNGIWrapper(model, target_layer=target, extractor_configs=CFGS)
    out = w(tuple(images()[:4]))
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32 and out.device.type == "cpu"
    tmp_path.mkdir(parents=True, exist_ok=True)
    st = tmp_path / "m.safetensors"
    arrays = dict(_torch.state_dict_arrays(model))
    gpu_check.st_write(st, {k: ("F32", list(a.shape), a.tobytes()) for k, a in arrays.items()}, {})
    ref = FUNGIWrapper(weights=st, arch=_torch.describe(model), target_layer=target, extractor_configs=CFGS)
    want = ref(images()[:4])
    err = float(np.max(np.abs(out.numpy() - want)))
    assert err <= 1e-5, err
    return out


@pytest.mark.parametrize("case", list(td.TIMM_CASES))
def test_timm_module_equals_its_weights_file(tmp_path, case):
    kw = dict(td.TIMM_CASES[case])
    model = td.timm_vit(3, **kw)
    same_as_weights_file(tmp_path, model, "blocks.1.attn.proj")


def test_torchvision_module_equals_its_weights_file(tmp_path):
    same_as_weights_file(tmp_path, td.torchvision_vit(7), "encoder.layers.encoder_layer_1.self_attention.out_proj")


def test_hugging_face_modules_equal_their_weights_files(tmp_path):
    transformers = pytest.importorskip("transformers")
    hf = dict(hidden_size=48, num_hidden_layers=2, num_attention_heads=3, patch_size=8, image_size=32)
    d2 = td.randomise(transformers.Dinov2Model(transformers.Dinov2Config(mlp_ratio=4, **hf)), 8)
    same_as_weights_file(tmp_path / "d", d2, "encoder.layer.1.attention.output.dense")
    vit = td.randomise(transformers.ViTModel(transformers.ViTConfig(intermediate_size=96, **hf)), 9)
    same_as_weights_file(tmp_path / "v", vit, "encoder.layer.1.attention.output.dense")


@pytest.mark.parametrize("hub_module", ["torch_hub_dino", "torch_hub_dinov2"])
def test_dino_hub_modules_equal_their_weights_files(tmp_path, hub_module):
    model = td.randomise(td.hub(hub_module).vit_tiny_test(), 12)
    same_as_weights_file(tmp_path, model, "blocks.1.attn.proj")


def test_fungivisions_readme_example_runs_with_the_import_changed():
    """The README's lines, in order; only `fungivision` -> `fungi_rs` (and a tiny timm model with
    a tiny dataset in place of DINO ViT-B/16 and Flowers102)."""
    from fungi_rs.config import DINOConfig, KLConfig, SimCLRConfig  # noqa: F811
    from fungi_rs.wrapper import FUNGIWrapper  # noqa: F811
    import torch.nn as nn
    from torch.utils.data import DataLoader, Dataset
    from tqdm import tqdm

    class Pictures(Dataset):
        def __init__(self, n):
            self.ims = images()
            self.n = n

        def __len__(self):
            return self.n

        def __getitem__(self, i):
            return self.ims[i % len(self.ims)], i % 2

    train_dataset, dataset = Pictures(12), Pictures(6)
    model = td.timm_vit(5, num_classes=0)

    device = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    with pytest.warns(UserWarning, match="use_fp16") if device.type == "cpu" else _nothing():
        fungi = FUNGIWrapper(
            model=model,
            target_layer="blocks.1.attn.proj",
            device=device,
            use_fp16=True,
            extractor_configs=[
                KLConfig(),
                DINOConfig(),
                SimCLRConfig(num_patches=4, stride_scale=6, comparison_batch_size=8),
            ]
        )
    fungi.setup(dataset=train_dataset)
    wrapper = fungi  # the README calls it `wrapper` below

    batch_size = 4
    num_workers = 0
    features = []
    data_loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                             collate_fn=lambda batch: zip(*batch))
    for images_, _ in tqdm(data_loader):
        features.append(wrapper(images_).cpu().float())

    embeddings = torch.randn(6, 48)  # "Assuming you've extracted them on your own"
    embeddings = nn.functional.normalize(embeddings, dim=-1, p=2)
    features = torch.cat([embeddings, torch.cat(features)], dim=-1)
    assert features.shape == (6, 48 + 3 * 48)
    # Each block of the FUNGI part is L2-normalised.
    for b in range(3):
        blk = features[:, 48 * (b + 1):48 * (b + 2)]
        np.testing.assert_allclose(blk.norm(dim=-1).numpy(), 1.0, atol=1e-5)


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


def test_uint8_tensors_and_extract_follow_the_torch_input():
    model = td.timm_vit(4, num_classes=0)
    w = FUNGIWrapper(model, target_layer="blocks.1.attn.proj", extractor_configs=CFGS)
    ims = [im.convert("RGB") for im in images()[:3]]
    base = w(ims)
    chw = [torch.from_numpy(np.asarray(im)).permute(2, 0, 1).contiguous() for im in ims]
    assert torch.equal(w(chw), base)                      # C×H×W, as torchvision.io reads
    assert torch.equal(w([c.permute(1, 2, 0) for c in chw]), base)   # H×W×3
    with pytest.raises(ValueError, match="uint8"):
        w([chw[0].float() / 255])
    f, labels = w.extract([(im, i) for i, im in enumerate(ims)], progress=False)
    assert isinstance(f, torch.Tensor) and torch.equal(f, base)
    assert labels.tolist() == [0, 1, 2]
