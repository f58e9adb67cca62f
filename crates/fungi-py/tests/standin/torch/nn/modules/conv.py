from .module import Module, _param


class Conv2d(Module):
    def __init__(self, in_channels, out_channels, kernel_size, stride=1, bias=True):
        super().__init__()
        k = kernel_size if isinstance(kernel_size, tuple) else (kernel_size, kernel_size)
        self.in_channels, self.out_channels, self.kernel_size, self.stride = in_channels, out_channels, k, stride
        self.weight = _param(out_channels, in_channels, *k)
        self.bias = _param(out_channels) if bias else None
