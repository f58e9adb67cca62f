"""Dense FUNGI from Python: per-patch gradient features ``[N, P, E+K]`` (``fungi dense``).

    from fungi_rs import DenseFUNGI
    d = DenseFUNGI(model, config={"target_layer": "blocks.11.attn.proj", "batch_size": 1,
                                  "dense": {"image_size": 512, "neighbours": 2}})
    d.setup(support_images)            # the support bank: L2-normalised patch tokens
    f = d(images)                      # [N, P, E+K] float32, each patch row of unit norm
    e = d.embed(images)                # [N, P, E]: the patch tokens alone (the baseline)
    d.save_state("dense.safetensors")  # `fungi dense --state` reads it

The same library code as ``fungi dense`` (``fungi_dense::DenseExtractor`` and the pipeline of
``fungi::dense::stream``): the same settings, state files and features. See docs/dense.md.
"""
from __future__ import annotations

import os
import warnings
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from . import _fungi_rs
from ._common import (_as_output, _bar, _device, _extract_dataset, _features, _fetch, _map_style,
                      _return_tensors, _torch_model, _with_labels)

__all__ = ["DenseFUNGI"]

_PathLike = Union[str, "os.PathLike[str]"]


def _weights(weights: Any, arch: Any) -> Tuple[str, Any]:
    """A weights file with its architecture, or a preset name fetched into the cache of
    ``fungi fetch`` (implying its architecture), as ``fungi dense --weights`` takes them."""
    w = os.fspath(weights)
    if not os.path.exists(w):
        if w in _fungi_rs.preset_names():
            return _fungi_rs.fetch_weights(w), (w if arch is None else arch)
        raise FileNotFoundError(f"weights file {w} does not exist (nor is it a preset name of "
                                f"`fungi fetch --list`)")
    if arch is None:
        raise TypeError(f"weights={w!r}: a weights file needs arch= (a preset name, an "
                        f"architecture JSON file or dict); only a preset name implies it")
    return w, (os.fspath(arch) if isinstance(arch, os.PathLike) else arch)


class DenseFUNGI:
    """Dense FUNGI: a feature per patch token, ``L2(concat(L2(token), L2(projected gradient)))``
    of an InfoNCE between an image's tokens and their nearest rows of a support bank (the
    paper's HummingBird features; docs/dense.md).

    ``model``: a torch ViT, read as :class:`fungi_rs.FUNGIWrapper` reads it (architecture from
    the module, weights from its ``state_dict``, in memory). Without torch: ``weights=`` (a
    ``.pth`` / ``.safetensors`` / ``.onnx`` file with ``arch=``, a preset name, an architecture
    JSON file or dict; or a preset name of ``fungi fetch --list`` alone, fetched into the cache).

    ``config``: the settings of ``fungi dense --config``, as a dict or a TOML / JSON file:
    ``seed``, ``target_layer``, ``batch_size``, ``projection_dim`` and the ``dense`` table
    (``image_size``, ``latent_dim``, ``temperature``, ``neighbours``, ``drop``,
    ``support_per_image``); unknown keys are errors naming the key. Default: the paper's full
    setting. ``batch_size`` overrides the config's. ``state``: a state file (``save_state`` or
    ``fungi dense --save-state``) loaded now, so that no :meth:`setup` is needed.

    ``device``: ``"cpu"`` or ``"cuda"`` / ``"cuda:N"`` (wheels built with the ``cuda``
    feature). Outputs are ``torch.Tensor`` when built from a torch module, numpy otherwise
    (``return_tensors="np"|"pt"`` chooses).
    """

    def __init__(self, model: Any = None, *, weights: Any = None, arch: Any = None,
                 config: Union[None, Dict[str, Any], _PathLike] = None,
                 state: Optional[_PathLike] = None, device: Any = "cpu",
                 batch_size: Optional[int] = None, return_tensors: Optional[str] = None) -> None:
        if batch_size is not None and (not isinstance(batch_size, int) or isinstance(batch_size, bool)
                                       or batch_size < 1):
            raise ValueError(f"batch_size: expected a positive integer, found {batch_size!r}")
        kw: Dict[str, Any] = dict(device=_device(device), batch_size=batch_size)
        target = None
        if config is None:
            pass
        elif isinstance(config, dict):
            kw["config"] = config
            target = config.get("target_layer")
        elif isinstance(config, (str, os.PathLike)):
            path = os.fspath(config)
            if not os.path.exists(path):
                raise FileNotFoundError(f"config file {path} does not exist")
            kw["config_path"] = path
        else:
            raise TypeError(f"config: expected a dict or the path of a TOML / JSON file, found "
                            f"{type(config).__name__}")
        if state is not None:
            s = os.fspath(state)
            if not os.path.exists(s):
                raise FileNotFoundError(f"state file {s} does not exist")
            kw["state"] = s
        from_torch = False
        if isinstance(model, (str, os.PathLike)) and weights is None:
            model, weights = None, model
        if model is not None:
            arch_dict, model_kw = _torch_model(model, weights, arch,
                                               target if isinstance(target, str) else None)
            self._ex = _fungi_rs.Dense(arch_dict, **model_kw, **kw)
            from_torch = True
        else:
            if weights is None:
                raise TypeError("DenseFUNGI needs model= (a torch ViT), or weights= (a file with "
                                "arch=, or a preset name)")
            w, a = _weights(weights, arch)
            self._ex = _fungi_rs.Dense(a, weights=w, **kw)
        self.return_tensors = _return_tensors(return_tensors, from_torch)
        self.last_skipped: List[Tuple[int, str]] = []

    def setup(self, support: Any, progress: bool = False, on_error: str = "fail") -> "DenseFUNGI":
        """Builds the support bank from ``support`` (a sequence or map-style dataset of images,
        ``(image, label)`` pairs, paths; a DataLoader's ``dataset``; an iterable is read once
        into a list): the L2-normalised patch tokens of every image (all of them, or
        ``support_per_image`` sampled per image). Replaces an earlier bank or state's bank
        (projection and head stay). ``on_error="skip"`` leaves unreadable images out (listed
        in ``.last_skipped``). Returns ``self``."""
        ds = _map_style(support)
        if ds is None:
            if not hasattr(support, "__iter__"):
                raise TypeError(f"setup: expected a sequence or dataset of images, found "
                                f"{type(support).__name__}")
            ds = list(support)
        n = len(ds)
        if n == 0:
            raise ValueError("setup: the support set is empty (an empty support bank has no "
                             "negatives: pass at least one image)")
        bar = _bar(progress, n, "support")

        def report(done: int, total: int) -> None:
            if bar is not None:
                bar.n = done
                bar.refresh()
        try:
            _, self.last_skipped = self._ex.setup(ds, _fetch, n, on_error=on_error,
                                                  progress=report if bar is not None else None)
        finally:
            if bar is not None:
                bar.close()
        if self.last_skipped:
            warnings.warn(f"setup: {len(self.last_skipped)} unreadable support image(s) skipped "
                          f"(see .last_skipped)")
        return self

    def __call__(self, images: Sequence[Any], indices: Optional[Sequence[int]] = None,
                 progress: bool = False, return_tensors: Optional[str] = None) -> Any:
        """Dense features ``[len(images), patches, feature_dim]`` float32. Image ``i`` uses the
        random stream (dropped negatives) of index ``i``, or ``indices[i]``."""
        f = _features(self._ex, images, indices, progress, "dense FUNGI")
        return _as_output(f, return_tensors or self.return_tensors)

    def extract(self, dataset: Any, batch_size: Optional[int] = None, progress: bool = False,
                on_error: str = "fail", return_tensors: Optional[str] = None) -> Any:
        """A whole dataset through the library's pipeline (images decoded ahead; the GIL released
        while Rust computes), image ``i`` keyed by its dataset index: ``features`` ``[N, P,
        E+K]``, or ``(features, labels)`` when every item is an ``(image, label)`` pair. A
        map-style dataset (or a DataLoader's ``dataset``) is read by index; an iterable one
        once, in order. ``on_error="skip"`` leaves unreadable images out (``.last_skipped``)."""
        if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
            raise ValueError(f"batch_size: expected a positive integer, found {batch_size!r}")
        kind = return_tensors or self.return_tensors
        bs = batch_size or self._ex.batch_size
        self.last_skipped = []
        parts, labels_all = _extract_dataset(self, dataset, bs, progress, on_error, "dense FUNGI")
        if len(parts) == 1:
            f = parts[0]
        elif parts:
            f = np.concatenate(parts)
        else:
            f = np.zeros((0, self.patches, self.feature_dim), np.float32)
        if self.last_skipped:
            warnings.warn(f"extract: {len(self.last_skipped)} unreadable image(s) skipped "
                          f"(see .last_skipped)")
        return _with_labels(f, labels_all, kind)

    def embed(self, images: Sequence[Any], batch_size: Optional[int] = None,
              return_tensors: Optional[str] = None) -> Any:
        """The L2-normalised patch tokens ``[N, patches, embed_dim]`` float32 (the last block's
        output after the final norm, CLS dropped; the paper's transform): the embedding
        baseline, and ``features[:, :, :E] * sqrt(2)``. Needs no support bank."""
        if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
            raise ValueError(f"batch_size: expected a positive integer, found {batch_size!r}")
        return _as_output(self._ex.embed(images, _fetch, len(images), batch_size=batch_size),
                          return_tensors or self.return_tensors)

    def save_state(self, path: _PathLike) -> None:
        """Saves projection, head and support bank (the format of ``fungi dense --save-state``;
        ``fungi dense --state`` and ``DenseFUNGI(state=...)`` read it)."""
        self._ex.save_state(os.fspath(path))

    def load_state(self, path: _PathLike) -> "DenseFUNGI":
        """Loads projection, head and support bank; a state made for other settings or weights
        is refused, naming what differs (nothing changes then). Returns ``self``."""
        p = os.fspath(path)
        if not os.path.exists(p):
            raise FileNotFoundError(f"state file {p} does not exist")
        self._ex.load_state(p)
        return self

    @property
    def patches(self) -> int:
        """Patch tokens per image ``P`` (``grid[0] * grid[1]``)."""
        return self._ex.patches

    @property
    def grid(self) -> Tuple[int, int]:
        """The patch grid ``(rows, columns)``: features reshape to ``[N, rows, columns, D]``."""
        return tuple(self._ex.grid)

    @property
    def feature_dim(self) -> int:
        """Width of a patch feature, ``embed_dim + projection_dim``."""
        return self._ex.feature_dim

    @property
    def embed_dim(self) -> int:
        """Token size ``E`` (the first ``E`` columns of a feature are the token part)."""
        return self._ex.embed_dim

    @property
    def projection_dim(self) -> int:
        """Projection size ``K`` (the last ``K`` columns: the gradient part)."""
        return self._ex.projection_dim

    @property
    def support_size(self) -> Optional[int]:
        """Rows of the support bank, ``None`` before :meth:`setup` / a state."""
        return self._ex.support_size

    @property
    def target_layer(self) -> str:
        """The target layer (canonical name, e.g. ``blocks.11.attn.proj``)."""
        return self._ex.target_layer

    @property
    def batch_size(self) -> int:
        """Images per pass (features do not depend on it)."""
        return self._ex.batch_size

    @property
    def settings(self) -> Dict[str, Any]:
        """The settings, as the keys of a ``dense.toml``."""
        return self._ex.settings

    @property
    def device(self) -> str:
        """The compute device (``cpu``, ``cuda:N``)."""
        return self._ex.device

    def __repr__(self) -> str:
        s = self.support_size
        return (f"DenseFUNGI(target_layer={self.target_layer!r}, grid={self.grid}, "
                f"feature_dim={self.feature_dim}, support={'none' if s is None else f'{s} rows'}, "
                f"device={self.device!r})")
