"""A minimal stand-in for DINOv2's torch.hub ``DinoVisionTransformer`` (facebookresearch/dinov2,
``dinov2/models/vision_transformer.py`` and ``dinov2/layers``), for tests: torch.hub code is
not pip-installable.

Written for fungi-rs from the reference's behaviour, not copied: the same class and attribute
names (which ``fungi_rs._torch.describe`` reads: ``patch_embed.img_size`` / ``patch_size`` as
pairs, ``blocks`` (``BlockChunk``s with ``block_chunks > 0``), ``ls1.gamma`` LayerScale,
``register_tokens``, ``num_register_tokens``, ``interpolate_offset``, ``interpolate_antialias``,
``mask_token``), the same state-dict keys and the same eval forward (``head(x_norm_clstoken)``,
registers inserted after the class token, the position embedding interpolated with the
offset's scale factor, or to the size with antialiasing). xformers, masks, drop-path and weight
init are left out.
"""
import math
from functools import partial

import torch
import torch.nn as nn
import torch.nn.functional as F


def make_2tuple(x):
    return x if isinstance(x, tuple) else (x, x)


class PatchEmbed(nn.Module):
    def __init__(self, img_size=224, patch_size=16, in_chans=3, embed_dim=768):
        super().__init__()
        self.img_size = make_2tuple(img_size)
        self.patch_size = make_2tuple(patch_size)
        self.patches_resolution = (self.img_size[0] // self.patch_size[0], self.img_size[1] // self.patch_size[1])
        self.num_patches = self.patches_resolution[0] * self.patches_resolution[1]
        self.in_chans, self.embed_dim = in_chans, embed_dim
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=self.patch_size, stride=self.patch_size)
        self.norm = nn.Identity()

    def forward(self, x):
        return self.norm(self.proj(x).flatten(2).transpose(1, 2))


class Mlp(nn.Module):
    def __init__(self, in_features, hidden_features, act_layer=nn.GELU, bias=True):
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features, bias=bias)
        self.act = act_layer()
        self.fc2 = nn.Linear(hidden_features, in_features, bias=bias)
        self.drop = nn.Dropout(0.0)

    def forward(self, x):
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class Attention(nn.Module):
    def __init__(self, dim, num_heads=8, qkv_bias=False, proj_bias=True):
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim, bias=proj_bias)

    def forward(self, x):
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        a = ((q * self.scale) @ k.transpose(-2, -1)).softmax(dim=-1)
        return self.proj((a @ v).transpose(1, 2).reshape(b, n, c))


class MemEffAttention(Attention):
    """Without xformers, DINOv2's MemEffAttention is its Attention."""


class LayerScale(nn.Module):
    def __init__(self, dim, init_values=1e-5):
        super().__init__()
        self.gamma = nn.Parameter(init_values * torch.ones(dim))

    def forward(self, x):
        return x * self.gamma


class Block(nn.Module):
    def __init__(self, dim, num_heads, mlp_ratio=4.0, qkv_bias=False, proj_bias=True, ffn_bias=True,
                 norm_layer=nn.LayerNorm, act_layer=nn.GELU, init_values=None, attn_class=MemEffAttention):
        super().__init__()
        self.norm1 = norm_layer(dim)
        self.attn = attn_class(dim, num_heads, qkv_bias, proj_bias)
        self.ls1 = LayerScale(dim, init_values) if init_values else nn.Identity()
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer, ffn_bias)
        self.ls2 = LayerScale(dim, init_values) if init_values else nn.Identity()

    def forward(self, x):
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class NestedTensorBlock(Block):
    """DINOv2's block class (nested-tensor inputs are not needed here)."""


class BlockChunk(nn.ModuleList):
    def forward(self, x):
        for b in self:
            x = b(x)
        return x


class DinoVisionTransformer(nn.Module):
    def __init__(self, img_size=224, patch_size=16, in_chans=3, embed_dim=768, depth=12, num_heads=12,
                 mlp_ratio=4.0, qkv_bias=True, ffn_bias=True, proj_bias=True, init_values=None,
                 act_layer=nn.GELU, block_fn=NestedTensorBlock, ffn_layer="mlp", block_chunks=1,
                 num_register_tokens=0, interpolate_antialias=False, interpolate_offset=0.1, **kwargs):
        super().__init__()
        assert ffn_layer == "mlp", "only the MLP FFN is modelled here"
        norm_layer = partial(nn.LayerNorm, eps=1e-6)
        self.num_features = self.embed_dim = embed_dim
        self.num_tokens = 1
        self.n_blocks = depth
        self.num_heads = num_heads
        self.patch_size = patch_size
        self.num_register_tokens = num_register_tokens
        self.interpolate_antialias = interpolate_antialias
        self.interpolate_offset = interpolate_offset
        self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, embed_dim)
        n = self.patch_embed.num_patches
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, n + self.num_tokens, embed_dim))
        self.register_tokens = (
            nn.Parameter(torch.zeros(1, num_register_tokens, embed_dim)) if num_register_tokens else None
        )
        blocks = [
            block_fn(embed_dim, num_heads, mlp_ratio, qkv_bias, proj_bias, ffn_bias, norm_layer, act_layer,
                     init_values)
            for _ in range(depth)
        ]
        if block_chunks > 0:
            self.chunked_blocks = True
            size = depth // block_chunks
            self.blocks = nn.ModuleList(
                [BlockChunk([nn.Identity()] * i + blocks[i:i + size]) for i in range(0, depth, size)]
            )
        else:
            self.chunked_blocks = False
            self.blocks = nn.ModuleList(blocks)
        self.norm = norm_layer(embed_dim)
        self.head = nn.Identity()
        self.mask_token = nn.Parameter(torch.zeros(1, embed_dim))

    def interpolate_pos_encoding(self, x, w, h):
        previous_dtype = x.dtype
        npatch, n = x.shape[1] - 1, self.pos_embed.shape[1] - 1
        if npatch == n and w == h:
            return self.pos_embed
        pos_embed = self.pos_embed.float()
        dim = x.shape[-1]
        w0, h0 = w // self.patch_size, h // self.patch_size
        m = int(math.sqrt(n))
        assert n == m * m
        if self.interpolate_offset:
            kw = {"scale_factor": (float(w0 + self.interpolate_offset) / m, float(h0 + self.interpolate_offset) / m)}
        else:
            kw = {"size": (w0, h0)}
        grid = pos_embed[:, 1:].reshape(1, m, m, dim).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, mode="bicubic", antialias=self.interpolate_antialias, **kw)
        assert (w0, h0) == tuple(grid.shape[-2:])
        grid = grid.permute(0, 2, 3, 1).reshape(1, -1, dim)
        return torch.cat((pos_embed[:, :1], grid), dim=1).to(previous_dtype)

    def prepare_tokens_with_masks(self, x, masks=None):
        _, _, w, h = x.shape
        x = self.patch_embed(x)
        x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1)
        x = x + self.interpolate_pos_encoding(x, w, h)
        if self.register_tokens is not None:
            x = torch.cat((x[:, :1], self.register_tokens.expand(x.shape[0], -1, -1), x[:, 1:]), dim=1)
        return x

    def forward_features(self, x, masks=None):
        x = self.prepare_tokens_with_masks(x, masks)
        for blk in self.blocks:
            x = blk(x)
        x_norm = self.norm(x)
        r = self.num_register_tokens
        return {
            "x_norm_clstoken": x_norm[:, 0],
            "x_norm_regtokens": x_norm[:, 1:r + 1],
            "x_norm_patchtokens": x_norm[:, r + 1:],
            "x_prenorm": x,
            "masks": masks,
        }

    def forward(self, *args, is_training=False, **kwargs):
        ret = self.forward_features(*args, **kwargs)
        return ret if is_training else self.head(ret["x_norm_clstoken"])


def vit_tiny_test(patch_size=8, img_size=32, **kwargs):
    """hubconf-style constructor (``dinov2_vits14`` passes ``img_size=518, init_values=1.0,
    block_chunks=0`` and, for ``_reg``, ``num_register_tokens=4, interpolate_antialias=True,
    interpolate_offset=0.0``)."""
    kw = dict(init_values=1.0, block_chunks=0)
    kw.update(kwargs)
    return DinoVisionTransformer(img_size=img_size, patch_size=patch_size, embed_dim=48, depth=2, num_heads=3,
                                 mlp_ratio=4, **kw)
