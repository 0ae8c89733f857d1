"""The long-sequence-forecasting (LSF) protocol of the Toto paper for ETTh1 / ETTh2.

Splits follow the standard ETT-hour setup: 12 months train, 4 months validation, 4 months test (30-day
months of 24 hourly steps). Every column is z-normalised with the mean and standard deviation of the
train split. Test windows start at every ``stride``-th step of the test split; each sees the
``context_length`` steps before it (reaching back into validation/train, as the standard loaders do)
and forecasts ``horizon`` steps of all variates jointly. Scores: MAE and MSE of the median forecast in
the normalised space, averaged over windows, variates and steps.
"""

from __future__ import annotations

import os

import numpy as np

from ..preprocessing import DEFAULT_CLIP_OUTLIERS
from ..sampling import DEFAULT_SAMPLING

TRAIN_STEPS = 12 * 30 * 24
VALIDATION_STEPS = 4 * 30 * 24
TEST_STEPS = 4 * 30 * 24
LSF_HORIZONS = (96, 192, 336, 720)


def read_ett(path: str | os.PathLike) -> tuple[np.ndarray, list[str]]:
    """ETT CSV (``date`` + 7 columns, read as published) -> values [variate, time] and column names."""
    import pandas as pd

    frame = pd.read_csv(path)
    if "date" not in frame.columns:
        raise ValueError(f"{path}: not an ETT file (no 'date' column; columns: {list(frame.columns)})")
    columns = [c for c in frame.columns if c != "date"]
    values = frame[columns].to_numpy(np.float64).T
    if values.shape[1] < TRAIN_STEPS + VALIDATION_STEPS + TEST_STEPS:
        raise ValueError(f"{path}: {values.shape[1]} rows; the ETT-hour splits need {TRAIN_STEPS + VALIDATION_STEPS + TEST_STEPS}")
    return values, columns


def normalise(values: np.ndarray) -> np.ndarray:
    """z-normalisation with the train split's statistics (population std, as sklearn's StandardScaler)."""
    train = values[:, :TRAIN_STEPS]
    return (values - train.mean(axis=1, keepdims=True)) / train.std(axis=1, keepdims=True)


def lsf_window_starts(horizon: int, stride: int) -> list[int]:
    test_start = TRAIN_STEPS + VALIDATION_STEPS
    last = test_start + TEST_STEPS - horizon
    return list(range(test_start, last + 1, stride))


def evaluate_lsf(forecast_fn, values: np.ndarray, horizons=LSF_HORIZONS, *, context_length: int = 2048,
                 stride: int = 1, batch_size: int = 16) -> list[dict]:  # fmt: skip
    """``forecast_fn(contexts [batch, variate, time], horizon) -> median [batch, variate, horizon]``.

    Returns one dict per horizon: horizon, windows, MAE, MSE (normalised space)."""
    data = normalise(values)
    results = []
    for horizon in horizons:
        starts = lsf_window_starts(horizon, stride)
        abs_sum = sq_sum = 0.0
        count = 0
        for first in range(0, len(starts), batch_size):
            chunk = starts[first : first + batch_size]
            contexts = np.stack([data[:, s - context_length : s] for s in chunk])
            targets = np.stack([data[:, s : s + horizon] for s in chunk])
            median = np.asarray(forecast_fn(contexts, horizon), np.float64)
            if median.shape != targets.shape:
                raise ValueError(f"forecast has shape {median.shape}, expected {targets.shape}")
            error = targets - median
            abs_sum += float(np.abs(error).sum())
            sq_sum += float(np.square(error).sum())
            count += error.size
        results.append({"horizon": horizon, "windows": len(starts), "MAE": abs_sum / count, "MSE": sq_sum / count})
    return results


def toto_lsf_forecaster(model, num_samples: int | None = 64, seed: int = 0, standardize: bool = True,
                        clip_outliers: float | None = DEFAULT_CLIP_OUTLIERS,
                        sampling: str = DEFAULT_SAMPLING):  # fmt: skip
    """The median of ``num_samples`` sample paths (``None``: the mean path) with all variates forecast jointly."""
    from toto_jax.forecasting import forecast

    def forecast_fn(contexts: np.ndarray, horizon: int) -> np.ndarray:
        result = forecast(model, contexts.astype(np.float32), horizon, num_samples=num_samples, seed=seed,
                          progress=False, standardize=standardize, clip_outliers=clip_outliers,
                          sampling=sampling)  # fmt: skip
        return result.mean if num_samples is None else result.median

    return forecast_fn
