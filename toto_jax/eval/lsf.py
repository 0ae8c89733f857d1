"""The long-sequence-forecasting (LSF) protocol of the Toto paper for ETTh1 / ETTh2.

Splits follow the standard ETT-hour setup: 12 months train, 4 months validation, 4 months test (30-day
months of 24 hourly steps). Every column is z-normalised with the mean and standard deviation of the
train split. Test windows start at every ``stride``-th step of the test split; each sees the
``context_length`` steps before it (reaching back into validation/train, as the standard loaders do)
and forecasts ``horizon`` steps of all variates jointly. For Toto the context length is the one its
forecast keeps: ``ForecastOptions.context_length``, else the model's ``config.max_context``
(``TotoLSFForecaster.context_length``, the only place it is decided). Scores: MAE and MSE of the median forecast in
the normalised space, averaged over windows, variates and steps.
"""

from __future__ import annotations

import os

import numpy as np

from ..forecasting.options import ForecastOptions

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


def evaluate_lsf(forecast_fn, values: np.ndarray, horizons=LSF_HORIZONS, *, context_length: int | None = None,
                 stride: int = 1, batch_size: int = 16) -> list[dict]:  # fmt: skip
    """``forecast_fn(contexts [batch, variate, time], horizon) -> median [batch, variate, horizon]``; each
    context is the ``context_length`` steps before its window (None: ``forecast_fn.context_length``, which
    ``toto_lsf_forecaster`` sets).

    Returns one dict per horizon: horizon, windows, MAE, MSE (normalised space)."""
    if context_length is None:
        context_length = getattr(forecast_fn, "context_length", None)
        if context_length is None:
            raise ValueError("evaluate_lsf needs a context_length (or a forecast_fn with a context_length attribute)")
    first_window = TRAIN_STEPS + VALIDATION_STEPS
    if isinstance(context_length, bool) or not isinstance(context_length, (int, np.integer)) or not (
        0 < context_length <= first_window
    ):
        raise ValueError(f"the LSF context length must be a positive integer of at most {first_window} steps (the "
                         f"history before the first test window), got {context_length!r}")  # fmt: skip
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


class TotoLSFForecaster:
    """The median of ``num_samples`` sample paths (``None``: the mean path; a Toto 2.0 model: its median
    quantile) of ``toto_jax.forecast`` with all
    variates forecast jointly, made as ``options`` says (None: ``ForecastOptions()``). ``context_length``:
    the steps the forecast keeps, ``options.context_length`` or else the model's ``config.max_context``;
    ``evaluate_lsf`` cuts its windows' contexts to it."""

    def __init__(self, model, num_samples: int | None = 64, seed: int = 0, options: ForecastOptions | None = None):
        self.model = model
        self.num_samples = num_samples
        self.seed = seed
        self.options = ForecastOptions() if options is None else options
        self.context_length = int(self.options.context_length or model.config.max_context)

    def __call__(self, contexts: np.ndarray, horizon: int) -> np.ndarray:
        from toto_jax.forecasting import forecast

        from toto_jax.models import is_toto2

        if is_toto2(self.model):  # a quantile model forecasts its median directly
            return forecast(self.model, contexts, horizon, seed=self.seed, options=self.options).median
        result = forecast(self.model, contexts, horizon, num_samples=self.num_samples, seed=self.seed,
                          options=self.options)  # fmt: skip
        return result.mean if self.num_samples is None else result.median


def toto_lsf_forecaster(model, num_samples: int | None = 64, seed: int = 0,
                        options: ForecastOptions | None = None) -> TotoLSFForecaster:  # fmt: skip
    """``TotoLSFForecaster(model, num_samples, seed, options)``: the forecast function of ``evaluate_lsf``."""
    return TotoLSFForecaster(model, num_samples, seed, options)
