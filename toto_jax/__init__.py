"""toto-jax: Datadog's Toto time-series foundation model in JAX / Flax NNX."""

from .config import PRESETS, ConfigError, TotoConfig, preset
from .model import InputError, KVCache, Toto, TotoOutput, count_parameters

__version__ = "0.1.0"


def __getattr__(name):
    # Heavier entry points are imported on first use so `import toto_jax` stays light.
    if name in ("load", "CheckpointError"):
        from . import checkpoint

        return getattr(checkpoint, name)
    raise AttributeError(f"module 'toto_jax' has no attribute {name!r}")


__all__ = [
    "PRESETS",
    "CheckpointError",
    "ConfigError",
    "InputError",
    "KVCache",
    "Toto",
    "TotoConfig",
    "TotoOutput",
    "count_parameters",
    "load",
    "preset",
]
