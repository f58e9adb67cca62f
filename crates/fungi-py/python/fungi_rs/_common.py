"""What ``FUNGIWrapper`` (``__init__.py``) and ``DenseFUNGI`` (``dense.py``) share: dataset items
as the Rust pipeline reads them (``_fetch``), datasets, progress bars and outputs, a torch model
as the native constructors take it, and the calls that stream images through ``_ex.extract``
(the native ``Extractor`` and ``Dense`` take the same arguments and return the same tuple)."""
from __future__ import annotations

import os
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np


def _is_torch_tensor(x: Any) -> bool:
    t = type(x)
    return t.__module__.split(".")[0] == "torch" and t.__name__ in ("Tensor", "Parameter")


def _is_label(x: Any) -> bool:
    if isinstance(x, (bool, str, bytes)):
        return False
    if isinstance(x, (int, np.integer)):
        return True
    return (_is_torch_tensor(x) or isinstance(x, np.ndarray)) and x.ndim == 0 \
        and "int" in str(x.dtype)


def _encode(item: Any, i: int) -> Tuple[Union[bytes, str], int, int]:
    """One image as packed RGB bytes (w, h) or a path (decoded in Rust)."""
    if isinstance(item, (str, os.PathLike)):
        return os.fspath(item), 0, 0
    if hasattr(item, "convert") and hasattr(item, "mode"):  # PIL image
        im = item if item.mode == "RGB" else item.convert("RGB")
        return im.tobytes(), im.width, im.height
    if _is_torch_tensor(item):
        if str(item.dtype) != "torch.uint8":
            raise ValueError(f"image {i}: expected a uint8 image tensor (as torchvision.io.read_image "
                             f"gives), found dtype {item.dtype}: fungi_rs applies each objective's own "
                             f"transforms to the raw image, so pass images, not normalised tensors")
        if item.ndim == 3 and item.shape[0] == 3 and item.shape[-1] != 3:
            item = item.permute(1, 2, 0)  # CxHxW -> HxWxC
        item = item.detach().cpu().contiguous().numpy()
    a = np.asarray(item)
    if a.ndim != 3 or a.shape[2] != 3 or a.dtype != np.uint8:
        raise ValueError(f"image {i}: expected a PIL image, a path, an HxWx3 uint8 array or a uint8 "
                         f"image tensor, found {type(item).__name__} of shape {getattr(a, 'shape', '?')} "
                         f"and dtype {getattr(a, 'dtype', '?')}")
    return np.ascontiguousarray(a).tobytes(), int(a.shape[1]), int(a.shape[0])


def _fetch(items: Any, i: int) -> Tuple[Union[bytes, str], int, int, Optional[int]]:
    """Item ``i`` of a dataset or list, for the Rust pipeline: ``(bytes | path, w, h, label)``."""
    item = items[i]
    label = None
    if isinstance(item, (tuple, list)) and len(item) == 2 and _is_label(item[1]):
        item, label = item[0], int(item[1])
    return _encode(item, i) + (label,)


def _map_style(dataset: Any) -> Optional[Any]:
    """The dataset to index: itself when map-style, a DataLoader's ``dataset``; else None."""
    if hasattr(dataset, "__getitem__") and hasattr(dataset, "__len__"):
        return dataset
    inner = getattr(dataset, "dataset", None)
    if type(dataset).__name__ == "DataLoader" and inner is not None \
            and hasattr(inner, "__getitem__") and hasattr(inner, "__len__"):
        return inner
    return None


def _bar(progress: bool, total: int, desc: str) -> Any:
    if not progress:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc=desc)


def _as_output(a: np.ndarray, kind: str) -> Any:
    if kind == "pt":
        import torch
        return torch.from_numpy(a)
    if kind != "np":
        raise ValueError(f"return_tensors={kind!r}: expected 'np' or 'pt'")
    return a


def _device(device: Any) -> str:
    d = str(device)  # a torch.device prints as "cuda:0" / "cpu"
    return "cuda:0" if d == "cuda" else d


def _torch_model(model: Any, weights: Any, arch: Any,
                 target_layer: Optional[str]) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """A torch ViT as the native constructors take it: its architecture (read from the module)
    and the keyword arguments of its weights (its ``state_dict``, in memory, named after its
    class); ``target_layer``, when not None, is checked against the module's layers."""
    from . import _torch
    if not _torch.is_torch_module(model):
        raise TypeError(f"model: expected a torch.nn.Module (a DINO, DINOv2, timm, torchvision "
                        f"or Hugging Face ViT), found {type(model).__module__}."
                        f"{type(model).__qualname__}; without torch pass weights= and arch=")
    if weights is not None or arch is not None:
        raise ValueError("model= and weights= / arch= are alternatives: pass one")
    arch_dict = _torch.describe(model)  # TypeError for a module that is no supported ViT
    if target_layer is not None:
        _torch.check_target(model, target_layer)
    name = f"{type(model).__module__}.{type(model).__qualname__}"
    return arch_dict, dict(tensors=_torch.state_dict_arrays(model), source_name=name)


def _return_tensors(return_tensors: Optional[str], from_torch: bool) -> str:
    """The outputs' default kind: ``return_tensors``, else ``"pt"`` for a model built from a
    torch module and ``"np"`` otherwise."""
    kind = return_tensors or ("pt" if from_torch else "np")
    if kind not in ("np", "pt"):
        raise ValueError(f"return_tensors={kind!r}: expected 'np' or 'pt'")
    return kind


def _features(ex: Any, images: Sequence[Any], indices: Optional[Sequence[int]], progress: bool,
              desc: str) -> np.ndarray:
    """The features of ``images`` (``ex.extract``), image ``i`` keyed by ``indices[i]``
    (default ``i``), under a progress bar named ``desc``."""
    n = len(images)
    idx = None if indices is None else [int(i) for i in indices]
    if idx is not None and len(idx) != n:
        raise ValueError(f"indices: {len(idx)} for {n} images")
    bar = _bar(progress, n, desc)
    try:
        f, _, _, _ = ex.extract(images, _fetch, n, indices=idx,
                                progress=bar.update if bar is not None else None)
    finally:
        if bar is not None:
            bar.close()
    return f


def _extract_dataset(w: Any, dataset: Any, bs: int, progress: bool, on_error: str,
                     desc: str) -> Tuple[List[np.ndarray], List[Optional[int]]]:
    """A whole dataset through ``w._ex.extract`` (``w``: a ``FUNGIWrapper`` or ``DenseFUNGI``)
    under a progress bar named ``desc``: a map-style one (or a DataLoader's ``dataset``) in one
    call, by index; an iterable one once, in order, in chunks of ``4 * bs`` items numbered on.
    Returns the feature blocks and the label of each row; the skipped ``(index, why)`` go to
    ``w.last_skipped``."""
    ds = _map_style(dataset)
    total = len(ds) if ds is not None else (len(dataset) if hasattr(dataset, "__len__") else None)
    bar = _bar(progress, total, desc)
    update = bar.update if bar is not None else None
    try:
        if ds is not None:
            f, _, labels, skipped = w._ex.extract(ds, _fetch, len(ds), on_error=on_error,
                                                  progress=update, batch_size=bs)
            parts, labels_all, w.last_skipped = [f], labels, skipped
        else:
            parts, labels_all, w.last_skipped = [], [], []
            chunk, start = [], 0
            for item in dataset:
                chunk.append(item)
                if len(chunk) == 4 * bs:
                    start = _extract_chunk(w._ex, chunk, start, bs, on_error, update, parts,
                                           labels_all, w.last_skipped)
                    chunk = []
            if chunk:
                _extract_chunk(w._ex, chunk, start, bs, on_error, update, parts, labels_all,
                               w.last_skipped)
    finally:
        if bar is not None:
            bar.close()
    return parts, labels_all


def _extract_chunk(ex: Any, chunk: List[Any], start: int, bs: int, on_error: str,
                   update: Optional[Callable[[int], Any]], parts: List[np.ndarray],
                   labels_all: List[Optional[int]], skipped: List[Tuple[int, str]]) -> int:
    """Items ``start..`` of an iterable dataset, appended to ``parts``, ``labels_all`` and
    ``skipped``; returns the index of the next item."""
    idx = list(range(start, start + len(chunk)))
    f, _, labels, chunk_skipped = ex.extract(chunk, _fetch, len(chunk), indices=idx,
                                             on_error=on_error, progress=update, batch_size=bs)
    parts.append(f)
    labels_all.extend(labels)
    skipped.extend((start + p, why) for p, why in chunk_skipped)
    return start + len(chunk)


def _with_labels(f: np.ndarray, labels: List[Optional[int]], kind: str) -> Any:
    """``f``, or ``(f, labels)`` when every row has a label, as ``kind`` (``np`` / ``pt``)."""
    out = _as_output(f, kind)
    if labels and all(lb is not None for lb in labels):
        return out, _as_output(np.asarray(labels, dtype=np.int64), kind)
    return out
