"""Anomaly detection from Toto's predictive distributions: ``toto_jax.detect`` (``api.py``), the causal surprise
pass (``score.py``), the adaptive score (``adaptive.py``) and ``DetectOptions`` (``options.py``)."""

from .options import DetectOptions


def __getattr__(name):
    if name in ("detect", "Detection", "DetectError"):
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'toto_jax.detection' has no attribute {name!r}")


__all__ = ["DetectError", "DetectOptions", "Detection", "detect"]
