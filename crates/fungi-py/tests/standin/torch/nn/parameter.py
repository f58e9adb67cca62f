from .._tensor import Tensor


class Parameter(Tensor):
    def __init__(self, data, device_name="cpu", dt=None):
        if isinstance(data, Tensor):
            data, device_name, dt = data._a, data.device.name, data.dtype
        super().__init__(data, device_name, dt)
