"""Forecast accuracy metrics with the GIFT-Eval / BOOM conventions (numpy, one window at a time).

Conventions (those of ``gluonts.ev``, which GIFT-Eval and BOOM use):

- ``seasonal_error``: the in-sample mean absolute seasonal difference of the context,
  ``mean |y_t - y_{t-m}|``; a context not longer than ``m`` falls back to ``m = 1``.
- MASE: mean absolute error of the point forecast (the median) divided by the seasonal error.
- Quantile loss at level q: ``2 * |(y - y_q) * (1{y_q >= y} - q)|`` (twice the pinball loss).
- WQL: for each level, the summed quantile loss over the window divided by ``sum |y|``; averaged over
  the levels (gluonts' ``MeanWeightedSumQuantileLoss``; GIFT-Eval's "CRPS").
- CRPS from samples: the exact CRPS of the empirical distribution of the samples,
  ``E|X - y| - E|X - X'| / 2``; from quantiles: the mean quantile loss over an even grid of levels,
  which approximates ``CRPS = 2 * integral of the pinball loss over q``. Normalised CRPS divides the
  summed CRPS by ``sum |y|``.
- Aggregation: each metric is divided by the seasonal-naive baseline's value on the same series, and
  the ratios are combined with a geometric mean.

Missing target values (NaN) are left out of every sum and mean.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# gluonts' default seasonalities per base frequency (``gluonts.time_feature.get_seasonality``).
BASE_SEASONALITY = {"S": 3600, "T": 1440, "H": 24, "D": 1, "W": 1, "M": 12, "B": 5, "Q": 4}
_FREQ_ALIASES = {"s": "S", "min": "T", "t": "T", "h": "H", "d": "D", "w": "W", "m": "M", "me": "M", "ms": "M",
                 "b": "B", "q": "Q", "qe": "Q", "qs": "Q", "y": "Y", "ye": "Y", "a": "Y"}  # fmt: skip
# The nine levels GIFT-Eval and BOOM score.
WQL_LEVELS = tuple(round(0.1 * i, 1) for i in range(1, 10))


def _split_freq(freq: str) -> tuple[int, str]:
    """'5min' -> (5, 'T'), 'H' -> (1, 'H'), 'W-SUN' -> (1, 'W')."""
    import warnings

    import pandas as pd

    try:
        with warnings.catch_warnings():  # legacy aliases ('H', 'T') are still common in data files
            warnings.simplefilter("ignore", FutureWarning)
            offset = pd.tseries.frequencies.to_offset(freq)
    except ValueError as error:
        raise ValueError(f"unknown frequency {freq!r}") from error
    name = offset.name.split("-")[0]
    base = _FREQ_ALIASES.get(name.lower(), name.upper())
    return int(offset.n), base


def seasonality(freq: str | None) -> int:
    """Season length of a frequency as gluonts defines it (5min -> 288, H -> 24, D -> 1); 1 if unknown."""
    if not freq:
        return 1
    multiple, base = _split_freq(freq)
    period = BASE_SEASONALITY.get(base, 1)
    return period // multiple if period % multiple == 0 else 1


def seasonal_error(context: np.ndarray, season: int) -> float:
    """``mean |y_t - y_{t-m}|`` over the context (NaN pairs skipped); ``m = 1`` when the context is too short."""
    context = np.asarray(context, np.float64)
    if season < 1:
        raise ValueError(f"season must be >= 1, got {season}")
    if context.shape[-1] <= season:
        season = 1
    if context.shape[-1] < 2:
        raise ValueError("the seasonal error needs a context of at least 2 points")
    differences = np.abs(context[season:] - context[:-season])
    if np.all(np.isnan(differences)):
        return float("nan")
    return float(np.nanmean(differences))


def _check_shapes(target: np.ndarray, forecast: np.ndarray, what: str) -> None:
    if forecast.shape != target.shape:
        raise ValueError(f"{what} has shape {forecast.shape}, expected the target's shape {target.shape}")


def mae(target, point) -> float:
    target, point = np.asarray(target, np.float64), np.asarray(point, np.float64)
    _check_shapes(target, point, "point forecast")
    return float(np.nanmean(np.abs(target - point)))


def mse(target, point) -> float:
    target, point = np.asarray(target, np.float64), np.asarray(point, np.float64)
    _check_shapes(target, point, "point forecast")
    return float(np.nanmean(np.square(target - point)))


def mase(target, point, season_error: float) -> float:
    """MAE divided by the seasonal error of the context (``inf``/NaN when that error is 0)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(np.float64(mae(target, point)) / np.float64(season_error))


def quantile_loss(target, quantile_forecast, q: float) -> np.ndarray:
    """Per-step ``2 * |(y - y_q) * (1{y_q >= y} - q)|``."""
    target = np.asarray(target, np.float64)
    prediction = np.asarray(quantile_forecast, np.float64)
    return 2.0 * np.abs((target - prediction) * ((prediction >= target) - q))


def _check_levels(levels: Sequence[float], quantiles: np.ndarray, target: np.ndarray) -> np.ndarray:
    levels = np.asarray(levels, np.float64)
    if levels.ndim != 1 or np.any((levels <= 0) | (levels >= 1)):
        raise ValueError(f"quantile levels must be a list of values in (0, 1), got {levels.tolist()}")
    if quantiles.shape != (len(levels),) + target.shape:
        raise ValueError(
            f"quantile forecasts have shape {quantiles.shape}; expected {(len(levels),) + target.shape} "
            "(one row per level, then the target's shape)"
        )
    return levels


def weighted_quantile_loss(target, quantiles, levels: Sequence[float] = WQL_LEVELS) -> float:
    """Mean over levels of ``sum_t QL_q(t) / sum_t |y_t|`` (NaN when the target sums to 0)."""
    target = np.asarray(target, np.float64)
    quantiles = np.asarray(quantiles, np.float64)
    levels = _check_levels(levels, quantiles, target)
    observed = ~np.isnan(target)
    scale = np.abs(target[observed]).sum()
    if scale == 0:
        return float("nan")
    losses = [quantile_loss(target, quantiles[i], q)[observed].sum() for i, q in enumerate(levels)]
    return float(np.mean(losses) / scale)


def crps_from_samples(target, samples) -> np.ndarray:
    """Per-step CRPS of the empirical distribution of ``samples`` (trailing sample axis).

    Uses ``E|X - y| - E|X - X'| / 2`` with the pairwise term from sorted samples:
    ``sum_{i,j} |x_i - x_j| = 2 * sum_i (2i - n + 1) x_(i)`` (i from 0).
    """
    target = np.asarray(target, np.float64)
    samples = np.asarray(samples, np.float64)
    if samples.shape[:-1] != target.shape:
        raise ValueError(f"samples have shape {samples.shape}; expected the target's {target.shape} + (samples,)")
    n = samples.shape[-1]
    if n == 0:
        raise ValueError("no samples")
    spread_to_target = np.abs(samples - target[..., None]).mean(axis=-1)
    ordered = np.sort(samples, axis=-1)
    weights = 2.0 * np.arange(n) - n + 1
    pairwise = 2.0 * (ordered * weights).sum(axis=-1) / (n * n)
    return spread_to_target - 0.5 * pairwise


def crps_from_quantiles(target, quantiles, levels: Sequence[float]) -> np.ndarray:
    """Per-step CRPS approximated by the mean quantile loss over ``levels`` (an even grid)."""
    target = np.asarray(target, np.float64)
    quantiles = np.asarray(quantiles, np.float64)
    levels = _check_levels(levels, quantiles, target)
    return np.mean([quantile_loss(target, quantiles[i], q) for i, q in enumerate(levels)], axis=0)


def normalized_crps(target, crps_per_step) -> float:
    """``sum_t CRPS_t / sum_t |y_t|`` over observed steps (NaN when the target sums to 0)."""
    target = np.asarray(target, np.float64)
    observed = ~np.isnan(target)
    scale = np.abs(target[observed]).sum()
    if scale == 0:
        return float("nan")
    return float(np.asarray(crps_per_step, np.float64)[observed].sum() / scale)


def geometric_mean_ratio(values, baseline, floor: float = 1e-6) -> tuple[float, int]:
    """Geometric mean of ``values / baseline`` over the pairs where both are finite and the baseline is > 0.

    Ratios are floored at ``floor`` (a perfect forecast would otherwise send the mean to 0). Returns the
    mean and how many pairs entered it.
    """
    values = np.asarray(values, np.float64)
    baseline = np.asarray(baseline, np.float64)
    usable = np.isfinite(values) & np.isfinite(baseline) & (baseline > 0)
    if not usable.any():
        return float("nan"), 0
    ratios = np.maximum(values[usable] / baseline[usable], floor)
    return float(np.exp(np.log(ratios).mean())), int(usable.sum())


__all__ = [
    "WQL_LEVELS",
    "crps_from_quantiles",
    "crps_from_samples",
    "geometric_mean_ratio",
    "mae",
    "mase",
    "mse",
    "normalized_crps",
    "quantile_loss",
    "seasonal_error",
    "seasonality",
    "weighted_quantile_loss",
]
