"""Flax NNX modules of Toto 1.0, one file per concept."""

from .attention import TimeAttention, VariateAttention
from .distribution import AffineTransformed, StudentTMixture
from .toto import InputError, Toto, TotoOutput, count_parameters, validate_inputs
from .transformer import KVCache, layer_kinds, layer_locations, stage_layout

__all__ = [
    "AffineTransformed",
    "InputError",
    "KVCache",
    "StudentTMixture",
    "TimeAttention",
    "Toto",
    "TotoOutput",
    "VariateAttention",
    "count_parameters",
    "layer_kinds",
    "layer_locations",
    "stage_layout",
    "validate_inputs",
]
