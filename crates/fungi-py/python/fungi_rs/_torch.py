"""Introspection of PyTorch ViT modules: the arch JSON, weights and target layers fungi-rs needs.

Imported lazily: nothing here imports torch (or numpy) at module import time, and
:func:`is_torch_module` never does; the other functions import torch only once a module has been
passed. The module is self-contained (no relative imports), so it can also be loaded by path.

Accepted classes (see :data:`ACCEPTED`): timm's and torchvision's ``VisionTransformer``, DINO's
torch.hub ``VisionTransformer``, DINOv2's torch.hub ``DinoVisionTransformer`` and Hugging Face's
``ViTModel`` / ``Dinov2Model``. Any other class is a ``TypeError`` naming it; an option of an
accepted class that fungi-rs cannot run is a ``ValueError`` naming the attribute and its value.
"""
from __future__ import annotations

import difflib
import math
import re
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple

if TYPE_CHECKING:  # pragma: no cover
    import numpy

__all__ = [
    "ACCEPTED",
    "is_torch_module",
    "describe",
    "state_dict_arrays",
    "linear_layers",
    "check_target",
    "model_device_dtype",
]

#: The classes :func:`describe` accepts, as named in error messages.
ACCEPTED: Tuple[str, ...] = (
    "timm.models.vision_transformer.VisionTransformer",
    "torchvision.models.vision_transformer.VisionTransformer",
    "DINO torch.hub VisionTransformer (facebookresearch/dino vision_transformer.py)",
    "DINOv2 torch.hub DinoVisionTransformer (facebookresearch/dinov2 dinov2.models.vision_transformer)",
    "transformers.models.vit.modeling_vit.ViTModel",
    "transformers.models.dinov2.modeling_dinov2.Dinov2Model",
)

_TIMM = "timm.models.vision_transformer.VisionTransformer"
_TORCHVISION = "torchvision.models.vision_transformer.VisionTransformer"
_HF = {
    "transformers.models.vit.modeling_vit.ViTModel": "hf_vit",
    "transformers.models.dinov2.modeling_dinov2.Dinov2Model": "hf_dinov2",
}
_SITES = ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2")


def is_torch_module(obj: Any) -> bool:
    """Whether ``obj`` is a ``torch.nn.Module``, decided from its class hierarchy alone (torch is
    not imported)."""
    return any(
        c.__name__ == "Module" and c.__module__ == "torch.nn.modules.module"
        for c in type(obj).__mro__
    )


def _qualname(obj: Any) -> str:
    t = type(obj)
    return f"{t.__module__}.{t.__qualname__}"


def _bases(obj: Any) -> List[str]:
    return [c.__name__ for c in type(obj).__mro__]


def _is_identity(m: Any) -> bool:
    return m is None or "Identity" in _bases(m)


def _is_layer_norm(m: Any) -> bool:
    return any(
        c.__name__ == "LayerNorm" and c.__module__ == "torch.nn.modules.normalization"
        for c in type(m).__mro__
    )


def _is_linear(m: Any) -> bool:
    import torch

    return isinstance(m, torch.nn.Linear)


def _kind(model: Any) -> str:
    """The family of ``model``: ``timm``, ``torchvision``, ``dino``, ``dinov2``, ``hf_vit`` or
    ``hf_dinov2``; a ``TypeError`` naming the class otherwise."""
    qn = _qualname(model)
    if not is_torch_module(model):
        raise TypeError(f"expected a torch.nn.Module, got {qn}")
    if qn == _TIMM:
        return "timm"
    if qn == _TORCHVISION:
        return "torchvision"
    if qn in _HF:
        return _HF[qn]
    name = type(model).__name__
    hint = ""
    if type(model).__module__.startswith("transformers.") and name.endswith("ForImageClassification"):
        inner = "dinov2" if "Dinov2" in name else "vit"
        hint = (
            f" (a classification wrapper: fungi-rs runs the backbone, pass `model.{inner}` and "
            "its state dict; the classifier is not supported)"
        )
    elif all(hasattr(model, a) for a in ("patch_embed", "blocks", "cls_token", "pos_embed", "norm")):
        if name == "DinoVisionTransformer" and hasattr(model, "prepare_tokens_with_masks"):
            return "dinov2"
        if (
            name == "VisionTransformer"
            and hasattr(model, "prepare_tokens")
            and hasattr(model, "interpolate_pos_encoding")
        ):
            return "dino"
    raise TypeError(
        f"{qn} is not a backbone fungi-rs can run{hint}; accepted classes: " + "; ".join(ACCEPTED)
    )


def _bad(model: Any, attr: str, value: Any, why: str) -> ValueError:
    return ValueError(f"{_qualname(model)}: `{attr}` = {value!r}: {why}")


def _square(model: Any, attr: str, v: Any) -> int:
    if isinstance(v, (tuple, list)):
        if len(v) == 2 and int(v[0]) == int(v[1]):
            return int(v[0])
        raise _bad(model, attr, v, "only square sizes are supported")
    return int(v)


def _block_dims(model: Any, img: int, patch: int, pe: Any, dim: int, blocks: Any,
                o: Dict[str, Any]) -> Dict[str, Any]:
    """The sizes DINO's and timm's ViTs share (their constructors' keyword names)."""
    return {
        "img_size": img,
        "patch_size": patch,
        "in_chans": int(pe.proj.in_channels),
        "embed_dim": dim,
        "depth": len(blocks),
        "num_heads": o["num_heads"],
        "mlp_ratio": _mlp_ratio(model, "blocks.0.mlp.fc1.out_features", dim, o["hidden"]),
        "qkv_bias": o["qkv_bias"],
    }


def _mlp_ratio(model: Any, attr: str, dim: int, hidden: int) -> float:
    """A ratio with ``int(dim * ratio) == hidden`` (how every family sizes its MLP)."""
    ratio = hidden / dim
    for _ in range(4):
        if int(dim * ratio) == hidden:
            return ratio
        ratio = math.nextafter(ratio, math.inf)
    raise _bad(model, attr, hidden, f"an MLP width that is not int({dim} * ratio) for any ratio")


def _act(model: Any, attr: str, act: Any) -> str:
    """timm's ``act_layer`` name of an activation module."""
    bases = _bases(act)
    if "QuickGELU" in bases:
        return "quick_gelu"
    if "GELUTanh" in bases:
        return "gelu_tanh"
    if "GELU" in bases:
        approx = getattr(act, "approximate", "none")
        if approx == "none":
            return "gelu"
        if approx == "tanh":
            return "gelu_tanh"
    raise _bad(model, attr, type(act).__name__, "the MLP activation must be GELU (exact or tanh) or QuickGELU")


def _norm_eps(model: Any) -> float:
    """The one LayerNorm epsilon of the model (every LayerNorm must be affine with a bias)."""
    eps: Optional[float] = None
    first = ""
    for name, m in model.named_modules():
        if not _is_layer_norm(m):
            continue
        if getattr(m, "weight", None) is None or getattr(m, "bias", None) is None:
            raise _bad(model, name, type(m).__name__, "LayerNorms without weight or bias are not supported")
        if eps is None:
            eps, first = float(m.eps), name
        elif float(m.eps) != eps:
            raise _bad(model, f"{name}.eps", float(m.eps), f"differs from `{first}.eps` = {eps} (one epsilon per model)")
    if eps is None:
        raise _bad(model, "norm_layer", None, "no LayerNorm found")
    return eps


def _check_keys(model: Any, allowed: str) -> None:
    pattern = re.compile(allowed)
    for k in model.state_dict():
        if not pattern.fullmatch(k):
            raise _bad(model, k, "parameter", "a tensor the DINO layout does not have (a modified architecture?)")


def _dino_blocks(model: Any) -> List[Any]:
    """DINOv2's blocks without its FSDP chunking (``BlockChunk``s padded with ``Identity``)."""
    if getattr(model, "chunked_blocks", False):
        return [b for chunk in model.blocks for b in chunk if not _is_identity(b)]
    return list(model.blocks)


def _check_vit_block(model: Any, i: int, b: Any) -> None:
    """A pre-norm block: norm1 -> attn(qkv, proj) -> [ls1] -> norm2 -> mlp(fc1, act, fc2) -> [ls2]."""
    p = f"blocks.{i}"
    mlp = getattr(b, "mlp", None)
    gated = {"GluMlp", "SwiGLU", "SwiGLUFFN", "SwiGLUFFNFused"} & set(_bases(mlp))
    if (
        gated
        or not (_is_linear(getattr(mlp, "fc1", None)) and _is_linear(getattr(mlp, "fc2", None)))
        or mlp.fc1.out_features != mlp.fc2.in_features
    ):
        raise _bad(model, f"{p}.mlp", type(mlp).__name__, "only the fc1 -> act -> fc2 MLP is supported (SwiGLU / gated MLPs are not)")
    attn = getattr(b, "attn", None)
    if attn is None or not (_is_linear(getattr(attn, "qkv", None)) and _is_linear(getattr(attn, "proj", None))):
        raise _bad(model, f"{p}.attn", type(attn).__name__, "only attention with a fused `qkv` and a `proj` Linear is supported")
    dim = attn.proj.out_features
    if attn.qkv.out_features != 3 * dim or attn.proj.in_features != dim:
        raise _bad(model, f"{p}.attn.qkv.out_features", attn.qkv.out_features, f"must be 3 * {dim} (no separate head dim)")
    heads = int(attn.num_heads)
    scale = getattr(attn, "scale", None)
    if scale is not None and abs(float(scale) - (dim // heads) ** -0.5) > 1e-9:
        raise _bad(model, f"{p}.attn.scale", float(scale), f"must be head_dim ** -0.5 = {(dim // heads) ** -0.5}")
    for extra in ("norm", "gate"):
        if not _is_identity(getattr(attn, extra, None)):
            raise _bad(model, f"{p}.attn.{extra}", type(getattr(attn, extra)).__name__, "not supported")
    if not _is_identity(getattr(mlp, "norm", None)):
        raise _bad(model, f"{p}.mlp.norm", type(mlp.norm).__name__, "a norm inside the MLP is not supported")
    for ls in ("ls1", "ls2"):
        m = getattr(b, ls, None)
        if not (_is_identity(m) or hasattr(m, "gamma")):
            raise _bad(model, f"{p}.{ls}", type(m).__name__, "expected LayerScale (`gamma`) or Identity")


def _block_options(model: Any, blocks: List[Any]) -> Dict[str, Any]:
    """The per-block options, checked to be equal in every block."""
    seen: Dict[str, Any] = {}
    for i, b in enumerate(blocks):
        _check_vit_block(model, i, b)
        opts = {
            "num_heads": int(b.attn.num_heads),
            "hidden": int(b.mlp.fc1.out_features),
            "qkv_bias": b.attn.qkv.bias is not None,
            "proj_bias": b.attn.proj.bias is not None,
            "fc1_bias": b.mlp.fc1.bias is not None,
            "fc2_bias": b.mlp.fc2.bias is not None,
            "qk_norm": not _is_identity(getattr(b.attn, "q_norm", None)),
            "layer_scale": not _is_identity(getattr(b, "ls1", None)),
            "act": _act(model, f"blocks.{i}.mlp.act", b.mlp.act),
        }
        if _is_identity(getattr(b, "ls1", None)) != _is_identity(getattr(b, "ls2", None)):
            raise _bad(model, f"blocks.{i}.ls2", type(b.ls2).__name__, "LayerScale must be on both branches or neither")
        if not seen:
            seen = opts
        for k, v in opts.items():
            if seen[k] != v:
                raise _bad(model, f"blocks.{i}", f"{k}={v}", f"differs from blocks.0 ({k}={seen[k]}); blocks must be identical")
    return seen


def _describe_timm(model: Any) -> Dict[str, Any]:
    pe = model.patch_embed
    if type(getattr(pe, "proj", None)).__name__ != "Conv2d":
        raise _bad(model, "patch_embed.proj", type(getattr(pe, "proj", None)).__name__, "a Conv2d patch embedding is required")
    if not _is_identity(getattr(pe, "norm", None)):
        raise _bad(model, "patch_embed.norm", type(pe.norm).__name__, "a norm in the patch embedding (embed_norm_layer) is not supported")
    if model.pos_embed is None:
        raise _bad(model, "pos_embed", None, "a learned position embedding is required")
    if getattr(model, "attn_pool", None) is not None:
        raise _bad(model, "global_pool", model.global_pool, "attention pooling is not implemented")
    pool = model.global_pool
    if pool not in ("token", "avg", "max", "avgmax"):
        raise _bad(model, "global_pool", pool, 'only "token", "avg", "max" or "avgmax" give one embedding per image')
    if getattr(model, "pool_include_prefix", False) and pool != "token":
        raise _bad(model, "pool_include_prefix", True, "pooling over the prefix tokens is not implemented")
    img = _square(model, "patch_embed.img_size", pe.img_size)
    patch = _square(model, "patch_embed.patch_size", pe.patch_size)
    blocks = list(model.blocks)
    o = _block_options(model, blocks)
    dim = int(model.embed_dim)
    if o["fc1_bias"] != o["proj_bias"] or o["fc2_bias"] != o["proj_bias"]:
        raise _bad(model, "blocks.0.mlp.fc1.bias", "present" if o["fc1_bias"] else None,
                   "fungi-rs ties the MLP biases to attn.proj's (timm's proj_bias)")
    pre_norm = not _is_identity(model.norm_pre)
    if (pe.proj.bias is not None) == pre_norm:
        raise _bad(model, "patch_embed.proj.bias", "present" if pe.proj.bias is not None else None,
                   "fungi-rs ties the patch bias to pre_norm (timm: bias=not pre_norm)")
    norm_on, fc_norm_on = not _is_identity(model.norm), not _is_identity(model.fc_norm)
    if norm_on and fc_norm_on:
        raise _bad(model, "fc_norm", type(model.fc_norm).__name__, "both `norm` and `fc_norm` are not supported")
    head = model.head
    if _is_identity(head):
        num_classes = 0
    elif _is_linear(head) and head.bias is not None:
        num_classes = int(head.out_features)
    else:
        raise _bad(model, "head", type(head).__name__, "the head must be a Linear with bias or Identity")
    class_token = model.cls_token is not None
    reg = int(getattr(model, "num_reg_tokens", 0) or 0)
    no_embed_class = bool(model.no_embed_class)
    grid = (img // patch) ** 2
    expect = grid + (0 if no_embed_class else int(class_token) + reg)
    if tuple(model.pos_embed.shape) != (1, expect, dim):
        raise _bad(model, "pos_embed.shape", tuple(model.pos_embed.shape), f"expected (1, {expect}, {dim})")
    ls = getattr(blocks[0], "ls1", None)
    init_values = (float(getattr(ls, "init_values", None) or 1e-5)) if o["layer_scale"] else None
    d: Dict[str, Any] = {
        "family": "timm",
        **_block_dims(model, img, patch, pe, dim, blocks, o),
        "qk_norm": o["qk_norm"],
        "proj_bias": o["proj_bias"],
        "init_values": init_values,
        "class_token": class_token,
        "no_embed_class": no_embed_class,
        "reg_tokens": reg,
        "pre_norm": pre_norm,
        "final_norm": norm_on or fc_norm_on,
        "fc_norm": fc_norm_on,
        "global_pool": pool,
        "num_classes": num_classes,
        "act_layer": o["act"],
        "norm_eps": _norm_eps(model),
    }
    cfg = _timm_pretrained_cfg(model)
    if cfg:
        d["pretrained_cfg"] = cfg
    return d


def _timm_pretrained_cfg(model: Any) -> Dict[str, Any]:
    cfg = getattr(model, "pretrained_cfg", None) or {}
    if not isinstance(cfg, dict):
        cfg = getattr(cfg, "__dict__", {})
    out: Dict[str, Any] = {}
    for k in ("mean", "std"):
        if cfg.get(k) is not None:
            out[k] = [float(x) for x in cfg[k]]
    interp = cfg.get("interpolation")
    if interp:
        if interp not in ("bicubic", "bilinear"):
            raise _bad(model, "pretrained_cfg['interpolation']", interp, 'the eval resize supports "bicubic" or "bilinear"')
        out["interpolation"] = interp
    if cfg.get("crop_pct") is not None:
        out["crop_pct"] = float(cfg["crop_pct"])
    if cfg.get("input_size") is not None:
        size = [int(x) for x in cfg["input_size"]]
        if len(size) != 3 or size[1] != size[2]:
            raise _bad(model, "pretrained_cfg['input_size']", tuple(size), "only square inputs are supported")
        out["input_size"] = size
    mode = cfg.get("crop_mode")
    if mode not in (None, "center"):
        raise _bad(model, "pretrained_cfg['crop_mode']", mode, 'only "center" crops are implemented')
    return out


def _describe_torchvision(model: Any) -> Dict[str, Any]:
    if type(model.conv_proj).__name__ != "Conv2d":
        raise _bad(model, "conv_proj", type(model.conv_proj).__name__, "the convolutional stem (conv_stem_configs) is not implemented")
    if getattr(model, "representation_size", None) is not None or hasattr(model.heads, "pre_logits"):
        raise _bad(model, "representation_size", getattr(model, "representation_size", None), "the pre-logits layer is not implemented")
    layers = list(model.encoder.layers)
    hidden, mlp_dim = int(model.hidden_dim), int(model.mlp_dim)
    for i, lay in enumerate(layers):
        p = f"encoder.layers.encoder_layer_{i}"
        sa = lay.self_attention
        if not getattr(sa, "_qkv_same_embed_dim", True) or sa.in_proj_bias is None or sa.bias_k is not None:
            raise _bad(model, f"{p}.self_attention", "MultiheadAttention", "only a fused in_proj with bias (no bias_k/v) is supported")
        if sa.out_proj.bias is None:
            raise _bad(model, f"{p}.self_attention.out_proj.bias", None, "out_proj must have a bias")
        if _act(model, f"{p}.mlp.1", lay.mlp[1]) != "gelu":
            raise _bad(model, f"{p}.mlp.1", "GELU(tanh)", "torchvision ViTs use the exact GELU")
        if int(lay.mlp[0].out_features) != mlp_dim:
            raise _bad(model, f"{p}.mlp.0.out_features", int(lay.mlp[0].out_features), f"differs from mlp_dim = {mlp_dim}")
    eps = _norm_eps(model)
    if eps != 1e-6:
        raise _bad(model, "norm_layer.eps", eps, "torchvision configs have no eps key: fungi-rs uses 1e-6")
    _mlp_exact(model, "mlp_dim", hidden, mlp_dim)
    heads = model.heads
    if _is_identity(heads):
        num_classes = 0
    elif hasattr(heads, "head") and _is_linear(heads.head) and heads.head.bias is not None and len(list(heads)) == 1:
        num_classes = int(heads.head.out_features)
    else:
        raise _bad(model, "heads", type(heads).__name__, "expected Identity or torchvision's Sequential(head=Linear)")
    return {
        "family": "torchvision",
        "image_size": int(model.image_size),
        "patch_size": int(model.patch_size),
        "num_layers": len(layers),
        "num_heads": int(layers[0].num_heads),
        "hidden_dim": hidden,
        "mlp_dim": mlp_dim,
        "num_classes": num_classes,
    }


def _mlp_exact(model: Any, attr: str, dim: int, hidden: int) -> None:
    """The Rust side derives ``mlp_ratio = hidden / dim`` and needs ``int(dim * ratio) == hidden``."""
    if int(dim * (hidden / dim)) != hidden:
        raise _bad(model, attr, hidden, f"fungi-rs cannot express it as int({dim} * ratio)")


def _describe_hf(model: Any, kind: str) -> Dict[str, Any]:
    c = model.config
    act = getattr(c, "hidden_act", "gelu")
    if act != "gelu":
        raise _bad(model, "config.hidden_act", act, 'only "gelu" (exact) is implemented')
    hidden = int(c.hidden_size)
    d: Dict[str, Any] = {
        "model_type": c.model_type,
        "hidden_size": hidden,
        "num_hidden_layers": int(c.num_hidden_layers),
        "num_attention_heads": int(c.num_attention_heads),
        "image_size": _square(model, "config.image_size", c.image_size),
        "patch_size": _square(model, "config.patch_size", c.patch_size),
        "num_channels": int(c.num_channels),
        "qkv_bias": bool(c.qkv_bias),
        "layer_norm_eps": float(c.layer_norm_eps),
        "hidden_act": act,
    }
    if kind == "hf_dinov2":
        if getattr(c, "use_swiglu_ffn", False):
            raise _bad(model, "config.use_swiglu_ffn", True, "SwiGLU MLPs are not implemented")
        d["mlp_ratio"] = float(c.mlp_ratio)
    else:
        _mlp_exact(model, "config.intermediate_size", hidden, int(c.intermediate_size))
        d["intermediate_size"] = int(c.intermediate_size)
    return d


def _describe_dino(model: Any, v2: bool) -> Dict[str, Any]:
    pe = model.patch_embed
    if type(getattr(pe, "proj", None)).__name__ != "Conv2d":
        raise _bad(model, "patch_embed.proj", type(getattr(pe, "proj", None)).__name__, "a Conv2d patch embedding is required")
    if not _is_identity(getattr(pe, "norm", None)):
        raise _bad(model, "patch_embed.norm", type(pe.norm).__name__, "a norm in the patch embedding is not supported")
    img = _square(model, "patch_embed.img_size", pe.img_size)
    patch = _square(model, "patch_embed.patch_size", pe.patch_size)
    blocks = _dino_blocks(model)
    o = _block_options(model, blocks)
    dim = int(model.embed_dim)
    for k, attr in (("proj_bias", "attn.proj.bias"), ("fc1_bias", "mlp.fc1.bias"), ("fc2_bias", "mlp.fc2.bias")):
        if not o[k]:
            raise _bad(model, f"blocks.0.{attr}", None, "DINO configs have biases on attn.proj and the MLP (proj_bias / ffn_bias=False is not expressible)")
    if o["qk_norm"]:
        raise _bad(model, "blocks.0.attn.q_norm", "LayerNorm", "qk_norm is not part of the DINO family")
    if o["act"] != "gelu":
        raise _bad(model, "blocks.0.mlp.act", o["act"], "DINO configs use the exact GELU")
    if o["layer_scale"] and not v2:
        raise _bad(model, "blocks.0.ls1", "LayerScale", "DINO v1 has no LayerScale")
    grid = (img // patch) ** 2
    if tuple(model.pos_embed.shape) != (1, grid + 1, dim):
        raise _bad(model, "pos_embed.shape", tuple(model.pos_embed.shape), f"expected (1, {grid + 1}, {dim})")
    block_keys = r"blocks\.(\d+\.)?\d+\.(norm1|norm2|attn\.qkv|attn\.proj|mlp\.fc1|mlp\.fc2)\.(weight|bias)|blocks\.(\d+\.)?\d+\.ls[12]\.gamma"
    top = r"cls_token|pos_embed|patch_embed\.proj\.(weight|bias)|norm\.(weight|bias)"
    top += r"|mask_token|register_tokens" if v2 else r"|head\.(weight|bias)"
    _check_keys(model, f"(?:{top}|{block_keys})")
    d: Dict[str, Any] = {
        "family": "dino",
        **_block_dims(model, img, patch, pe, dim, blocks, o),
        "layer_norm_eps": _norm_eps(model),
        "layer_scale": o["layer_scale"],
        "interpolate_offset": 0.1,
    }
    if v2:
        reg = int(getattr(model, "num_register_tokens", 0) or 0)
        d["num_register_tokens"] = reg
        d["interpolate_offset"] = float(getattr(model, "interpolate_offset", 0.1))
        d["interpolate_antialias"] = bool(getattr(model, "interpolate_antialias", False))
    return d


def describe(model: Any) -> Dict[str, Any]:
    """The architecture of ``model`` as the JSON object fungi-rs's arch parser accepts
    (``fungi_backbone::VitConfig::from_json_str``; docs/backbones.md, "Families").

    Everything is read from the module itself: timm (``{"family": "timm", ...}`` with
    ``pretrained_cfg`` from ``model.pretrained_cfg`` when the model has one), torchvision
    (``{"family": "torchvision", ...}``; a module carries no weights transform, so none is
    written and fungi-rs falls back to its ``eval`` transform; an empty head, ``num_classes=0``,
    whose ``model(x)`` is ``[B, 0]``, is taken as no head: the CLS token), DINO / DINOv2 torch.hub models
    (``{"family": "dino", ...}``), Hugging Face ``ViTModel`` / ``Dinov2Model`` (the config's keys
    that change the forward, ``model_type`` included).

    For timm LayerScale, ``init_values`` only says LayerScale is on (the trained ``gamma`` is in
    the weights); its value is the module's ``init_values`` when it keeps one, else 1e-5.

    Raises:
        TypeError: ``model`` is not one of :data:`ACCEPTED` (the message names its class).
        ValueError: an option of an accepted class that fungi-rs cannot run (names the
            attribute and its value).
    """
    kind = _kind(model)
    if kind == "timm":
        return _describe_timm(model)
    if kind == "torchvision":
        return _describe_torchvision(model)
    if kind in ("hf_vit", "hf_dinov2"):
        return _describe_hf(model, kind)
    return _describe_dino(model, v2=kind == "dinov2")


_CHUNKED = re.compile(r"blocks\.\d+\.(\d+\..*)")


def state_dict_arrays(model: Any) -> List[Tuple[str, "numpy.ndarray"]]:
    """``model.state_dict()`` as ``(key, array)`` pairs: float32, C-contiguous CPU numpy arrays
    (``t.detach().to("cpu", torch.float32).contiguous().numpy()``: no copy when the tensor is
    already a contiguous CPU float32 one, so the arrays may share memory with the model).

    Keys are the state dict's own (fungi-rs maps each family's key layout, Hugging Face's
    in-memory names included), except for what the eval forward never reads and fungi-rs would
    refuse: non-floating-point entries are skipped (e.g. integer ``position_ids`` buffers), DINO
    v1's ``head.*`` (its ``forward`` never applies the head) and DINOv2's ``mask_token`` are left
    out, and DINOv2's chunked blocks (``blocks.<chunk>.<i>.``, ``block_chunks > 0``) are named
    ``blocks.<i>.`` as in the hub checkpoints.
    """
    import torch

    kind: Optional[str]
    try:
        kind = _kind(model)
    except TypeError:
        kind = None
    chunked = kind == "dinov2" and getattr(model, "chunked_blocks", False)
    out: List[Tuple[str, Any]] = []
    for key, t in model.state_dict().items():
        if not hasattr(t, "is_floating_point") or not t.is_floating_point():
            continue
        if kind == "dino" and key.startswith("head."):
            continue
        if kind == "dinov2":
            if key == "mask_token":
                continue
            if chunked:
                m = _CHUNKED.fullmatch(key)
                key = "blocks." + m.group(1) if m else key
        out.append((key, t.detach().to("cpu", torch.float32).contiguous().numpy()))
    return out


def linear_layers(model: Any) -> List[str]:
    """Names of the ``torch.nn.Linear`` submodules (subclasses included, such as
    ``nn.MultiheadAttention``'s ``out_proj``), in module order."""
    return [name for name, m in model.named_modules() if name and _is_linear(m)]


def _target_spellings(kind: str, n: int) -> Dict[str, List[str]]:
    """Every name fungi-rs accepts for each Linear of block ``n`` (its ``parse_target``): the
    layout's own, transformers 5's in-memory aliases, and the canonical ``blocks.N.<site>``."""
    extra: Dict[str, List[str]] = {}
    if kind == "torchvision":
        p = f"encoder.layers.encoder_layer_{n}."
        extra = {
            "attn.qkv": [p + "self_attention.in_proj"],
            "attn.proj": [p + "self_attention.out_proj"],
            "mlp.fc1": [p + "mlp.0"],
            "mlp.fc2": [p + "mlp.3"],
        }
    elif kind == "hf_dinov2":
        e = f"encoder.layer.{n}."
        extra = {
            "attn.qkv": [e + "attention.attention"],
            "attn.proj": [e + "attention.output.dense", e + "attention.o_proj"],
            "mlp.fc1": [e + "mlp.fc1"],
            "mlp.fc2": [e + "mlp.fc2"],
        }
    elif kind == "hf_vit":
        e, v5 = f"encoder.layer.{n}.", f"layers.{n}."
        extra = {
            "attn.qkv": [e + "attention.attention"],
            "attn.proj": [e + "attention.output.dense", v5 + "attention.o_proj", e + "attention.o_proj"],
            "mlp.fc1": [e + "intermediate.dense", v5 + "mlp.fc1", e + "mlp.fc1"],
            "mlp.fc2": [e + "output.dense", v5 + "mlp.fc2", e + "mlp.fc2"],
        }
    return {s: extra.get(s, []) + [f"blocks.{n}.{s}"] for s in _SITES}


def _depth(d: Dict[str, Any]) -> int:
    for k in ("depth", "num_layers", "num_hidden_layers"):
        if k in d:
            return int(d[k])
    return 0


_BLOCK_NO = re.compile(r"(?:^|\.)(?:encoder_layer_)?(\d+)(?:\.|$)")


def check_target(model: Any, target: str) -> None:
    """Checks that ``target`` names a Linear layer fungi-rs can take per-image gradients of.

    Accepted: every name fungi-rs's ``parse_target`` understands for the model's family (the
    canonical ``blocks.N.attn.proj`` on any family, the layout's own such as torchvision's
    ``encoder.layers.encoder_layer_N.self_attention.out_proj`` or Hugging Face's
    ``encoder.layer.N.attention.o_proj``, an optional ``backbone.`` prefix). For a model
    :func:`describe` does not accept, any ``torch.nn.Linear`` submodule name passes (fungi-rs
    has the last word).

    Raises:
        ValueError: ``target`` is not a submodule name (close names and the number of Linear
            layers are listed), names a module that is not a Linear (its class and the Linear
            layers of the same block are listed), or names a Linear fungi-rs cannot target
            (such as a classifier head).
    """
    modules = dict(model.named_modules())
    t = target
    if t.startswith("backbone.") and t not in modules:
        t = t[len("backbone."):]
    kind: Optional[str] = None
    accepted: Dict[str, str] = {}
    blocks: Dict[int, Dict[str, List[str]]] = {}
    try:
        kind = _kind(model)
        depth = _depth(describe(model))
    except (TypeError, ValueError):
        kind, depth = None, 0
    for n in range(depth):
        blocks[n] = _target_spellings(kind or "", n)
        for site, names in blocks[n].items():
            for name in names:
                accepted[name] = site
    if t in accepted:
        return
    linears = linear_layers(model)
    m = _BLOCK_NO.search(t)
    block = int(m.group(1)) if m else None

    def same_block() -> List[str]:
        if kind is not None and block in blocks:
            # the model's own spelling of each site when it has one, else the canonical name
            return [
                next((s for s in names if s in modules), names[-1])
                for names in blocks[block].values()
            ]
        if m is not None:
            prefix = t[: m.end(1)] + "."
            near = [n for n in linears if n.startswith(prefix)]
            if near:
                return near
        return linears[:8]

    mod = modules.get(t)
    if mod is None:
        close = difflib.get_close_matches(t, list(modules) + list(accepted), n=8, cutoff=0.6)
        raise ValueError(
            f"target layer `{target}` is not a submodule of {_qualname(model)} ({len(linears)} "
            f"Linear layers{'' if kind is None else f', {depth} blocks'}); closest names: "
            + (", ".join(close) if close else "none")
        )
    if not _is_linear(mod):
        raise ValueError(
            f"target layer `{target}` is a {_qualname(mod)}, not a Linear; Linear layers of the "
            "same block: " + ", ".join(same_block())
        )
    if kind is not None:
        raise ValueError(
            f"target layer `{target}` is a Linear fungi-rs cannot target (it takes the blocks' "
            "attention and MLP Linears); the names it takes for that block: "
            + ", ".join(same_block())
        )


def model_device_dtype(model: Any) -> Tuple[str, str]:
    """``(device, dtype)`` of the model's first parameter (else first buffer), e.g.
    ``("cuda:0", "float16")``; ``("cpu", "float32")`` for a model without tensors."""
    for it in (model.parameters(), model.buffers()):
        for p in it:
            return str(p.device), str(p.dtype).replace("torch.", "")
    return "cpu", "float32"
