"""Surprise -> anomaly score in [0, 1], relative to each series' own history (numpy, causal).

The idea of HTM's anomaly likelihood: a model is more surprised by some series than by others (noisy ones,
ones unlike its training data), so one fixed surprise level flags too much in one and too little in another.
Instead, ask whether the *recent* surprise (its mean over the last ``average`` scored steps) is unusual for
*this* series: z = (recent - mean) / max(std, min_spread), with the mean and standard deviation of the recent
surprise over the ``history`` steps before it. The score maps the Gaussian tail of z, d = -log10 P(Z >= z),
to d / (d + 5): 0.5 at a one-in-10^5 z, strictly increasing, so a corpus-wide threshold never meets a tie.

Unscored steps (missing values, the first patch) score 0 and stay out of the statistics, as do steps with
fewer than two steps of history.
"""

from __future__ import annotations

import numpy as np
from scipy.special import log_ndtr

from .options import DetectOptions

_HALF = 5.0  # -log10 of the tail probability that scores 0.5


def _trailing_sums(values, width: int, exclusive: bool = False):
    """Sums of ``values`` [..., time] over the last ``width`` steps up to each step (``exclusive``: before it)."""
    total = np.cumsum(values, axis=-1, dtype=np.float64)
    shifted = np.zeros_like(total)
    shifted[..., width:] = total[..., :-width]
    sums = total - shifted
    if exclusive:
        sums = np.concatenate([np.zeros(sums.shape[:-1] + (1,)), sums[..., :-1]], axis=-1)
    return sums


def adaptive_scores(surprise, scored, options: DetectOptions):
    """Anomaly scores [..., time] in [0, 1] from surprise [..., time] (nats) and which steps carry one
    (``scored``, broadcastable); step t uses steps <= t only."""
    surprise = np.asarray(surprise, np.float64)
    scored = np.broadcast_to(np.asarray(scored, bool), surprise.shape)
    weight = scored.astype(np.float64)
    counts = _trailing_sums(weight, options.average)
    recent = _trailing_sums(np.where(scored, surprise, 0.0), options.average) / np.maximum(counts, 1.0)
    ready = scored  # a scored step always has itself in its average
    history = options.history
    past = _trailing_sums(weight, history, exclusive=True)
    # Moments about a per-series anchor (its first scored recent surprise: causal) keep the variance exact.
    anchor = np.take_along_axis(recent, np.argmax(scored, axis=-1)[..., None], axis=-1)
    centred = np.where(ready, recent - anchor, 0.0)
    mean = _trailing_sums(centred, history, exclusive=True) / np.maximum(past, 1.0)
    square = _trailing_sums(centred**2, history, exclusive=True) / np.maximum(past, 1.0)
    spread = np.maximum(np.sqrt(np.maximum(square - mean**2, 0.0)), options.min_spread)
    z = (recent - anchor - mean) / spread
    decades = -log_ndtr(-z) / np.log(10.0)
    return np.where(ready & (past >= 2), decades / (decades + _HALF), 0.0)


def combine_surprise(surprise, scored):
    """One surprise per step from all variates [..., variate, time]: the Bonferroni bound on the smallest
    tail probability of the V scored variates, -log min(1, V min_v p_v) = max(0, max_v s_v - log V).
    Returns (surprise, scored) [..., time]."""
    surprise = np.where(scored, np.asarray(surprise, np.float64), 0.0)
    count = np.asarray(scored).sum(axis=-2)
    combined = np.maximum(surprise.max(axis=-2) - np.log(np.maximum(count, 1)), 0.0)
    return combined, count > 0
