"""A stand-in for the few parts of PyTorch that fungi_rs._torch touches, for tests in
environments without torch (CI). Put on sys.path only by those tests; never installed.

Tensors wrap numpy arrays; modules register their parameters and submodules like
``torch.nn.Module`` (``named_modules``, ``state_dict``, ``parameters``, ``buffers``). No autograd,
no forward passes."""
from ._tensor import Tensor, bfloat16, device, dtype, float16, float32, float64, int64, is_tensor  # noqa: F401
from . import nn  # noqa: F401


def from_numpy(a):
    """Shares the array's memory, as torch.from_numpy does."""
    return Tensor(a)
