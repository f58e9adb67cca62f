from .linear import NonDynamicallyQuantizableLinear
from .module import Module, _param


class GELU(Module):
    def __init__(self, approximate="none"):
        super().__init__()
        self.approximate = approximate


class MultiheadAttention(Module):
    def __init__(self, embed_dim, num_heads, dropout=0.0, bias=True, batch_first=False):
        super().__init__()
        self.embed_dim, self.num_heads, self.batch_first = embed_dim, num_heads, batch_first
        self._qkv_same_embed_dim = True
        self.in_proj_weight = _param(3 * embed_dim, embed_dim)
        self.in_proj_bias = _param(3 * embed_dim) if bias else None
        self.bias_k = self.bias_v = None
        self.out_proj = NonDynamicallyQuantizableLinear(embed_dim, embed_dim, bias=bias)
