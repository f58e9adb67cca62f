"""Shared fixtures of the fungi_rs tests."""
import importlib
import pathlib
import sys

import pytest

HERE = pathlib.Path(__file__).resolve().parent
HAS_TORCH = importlib.util.find_spec("torch") is not None


@pytest.fixture
def standin(monkeypatch):
    """The torch stand-in (tests/standin) on sys.path, for environments without torch; the
    tests that use it skip where the real torch is importable, so the two never mix."""
    if HAS_TORCH:
        pytest.skip("the real torch is importable: the stand-in is for environments without it")
    monkeypatch.syspath_prepend(str(HERE / "standin"))
    yield importlib.import_module("standin_models")
    for name in list(sys.modules):
        if name == "torch" or name.startswith("torch.") or name.startswith("standin_"):
            del sys.modules[name]
