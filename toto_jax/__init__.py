"""toto-jax: Datadog's Toto time-series foundation model in JAX / Flax NNX."""

from .config import PRESETS, ConfigError, TotoConfig, preset

__version__ = "0.1.0"

# Everything that imports jax/flax loads on first use, so `import toto_jax` (done by every data-loader
# worker process) stays light.
_LAZY = {
    "InputError": "toto_jax.models.toto1",
    "KVCache": "toto_jax.models.toto1",
    "Toto": "toto_jax.models.toto1",
    "TotoOutput": "toto_jax.models.toto1",
    "count_parameters": "toto_jax.models.toto1",
    "Toto2": "toto_jax.models.toto2",
    "Toto2Config": "toto_jax.models.toto2",
    "load": "toto_jax.checkpoint",
    "save": "toto_jax.checkpoint",
    "export_torch": "toto_jax.checkpoint",
    "CheckpointError": "toto_jax.checkpoint",
    "forecast": "toto_jax.forecasting.api",
    "Forecast": "toto_jax.forecasting.api",
    "ForecastError": "toto_jax.forecasting.api",
    "ForecastOptions": "toto_jax.forecasting.options",
    "forecast_dataset": "toto_jax.forecasting.job",
    "JobSummary": "toto_jax.forecasting.job",
    "detect": "toto_jax.detection.api",
    "Detection": "toto_jax.detection.api",
    "DetectError": "toto_jax.detection.api",
    "DetectOptions": "toto_jax.detection.options",
    "detect_dataset": "toto_jax.detection.job",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'toto_jax' has no attribute {name!r}")


__all__ = [
    "PRESETS",
    "CheckpointError",
    "ConfigError",
    "DetectError",
    "DetectOptions",
    "Detection",
    "Forecast",
    "ForecastError",
    "ForecastOptions",
    "InputError",
    "JobSummary",
    "KVCache",
    "Toto",
    "Toto2",
    "Toto2Config",
    "TotoConfig",
    "TotoOutput",
    "count_parameters",
    "detect",
    "detect_dataset",
    "export_torch",
    "forecast",
    "forecast_dataset",
    "load",
    "preset",
    "save",
]
