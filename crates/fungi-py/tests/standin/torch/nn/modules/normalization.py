import numpy as np

from ..parameter import Parameter
from .module import Module


class LayerNorm(Module):
    def __init__(self, normalized_shape, eps=1e-5, elementwise_affine=True, bias=True):
        super().__init__()
        self.normalized_shape, self.eps = (normalized_shape,), eps
        self.weight = Parameter(np.ones(normalized_shape, np.float32)) if elementwise_affine else None
        self.bias = Parameter(np.zeros(normalized_shape, np.float32)) if elementwise_affine and bias else None
