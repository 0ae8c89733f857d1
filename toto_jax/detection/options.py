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
    """How ``toto_jax.detect`` scores steps (defaults chosen on NAB by the rule in experiments/anomaly_nab.md).

    - ``stride``: steps between the starts of the sliding windows that cover a series longer than the context
      (a multiple of the patch size; None: half the context). Every scored step sees at least
      ``context - stride`` steps of history; smaller strides cost more passes.
    - ``average``: steps the recent surprise is averaged over (1: each step alone).
    - ``history``: steps of a series' own past surprise the recent average is compared with.
    - ``min_spread``: floor (in nats) on the spread of that past surprise, so a series the model predicts
      perfectly (a flat line) is not flagged for a tiny, harmless surprise.
    - ``threshold``: scores at or above it are flagged (``Detection.flags``, the plot, the CLI's flag column).
    - ``batch_size``: windows per compiled call (per device).
    """

    stride: int | None = None
    average: int = 3
    history: int = 2000
    min_spread: float = 0.5
    threshold: float = 0.5
    batch_size: int = 64

    def __post_init__(self):
        def positive_int(name, allow_none=False):
            value = getattr(self, name)
            if value is None and allow_none:
                return
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"DetectOptions.{name} must be a positive integer{' or None' * allow_none}, got {value!r}")

        positive_int("stride", allow_none=True)
        positive_int("average")
        positive_int("history")
        positive_int("batch_size")
        if self.history < 2:
            raise ValueError(f"DetectOptions.history must be at least 2 steps, got {self.history}")
        if isinstance(self.min_spread, bool) or not isinstance(self.min_spread, (int, float)) or not (
            self.min_spread > 0 and math.isfinite(self.min_spread)
        ):
            raise ValueError(f"DetectOptions.min_spread must be a positive number, got {self.min_spread!r}")
        if isinstance(self.threshold, bool) or not isinstance(self.threshold, (int, float)) or not 0 <= self.threshold <= 1:
            raise ValueError(f"DetectOptions.threshold must lie in [0, 1], got {self.threshold!r}")

    def replace(self, **changes) -> DetectOptions:
        return dataclasses.replace(self, **changes)
