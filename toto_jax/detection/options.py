"""``DetectOptions``: how surprise becomes an anomaly score, in one frozen value (imports no jax).

How series are read and prepared (gaps, glitch clipping, normalization, context length, devices) is
``ForecastOptions``, shared with forecasting; ``detect`` takes both.
"""

from __future__ import annotations

import dataclasses
import math

from ..forecasting.inputs import ForecastError


class DetectError(ForecastError):
    """Input that cannot be scored, with a message naming the offending series, variate, step or option."""


@dataclasses.dataclass(frozen=True)
class DetectOptions:
    """How ``toto_jax.detect`` scores steps (``toto_jax.detection.adaptive``). The defaults were chosen on half of
    NAB by the rule in experiments/anomaly_nab.md.

    - ``stride``: steps between the sliding windows that cover a series (a multiple of the patch size; None:
      half the context). Every scored step sees at least ``context - stride`` steps of history (all there is
      near the start of a series); smaller strides cost more passes.
    - ``history``: steps of the series' own past surprise a step's surprise is compared with.
    - ``min_reference``: floor (nats) on that past surprise, so a series the model predicts perfectly (a flat
      line) is not flagged for a harmless wobble.
    - ``extreme_surprise``: nats of surprise at which a value beyond the series' whole past range scores in the
      top tier (None: no extremes, e.g. for metrics that grow without bound).
    - ``level_span``: steps whose mean is a level shift when it lies beyond the range of every earlier such mean
      by ``level_margin`` times that range's width: a change of level no single step makes surprising (the
      mean over a span beyond its past range, as an extreme is a value beyond it). A shift scores at least 0.5
      (None: no shifts).
    - ``level_margin``: how far (a fraction of the past range of the means) a mean must pass its past range.
    - ``drift_allowance``: a drift is a step where a two-sided CUSUM of the model's normal scores
      Phi^-1(P(X <= x)), less this allowance per step, passes every value it had before: a run of steps each a
      little off the model's expectation on one side; one per excursion of the sum (from leaving 0 to returning
      to it). Scored as a level shift (None: no drifts).
    - ``season``: a seasonal shift is a level shift (same ``level_span`` and ``level_margin``) of the change
      since one season earlier, x_t - x_{t - season}: today's shape against yesterday's (a lower daily peak, a
      quiet holiday). A duration ("1D", any ``pandas.Timedelta`` string) becomes steps by the median interval
      of the series' timestamps (a pandas input's DatetimeIndex or ``detect``'s ``timestamps``; a series
      without timestamps gets no seasonal shifts); an int is steps (at least 2). None: no seasonal shifts.
    - ``threshold``: scores at or above it are flagged (``Detection.flags``, the plot, the CLI's ``anomaly``).
    - ``batch_size``: windows per compiled call (per device).
    """

    stride: int | None = None
    history: int = 1500
    min_reference: float = 1.0
    extreme_surprise: float | None = 3.0
    level_span: int | None = 12
    level_margin: float = 0.1
    drift_allowance: float | None = 1.0
    season: str | int | None = "1D"
    threshold: float = 0.5
    batch_size: int = 64

    def __post_init__(self):
        def positive_int(name, allow_none=False):
            value = getattr(self, name)
            if value is None and allow_none:
                return
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise DetectError(f"DetectOptions.{name} must be a positive integer{' or None' * allow_none}, "
                                  f"got {value!r}")  # fmt: skip

        def non_negative_number(name, allow_none=False):
            value = getattr(self, name)
            if value is None and allow_none:
                return
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
                value >= 0 and math.isfinite(value)
            ):
                raise DetectError(f"DetectOptions.{name} must be a non-negative number{' or None' * allow_none}, "
                                  f"got {value!r}")  # fmt: skip

        positive_int("stride", allow_none=True)
        positive_int("history")
        positive_int("level_span", allow_none=True)
        non_negative_number("level_margin")
        non_negative_number("drift_allowance", allow_none=True)
        positive_int("batch_size")
        self._check_season()
        non_negative_number("extreme_surprise", allow_none=True)
        non_negative_number("min_reference")
        if self.min_reference <= 0:
            raise DetectError(f"DetectOptions.min_reference must be positive, got {self.min_reference!r}")
        threshold = self.threshold
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 <= threshold <= 1:
            raise DetectError(f"DetectOptions.threshold must lie in [0, 1], got {self.threshold!r}")

    def _check_season(self):
        season = self.season
        if season is None:
            return
        if isinstance(season, int) and not isinstance(season, bool):
            if season < 2:
                raise DetectError(f"DetectOptions.season must be at least 2 steps, got {season!r}")
            return
        if not isinstance(season, str):
            raise DetectError(f"DetectOptions.season must be a duration string (e.g. '1D'), a number of steps "
                              f"or None, got {season!r}")  # fmt: skip
        import pandas as pd

        try:
            duration = pd.Timedelta(season)
        except ValueError:
            duration = None
        if duration is None or pd.isna(duration) or duration <= pd.Timedelta(0):
            raise DetectError(f"DetectOptions.season must be a positive duration such as '1D', got {season!r}")

    def replace(self, **changes) -> DetectOptions:
        return dataclasses.replace(self, **changes)
