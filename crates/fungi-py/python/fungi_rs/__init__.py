"""fungi_rs: FUNGI features from a Rust core, with fungivision's API.

    from fungi_rs import FUNGIWrapper, KLConfig, DINOConfig, SimCLRConfig
    w = FUNGIWrapper(weights="dino_vitb16_pretrain.pth", arch="dino_vitb16",
                     target_layer="blocks.11.attn.proj", device="cpu", use_fp16=False,
                     extractor_configs=[KLConfig(), DINOConfig(), SimCLRConfig()])
    w.setup(train_images)      # SimCLR's comparison batch (DeepCluster's k-means)
    features = w(images)       # numpy float32 [N, n_objectives * E], blocks L2-normalised

Images are PIL images (any mode, converted like PIL's ``.convert("RGB")``), HxWx3 uint8 arrays,
or paths; ``(image, label)`` pairs, as a torch Dataset yields them, are accepted too.
"""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from typing import Any, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from . import _fungi_rs
from . import eval  # noqa: A004  (fungi_rs.eval: kNN, linear probe, retrieval mAP)

__version__ = _fungi_rs.__version__
__all__ = ["FUNGIWrapper", "KLConfig", "DINOConfig", "SimCLRConfig", "DeepClusterConfig"]


@dataclass
class KLConfig:
    """KL divergence to the uniform distribution (fungivision's defaults); ``view``: ``"squash"``
    (fungivision's 256x256 resize + centre crop) or ``"eval"`` (the paper's)."""
    temperature: float = 1.0
    latent_dim: int = 768
    view: str = "squash"
    _type = "kl"


@dataclass
class DINOConfig:
    """DINO self-distillation (fungivision's defaults)."""
    teacher_temperature: float = 0.07
    student_temperature: float = 0.1
    latent_dim: int = 2048
    # fungi-rs extensions (None: the library's default, which is fungivision's behaviour)
    local_crops_number: Optional[int] = None
    global_crops_scale: Optional[Tuple[float, float]] = None
    local_crops_scale: Optional[Tuple[float, float]] = None
    crop_ratio: Optional[Tuple[float, float]] = None
    _type = "dino"


@dataclass
class SimCLRConfig:
    """SimCLR InfoNCE over patches (fungivision's defaults); ``loss="paper"`` for the paper's."""
    temperature: float = 0.07
    comparison_batch_size: int = 64
    latent_dim: int = 96
    num_patches: int = 4
    stride_scale: float = 6
    loss: str = "fungivision"
    # fungi-rs extensions (None: the library's default)
    self_similarity_constant: Optional[float] = None
    comparison_batch_encoding_batch_size: Optional[int] = None
    _type = "simclr"


@dataclass
class DeepClusterConfig:
    """The paper's DeepCluster ablation (k-means prototypes made by ``setup``)."""
    nmb_prototypes: List[int] = field(default_factory=lambda: [3000, 3000, 3000])
    temperature: float = 0.1
    latent_dim: int = 128
    # fungi-rs extensions (None: the paper code's defaults)
    global_crops_number: Optional[int] = None
    local_crops_number: Optional[int] = None
    global_crops_scale: Optional[Tuple[float, float]] = None
    local_crops_scale: Optional[Tuple[float, float]] = None
    kmeans_iterations: Optional[int] = None
    _type = "deepcluster"


def _config_json(configs: Sequence[Any]) -> str:
    out = []
    for i, c in enumerate(configs):
        if not dataclasses.is_dataclass(c) or not hasattr(type(c), "_type"):
            raise ValueError(f"extractor_configs[{i}]: expected KLConfig, DINOConfig, SimCLRConfig or "
                             f"DeepClusterConfig, found {type(c).__name__}")
        d = {"type": type(c)._type}
        d.update({k: v for k, v in dataclasses.asdict(c).items() if v is not None})
        out.append(d)
    return json.dumps(out)


def _rgb(item: Any, i: int) -> Tuple[bytes, int, int]:
    if isinstance(item, tuple) and len(item) == 2:  # (image, label) from a torch Dataset
        item = item[0]
    if isinstance(item, (str, os.PathLike)):
        path = os.fspath(item)
        if not os.path.exists(path):
            raise FileNotFoundError(f"image {i}: {path} does not exist")
        from PIL import Image
        with Image.open(path) as im:
            item = im.convert("RGB")
    if hasattr(item, "convert") and hasattr(item, "mode"):  # PIL image
        im = item if item.mode == "RGB" else item.convert("RGB")
        return im.tobytes(), im.width, im.height
    a = np.asarray(item)
    if a.ndim != 3 or a.shape[2] != 3 or a.dtype != np.uint8:
        raise ValueError(f"image {i}: expected a PIL image or an HxWx3 uint8 array, "
                         f"found an array of shape {a.shape} and dtype {a.dtype}")
    return np.ascontiguousarray(a).tobytes(), int(a.shape[1]), int(a.shape[0])


def _progress(items: List[Any], progress: bool, what: str) -> Iterable[Any]:
    if not progress:
        return items
    try:
        from tqdm import tqdm
        return tqdm(items, desc=what)
    except ImportError:
        return items


class FUNGIWrapper:
    """fungivision's ``FUNGIWrapper`` over the Rust core.

    ``arch`` is a preset name (``dino_vits16``, ``dino_vitb16``, ``dinov2_vits14``, ...) or an
    architecture JSON file; ``weights`` a ``.pth`` or ``.safetensors`` state dict. ``seed`` fixes
    heads, projection and every view; image ``i`` of a call uses the random stream of index
    ``i`` (pass ``indices=`` to number images across calls).
    """

    def __init__(self, weights: str, arch: str, target_layer: Optional[str] = "blocks.11.attn.proj",
                 device: str = "cpu", use_fp16: bool = False,
                 extractor_configs: Optional[Sequence[Any]] = None, seed: int = 0,
                 batch_size: int = 16) -> None:
        if extractor_configs is None:
            extractor_configs = [KLConfig(), DINOConfig(), SimCLRConfig()]
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size: expected a positive integer, found {batch_size!r}")
        if not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed: expected a non-negative integer, found {seed!r}")
        self._ex = _fungi_rs.Extractor(os.fspath(weights), os.fspath(arch), target_layer, device,
                                       bool(use_fp16), _config_json(extractor_configs), seed, batch_size)

    def setup(self, train_dataset: Iterable[Any], progress: bool = False) -> None:
        """Prepares the objectives that need the training set (SimCLR, DeepCluster)."""
        items = list(train_dataset)
        self._ex.setup([_rgb(x, i) for i, x in enumerate(_progress(items, progress, "decoding"))])

    def __call__(self, images: Sequence[Any], indices: Optional[Sequence[int]] = None,
                 progress: bool = False) -> np.ndarray:
        """FUNGI features, numpy float32 ``[len(images), feature_dim]``."""
        items = list(images)
        idx = list(range(len(items))) if indices is None else [int(i) for i in indices]
        if len(idx) != len(items):
            raise ValueError(f"indices: {len(idx)} for {len(items)} images")
        bs = self._ex.batch_size
        chunks = [(items[s:s + bs], idx[s:s + bs]) for s in range(0, len(items), bs)]
        parts = []
        for ch, ix in _progress(chunks, progress, "FUNGI"):
            data, rows, cols = self._ex.extract([_rgb(x, i) for i, x in zip(ix, ch)], ix)
            parts.append(np.frombuffer(data, dtype="<f4").reshape(rows, cols))
        if not parts:
            return np.zeros((0, self.feature_dim), dtype=np.float32)
        return np.concatenate(parts).astype(np.float32, copy=False)

    def embed(self, images: Sequence[Any]) -> np.ndarray:
        """CLS embeddings of the eval transform, numpy float32 ``[N, E]``, not normalised."""
        data, rows, cols = self._ex.embed([_rgb(x, i) for i, x in enumerate(images)])
        return np.frombuffer(data, dtype="<f4").reshape(rows, cols).copy()

    def save_state(self, path: str) -> None:
        """Saves heads, negatives, projection and settings (the CLI's state format)."""
        self._ex.save_state(os.fspath(path))

    def load_state(self, path: str) -> None:
        """Loads a state; one made for other settings or weights is refused, naming the difference."""
        if not os.path.exists(os.fspath(path)):
            raise FileNotFoundError(f"state file {os.fspath(path)} does not exist")
        self._ex.load_state(os.fspath(path))

    @property
    def feature_dim(self) -> int:
        """Width of a feature row."""
        return self._ex.feature_dim

    @property
    def block_names(self) -> List[str]:
        """Block names in column order (fungivision's objective order)."""
        return list(self._ex.block_names)
