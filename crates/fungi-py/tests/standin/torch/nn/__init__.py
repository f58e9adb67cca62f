from .parameter import Parameter  # noqa: F401
from .modules import (  # noqa: F401
    GELU, Conv2d, Dropout, Identity, LayerNorm, Linear, Module, ModuleList, MultiheadAttention,
    NonDynamicallyQuantizableLinear, Sequential,
)
