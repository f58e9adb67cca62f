"""``fungi_rs.config``: where fungivision keeps its objective configurations (``from
fungivision.config import KLConfig, DINOConfig, SimCLRConfig``)."""
from . import DeepClusterConfig, DINOConfig, KLConfig, SimCLRConfig

__all__ = ["KLConfig", "DINOConfig", "SimCLRConfig", "DeepClusterConfig"]
