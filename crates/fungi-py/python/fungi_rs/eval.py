"""The paper's evaluation protocols on feature matrices, computed by the Rust core (fungi-eval).

    from fungi_rs import eval as fe
    pred = fe.knn(train, train_labels, test, k=20, pca=256)              # numpy int64 [n_test]
    r = fe.linear_probe(train, train_labels, test, test_labels, pca=256)  # dict: accuracy, lambda, ...
    m = fe.retrieval_map(db, queries, "gnd_roxford5k.pkl", pca=512)       # dict: map_medium, ...
    s = fe.hummingbird(train_feats, train_masks, val_feats, val_masks)    # dict: miou, per_class_iou, ...

Feature matrices are 2-D numpy arrays (any real dtype, computed in float64) or torch tensors
(read with ``.detach().cpu()``; torch itself is not imported). Each matrix is one block of the
protocol: its rows are L2-normalised, then PCA (``pca``) is fitted on the training (database)
rows when ``pca`` is below their count and the width. Labels are 1-D integer sequences, arrays
or tensors. Bad arguments raise ``ValueError`` naming the argument; a missing ``gnd`` file
raises ``FileNotFoundError``. The GIL is released while the core computes.
"""
from __future__ import annotations

import json
import math
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from . import _fungi_rs

__all__ = ["knn", "linear_probe", "retrieval_map", "hummingbird", "default_lambdas", "FEW_SHOT_LAMBDA"]

#: ``λ`` of the few-shot probe (no validation there).
FEW_SHOT_LAMBDA = 5e-5


def default_lambdas() -> List[float]:
    """The probe's candidate ``λ``: 5 values log-spaced from 5e-6 to 5e-4
    (``np.logspace(log10(5e-6), log10(5e-4), 5)``)."""
    return list(_fungi_rs.eval_default_lambdas())


def _array(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor, without importing torch
        x = np.asarray(x.detach().cpu())
    return np.asarray(x)


def _matrix(x: Any, name: str) -> Tuple[bytes, int, int]:
    a = _array(x)
    if a.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D array [rows, features], found shape {a.shape}")
    if a.dtype.kind not in "biuf":
        raise ValueError(f"{name}: expected real numbers, found dtype {a.dtype}")
    a = np.ascontiguousarray(a, dtype="<f8")
    return a.tobytes(), int(a.shape[0]), int(a.shape[1])


def _labels(y: Any, name: str, rows: int, of: str) -> bytes:
    a = _array(y)
    if a.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D sequence of integer labels, found shape {a.shape}")
    if a.size and a.dtype.kind not in "iub":
        integral = a.dtype.kind == "f" and bool(np.all(np.isfinite(a))) and bool(np.all(a == np.round(a)))
        if not integral:
            raise ValueError(f"{name}: expected integer labels, found dtype {a.dtype}")
    if len(a) != rows:
        raise ValueError(f"{name}: {len(a)} labels for the {rows} rows of {of} (expected one per row)")
    return np.ascontiguousarray(a, dtype="<i8").tobytes()


def _positive(v: Optional[int], name: str) -> Optional[int]:
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
        raise ValueError(f"{name}: expected a positive integer or None, found {v!r}")
    return int(v)


def knn(train: Any, train_labels: Sequence[int], test: Any, k: int = 20, pca: Optional[int] = None,
        few_shot: Optional[int] = None) -> np.ndarray:
    """kNN predictions of the ``test`` rows: numpy int64 ``[len(test)]``.

    The paper's protocol (``fungi knn`` with one block): rows L2-normalised, PCA to ``pca``
    fitted on the training rows, Euclidean distances, a uniform majority vote of the ``k``
    nearest training rows (ties → the smallest label). ``few_shot=N`` keeps only the first N
    training rows of each class, in order.
    """
    k = _positive(k, "k")
    pca, few_shot = _positive(pca, "pca"), _positive(few_shot, "few_shot")
    tr = _matrix(train, "train")
    lab = _labels(train_labels, "train_labels", tr[1], "train")
    te = _matrix(test, "test")
    pred = _fungi_rs.eval_knn(tr, lab, te, k, pca, few_shot)
    return np.asarray(pred, dtype=np.int64).reshape(te[1])


def linear_probe(train: Any, train_labels: Sequence[int], test: Any,
                 test_labels: Optional[Sequence[int]] = None, val: Any = None,
                 val_labels: Optional[Sequence[int]] = None, pca: Optional[int] = None,
                 lambdas: Optional[Sequence[float]] = None,
                 few_shot: Optional[int] = None) -> Dict[str, Any]:
    """The paper's linear probe (``fungi probe`` with one block).

    Rows L2-normalised; PCA fitted on the rows each model is fitted on; multinomial logistic
    regression in float64, no intercept, minimising ``(1/n)·Σ CE + (λ/2)·‖W‖²`` (L-BFGS to a
    relative gradient of 1e-8). ``λ`` is chosen among ``lambdas`` (default
    :func:`default_lambdas`) by accuracy on ``val`` or, without it, on scikit-learn's stratified
    80/20 split of train (seed 42), then refitted on train + val (all of train).
    ``few_shot=N``: the first N training rows of each class, ``λ`` = 5e-5, no validation.

    Returns a dict: ``predictions`` (numpy int64), ``accuracy`` and ``mean_per_class_accuracy``
    (None without ``test_labels``), ``lambda``, ``validation`` (``{λ: accuracy}`` of every
    candidate; empty in the few-shot setting), ``converged``, ``pca`` (whether PCA was applied).
    """
    pca, few_shot = _positive(pca, "pca"), _positive(few_shot, "few_shot")
    if few_shot is not None and (val is not None or val_labels is not None):
        raise ValueError("val: not used with few_shot (the few-shot probe has no validation)")
    if few_shot is not None and lambdas is not None:
        raise ValueError(f"lambdas: not used with few_shot (λ = {FEW_SHOT_LAMBDA})")
    if lambdas is not None:
        lambdas = [float(v) for v in _array(lambdas).reshape(-1)]
        if not lambdas:
            raise ValueError("lambdas: empty (expected at least one λ > 0)")
        for v in lambdas:
            if not (math.isfinite(v) and v > 0):
                raise ValueError(f"lambdas: {v} is not a finite value > 0")
    tr = _matrix(train, "train")
    lab = _labels(train_labels, "train_labels", tr[1], "train")
    te = _matrix(test, "test")
    te_lab = None if test_labels is None else _labels(test_labels, "test_labels", te[1], "test")
    va = va_lab = None
    if val is not None or val_labels is not None:
        if val is None:
            raise ValueError("val: missing (val_labels given)")
        if val_labels is None:
            raise ValueError("val_labels: missing (val given)")
        va = _matrix(val, "val")
        va_lab = _labels(val_labels, "val_labels", va[1], "val")
    r = json.loads(_fungi_rs.eval_linear_probe(tr, lab, te, te_lab, va, va_lab, pca, lambdas, few_shot))
    scored = test_labels is not None
    return {
        "predictions": np.asarray(r["predictions"], dtype=np.int64).reshape(te[1]),
        "accuracy": r["accuracy"] if scored else None,
        "mean_per_class_accuracy": r["mean_per_class_accuracy"] if scored else None,
        "lambda": r["lambda"],
        "validation": {v["lambda"]: v["accuracy"] for v in r["validation"]},
        "converged": r["converged"],
        "pca": r["pca"],
    }


def _jsonable(o: Any) -> Any:
    if hasattr(o, "tolist"):  # numpy arrays and scalars
        return o.tolist()
    raise TypeError(f"{type(o).__name__} is not JSON serialisable")


def retrieval_map(db: Any, queries: Any, gnd: Any, pca: Optional[int] = None) -> Dict[str, Any]:
    """Revisited Oxford / Paris retrieval of ``queries`` in ``db`` (``fungi retrieve`` with one
    block): rows L2-normalised, PCA fitted on the database rows, ranking by dot product, then
    the revisited ``compute_map`` under the medium and hard protocols, in percent.

    ``gnd``: a path to ``gnd_roxford5k.pkl`` / ``gnd_rparis6k.pkl`` or to the same structure as
    JSON, the dict such a file holds (``imlist``, ``qimlist``, ``gnd``), or just its ``gnd``
    list (one dict with ``easy``, ``hard``, ``junk`` index lists per query). ``db`` has one row
    per ``imlist`` image and ``queries`` one per query, in that order.

    Returns a dict: ``map_medium``, ``map_hard``, ``mp_medium`` and ``mp_hard`` (``{k: mP@k}``
    for k = 1, 5, 10), ``ap_medium`` and ``ap_hard`` (numpy float64, one AP per query), ``pca``.
    """
    pca = _positive(pca, "pca")
    d = _matrix(db, "db")
    q = _matrix(queries, "queries")
    path = text = None
    if isinstance(gnd, (str, os.PathLike)):
        path = os.fspath(gnd)
        if not os.path.exists(path):
            raise FileNotFoundError(f"gnd: {path} does not exist")
    else:
        if isinstance(gnd, dict):
            obj = gnd
        elif isinstance(gnd, (list, tuple)):
            obj = {"imlist": [str(i) for i in range(d[1])],
                   "qimlist": [str(i) for i in range(len(gnd))], "gnd": list(gnd)}
        else:
            raise ValueError("gnd: expected a path to a gnd_*.pkl / .json file, the dict it holds, "
                             f"or a list of per-query dicts, found {type(gnd).__name__}")
        try:
            text = json.dumps(obj, default=_jsonable)
        except (TypeError, ValueError) as e:
            raise ValueError(f"gnd: {e}") from None
    r = json.loads(_fungi_rs.eval_retrieval_map(d, q, path, text, pca))
    return {
        "map_medium": r["map_medium"],
        "map_hard": r["map_hard"],
        "mp_medium": dict(zip(r["ks"], r["mp_medium"])),
        "mp_hard": dict(zip(r["ks"], r["mp_hard"])),
        "ap_medium": np.asarray(r["ap_medium"], dtype=np.float64),
        "ap_hard": np.asarray(r["ap_hard"], dtype=np.float64),
        "pca": r["pca"],
    }


def _features3(x: Any, name: str, grid: Optional[Tuple[int, int]]) -> Tuple[np.ndarray, Tuple[int, int]]:
    a = _array(x)
    if a.ndim == 4:
        g = (int(a.shape[1]), int(a.shape[2]))
        if grid is not None and tuple(grid) != g:
            raise ValueError(f"{name}: grid {tuple(grid)} given but the features' grid is {g}")
        a = a.reshape(a.shape[0], g[0] * g[1], a.shape[3])
    elif a.ndim == 3:
        if grid is None:
            side = int(round(math.sqrt(a.shape[1])))
            if side * side != a.shape[1]:
                raise ValueError(f"{name}: {a.shape[1]} patches are not a square grid; pass grid=(rows, cols)")
            g = (side, side)
        else:
            g = (int(grid[0]), int(grid[1]))
            if g[0] * g[1] != a.shape[1]:
                raise ValueError(f"{name}: grid {g} has {g[0] * g[1]} patches, the features {a.shape[1]}")
    else:
        raise ValueError(f"{name}: expected [images, patches, features] or [images, rows, cols, features], found shape {a.shape}")
    if a.dtype.kind not in "biuf":
        raise ValueError(f"{name}: expected real numbers, found dtype {a.dtype}")
    return np.ascontiguousarray(a, dtype="<f4"), g


def _masks(x: Any, name: str, images: int, of: str) -> np.ndarray:
    a = _array(x)
    if a.ndim != 3:
        raise ValueError(f"{name}: expected [images, height, width] class ids, found shape {a.shape}")
    if a.shape[0] != images:
        raise ValueError(f"{name}: {a.shape[0]} masks for the {images} images of {of}")
    if a.dtype.kind not in "iub":
        raise ValueError(f"{name}: expected integer class ids, found dtype {a.dtype}")
    if a.size and (a.min() < 0 or a.max() > 255):
        raise ValueError(f"{name}: class ids must lie in 0..255 (255 = ignored), found {a.min()}..{a.max()}")
    return np.ascontiguousarray(a, dtype=np.uint8)


def hummingbird(train_features: Any, train_masks: Any, val_features: Any, val_masks: Any, *,
                num_classes: int = 21, k: int = 30, temperature: float = 0.02,
                memory_size: int = 102_400, index: str = "auto", ef_search: int = 128,
                ef_construction: int = 100, recall_queries: int = 2048, seed: int = 0,
                grid: Optional[Tuple[int, int]] = None, return_predictions: bool = False) -> Dict[str, Any]:
    """HummingBird in-context segmentation on patch features (``fungi hummingbird``'s core).

    ``train_features`` / ``val_features``: ``[N, P, D]`` (a square grid, or pass ``grid``) or
    ``[N, rows, cols, D]``, e.g. ``DenseFUNGI(...)(images)`` of augmented training images and of
    validation images resized to the features' image size. ``train_masks`` / ``val_masks``:
    ``[N, H, W]`` class ids (255 ignored) of the same images, ``H`` and ``W`` whole multiples
    of the grid (``H / rows`` = ``W / cols`` = the patch size).

    The memory keeps ``memory_size // N`` patches of each training image (rare classes first,
    as the paper samples them) with their soft labels; each validation patch takes its ``k``
    nearest memory patches by cosine (``index``: ``"exact"``, ``"hnsw"`` or ``"auto"``),
    weighted by ``softmax(cos / temperature)``; the labels are upsampled bilinearly to ``H x W``
    and compared with the masks. Returns a dict: ``miou`` (classes present), ``miou_all_classes``
    (the paper's mean over all classes), ``per_class_iou``, ``pixel_accuracy``,
    ``memory_rows``, ``index``, ``recall`` (of an approximate index, measured on
    ``recall_queries`` patches), and with ``return_predictions`` the predicted class ids
    ``[N_val, H, W]`` (uint8) under ``"predictions"``.
    """
    tf, g = _features3(train_features, "train_features", grid)
    vf, _ = _features3(val_features, "val_features", g)
    if tf.shape[2] != vf.shape[2]:
        raise ValueError(f"val_features: {vf.shape[2]} features per patch, train_features have {tf.shape[2]}")
    tm = _masks(train_masks, "train_masks", tf.shape[0], "train_features")
    vm = _masks(val_masks, "val_masks", vf.shape[0], "val_features")
    if index not in ("auto", "exact", "hnsw"):
        raise ValueError(f"index: expected 'auto', 'exact' or 'hnsw', found {index!r}")
    settings = {
        "num_classes": _positive(num_classes, "num_classes"),
        "k": _positive(k, "k"),
        "temperature": float(temperature),
        "memory_size": _positive(memory_size, "memory_size"),
        "index": index,
        "hnsw": {"ef_search": _positive(ef_search, "ef_search"),
                 "ef_construction": _positive(ef_construction, "ef_construction")},
        "recall_queries": int(recall_queries),
        "seed": int(seed),
    }
    report, preds = _fungi_rs.eval_hummingbird(
        (tf.tobytes(), *tf.shape), (tm.tobytes(), *tm.shape),
        (vf.tobytes(), *vf.shape), (vm.tobytes(), *vm.shape),
        g, json.dumps(settings))
    out: Dict[str, Any] = json.loads(report)
    if return_predictions:
        out["predictions"] = np.frombuffer(preds, dtype=np.uint8).reshape(vm.shape).copy()
    return out
