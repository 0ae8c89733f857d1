"""Context preprocessing before the model sees a series: gaps, glitches, normalization, value caps.

Everything here is numpy in float64 over arrays [..., time] with a validity mask (True = observed), and
imports no jax. Which steps run is decided by ``ForecastOptions`` (``options.py``); ``forecast`` applies
them in the order of this file.
"""

from __future__ import annotations

import warnings

import numpy as np


def trailing_gap(valid: np.ndarray) -> int:
    """Steps at the end of one series [variate, time] where no variate is observed (ingestion lag)."""
    observed = np.flatnonzero(valid.any(axis=0))
    return valid.shape[-1] if observed.size == 0 else valid.shape[-1] - 1 - int(observed[-1])


def fill_gaps(values: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Fill each variate's missing steps [..., time]: inner gaps by linear interpolation between the
    observations around them, a gap at the end by the last observation; steps before the first
    observation stay missing (they are left padding). Filled steps become valid."""
    if valid.all():  # most series of a fleet: nothing to fill
        return values, valid
    time = values.shape[-1]
    steps = np.arange(time)
    previous = np.maximum.accumulate(np.where(valid, steps, -1), axis=-1)
    following = np.flip(np.minimum.accumulate(np.flip(np.where(valid, steps, time), -1), axis=-1), -1)
    has_previous, has_following = previous >= 0, following < time
    left = np.take_along_axis(values, np.maximum(previous, 0), axis=-1)
    right = np.take_along_axis(values, np.minimum(following, time - 1), axis=-1)
    span = np.maximum(following - previous, 1)
    weight = (steps - previous) / span
    interpolated = np.where(has_following, left + weight * (right - left), left)
    filled = np.where(valid, values, np.where(has_previous, interpolated, values))
    return filled, valid | has_previous


def clip_context_outliers(values, valid, limit: float) -> np.ndarray:
    """Clip each variate's observed context [..., time] to [q01 - limit * r, q99 + limit * r], where q01
    and q99 are its 1st and 99th percentiles (order statistics that exclude at least the smallest and the
    largest value) and r = q99 - q01, in float64. Only isolated extremes are affected: anything that fills
    more than 1 % of the context is inside the central range.
    A variate whose central range is 0 (constant, or a sparse count) is left unchanged."""
    low, high = outlier_bounds(values, valid, limit)
    return np.where(valid, np.clip(values, low, high), values)


def outlier_bounds(values, valid, limit: float) -> tuple[np.ndarray, np.ndarray]:
    """The clip range [..., 1] of ``clip_context_outliers`` from the observed steps (``valid``); infinite where
    the central range is 0 or nothing is observed."""
    observed = np.where(valid, np.asarray(values, np.float64), np.nan)
    # Order statistics, not interpolations, so a single glitch never leaks into a short context's range.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a variate with nothing observed: NaN, no range
        low = _quantile(observed, valid, 0.01, "higher")
        high = _quantile(observed, valid, 0.99, "lower")
    spread = np.where(high > low, limit * (high - low), np.inf)
    return np.where(np.isnan(low), -np.inf, low - spread), np.where(np.isnan(high), np.inf, high + spread)


def _quantile(observed, valid, level: float, method: str) -> np.ndarray:
    """``np.nanquantile`` over the last axis (keepdims): one vectorised call for the rows without gaps (numpy's
    nanquantile goes row by row in Python, 0.1 ms each: a tenth of a fleet's forecast), row by row for the rest."""
    out = np.empty(observed.shape[:-1] + (1,))
    full = valid.all(axis=-1)
    if full.any():
        out[full] = np.quantile(observed[full], level, axis=-1, keepdims=True, method=method)
    if not full.all():
        out[~full] = np.nanquantile(observed[~full], level, axis=-1, keepdims=True, method=method)
    return out


def _observed_mean(values, valid):
    """Mean of the observed values, anchored on the first one: a large common offset (a counter at 1e15)
    cancels exactly in ``values - anchor``, so the mean is exact to the offset's own precision. Halving
    before subtracting (exact in binary) and dividing before summing keep values near the float64 limit
    from overflowing."""
    count = np.maximum(valid.sum(-1, keepdims=True), 1)
    first = np.take_along_axis(values, np.argmax(valid, axis=-1)[..., None], axis=-1)
    anchor = np.where(np.isfinite(first), first, 0.0)
    offsets = np.where(valid, (values / 2 - anchor / 2) / count, 0.0)
    return anchor + 2 * offsets.sum(-1, keepdims=True)


def _observed_std(values, valid):
    """Population standard deviation, without overflowing squares; 0 for a variate that is constant up to
    float64 rounding (its mean need not equal the constant exactly)."""
    shift = _observed_mean(values, valid)
    centred = np.where(valid, values - shift, 0.0)
    magnitude = np.where(valid, np.abs(centred), 0.0).max(-1, keepdims=True)
    safe = np.where(magnitude > 0, magnitude, 1.0)
    std = magnitude * np.sqrt(_observed_mean(np.where(valid, centred / safe, 0.0) ** 2, valid))
    return np.where(std > 8 * np.finfo(np.float64).eps * np.abs(shift), std, 0.0)  # a few ulps of the level


def nonnegative_variates(values, valid) -> np.ndarray:
    """Variates [..., 1] whose observed context is all >= 0 (and observed at least once)."""
    return (np.where(valid, values >= 0, True).all(-1, keepdims=True)) & valid.any(-1, keepdims=True)


def normalize_context(values, valid, mode: str):
    """Per-variate (values - shift) / unit over the observed context, in float64 (exact for large offsets,
    safe up to the float64 limit). ``mode``: ``"standardize"`` (mean, standard deviation; a constant
    variate keeps unit 1), ``"center"`` (mean, unit 1) or ``"none"`` (0, 1). Returns (normalized values,
    shift, unit), the last two [..., 1]; missing steps stay 0 in the normalized values."""
    values = np.asarray(values, np.float64)
    shape = values.shape[:-1] + (1,)
    if mode == "none":
        return np.where(valid, values, 0.0), np.zeros(shape), np.ones(shape)
    shift = _observed_mean(values, valid)
    centred = np.where(valid, values - shift, 0.0)
    unit = np.ones(shape)
    if mode == "standardize":
        std = _observed_std(values, valid)
        unit = np.where(std > 0, std, 1.0)
    return np.where(valid, centred / unit, 0.0), shift, unit


def value_bounds(values, valid, limit: float) -> tuple[np.ndarray, np.ndarray]:
    """Bounds [..., 1] that decoded values are kept within: the observed context's range widened by
    ``limit`` of its standard deviations on each side (a constant context widens by ``limit`` units)."""
    std = _observed_std(values, valid)
    width = limit * np.where(std > 0, std, 1.0)
    low = np.where(valid, values, np.inf).min(-1, keepdims=True)
    high = np.where(valid, values, -np.inf).max(-1, keepdims=True)
    return low - width, high + width
