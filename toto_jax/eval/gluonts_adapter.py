"""A GluonTS-style predictor around a Toto model, so harnesses written for GluonTS (GIFT-Eval, BOOM,
``gluonts.model.evaluate_model``) can score it.

``TotoPredictor(model, prediction_length).predict(dataset)`` takes GluonTS entries (dicts with ``target``
[time] or [variate, time], ``start`` a ``pandas.Period``, optional ``item_id``) and yields one
``gluonts.model.forecast.SampleForecast`` per entry: samples [num_samples, prediction_length] for a
univariate target, [num_samples, prediction_length, variate] for a multivariate one (GluonTS' layout); a
Toto 2.0 model yields ``QuantileForecast``s of its nine levels in the same layouts.
Entries are forecast in batches, made as ``options`` says (a ``ForecastOptions``; None: ``ForecastOptions()``,
the defaults of the API and every tool): each whole target goes to ``toto_jax.forecast``, which keeps its last
``options.context_length`` steps (None: the model's ``config.max_context``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np

from ..forecasting.options import ForecastOptions


class TotoPredictor:
    def __init__(self, model, prediction_length: int, *, num_samples: int = 100, batch_size: int = 32, seed: int = 0,
                 options: ForecastOptions | None = None):  # fmt: skip
        if prediction_length <= 0:
            raise ValueError(f"prediction_length must be positive, got {prediction_length}")
        self.model = model
        self.prediction_length = int(prediction_length)
        self.num_samples = int(num_samples)
        self.batch_size = int(batch_size)
        self.seed = seed
        self.options = ForecastOptions() if options is None else options

    def _forecast_batch(self, entries: list[dict]) -> Iterator:
        from gluonts.model.forecast import QuantileForecast, SampleForecast

        from toto_jax.forecasting import forecast
        from toto_jax.models import is_toto2

        targets = [np.asarray(entry["target"]) for entry in entries]  # any float or int dtype; float64 stays
        rows = [t if t.ndim == 2 else t[None] for t in targets]
        by_variates: dict[int, list[int]] = {}
        for index, row in enumerate(rows):  # one forecast call per variate count
            by_variates.setdefault(row.shape[0], []).append(index)
        quantile_model = is_toto2(self.model)
        draws: dict[int, np.ndarray] = {}
        levels = None
        for indices in by_variates.values():
            result = forecast(self.model, [rows[i] for i in indices], self.prediction_length,
                              num_samples=None if quantile_model else self.num_samples, seed=self.seed,
                              options=self.options)  # fmt: skip
            levels = result.quantile_levels
            for position, index in enumerate(indices):  # [variate, horizon, sample or level]
                draws[index] = (result.quantiles if quantile_model else result.samples)[position]
        for index, (entry, target) in enumerate(zip(entries, targets)):
            arrays = np.moveaxis(draws[index], -1, 0)  # [sample or level, variate, horizon]
            arrays = arrays[:, 0] if target.ndim == 1 else np.swapaxes(arrays, 1, 2)
            start = entry["start"] + target.shape[-1]
            if quantile_model:
                keys = [f"{level:g}" for level in levels]
                yield QuantileForecast(arrays, start_date=start, forecast_keys=keys, item_id=entry.get("item_id"))
            else:
                yield SampleForecast(samples=arrays, start_date=start, item_id=entry.get("item_id"))

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
