"""``fungi_rs.wrapper``: where fungivision keeps its wrapper (``from fungivision.wrapper import
FUNGIWrapper``), so that changing the package name is the only change to a user's imports."""
from . import FUNGIWrapper

__all__ = ["FUNGIWrapper"]
