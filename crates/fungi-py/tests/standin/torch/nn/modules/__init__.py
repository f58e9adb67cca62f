from .module import Module  # noqa: F401
from .container import ModuleList, Sequential  # noqa: F401
from .linear import Identity, Linear, NonDynamicallyQuantizableLinear  # noqa: F401
from .normalization import LayerNorm  # noqa: F401
from .activation import GELU, MultiheadAttention  # noqa: F401
from .conv import Conv2d  # noqa: F401
from .dropout import Dropout  # noqa: F401
