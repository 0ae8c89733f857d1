"""Flax NNX modules of Toto 2.0 (toto-2), one file per concept."""

from .config import QUANTILE_LEVELS, Toto2Config
from .model import Toto2, Toto2Output
from .transformer import KVCache, group_pattern

__all__ = ["QUANTILE_LEVELS", "KVCache", "Toto2", "Toto2Config", "Toto2Output", "group_pattern"]
