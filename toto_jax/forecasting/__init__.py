"""Forecasting: options, input preparation, the compiled decode, the API, tables, plots and the CLI.

- ``options``: ``ForecastOptions`` (imports no jax) and its command-line flags;
- ``inputs``: arrays, lists and pandas objects -> float64 contexts with masks, ids and time indexes;
- ``preprocessing``: gap filling, outlier clipping, float64 normalization, value caps (numpy);
- ``plan``: shape buckets and the memory plan (chunks of series, sample paths and variate groups);
- ``sampling``: how a sample path draws a decoded patch;
- ``decode``: the compiled prefill and scanned decode step;
- ``api``: ``forecast`` and ``Forecast``;
- ``tabular``, ``plotting``, ``cli``: ``toto-jax forecast``.

Only ``options`` loads on import; the rest loads on first use, so evaluation code can name the defaults
without the model stack.
"""

from .options import ForecastOptions

_LAZY = {"forecast": "api", "Forecast": "api", "ForecastError": "api"}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["Forecast", "ForecastError", "ForecastOptions", "forecast"]
