"""``detect`` and ``Detection``: inputs (as ``forecast`` takes them) -> surprise -> adaptive anomaly scores."""

from __future__ import annotations

import dataclasses

import numpy as np

from ..forecasting.inputs import ForecastError, _is_pandas, _split_rows, read_rows
from ..forecasting.options import ForecastOptions
from .adaptive import adaptive_scores, combine_surprise, drifts, extremes, level_shifts, season_steps, seasonal_shifts
from .options import DetectError, DetectOptions


@dataclasses.dataclass(frozen=True)
class Detection:
    """Anomaly scores in the input's layout: ``scores`` and ``surprise`` [batch, variate, time] for an array
    [batch, variate, time], [variate, time] for a [variate, time] array or one DataFrame, a list of
    [variate, time] arrays for a list; ``combined`` drops the variate axis.

    - ``scores``: in [0, 1], higher is more anomalous (NAB's ``anomaly_score``), from ``surprise`` relative to
      the series' own history (``DetectOptions``); 0 where nothing was observed or predicted (the first patch).
    - ``combined``: one score per timestamp from all variates of a series (their Bonferroni-combined surprise,
      scored the same way).
    - ``surprise``: -log of the two-sided tail probability of each observed step under the model's predictive
      distribution given everything before it (nats; 0 where unscored).
    - ``flags`` / ``combined_flags``: scores at or above ``threshold``.
    """

    scores: np.ndarray | list
    combined: np.ndarray | list
    surprise: np.ndarray | list
    threshold: float
    index: list | None = None  # per series, the pandas input's time index
    variates: list | None = None  # per series, the pandas input's column names

    @property
    def flags(self):
        return _map(lambda s: s >= self.threshold, self.scores)

    @property
    def combined_flags(self):
        return _map(lambda s: s >= self.threshold, self.combined)

    def to_dataframe(self, series: int = 0):
        """One series as a DataFrame, rows = time steps (the input's index for pandas input): per variate its
        score and surprise, then the combined score and its flag."""
        import pandas as pd

        count = len(self.scores) if isinstance(self.scores, list) else (
            self.scores.shape[0] if self.scores.ndim == 3 else 1)  # fmt: skip
        if not 0 <= series < count:
            raise ValueError(f"series must lie in [0, {count}), got {series}")
        pick = lambda v: v[series] if isinstance(v, list) or self.scores.ndim == 3 else v  # noqa: E731
        scores, surprise, combined = pick(self.scores), pick(self.surprise), pick(self.combined)
        names = self.variates[series] if self.variates is not None else [str(v) for v in range(scores.shape[0])]
        columns = {}
        for name, score, raw in zip(names, scores, surprise):
            columns[f"{name}_score"] = score
            columns[f"{name}_surprise"] = raw
        columns["anomaly_score"] = combined
        columns["anomaly"] = combined >= self.threshold
        index = self.index[series] if self.index is not None else pd.RangeIndex(scores.shape[-1], name="step")
        return pd.DataFrame(columns, index=index)


def _map(function, value):
    return [function(v) for v in value] if isinstance(value, list) else function(value)


def _pandas_labels(series) -> tuple[list, list]:
    import pandas as pd

    items = series if isinstance(series, (list, tuple)) else [series]
    index, names = [], []
    for item in items:
        frame = item
        if isinstance(item, pd.Series):
            frame = item.to_frame(name=item.name if item.name is not None else "value")
        index.append(frame.index)
        names.append([str(c) for c in frame.columns])
    return index, names


def _checked(rows, masks) -> list[np.ndarray]:
    valid = []
    for i, row in enumerate(rows):
        if np.isinf(row).any():
            variate, step = (int(x[0]) for x in np.nonzero(np.isinf(row)))
            raise DetectError(f"series {i}, variate {variate}: infinite value at step {step}")
        mask = ~np.isnan(row)
        if masks is not None:
            if masks[i].shape != row.shape:
                raise DetectError(f"padding_mask for series {i} has shape {masks[i].shape}, expected {row.shape}")
            mask &= masks[i].astype(bool)
        empty = np.flatnonzero(~mask.any(axis=1))
        if empty.size:
            raise DetectError(f"series {i}: variate(s) {empty.tolist()} have no observed values (all NaN or masked)")
        valid.append(mask)
    return valid


def detect(model, series, padding_mask=None, *, timestamps=None, options: DetectOptions | None = None,
           forecast_options: ForecastOptions | None = None) -> Detection:  # fmt: skip
    """Anomaly scores of every step of ``series``, each from the steps up to it only (NAB's streaming rule).

    ``series``: as ``toto_jax.forecast`` takes it: [variate, time], [batch, variate, time], a list of
    [variate, time] arrays (lengths may differ), a DataFrame (rows = time steps, columns = variates) or
    Series, or a list of them; NaN (or ``padding_mask`` False) is missing. ``forecast_options`` prepares
    the series as for forecasting (gaps, glitch clipping, normalization, context length, devices; see
    ``toto_jax.detection.score`` for how each is kept causal); ``options`` maps surprise to scores.
    ``timestamps``: the times of the steps (a DatetimeIndex or datetime64 array for all series, or a list with
    one per series), which turn a duration ``DetectOptions.season`` into steps; a pandas input's DatetimeIndex
    is used when they are not given, and series without either get no seasonal shifts. Both
    families: Toto 1.0's Student-T mixture or Toto 2.0's quantiles give each step's tail probability.
    """
    from .score import surprise as surprise_pass

    options = DetectOptions() if options is None else options
    forecast_options = ForecastOptions() if forecast_options is None else forecast_options
    if not isinstance(options, DetectOptions):
        raise DetectError(f"options must be a DetectOptions, got {type(options).__name__}")
    if not isinstance(forecast_options, ForecastOptions):
        raise DetectError(f"forecast_options must be a ForecastOptions, got {type(forecast_options).__name__}")
    try:
        rows = read_rows(series, 1, model.config.patch_size)
    except ForecastError as error:
        raise DetectError(str(error)) from None
    masks = _split_rows(padding_mask, len(rows.values), "padding_mask")
    if masks is not None and len(masks) != len(rows.values):
        raise DetectError(f"padding_mask has {len(masks)} rows, expected one per series ({len(rows.values)})")
    valid = _checked(rows.values, masks)
    seasons = [season_steps(stamps, options.season) for stamps in _timestamps(timestamps, rows)]
    raw, normal_scores = surprise_pass(model, rows.values, valid, forecast_options, options.stride,
                                       options.batch_size)  # fmt: skip
    patch = model.config.patch_size
    scores, combined, surprises = [], [], []
    for values, raw_surprise, normal_score, mask, season in zip(rows.values, raw, normal_scores, valid, seasons):
        scored = mask & (np.arange(mask.shape[-1]) >= patch)
        surprise = np.where(scored, raw_surprise, 0.0)
        extreme = extremes(values, mask, surprise, options)
        shift = level_shifts(values, mask, options) | drifts(normal_score, scored, options)
        shift |= seasonal_shifts(values, mask, season, options)
        surprises.append(surprise)
        scores.append(adaptive_scores(surprise, scored, extreme, shift, options))
        joint, joint_scored = combine_surprise(surprise, scored)
        combined.append(adaptive_scores(joint, joint_scored, extreme.any(axis=0), shift.any(axis=0), options))
    index = variates = None
    if rows.index is not None:
        index, variates = _pandas_labels(series)
    layout = _layout(series)
    return Detection(layout(scores), layout(combined), layout(surprises), options.threshold, index, variates)


def _timestamps(timestamps, rows) -> list:
    """Per series, its timestamps (or None): ``timestamps`` as given, else a pandas input's DatetimeIndex."""
    import pandas as pd

    count = len(rows.values)
    if timestamps is None:
        index = rows.index or [None] * count
        return [i if isinstance(i, pd.DatetimeIndex) else None for i in index]
    per_series = list(timestamps) if isinstance(timestamps, (list, tuple)) else [timestamps] * count
    if len(per_series) != count:
        raise DetectError(f"timestamps has {len(per_series)} entries, expected one per series ({count})")
    for i, (stamps, values) in enumerate(zip(per_series, rows.values)):
        try:
            stamps = pd.DatetimeIndex(stamps)
        except (TypeError, ValueError) as error:
            raise DetectError(f"timestamps of series {i} are not times: {error}") from None
        if len(stamps) != values.shape[-1]:
            raise DetectError(f"timestamps of series {i} have {len(stamps)} entries for {values.shape[-1]} steps")
        per_series[i] = stamps
    return per_series


def _layout(series):
    """Arrange per-series results as the input was arranged."""
    if isinstance(series, (list, tuple)):
        return list
    if _is_pandas(series):
        return lambda results: results[0]
    array = np.asarray(series)
    if array.ndim == 2:
        return lambda results: results[0]
    return np.stack
