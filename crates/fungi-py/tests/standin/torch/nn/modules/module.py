"""Stand-in ``torch.nn.Module``: parameters, buffers and submodules registered on assignment."""
from collections import OrderedDict

import numpy as np

from ..parameter import Parameter

_rng = np.random.default_rng(0)


def _param(*shape):
    """A float32 parameter of small random values."""
    return Parameter(_rng.normal(0.0, 0.02, size=shape).astype(np.float32))


class Module:
    def __init__(self):
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "training", False)

    def __setattr__(self, name, value):
        if isinstance(value, Parameter):
            self._parameters[name] = value
        elif isinstance(value, Module):
            self._modules[name] = value
        elif value is None and name in self._parameters:
            self._parameters[name] = None
        object.__setattr__(self, name, value)

    def register_buffer(self, name, tensor, persistent=True):
        self._buffers[name] = (tensor, persistent)
        object.__setattr__(self, name, tensor)

    def named_modules(self, prefix=""):
        yield prefix, self
        for name, m in self._modules.items():
            if m is not None:
                yield from m.named_modules(f"{prefix}.{name}" if prefix else name)

    def modules(self):
        return (m for _, m in self.named_modules())

    def named_parameters(self):
        for mp, m in self.named_modules():
            for n, p in m._parameters.items():
                if p is not None:
                    yield (f"{mp}.{n}" if mp else n), p

    def parameters(self):
        return (p for _, p in self.named_parameters())

    def buffers(self):
        return (b for m in self.modules() for b, _ in m._buffers.values())

    def state_dict(self):
        out = OrderedDict()
        for mp, m in self.named_modules():
            items = [(n, p) for n, p in m._parameters.items() if p is not None]
            items += [(n, b) for n, (b, keep) in m._buffers.items() if keep and b is not None]
            for n, t in items:
                out[f"{mp}.{n}" if mp else n] = t
        return out
