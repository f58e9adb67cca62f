"""fungi_rs.DenseFUNGI: dense (per-patch) FUNGI features through the library code of `fungi dense`,
on the golden tiny DINO ViT (embed 64, patch 16) at 64 px (a 4x4 patch grid).

The features are compared with the `fungi dense` command line when its binary is built
(FUNGI_BIN, else target/release/fungi or target/debug/fungi), which runs the same fungi-dense
library on the same images and state; the state round trip and batch-size invariance are
checked either way. No torch needed (the module path runs against the stand-in torch).
"""
import os
import pathlib
import subprocess

import numpy as np
import pytest
from PIL import Image

from fungi_rs import DenseFUNGI, _fungi_rs

from test_fungi_rs import GOLDEN, gpu_check, images

ROOT = pathlib.Path(__file__).resolve().parents[3]
CONFIG = {
    "seed": 3,
    "target_layer": "blocks.3.attn.proj",
    "batch_size": 2,
    "dense": {"image_size": 64, "latent_dim": 16, "temperature": 0.07, "neighbours": 3,
              "drop": 0.5, "support_per_image": 6},
}
TOML = """seed = 3
target_layer = "blocks.3.attn.proj"
batch_size = 2
[dense]
image_size = 64
latent_dim = 16
temperature = 0.07
neighbours = 3
drop = 0.5
support_per_image = 6
"""
E, P = 64, 16


def dense(**kw):
    args = dict(weights=GOLDEN / "model.safetensors", arch=str(GOLDEN / "model.json"), config=CONFIG)
    args.update(kw)
    return DenseFUNGI(**args)


def arrays(n, seed=0):
    """Generated HxWx3 uint8 images of assorted sizes (smooth, so that tokens differ)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        h, w = 48 + 7 * i, 80 - 5 * i
        y, x = np.mgrid[0:h, 0:w]
        base = np.stack([x * (3 + i), y * (5 - i % 3), (x + y) * 2], -1) % 256
        out.append(np.clip(base + rng.integers(0, 40, (h, w, 3)), 0, 255).astype(np.uint8))
    return out


@pytest.fixture(scope="module")
def support():
    return [Image.fromarray(a) for a in arrays(4, seed=1)] + images()[:2]


@pytest.fixture(scope="module")
def ready(support):
    return dense().setup(support)


def fungi_bin():
    for p in [os.environ.get("FUNGI_BIN"), ROOT / "target" / "release" / "fungi",
              ROOT / "target" / "debug" / "fungi"]:
        if p and pathlib.Path(p).is_file():
            return str(p)
    return None


def test_shape_norms_and_properties(ready):
    assert ready.support_size == 6 * 6  # support_per_image of each of the 6 images
    assert (ready.grid, ready.patches, ready.embed_dim, ready.projection_dim) == ((4, 4), P, E, E)
    assert ready.feature_dim == E + E and ready.target_layer == "blocks.3.attn.proj"
    assert ready.settings["dense"]["neighbours"] == 3 and ready.device == "cpu"
    f = ready(arrays(5))
    assert isinstance(f, np.ndarray) and f.dtype == np.float32 and f.shape == (5, P, 2 * E)
    assert np.isfinite(f).all()
    np.testing.assert_allclose(np.linalg.norm(f, axis=-1), 1.0, atol=1e-5)
    # Token part and gradient part are each 1/sqrt(2) of a row; the token part is embed()'s.
    np.testing.assert_allclose(np.linalg.norm(f[:, :, :E], axis=-1), 2 ** -0.5, atol=1e-5)
    e = ready.embed(arrays(5))
    assert e.shape == (5, P, E)
    np.testing.assert_allclose(e, f[:, :, :E] * np.sqrt(2), atol=1e-5)
    assert "DenseFUNGI(" in repr(ready)


def test_batch_size_and_input_kind_do_not_change_features(ready, support, tmp_path):
    ims = arrays(5)
    base = ready(ims)
    np.testing.assert_allclose(ready.extract(ims, batch_size=1), base, atol=1e-5)
    np.testing.assert_allclose(ready.extract(ims, batch_size=3), base, atol=1e-5)
    three = dense(batch_size=3).setup(support)
    assert three.batch_size == 3
    np.testing.assert_allclose(three(ims), base, atol=1e-5)
    np.testing.assert_allclose(dense(batch_size=1).setup(support)(ims), base, atol=1e-5)
    # PIL images, arrays and PNG paths (decoded in Rust) are the same images.
    paths = []
    for i, a in enumerate(ims):
        p = tmp_path / f"im{i}.png"
        Image.fromarray(a).save(p)
        paths.append(str(p))
    np.testing.assert_allclose(ready([Image.fromarray(a) for a in ims]), base, atol=1e-6)
    np.testing.assert_allclose(ready(paths), base, atol=1e-6)
    # Image i's dropped negatives come from index i: a piece fed alone, with its indices.
    np.testing.assert_allclose(ready(ims[3:], indices=[3, 4]), base[3:], atol=1e-5)
    assert not np.allclose(ready(ims[3:4]), base[3:4], atol=1e-4)  # index 0's stream instead


def test_extract_streams_datasets_with_labels(ready):
    ims = arrays(5)
    f, labels = ready.extract([(a, i % 2) for i, a in enumerate(ims)])
    np.testing.assert_array_equal(labels, [0, 1, 0, 1, 0])
    np.testing.assert_allclose(f, ready(ims), atol=1e-6)

    def gen():  # an iterable, read once in order
        yield from ims
    np.testing.assert_allclose(ready.extract(gen(), batch_size=1), f, atol=1e-5)


def test_state_round_trip(ready, support, tmp_path):
    ims = arrays(3, seed=5)
    want = ready(ims)
    path = tmp_path / "dense.safetensors"
    ready.save_state(path)
    again = dense(state=path)
    assert again.support_size == ready.support_size
    np.testing.assert_array_equal(again(ims), want)
    other = dense().load_state(path)
    np.testing.assert_array_equal(other(ims), want)
    # A new bank replaces the state's (projection and head stay).
    np.testing.assert_array_equal(dense(state=path).setup(support)(ims), want)
    with pytest.raises(ValueError, match="seed"):
        dense(config=dict(CONFIG, seed=4), state=path)
    with pytest.raises(ValueError, match="neighbours"):
        dense(config=dict(CONFIG, dense=dict(CONFIG["dense"], neighbours=2))).load_state(path)


def test_equals_the_command_line(support, tmp_path):
    exe = fungi_bin()
    if exe is None:
        pytest.skip("no fungi binary (cargo build --release -p fungi-cli)")
    sup, img = tmp_path / "support", tmp_path / "images"
    sup.mkdir()
    img.mkdir()
    for i, im in enumerate(support):
        im.convert("RGB").save(sup / f"s{i:02}.png")
    for i, a in enumerate(arrays(5, seed=7)):
        Image.fromarray(a).save(img / f"i{i:02}.png")
    cfg = tmp_path / "dense.toml"
    cfg.write_text(TOML)
    state = tmp_path / "cli_state.safetensors"
    out = tmp_path / "out"
    subprocess.run([exe, "dense", "--weights", str(GOLDEN / "model.safetensors"),
                    "--arch", str(GOLDEN / "model.json"), "--config", str(cfg),
                    "--support", str(sup), "--images", str(img), "--out", str(out),
                    "--save-state", str(state)], check=True, capture_output=True)
    want = np.load(out / "features.npy")
    paths = sorted(str(p) for p in img.iterdir())
    d = DenseFUNGI(weights=GOLDEN / "model.safetensors", arch=str(GOLDEN / "model.json"), config=cfg)
    d.setup(sorted(str(p) for p in sup.iterdir()))
    assert d.settings["dense"] == CONFIG["dense"] and d.settings["seed"] == 3
    got = d.extract(paths)
    assert got.shape == want.shape == (5, P, 2 * E)
    np.testing.assert_allclose(got, want, atol=1e-5)
    # The CLI's state, loaded here, gives the CLI's features; ours, given to the CLI, ours.
    np.testing.assert_allclose(DenseFUNGI(weights=GOLDEN / "model.safetensors",
                                          arch=str(GOLDEN / "model.json"), config=cfg,
                                          state=state)(paths), want, atol=1e-5)
    mine = tmp_path / "py_state.safetensors"
    d.save_state(mine)
    assert mine.read_bytes() == state.read_bytes()


def test_errors(ready, tmp_path):
    fresh = dense()
    assert fresh.support_size is None
    with pytest.raises(ValueError, match=r"setup\(.*load_state"):
        fresh(arrays(1))
    with pytest.raises(ValueError, match=r"setup\("):
        fresh.extract(arrays(1))
    with pytest.raises(ValueError, match=r"setup\("):
        fresh.save_state(tmp_path / "s.safetensors")
    assert fresh.embed(arrays(1)).shape == (1, P, E)  # the embedding needs no support bank
    with pytest.raises(ValueError, match="empty"):
        fresh.setup([])
    with pytest.raises(ValueError, match="neighbors"):
        dense(config={"dense": {"neighbors": 2}})
    with pytest.raises(ValueError, match="seeed"):
        dense(config={"seeed": 1})
    with pytest.raises(ValueError, match="dense.drop"):
        dense(config={"dense": {"drop": 1.0}})
    with pytest.raises(ValueError, match="image_size"):
        dense(config={"dense": {"image_size": 50}})  # not a multiple of the patch size 16
    with pytest.raises(ValueError, match="blocks.9"):
        dense(config={"target_layer": "blocks.9.attn.proj"})
    bad = tmp_path / "bad.toml"
    bad.write_text("[dense]\nneighbors = 2\n")
    with pytest.raises(ValueError, match="neighbors") as e:
        dense(config=bad)
    assert "bad.toml" in str(e.value)
    with pytest.raises(FileNotFoundError, match="nope.toml"):
        dense(config=tmp_path / "nope.toml")
    with pytest.raises(TypeError, match="config"):
        dense(config=3)
    with pytest.raises(FileNotFoundError, match="missing.safetensors"):
        dense(state=tmp_path / "missing.safetensors")
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        dense(weights="nope.pth")
    with pytest.raises(TypeError, match="arch"):
        DenseFUNGI(weights=GOLDEN / "model.safetensors")
    with pytest.raises(ValueError, match="batch_size"):
        dense(batch_size=0)
    with pytest.raises(ValueError, match="batch_size"):
        ready.extract(arrays(1), batch_size=0)
    with pytest.raises(ValueError, match="indices"):
        ready(arrays(2), indices=[0])
    with pytest.raises(ValueError, match="mps"):
        dense(device="mps")
    with pytest.raises(RuntimeError, match="libcuda" if _fungi_rs.HAS_CUDA else "no CUDA backend"):
        dense(device="cuda")
    with pytest.raises(ValueError, match="image 0"):
        ready([np.zeros((5, 5, 4), np.uint8)])
    with pytest.raises(FileNotFoundError, match="missing.png"):
        ready([str(tmp_path / "missing.png")])

    class Raising:
        def __len__(self):
            return 3

        def __getitem__(self, i):
            raise KeyError(f"item {i}")
    with pytest.raises(KeyError):
        ready.extract(Raising())
    with pytest.raises(KeyError):
        dense().setup(Raising())
    # A failed setup keeps the bank it had; a wrong-layer state is refused, nothing changes.
    before = ready.support_size
    with pytest.raises(FileNotFoundError):
        ready.setup([str(tmp_path / "missing.png")])
    assert ready.support_size == before


def test_skip_policy(ready, support, tmp_path):
    ims = arrays(3)
    missing = str(tmp_path / "missing.png")
    with pytest.warns(UserWarning, match="skipped"):
        f = ready.extract([ims[0], missing, ims[2]], on_error="skip")
    assert f.shape == (2, P, 2 * E) and [i for i, _ in ready.last_skipped] == [1]
    np.testing.assert_allclose(f, ready(ims)[[0, 2]], atol=1e-5)
    d = dense()
    with pytest.warns(UserWarning, match="support"):
        d.setup(list(support) + [missing], on_error="skip")
    assert d.support_size == 36 and [i for i, _ in d.last_skipped] == [len(support)]


def test_a_module_gives_the_features_of_its_weights_file_as_a_tensor(standin, tmp_path):
    from fungi_rs import _torch
    model = standin.VisionTransformer(img_size=32, patch_size=8, embed_dim=48, depth=2,
                                      num_heads=3, num_classes=0)
    cfg = {"target_layer": "blocks.1.attn.proj", "batch_size": 2,
           "dense": {"image_size": 32, "latent_dim": 8, "neighbours": 2}}
    sup = arrays(3, seed=2)
    d = DenseFUNGI(model, config=cfg).setup(sup)
    assert d.return_tensors == "pt" and d.grid == (4, 4)
    out = d(arrays(2))
    import torch  # the stand-in
    assert isinstance(out, torch.Tensor) and tuple(out.shape) == (2, 16, 96)
    arrays_ = dict(_torch.state_dict_arrays(model))
    st = tmp_path / "m.safetensors"
    gpu_check.st_write(st, {k: ("F32", list(a.shape), a.tobytes()) for k, a in arrays_.items()}, {})
    ref = DenseFUNGI(weights=st, arch=_torch.describe(model), config=cfg).setup(sup)
    np.testing.assert_array_equal(out.numpy(), ref(arrays(2)))
    assert isinstance(d.embed(arrays(1), return_tensors="np"), np.ndarray)
    with pytest.raises(ValueError, match="blocks.7"):
        DenseFUNGI(model, config=dict(cfg, target_layer="blocks.7.attn.proj"))
    with pytest.raises(ValueError, match="alternatives"):
        DenseFUNGI(model, weights="x.pth")
