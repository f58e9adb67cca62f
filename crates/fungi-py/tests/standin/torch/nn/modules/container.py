from collections import OrderedDict

from .module import Module


class Sequential(Module):
    def __init__(self, *mods):
        super().__init__()
        if len(mods) == 1 and isinstance(mods[0], OrderedDict):
            for name, m in mods[0].items():
                setattr(self, name, m)
        else:
            for i, m in enumerate(mods):
                setattr(self, str(i), m)

    def __iter__(self):
        return iter(self._modules.values())

    def __len__(self):
        return len(self._modules)

    def __getitem__(self, i):
        return list(self._modules.values())[i]


class ModuleList(Sequential):
    def __init__(self, mods=()):
        super().__init__(*mods)
