"""Stand-ins for timm's and torchvision's ``VisionTransformer`` (and a CNN) built on the
stand-in torch: the attributes ``fungi_rs._torch`` reads, the classes' own module names, no
forward pass."""
from collections import OrderedDict

import numpy as np

from torch import nn


def _zeros(*shape):
    return nn.Parameter(np.zeros(shape, np.float32))


class QuickGELU(nn.Module):
    __module__ = "timm.layers.activations"


class LayerScale(nn.Module):
    __module__ = "timm.layers.layer_scale"

    def __init__(self, dim, init_values=1e-5):
        super().__init__()
        self.init_values = init_values
        self.gamma = nn.Parameter(np.full(dim, init_values, np.float32))


class PatchEmbed(nn.Module):
    __module__ = "timm.layers.patch_embed"

    def __init__(self, img_size, patch_size, in_chans, embed_dim, bias=True):
        super().__init__()
        self.img_size, self.patch_size = (img_size, img_size), (patch_size, patch_size)
        self.num_patches = (img_size // patch_size) ** 2
        self.proj = nn.Conv2d(in_chans, embed_dim, patch_size, patch_size, bias=bias)
        self.norm = nn.Identity()


class Attention(nn.Module):
    __module__ = "timm.models.vision_transformer"

    def __init__(self, dim, num_heads, qkv_bias=True, qk_norm=False, proj_bias=True, norm_layer=None):
        super().__init__()
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.q_norm = norm_layer(self.head_dim) if qk_norm else nn.Identity()
        self.k_norm = norm_layer(self.head_dim) if qk_norm else nn.Identity()
        self.norm = nn.Identity()
        self.gate = None
        self.proj = nn.Linear(dim, dim, bias=proj_bias)


class Mlp(nn.Module):
    __module__ = "timm.layers.mlp"

    def __init__(self, dim, hidden, act, bias=True):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden, bias=bias)
        self.act = act
        self.norm = nn.Identity()
        self.fc2 = nn.Linear(hidden, dim, bias=bias)


class SwiGLU(nn.Module):
    __module__ = "timm.layers.mlp"

    def __init__(self, dim, hidden, act, bias=True):
        super().__init__()
        self.fc1_g = nn.Linear(dim, hidden, bias=bias)
        self.fc1_x = nn.Linear(dim, hidden, bias=bias)
        self.act = act
        self.fc2 = nn.Linear(hidden, dim, bias=bias)


class Block(nn.Module):
    __module__ = "timm.models.vision_transformer"

    def __init__(self, dim, num_heads, mlp_ratio, qkv_bias, qk_norm, proj_bias, init_values, norm_layer, act, mlp_layer):
        super().__init__()
        self.norm1 = norm_layer(dim)
        self.attn = Attention(dim, num_heads, qkv_bias, qk_norm, proj_bias, norm_layer)
        self.ls1 = LayerScale(dim, init_values) if init_values else nn.Identity()
        self.norm2 = norm_layer(dim)
        self.mlp = mlp_layer(dim, int(dim * mlp_ratio), act(), proj_bias)
        self.ls2 = LayerScale(dim, init_values) if init_values else nn.Identity()


class VisionTransformer(nn.Module):
    """timm's ``VisionTransformer``'s attributes for the given keywords (a subset of timm's)."""

    __module__ = "timm.models.vision_transformer"

    def __init__(self, img_size=224, patch_size=16, in_chans=3, num_classes=1000, global_pool="token",
                 embed_dim=768, depth=12, num_heads=12, mlp_ratio=4.0, qkv_bias=True, qk_norm=False,
                 proj_bias=True, init_values=None, class_token=True, no_embed_class=False, reg_tokens=0,
                 pre_norm=False, final_norm=True, fc_norm=None, norm_eps=1e-6, act_layer="gelu",
                 mlp_layer=Mlp, attn_pool=False):
        super().__init__()
        use_fc_norm = global_pool in ("avg", "avgmax", "max") if fc_norm is None else fc_norm

        def norm_layer(d):
            return nn.LayerNorm(d, eps=norm_eps)

        act = {"gelu": nn.GELU, "gelu_tanh": lambda: nn.GELU(approximate="tanh"), "quick_gelu": QuickGELU}[act_layer]
        self.num_classes, self.global_pool = num_classes, global_pool
        self.num_features = self.embed_dim = embed_dim
        self.num_prefix_tokens = int(class_token) + reg_tokens
        self.num_reg_tokens, self.has_class_token = reg_tokens, class_token
        self.no_embed_class, self.pool_include_prefix, self.dynamic_img_size = no_embed_class, False, False
        self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, embed_dim, bias=not pre_norm)
        n = self.patch_embed.num_patches
        self.cls_token = _zeros(1, 1, embed_dim) if class_token else None
        self.reg_token = _zeros(1, reg_tokens, embed_dim) if reg_tokens else None
        self.pos_embed = _zeros(1, n if no_embed_class else n + self.num_prefix_tokens, embed_dim)
        self.norm_pre = norm_layer(embed_dim) if pre_norm else nn.Identity()
        self.blocks = nn.Sequential(*[
            Block(embed_dim, num_heads, mlp_ratio, qkv_bias, qk_norm, proj_bias, init_values, norm_layer, act,
                  mlp_layer)
            for _ in range(depth)
        ])
        self.norm = norm_layer(embed_dim) if final_norm and not use_fc_norm else nn.Identity()
        self.attn_pool = nn.Identity() if attn_pool else None
        self.fc_norm = norm_layer(embed_dim) if final_norm and use_fc_norm else nn.Identity()
        self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()


class TorchvisionEncoderBlock(nn.Module):
    __module__ = "torchvision.models.vision_transformer"
    __qualname__ = "EncoderBlock"

    def __init__(self, num_heads, hidden_dim, mlp_dim, eps):
        super().__init__()
        self.num_heads = num_heads
        self.ln_1 = nn.LayerNorm(hidden_dim, eps=eps)
        self.self_attention = nn.MultiheadAttention(hidden_dim, num_heads, batch_first=True)
        self.dropout = nn.Dropout()
        self.ln_2 = nn.LayerNorm(hidden_dim, eps=eps)
        self.mlp = nn.Sequential(nn.Linear(hidden_dim, mlp_dim), nn.GELU(), nn.Dropout(),
                                 nn.Linear(mlp_dim, hidden_dim), nn.Dropout())


class TorchvisionEncoder(nn.Module):
    __module__ = "torchvision.models.vision_transformer"
    __qualname__ = "Encoder"

    def __init__(self, seq_length, num_layers, num_heads, hidden_dim, mlp_dim, eps):
        super().__init__()
        self.pos_embedding = _zeros(1, seq_length, hidden_dim)
        self.dropout = nn.Dropout()
        self.layers = nn.Sequential(OrderedDict(
            (f"encoder_layer_{i}", TorchvisionEncoderBlock(num_heads, hidden_dim, mlp_dim, eps))
            for i in range(num_layers)
        ))
        self.ln = nn.LayerNorm(hidden_dim, eps=eps)


class TorchvisionVisionTransformer(nn.Module):
    """torchvision's ``VisionTransformer``'s attributes."""

    __module__ = "torchvision.models.vision_transformer"
    __qualname__ = "VisionTransformer"

    def __init__(self, image_size, patch_size, num_layers, num_heads, hidden_dim, mlp_dim, num_classes=1000,
                 representation_size=None, eps=1e-6):
        super().__init__()
        self.image_size, self.patch_size = image_size, patch_size
        self.hidden_dim, self.mlp_dim = hidden_dim, mlp_dim
        self.num_classes, self.representation_size = num_classes, representation_size
        self.conv_proj = nn.Conv2d(3, hidden_dim, patch_size, patch_size)
        self.class_token = _zeros(1, 1, hidden_dim)
        seq = (image_size // patch_size) ** 2 + 1
        self.encoder = TorchvisionEncoder(seq, num_layers, num_heads, hidden_dim, mlp_dim, eps)
        heads = OrderedDict()
        if representation_size is not None:
            heads["pre_logits"] = nn.Linear(hidden_dim, representation_size)
            heads["head"] = nn.Linear(representation_size, num_classes)
        else:
            heads["head"] = nn.Linear(hidden_dim, num_classes)
        self.heads = nn.Sequential(heads)


class ResNet(nn.Module):
    """A CNN (not a ViT)."""

    __module__ = "torchvision.models.resnet"

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 7, 2, bias=False)
        self.fc = nn.Linear(8, 10)


class PlainObject:
    """Not a module at all."""
