"""A GluonTS-style predictor around a Toto model, so harnesses written for GluonTS (GIFT-Eval, BOOM,
``gluonts.model.evaluate_model``) can score it.

``TotoPredictor(model, prediction_length).predict(dataset)`` takes GluonTS entries (dicts with ``target``
[time] or [variate, time], ``start`` a ``pandas.Period``, optional ``item_id``) and yields one
``gluonts.model.forecast.SampleForecast`` per entry: samples [num_samples, prediction_length] for a
univariate target, [num_samples, prediction_length, variate] for a multivariate one (GluonTS' layout).
Entries are forecast in batches; only the last ``context_length`` steps of each target are used.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np

from ..preprocessing import DEFAULT_CLIP_OUTLIERS
from ..sampling import DEFAULT_SAMPLING


class TotoPredictor:
    def __init__(self, model, prediction_length: int, *, num_samples: int = 100, context_length: int = 2048,
                 batch_size: int = 32, seed: int = 0, standardize: bool = True,
                 clip_outliers: float | None = DEFAULT_CLIP_OUTLIERS, sampling: str = DEFAULT_SAMPLING):  # fmt: skip
        if prediction_length <= 0:
            raise ValueError(f"prediction_length must be positive, got {prediction_length}")
        self.model = model
        self.prediction_length = int(prediction_length)
        self.num_samples = int(num_samples)
        self.context_length = int(context_length)
        self.batch_size = int(batch_size)
        self.seed = seed
        self.standardize = standardize
        self.clip_outliers = clip_outliers
        self.sampling = sampling

    def _forecast_batch(self, entries: list[dict]) -> Iterator:
        from gluonts.model.forecast import SampleForecast

        from toto_jax.forecasting import forecast

        targets = [np.asarray(entry["target"], np.float32) for entry in entries]
        rows = [(t if t.ndim == 2 else t[None])[:, -self.context_length :] for t in targets]
        by_variates: dict[int, list[int]] = {}
        for index, row in enumerate(rows):  # one forecast call per variate count
            by_variates.setdefault(row.shape[0], []).append(index)
        samples: dict[int, np.ndarray] = {}
        for indices in by_variates.values():
            result = forecast(self.model, [rows[i] for i in indices], self.prediction_length,
                              num_samples=self.num_samples, seed=self.seed, progress=False,
                              standardize=self.standardize, clip_outliers=self.clip_outliers,
                              sampling=self.sampling)  # fmt: skip
            for position, index in enumerate(indices):
                samples[index] = result.samples[position]  # [variate, horizon, sample]
        for index, (entry, target) in enumerate(zip(entries, targets)):
            paths = np.moveaxis(samples[index], -1, 0)  # [sample, variate, horizon]
            paths = paths[:, 0] if target.ndim == 1 else np.swapaxes(paths, 1, 2)
            start = entry["start"] + target.shape[-1]
            yield SampleForecast(samples=paths, start_date=start, item_id=entry.get("item_id"))

    def predict(self, dataset: Iterable[dict], **kwargs) -> Iterator:
        batch: list[dict] = []
        for entry in dataset:
            batch.append(entry)
            if len(batch) == self.batch_size:
                yield from self._forecast_batch(batch)
                batch = []
        if batch:
            yield from self._forecast_batch(batch)


__all__ = ["TotoPredictor"]
