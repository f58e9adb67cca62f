from .module import Module


class Dropout(Module):
    def __init__(self, p=0.0):
        super().__init__()
        self.p = p
