"""fungi_rs: FUNGI features from a Rust core, with fungivision's API (a drop-in replacement).

    from fungi_rs import FUNGIWrapper, KLConfig, DINOConfig, SimCLRConfig
    model = torch.hub.load("facebookresearch/dino:main", "dino_vitb16")   # or timm / HF / torchvision
    w = FUNGIWrapper(model=model, target_layer="blocks.11.attn.proj", device="cuda",
                     use_fp16=True, extractor_configs=[KLConfig(), DINOConfig(), SimCLRConfig()])
    w.setup(train_dataset)     # reads only SimCLR's comparison images, by index
    features = w(images)       # torch.Tensor float32 [N, D] (numpy without a torch model)
    features, labels = w.extract(test_dataset, progress=True)   # a whole dataset, streamed

Without torch: ``FUNGIWrapper.from_pretrained("dino_vitb16", ...)`` (weights fetched into the
cache of ``fungi fetch``) or ``FUNGIWrapper(weights="x.pth", arch="dino_vitb16")``.

Images are PIL images (any mode, converted like PIL's ``.convert("RGB")``), HxWx3 uint8 arrays,
uint8 torch tensors (CxHxW as torchvision reads them, or HxWx3), or paths (decoded in Rust);
``(image, label)`` pairs, as a torch Dataset yields them, are accepted too.

Dense (per-patch) FUNGI, ``fungi dense`` from Python: ``DenseFUNGI`` (fungi_rs/dense.py).
"""
from __future__ import annotations

import dataclasses
import os
import warnings
from dataclasses import dataclass, field
from typing import Any, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from . import _fungi_rs
from . import eval  # noqa: A004  (fungi_rs.eval: kNN, linear probe, retrieval mAP)
from ._common import (_as_output, _bar, _device, _extract_dataset, _features, _fetch, _map_style,
                      _return_tensors, _torch_model, _with_labels)
from .dense import DenseFUNGI

__version__ = _fungi_rs.__version__
__all__ = ["FUNGIWrapper", "DenseFUNGI", "KLConfig", "DINOConfig", "SimCLRConfig", "DeepClusterConfig"]


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


_NEEDS_SETUP = (SimCLRConfig, DeepClusterConfig)


def _objectives(configs: Sequence[Any]) -> List[dict]:
    """The configurations as the library reads them (no JSON round trip)."""
    out = []
    for i, c in enumerate(configs):
        if not dataclasses.is_dataclass(c) or not hasattr(type(c), "_type"):
            raise ValueError(f"extractor_configs[{i}]: expected KLConfig, DINOConfig, SimCLRConfig or "
                             f"DeepClusterConfig, found {type(c).__name__}")
        d = {"type": type(c)._type}
        d.update({k: v for k, v in dataclasses.asdict(c).items() if v is not None})
        out.append(d)
    return out


class _Sequential:
    """An iterable with a length read once, in order, as a map-style dataset (DeepCluster's
    setup reads its training set from first to last)."""

    def __init__(self, iterable: Iterable[Any], length: int) -> None:
        self._it, self._len, self._next = iter(iterable), length, 0

    def __len__(self) -> int:
        return self._len

    def __getitem__(self, i: int) -> Any:
        if i != self._next:
            raise IndexError(f"item {i} of an iterable dataset: it is read once, in order "
                             f"(next is {self._next}); pass a map-style dataset")
        self._next += 1
        return next(self._it)


class FUNGIWrapper:
    """fungivision's ``FUNGIWrapper`` over the Rust core: ``FUNGIWrapper(model, target_layer,
    device, use_fp16, extractor_configs)``.

    ``model``: a torch ViT (DINO / DINOv2 from torch.hub, timm ``VisionTransformer``,
    torchvision ``VisionTransformer``, Hugging Face ``ViTModel`` / ``Dinov2Model``): its
    architecture is read from the module and its weights from its ``state_dict``, in memory.
    Without torch: ``weights=`` (``.pth`` / ``.safetensors`` / ``.onnx``) with ``arch=`` (a
    preset name, an architecture JSON file or dict), or :meth:`from_pretrained`.

    ``device``: ``"cpu"`` or ``"cuda"`` / ``"cuda:N"`` (a ``torch.device`` too); ``use_fp16``:
    on CUDA, fungivision's half-precision autocast (bf16 matrix products, f32 elsewhere).
    ``seed`` fixes heads, projection and every view; image ``i`` of a call uses the random
    stream of index ``i`` (pass ``indices=`` to number images across calls). Outputs are
    ``torch.Tensor`` when built from a torch module, numpy otherwise (``return_tensors``).
    """

    def __init__(self, model: Any = None, target_layer: Optional[str] = "blocks.11.attn.proj",
                 device: Any = "cpu", use_fp16: bool = False,
                 extractor_configs: Optional[Sequence[Any]] = None, *, weights: Any = None,
                 arch: Any = None, seed: int = 0, batch_size: int = 16,
                 return_tensors: Optional[str] = None) -> None:
        if extractor_configs is None:
            extractor_configs = [KLConfig(), DINOConfig(), SimCLRConfig()]
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size: expected a positive integer, found {batch_size!r}")
        if not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed: expected a non-negative integer, found {seed!r}")
        self._configs = list(extractor_configs)
        device = _device(device)
        if use_fp16 and device == "cpu":
            # fungivision's use_fp16 is a CUDA autocast: on the CPU it computes in f32, so its
            # README example (use_fp16=True, device falling back to the CPU) runs unchanged.
            warnings.warn("use_fp16=True on the CPU: computing in f32, as fungivision does (its "
                          "half precision is a CUDA autocast)", stacklevel=2)
            use_fp16 = False
        kw = dict(target_layer=target_layer, device=device, use_fp16=bool(use_fp16),
                  seed=seed, batch_size=batch_size)
        objectives = _objectives(self._configs)
        if isinstance(model, (str, os.PathLike)) and weights is None:
            model, weights = None, model  # the earlier FUNGIWrapper(weights, arch, ...) form
        from_torch = False
        if model is not None:
            arch_dict, model_kw = _torch_model(model, weights, arch, target_layer)
            self._ex = _fungi_rs.Extractor(arch_dict, objectives, **model_kw, **kw)
            from_torch = True
        else:
            if weights is None or arch is None:
                raise TypeError("FUNGIWrapper needs model= (a torch ViT), or weights= and arch=, "
                                "or FUNGIWrapper.from_pretrained(name)")
            w = os.fspath(weights)
            if not os.path.exists(w):
                raise FileNotFoundError(f"weights file {w} does not exist")
            a = os.fspath(arch) if isinstance(arch, os.PathLike) else arch
            self._ex = _fungi_rs.Extractor(a, objectives, weights=w, **kw)
        self.return_tensors = _return_tensors(return_tensors, from_torch)
        self.last_skipped: List[Tuple[int, str]] = []

    @classmethod
    def from_pretrained(cls, name: str, target_layer: Optional[str] = "blocks.11.attn.proj",
                        device: Any = "cpu", use_fp16: bool = False,
                        extractor_configs: Optional[Sequence[Any]] = None, *,
                        cache_dir: Optional[str] = None, mirror: Optional[str] = None,
                        progress: bool = True, **kw: Any) -> "FUNGIWrapper":
        """A preset's release weights (``dino_vitb16``, ``dinov2_vits14``, ``timm_...``: the
        names of ``fungi fetch --list``), downloaded once into the cache that ``fungi fetch``
        uses (``$FUNGI_CACHE``, else ``~/.cache/fungi``), then read from it."""
        path = _fungi_rs.fetch_weights(name, cache_dir=cache_dir, mirror=mirror, progress=progress)
        return cls(None, target_layer, device, use_fp16, extractor_configs, weights=path, arch=name, **kw)

    def setup(self, dataset: Any, progress: bool = False, on_error: str = "fail") -> None:
        """Prepares the objectives that need the training set, reading only what they need:
        SimCLR its ``comparison_batch_size`` picks, by index (so a map-style dataset with
        ``__len__`` / ``__getitem__``, as fungivision needs; a DataLoader's ``dataset`` is used),
        DeepCluster every image once, in order (an iterable with ``__len__`` is enough). KL and
        DINO need nothing: the dataset is not touched."""
        if not any(isinstance(c, _NEEDS_SETUP) for c in self._configs):
            return
        ds = _map_style(dataset)
        if ds is None:
            if any(isinstance(c, SimCLRConfig) for c in self._configs):
                raise TypeError(f"setup: SimCLRConfig picks its comparison images by index, as "
                                f"fungivision does, so the training set must be map-style "
                                f"(__len__ and __getitem__); found {type(dataset).__name__}")
            if not hasattr(dataset, "__len__"):
                raise TypeError(f"setup: DeepClusterConfig needs the training set's size up front "
                                f"(__len__); found {type(dataset).__name__}")
            ds = _Sequential(dataset, len(dataset))
        bars: dict = {}

        def report(stage: str, done: int, total: int) -> None:
            bar = bars.get(stage)
            if bar is None:
                bar = bars[stage] = _bar(progress, total, stage)
            if bar is not None:
                bar.n = done
                bar.refresh()
        try:
            self.last_skipped = self._ex.setup(ds, _fetch, len(ds), on_error=on_error,
                                               progress=report if progress else None)
        finally:
            for b in bars.values():
                if b is not None:
                    b.close()
        if self.last_skipped:
            warnings.warn(f"setup: {len(self.last_skipped)} unreadable training image(s) skipped "
                          f"(see .last_skipped)")

    def __call__(self, images: Sequence[Any], indices: Optional[Sequence[int]] = None,
                 progress: bool = False, return_tensors: Optional[str] = None) -> Any:
        """FUNGI features ``[len(images), feature_dim]`` float32 (torch.Tensor when built from a
        torch module, else numpy; ``return_tensors="np"|"pt"`` chooses)."""
        f = _features(self._ex, images, indices, progress, "FUNGI")
        return _as_output(f, return_tensors or self.return_tensors)

    def extract(self, dataset: Any, batch_size: Optional[int] = None, progress: bool = True,
                on_error: str = "fail", return_tensors: Optional[str] = None) -> Any:
        """A whole dataset through the library's pipeline (images decoded ahead, in parallel;
        the GIL released while Rust computes): ``features`` ``[N, D]``, or ``(features,
        labels)`` when the dataset yields ``(image, label)``. A map-style dataset (or a
        DataLoader's ``dataset``) is read by index; an iterable one once, in order.
        ``on_error="skip"`` leaves unreadable images out (listed in ``.last_skipped``)."""
        kind = return_tensors or self.return_tensors
        bs = batch_size or self._ex.batch_size
        parts, labels_all = _extract_dataset(self, dataset, bs, progress, on_error, "FUNGI")
        dim = self.feature_dim
        f = np.concatenate(parts) if len(parts) != 1 else parts[0]
        f = f.reshape(-1, dim) if f.size or dim else f
        if self.last_skipped:
            warnings.warn(f"extract: {len(self.last_skipped)} unreadable image(s) skipped "
                          f"(see .last_skipped)")
        return _with_labels(f, labels_all, kind)

    def embed(self, images: Sequence[Any], return_tensors: Optional[str] = None) -> Any:
        """CLS embeddings of the eval transform ``[N, E]`` float32, not normalised."""
        return _as_output(self._ex.embed(images, _fetch, len(images)),
                          return_tensors or self.return_tensors)

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

    @property
    def device(self) -> str:
        """The compute device (``cpu``, ``cuda:N``)."""
        return self._ex.device

