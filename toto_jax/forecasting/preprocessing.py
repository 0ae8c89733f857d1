"""Context preprocessing applied before the model sees a series (numpy, float64 statistics).

Both steps are off in ``toto_jax.forecast`` by default (the reference forecasts raw values) and on in the
CLI, the evaluation harness and the GluonTS predictor. This module imports no jax, so the evaluation code
can name its defaults without loading the model stack."""

from __future__ import annotations

import argparse

import numpy as np

# Clip bound, in multiples of the range of the central 98 % of a context beyond that range. On the 99
# training series (NAB, cloud monitoring), 10 touches 9 series, all of them isolated glitches (a 0.1 %
# CPU at 2.3 %, single-tweet-minute bursts); a daily peak, a level shift or a square wave is never
# touched, since it is part of the central range. The pretraining data's outliers reach 1000 deviations.
DEFAULT_CLIP_OUTLIERS = 10.0


def check_clip_limit(limit) -> None:
    if isinstance(limit, bool) or not isinstance(limit, (int, float, np.number)) or not limit > 0:
        raise ValueError(f"clip_outliers must be a positive number of central ranges, got {limit!r}")


def clip_context_outliers(values, valid, limit: float):
    """Clip each variate's observed context [..., time] to [q01 - limit * r, q99 + limit * r], where q01
    and q99 are its 1st and 99th percentiles (order statistics that exclude at least the smallest and the
    largest value) and r = q99 - q01, in float64. Only isolated extremes are affected: anything that fills
    more than 1 % of the context is inside the central range.
    A variate whose central range is 0 (constant, or a sparse count) is left unchanged."""
    check_clip_limit(limit)
    observed = np.where(valid, np.asarray(values, np.float64), np.nan)
    # Order statistics, not interpolations, so a single glitch never leaks into a short context's range.
    low = np.nanquantile(observed, 0.01, axis=-1, keepdims=True, method="higher")
    high = np.nanquantile(observed, 0.99, axis=-1, keepdims=True, method="lower")
    spread = np.where(high > low, limit * (high - low), np.inf)
    clipped = np.clip(observed, low - spread, high + spread)
    return np.where(valid, clipped, values).astype(np.float32)


def standardize_context(values, valid):
    """Per-variate (values - mean) / std over the observed context points, computed in float64 (exact
    for large offsets); returns (standardized float32 values, mean, std), the last two [batch, variate,
    1]. A constant variate keeps unit scale."""
    weights = valid.astype(np.float64)
    count = weights.sum(-1, keepdims=True)
    shift = (values * weights).sum(-1, keepdims=True) / count
    unit = np.sqrt((((values - shift) * weights) ** 2).sum(-1, keepdims=True) / count)
    unit = np.where(unit > 0, unit, 1.0)
    standardized = np.where(valid, (values - shift) / unit, 0.0).astype(np.float32)
    return standardized, shift, unit


def add_clip_outliers_argument(parser) -> None:
    """``--clip-outliers K`` (central ranges; default ``DEFAULT_CLIP_OUTLIERS``; ``none`` turns clipping off)."""

    def parse(text: str) -> float | None:
        if text.strip().lower() in ("none", "off"):
            return None
        try:
            value = float(text)
            check_clip_limit(value)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected a positive number of central ranges or 'none', got {text!r}"
            ) from None
        return value

    parser.add_argument("--clip-outliers", type=parse, default=DEFAULT_CLIP_OUTLIERS, metavar="K",
                        help="clip each context to K times its central (1-99 %%) range beyond that range before "
                             "forecasting, so one extreme glitch does not flatten the forecast "
                             f"(default {DEFAULT_CLIP_OUTLIERS:g}; 'none': off; see toto_jax.forecast)")  # fmt: skip
