"""Forecasters the evaluation compares against, and the common form every forecaster returns.

A forecaster is a callable ``(contexts, horizon, season) -> list[WindowForecast]``: ``contexts`` is a list
of 1-D float arrays (one per evaluation window, NaN = missing), ``season`` the series' season length.

- ``SeasonalNaive``: repeats the last observed season (the plain naive forecast when the context is
  shorter than one season). Its predictive distribution is a point mass, so all its quantiles equal the
  point forecast: the GIFT-Eval convention for the normalising baseline.
- ``StatsForecastModel``: AutoETS / AutoARIMA of Nixtla's ``statsforecast`` (an optional dependency, the
  ``eval`` extra), with quantiles from its prediction intervals. AutoETS fits seasonal models only for
  seasons of at most 24 steps, like R's ``forecast::ets`` (whose state recursion statsforecast ports
  with the same limit): longer seasons (5-minute or 1-minute data with a daily cycle) are fit without a
  seasonal component instead of failing after minutes of optimisation.
"""

from __future__ import annotations

import dataclasses
import logging
import warnings

import numpy as np

log = logging.getLogger(__name__)

# Quantile levels every forecaster reports: an even grid (for the CRPS estimate) containing the
# nine levels of the weighted quantile loss.
QUANTILE_LEVELS = tuple(round(0.05 * i, 2) for i in range(1, 20))

STATSFORECAST_HINT = (
    "AutoETS / AutoARIMA baselines need the statsforecast package: pip install 'toto-jax[eval]' "
    "(or pip install statsforecast), or leave them out with --baselines seasonal_naive"
)


@dataclasses.dataclass(frozen=True)
class WindowForecast:
    """One window's forecast: ``median``/``mean`` [horizon]; ``quantiles`` [len(QUANTILE_LEVELS), horizon];
    ``samples`` [horizon, samples] for sample-based forecasters, else None."""

    median: np.ndarray
    mean: np.ndarray
    quantiles: np.ndarray
    samples: np.ndarray | None = None

    @classmethod
    def from_samples(cls, samples: np.ndarray) -> "WindowForecast":
        samples = np.asarray(samples, np.float64)
        quantiles = np.quantile(samples, QUANTILE_LEVELS, axis=-1)
        return cls(np.median(samples, axis=-1), samples.mean(axis=-1), quantiles, samples)

    @classmethod
    def from_quantile_forecast(cls, median, mean, knots, knot_levels) -> "WindowForecast":
        """From a quantile model's knots [horizon, knot]: levels between knots linearly, beyond the outer
        knots flat (the distribution whose mean ``Forecast.mean`` reports)."""
        knots = np.asarray(knots, np.float64)
        quantiles = np.stack([np.interp(QUANTILE_LEVELS, knot_levels, row) for row in knots], axis=-1)
        return cls(np.asarray(median, np.float64), np.asarray(mean, np.float64), quantiles)

    @classmethod
    def point_mass(cls, point: np.ndarray) -> "WindowForecast":
        point = np.asarray(point, np.float64)
        return cls(point, point, np.repeat(point[None], len(QUANTILE_LEVELS), axis=0), point[:, None])


def fill_missing(values: np.ndarray) -> np.ndarray:
    """Linear interpolation inside, nearest value at the ends (classical models need gap-free input)."""
    values = np.asarray(values, np.float64)
    observed = ~np.isnan(values)
    if observed.all():
        return values
    if not observed.any():
        raise ValueError("a context window has no observed values")
    positions = np.arange(len(values))
    return np.interp(positions, positions[observed], values[observed])


def seasonal_naive_point(context: np.ndarray, horizon: int, season: int) -> np.ndarray:
    """``y_hat[T + k] = y[T + k - m * ceil(k / m)]`` (k = 1..horizon); naive when the context < m."""
    context = fill_missing(context)
    if len(context) < season:
        season = 1
    last_season = context[-season:]
    return last_season[np.arange(horizon) % season]


class SeasonalNaive:
    name = "seasonal_naive"

    def __call__(self, contexts, horizon: int, season: int) -> list[WindowForecast]:
        return [WindowForecast.point_mass(seasonal_naive_point(c, horizon, season)) for c in contexts]


def require_statsforecast():
    try:
        import statsforecast.models as models
    except ImportError as error:
        raise ImportError(STATSFORECAST_HINT) from error
    return models


class StatsForecastModel:
    """AutoETS or AutoARIMA on the last ``max_context`` points of each window (their fitting cost grows
    with the length). A fit that fails falls back to the seasonal naive forecast and is counted in
    ``fallbacks``."""

    KINDS = {"auto_ets": "AutoETS", "auto_arima": "AutoARIMA"}
    MAX_ETS_SEASON = 24

    def __init__(self, kind: str, max_context: int = 1024):
        if kind not in self.KINDS:
            raise ValueError(f"unknown statsforecast model {kind!r}; expected one of {sorted(self.KINDS)}")
        self.name = kind
        self.max_context = max_context
        self.fallbacks = 0
        self._model_class = getattr(require_statsforecast(), self.KINDS[kind])

    def season_length(self, season: int, context_length: int) -> int:
        """The season the model is fit with: at most half the context; 1 (non-seasonal) for AutoETS
        when the season exceeds ``MAX_ETS_SEASON``."""
        season = max(1, min(season, context_length // 2))
        if self.name == "auto_ets" and season > self.MAX_ETS_SEASON:
            return 1
        return season

    def _one(self, context: np.ndarray, horizon: int, season: int) -> WindowForecast:
        context = fill_missing(context)[-self.max_context :]
        # Interval level L% gives the (50 - L/2)% and (50 + L/2)% quantiles.
        levels = sorted({int(round(abs(q - 0.5) * 200)) for q in QUANTILE_LEVELS} - {0})
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model = self._model_class(season_length=self.season_length(season, len(context)))
                result = model.forecast(y=context, h=horizon, level=levels)
        except Exception as error:  # noqa: BLE001 - any numerical failure of a fit
            log.warning("%s failed (%s: %s); using seasonal naive for this window", self.name,
                        type(error).__name__, error)  # fmt: skip
            self.fallbacks += 1
            return WindowForecast.point_mass(seasonal_naive_point(context, horizon, season))
        mean = np.asarray(result["mean"], np.float64)
        rows = []
        for q in QUANTILE_LEVELS:
            level = int(round(abs(q - 0.5) * 200))
            if level == 0:
                rows.append(mean)
            else:
                rows.append(np.asarray(result[f"{'lo' if q < 0.5 else 'hi'}-{level}"], np.float64))
        quantiles = np.sort(np.stack(rows), axis=0)  # guard against crossing intervals
        median = quantiles[QUANTILE_LEVELS.index(0.5)]
        if not (np.all(np.isfinite(quantiles)) and np.all(np.isfinite(mean))):
            self.fallbacks += 1
            return WindowForecast.point_mass(seasonal_naive_point(context, horizon, season))
        return WindowForecast(median, mean, quantiles)

    def __call__(self, contexts, horizon: int, season: int) -> list[WindowForecast]:
        return [self._one(c, horizon, season) for c in contexts]


BASELINES = ("seasonal_naive", "auto_ets", "auto_arima")


def make_baseline(name: str, max_context: int = 1024):
    if name == "seasonal_naive":
        return SeasonalNaive()
    if name in StatsForecastModel.KINDS:
        return StatsForecastModel(name, max_context=max_context)
    raise ValueError(f"unknown baseline {name!r}; expected one of {BASELINES}")


__all__ = [
    "BASELINES",
    "QUANTILE_LEVELS",
    "STATSFORECAST_HINT",
    "SeasonalNaive",
    "StatsForecastModel",
    "WindowForecast",
    "fill_missing",
    "make_baseline",
    "seasonal_naive_point",
]
