"""Stand-in tensors: a numpy array with a device name."""
import numpy as np


class dtype:
    def __init__(self, name, np_dtype, floating):
        self.name, self.np, self.is_floating_point = name, np.dtype(np_dtype), floating

    def __repr__(self):
        return f"torch.{self.name}"

    __str__ = __repr__


float16 = dtype("float16", np.float16, True)
float32 = dtype("float32", np.float32, True)
float64 = dtype("float64", np.float64, True)
bfloat16 = dtype("bfloat16", np.float32, True)  # numpy has none; only the name matters here
int64 = dtype("int64", np.int64, False)
_BY_NP = {d.np: d for d in (float16, float32, float64, int64)}


class device:
    def __init__(self, name):
        self.name = str(name)
        self.type = self.name.split(":")[0]

    def __eq__(self, other):
        return str(self) == str(other)

    def __repr__(self):
        return f"device(type='{self.type}')" if self.name == self.type else f"device('{self.name}')"

    def __str__(self):
        return self.name


class Tensor:
    def __init__(self, data, device_name="cpu", dt=None):
        self._a = np.asarray(data)
        self.device = device(device_name)
        self._dtype = dt or _BY_NP[self._a.dtype]

    @property
    def shape(self):
        return tuple(self._a.shape)

    @property
    def dtype(self):
        return self._dtype

    def dim(self):
        return self._a.ndim

    def numel(self):
        return int(self._a.size)

    def is_floating_point(self):
        return self._dtype.is_floating_point

    def detach(self):
        return self

    def to(self, *args):
        dev, dt = self.device.name, self._dtype
        for a in args:
            if isinstance(a, dtype):
                dt = a
            else:
                dev = str(a)
        if dev == self.device.name and dt is self._dtype:
            return self
        return Tensor(self._a.astype(dt.np), dev, dt)

    def contiguous(self):
        if self._a.flags.c_contiguous:
            return self
        return Tensor(np.ascontiguousarray(self._a), self.device.name, self._dtype)

    def numpy(self):
        if self.device.type != "cpu":
            raise TypeError(f"can't convert {self.device.type} device type tensor to numpy")
        return self._a

    def __repr__(self):
        return f"tensor(shape={self.shape}, dtype={self._dtype}, device={self.device})"


def is_tensor(x):
    return isinstance(x, Tensor)
