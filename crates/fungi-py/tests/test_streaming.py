"""FUNGIWrapper reads datasets item by item through the library's pipeline: setup reads only what
the objectives need, extract streams a whole dataset, errors keep their Python type."""
import pathlib
import warnings

import numpy as np
import pytest

from fungi_rs import DeepClusterConfig, DINOConfig, FUNGIWrapper, KLConfig, SimCLRConfig

from test_fungi_rs import GOLDEN, images, wrapper


class Counting:
    """A map-style dataset that records every index read and refuses to be iterated."""

    def __init__(self, items):
        self.items, self.reads = items, []

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        self.reads.append(i)
        return self.items[i]

    def __iter__(self):
        raise AssertionError("the dataset was iterated")


def labelled(n=40):
    ims = images()
    return [(ims[i % len(ims)], i % 3) for i in range(n)]


def test_setup_reads_only_simclrs_picks_and_never_iterates():
    sim = SimCLRConfig(comparison_batch_size=4)
    ds = Counting(labelled(40))
    w = wrapper(extractor_configs=[KLConfig(), sim])
    w.setup(ds)
    assert 1 <= len(ds.reads) <= 4 * sim.comparison_batch_size, ds.reads
    assert len(set(ds.reads)) == len(ds.reads) == 4  # every image readable: exactly the picks
    # The same picks as a plain list gives: reading by index changes nothing.
    ref = wrapper(extractor_configs=[KLConfig(), sim])
    ref.setup(labelled(40))
    ims = images()[:3]
    np.testing.assert_array_equal(w(ims), ref(ims))


def test_setup_without_objectives_that_need_it_reads_nothing():
    ds = Counting(labelled(10))
    wrapper(extractor_configs=[KLConfig(), DINOConfig()]).setup(ds)
    assert ds.reads == []


def test_setup_of_an_iterable_dataset():
    def gen():
        yield from labelled(6)
    w = wrapper(extractor_configs=[SimCLRConfig(comparison_batch_size=2)])
    with pytest.raises(TypeError, match="map-style"):
        w.setup(gen())

    class Sized:  # an iterable with a length, read once in order (DeepCluster's memory bank)
        def __init__(self, items):
            self.items, self.passes = items, 0

        def __len__(self):
            return len(self.items)

        def __iter__(self):
            self.passes += 1
            return iter(self.items)
    dc = DeepClusterConfig(nmb_prototypes=[2], latent_dim=8, kmeans_iterations=2,
                           local_crops_number=1)
    it = Sized(labelled(6))
    a = wrapper(extractor_configs=[dc])
    a.setup(it)
    assert it.passes == 1
    b = wrapper(extractor_configs=[dc])
    b.setup(labelled(6))
    np.testing.assert_array_equal(a(images()[:2]), b(images()[:2]))
    with pytest.raises(TypeError, match="__len__"):
        wrapper(extractor_configs=[dc]).setup(gen())


def test_extract_streams_a_dataset_with_labels_as_the_call_does():
    w = wrapper(extractor_configs=[KLConfig(), DINOConfig()], batch_size=3)
    data = labelled(7)
    f, labels = w.extract(Counting(data), progress=False)
    assert f.shape == (7, w.feature_dim) and f.dtype == np.float32
    np.testing.assert_array_equal(labels, [lb for _, lb in data])
    np.testing.assert_array_equal(f, w([im for im, _ in data]))
    # An iterable (consumed once, in chunks, the global index continuing) and a DataLoader's
    # dataset give the same rows; so does another stream batch size.
    f2, l2 = w.extract((x for x in data), batch_size=2, progress=False)
    np.testing.assert_array_equal(f2, f)
    np.testing.assert_array_equal(l2, labels)

    class DataLoader:
        def __init__(self, dataset):
            self.dataset, self.batch_size = dataset, 4

        def __iter__(self):
            raise AssertionError("the loader was iterated")
    np.testing.assert_array_equal(w.extract(DataLoader(data), progress=False)[0], f)
    # Without labels, the features alone.
    g = w.extract([im for im, _ in data], progress=False)
    assert isinstance(g, np.ndarray)
    np.testing.assert_array_equal(g, f)


def test_unreadable_images_fail_or_are_skipped_and_listed(tmp_path):
    w = wrapper(extractor_configs=[KLConfig()], batch_size=2)
    ims = images()[:4]
    paths = [GOLDEN / "images" / "01_coffee.png", tmp_path / "gone.png",
             GOLDEN / "images" / "02_camera_L.png"]
    with pytest.raises(FileNotFoundError, match="gone.png"):
        w.extract(paths, progress=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        f = w.extract(paths, on_error="skip", progress=False)
    assert f.shape == (2, w.feature_dim)
    assert [p for p, _ in w.last_skipped] == [1] and "gone.png" in w.last_skipped[0][1]
    assert any("skipped" in str(c.message) for c in caught)
    np.testing.assert_array_equal(f[0], w([paths[0]])[0])
    with pytest.raises(ValueError, match="on_error"):
        w.extract(ims, on_error="ignore", progress=False)


def test_python_errors_of_the_dataset_keep_their_type():
    class Broken:
        def __len__(self):
            return 3

        def __getitem__(self, i):
            if i == 1:
                raise KeyError("no such sample")
            return images()[i]
    w = wrapper(extractor_configs=[KLConfig()])
    with pytest.raises(KeyError, match="no such sample"):
        w.extract(Broken(), progress=False)
    with pytest.raises(KeyError):
        wrapper(extractor_configs=[SimCLRConfig(comparison_batch_size=3)]).setup(Broken())


def test_outputs_numpy_by_default_and_the_choice_is_checked():
    w = wrapper(extractor_configs=[KLConfig()])
    assert w.return_tensors == "np" and w.device == "cpu"
    assert isinstance(w(images()[:1]), np.ndarray)
    with pytest.raises(ValueError, match="return_tensors"):
        wrapper(extractor_configs=[KLConfig()], return_tensors="tf")


def test_model_must_be_a_torch_module_or_weights_and_arch():
    with pytest.raises(TypeError, match="torch.nn.Module"):
        FUNGIWrapper(model=object(), extractor_configs=[KLConfig()])
    with pytest.raises(TypeError, match="weights= and arch="):
        FUNGIWrapper(extractor_configs=[KLConfig()])
    # The earlier positional form FUNGIWrapper(weights, arch=...) still works.
    w = FUNGIWrapper(str(GOLDEN / "model.safetensors"), "blocks.3.attn.proj",
                     arch=str(GOLDEN / "model.json"), extractor_configs=[KLConfig()])
    assert w.block_names == ["kl"]


def test_from_pretrained_names_and_fetch_errors(tmp_path):
    with pytest.raises(ValueError, match="dino_vitb16"):
        FUNGIWrapper.from_pretrained("no_such_model", cache_dir=str(tmp_path))
    # A mirror nobody listens on: the error names where it tried, and nothing is left behind.
    with pytest.raises(Exception, match="127.0.0.1:9"):
        FUNGIWrapper.from_pretrained("dino_vits16", cache_dir=str(tmp_path),
                                     mirror="http://127.0.0.1:9", progress=False)
    assert not any(p.suffix == ".pth" for p in pathlib.Path(tmp_path).rglob("*"))
