"""fungi_rs against the golden fungivision outputs, and its API contract (configs, errors)."""
import json
import os
import pathlib
import sys

import numpy as np
import pytest
from PIL import Image

from fungi_rs import DINOConfig, FUNGIWrapper, KLConfig, SimCLRConfig

ROOT = pathlib.Path(__file__).resolve().parents[3]
GOLDEN = ROOT / "tests" / "fixtures" / "golden"
sys.path.insert(0, str(ROOT / "scripts"))
import gpu_check  # noqa: E402  (its stdlib safetensors reader/writer)


def golden(name, tensor):
    t, _ = gpu_check.st_read(GOLDEN / name)
    dt, shape, data = t[tensor]
    return np.frombuffer(data, dtype={"F64": "<f8", "F32": "<f4"}[dt]).reshape(shape)


def images():
    files = [e["file"] for e in json.loads((GOLDEN / "images" / "labels.json").read_text())["images"]]
    return [Image.open(GOLDEN / "images" / f) for f in files]


def wrapper(**kw):
    args = dict(weights=GOLDEN / "model.safetensors", arch=str(GOLDEN / "model.json"),
                target_layer="blocks.3.attn.proj", extractor_configs=[KLConfig(), SimCLRConfig()],
                batch_size=4)
    args.update(kw)
    return FUNGIWrapper(**args)


@pytest.fixture(scope="module")
def state(tmp_path_factory):
    """A state file made of fungivision's golden heads, projection and comparison batch."""
    path = tmp_path_factory.mktemp("state") / "golden_state.safetensors"
    gpu_check.write_golden_state(GOLDEN, path)
    return path


def test_features_equal_fungivision_on_every_image(state):
    w = wrapper()
    w.load_state(state)
    assert w.block_names == ["kl", "simclr"] and w.feature_dim == 128
    f = w(images())
    assert f.dtype == np.float32 and f.shape == (8, 128)
    for b, name in enumerate(["kl.safetensors", "simclr.safetensors"]):
        want = golden(name, "features_f64")
        np.testing.assert_allclose(f[:, b * 64:(b + 1) * 64], want, atol=1e-4, rtol=0)


def test_embed_equals_the_golden_eval_embeddings():
    w = wrapper(extractor_configs=[KLConfig()])
    e = w.embed(images())
    want = golden("eval.safetensors", "embeddings_f64")
    assert e.shape == (8, 64)
    assert np.max(np.abs(e - want)) <= 1e-4 * np.max(np.abs(want))


def test_inputs_pairs_arrays_paths_and_modes_agree(tmp_path):
    w = wrapper(extractor_configs=[KLConfig(), DINOConfig()])
    ims = images()[1:4]  # PNG: RGB, L, RGBA
    base = w(ims)
    rgb = [im.convert("RGB") for im in ims]
    np.testing.assert_array_equal(w([(im, 0) for im in ims]), base)
    np.testing.assert_array_equal(w([np.asarray(im) for im in rgb]), base)
    paths = [GOLDEN / "images" / f for f in ["01_coffee.png", "02_camera_L.png", "03_logo_RGBA.png"]]
    np.testing.assert_array_equal(w(paths), base)
    # Batch-invariant: one image at a time, numbered as in the full call.
    np.testing.assert_allclose(w(ims[2:], indices=[2]), base[2:], atol=1e-6)


def test_setup_then_save_and_load_state(tmp_path):
    sim = SimCLRConfig(comparison_batch_size=4)
    w = wrapper(extractor_configs=[sim])
    with pytest.raises(ValueError, match="simclr"):
        w(images()[:1])  # no negatives yet: a clear error, not a panic
    w.setup([(im, i) for i, im in enumerate(images())])
    f = w(images()[:2])
    p = tmp_path / "s.safetensors"
    w.save_state(str(p))
    w2 = wrapper(extractor_configs=[sim])
    w2.load_state(str(p))
    np.testing.assert_allclose(w2(images()[:2]), f, atol=1e-6)


def test_extension_keywords_reach_the_library():
    ims = images()[1:3]
    base = wrapper(extractor_configs=[DINOConfig()])(ims)
    fewer = wrapper(extractor_configs=[DINOConfig(local_crops_number=2)])(ims)
    assert fewer.shape == base.shape and not np.allclose(fewer, base)
    with pytest.raises(ValueError, match="global_crops_scale"):
        wrapper(extractor_configs=[DINOConfig(global_crops_scale=(0.9, 0.1))])


def test_bad_values_and_files_are_clear_errors(tmp_path, state):
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        wrapper(weights="nope.pth")
    with pytest.raises(ValueError, match="temperature"):
        wrapper(extractor_configs=[KLConfig(temperature=-1.0)])
    with pytest.raises(ValueError, match="extractor_configs"):
        wrapper(extractor_configs=[{"type": "kl"}])
    from fungi_rs import _fungi_rs
    if os.environ.get("FUNGI_WHEEL_CUDA") == "1":  # CI builds the wheel with CUDA
        assert _fungi_rs.HAS_CUDA
    with pytest.raises(RuntimeError, match="libcuda" if _fungi_rs.HAS_CUDA else "no CUDA backend"):
        wrapper(device="cuda")  # no NVIDIA driver here: the library that could not be loaded
    with pytest.raises(ValueError, match="mps"):
        wrapper(device="mps")
    with pytest.warns(UserWarning, match="use_fp16=True on the CPU"):
        assert wrapper(use_fp16=True, extractor_configs=[KLConfig()]).block_names == ["kl"]
    with pytest.raises(ValueError, match="batch_size"):
        wrapper(batch_size=0)
    with pytest.raises(ValueError, match="blocks.99"):
        wrapper(target_layer="blocks.99.attn.proj")
    w = wrapper()
    with pytest.raises(FileNotFoundError, match="missing.safetensors"):
        w.load_state(str(tmp_path / "missing.safetensors"))
    kl = wrapper(extractor_configs=[KLConfig()])  # ready without a setup: the images are read
    with pytest.raises(ValueError, match="image 0"):
        kl(np.zeros((1, 5, 5, 4), dtype=np.uint8))
    with pytest.raises(FileNotFoundError, match="missing.png"):
        kl([GOLDEN / "images" / "missing.png"])
    # A state for another target layer is refused and the wrapper still works afterwards.
    other = wrapper(target_layer="blocks.2.attn.proj")
    with pytest.raises(ValueError):
        other.load_state(state)
