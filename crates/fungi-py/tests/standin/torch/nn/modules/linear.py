from .module import Module, _param


class Identity(Module):
    pass


class Linear(Module):
    def __init__(self, in_features, out_features, bias=True):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = _param(out_features, in_features)
        self.bias = _param(out_features) if bias else None


class NonDynamicallyQuantizableLinear(Linear):
    pass
