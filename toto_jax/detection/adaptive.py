"""Surprise -> anomaly score in [0, 1], relative to each series' own history (numpy, causal).

A model is more surprised by some series than by others (noisy ones, ones unlike its training data), so one
fixed surprise level flags too much in one series and too little in another. As HTM's anomaly likelihood
does, the score asks whether a step's surprise is unusual *for this series*:

- the surprise ratio r = s_t / max(min_reference, largest surprise of the ``history`` steps before t): a step
  is anomalous when it surprises the model more than anything in the series' recent past (a noisy series
  that routinely surprises by 10 nats needs more than 10; a calm one far less), and a surprise that stays
  high is not raised again at every step;
- an extreme: a value beyond the whole range the series has shown so far (as HTM's NAB detector's "spatial
  anomaly"), counted only when the model also finds it surprising (``extreme_surprise`` nats), so a metric
  the model expects to grow (a trend) is not an extreme at every new high.

score = 0.9 r / (1 + r), or 0.9 + 0.1 r / (1 + r) for an extreme: strictly increasing in r within each tier
(a corpus-wide threshold meets no ties), 0.45 at r = 1 (as surprising as the recent maximum), 0.5 at r = 1.25.
Unscored steps (missing values, the first patch) score 0 and stay out of the history, as do the steps of a
warm-up: until a series has ``WARM_UP`` scored steps behind it, there is no history to compare with.
"""

from __future__ import annotations

import numpy as np

from .options import DetectOptions

WARM_UP = 64  # scored steps of history before a step is scored
_SURPRISE_WEIGHT = 0.9  # the top of the non-extreme tier


def trailing_max(values, width: int):
    """max(values[..., t - width + 1 : t + 1]) at every t (van Herk / Gil-Werman: O(time) for any width)."""
    values = np.asarray(values, np.float64)
    time = values.shape[-1]
    padded_time = -(-time // width) * width
    padded = np.concatenate([values, np.full(values.shape[:-1] + (padded_time - time,), -np.inf)], axis=-1)
    blocks = padded.reshape(values.shape[:-1] + (-1, width))
    from_left = np.maximum.accumulate(blocks, axis=-1).reshape(padded.shape)
    from_right = np.flip(np.maximum.accumulate(np.flip(blocks, -1), axis=-1), -1).reshape(padded.shape)
    steps = np.arange(time)
    start = steps - width + 1
    result = np.where(start >= 0, np.maximum(from_right[..., np.maximum(start, 0)], from_left[..., steps]),
                      from_left[..., steps])  # fmt: skip
    return result


def _previous(values, fill):
    return np.concatenate([np.full(values.shape[:-1] + (1,), fill), values[..., :-1]], axis=-1)


def extremes(values, valid, surprise, options: DetectOptions):
    """Steps [..., time] whose observed value lies beyond every earlier observed value of its series and whose
    surprise reaches ``options.extreme_surprise`` (none when that is None)."""
    if options.extreme_surprise is None:
        return np.zeros(np.shape(surprise), bool)
    values = np.where(valid, np.asarray(values, np.float64), np.nan)
    high = _previous(np.fmax.accumulate(values, axis=-1), np.nan)
    low = _previous(np.fmin.accumulate(values, axis=-1), np.nan)
    beyond = (values > high) | (values < low)  # False against NaN: no earlier observation
    return valid & beyond & (surprise >= options.extreme_surprise)


def adaptive_scores(surprise, scored, extreme, options: DetectOptions):
    """Anomaly scores [..., time] in [0, 1] from surprise [..., time] (nats), which steps carry one (``scored``)
    and which are extremes (``extremes``); step t uses steps <= t only."""
    surprise = np.asarray(surprise, np.float64)
    scored = np.broadcast_to(np.asarray(scored, bool), surprise.shape)
    past = _previous(np.where(scored, surprise, -np.inf), -np.inf)
    reference = np.maximum(trailing_max(past, options.history), options.min_reference)
    ratio = np.where(scored, surprise, 0.0) / reference
    level = ratio / (1.0 + ratio)
    score = np.where(extreme, _SURPRISE_WEIGHT + (1.0 - _SURPRISE_WEIGHT) * level, _SURPRISE_WEIGHT * level)
    warm = _previous(np.cumsum(scored, axis=-1), 0) >= WARM_UP
    return np.where(scored & warm, score, 0.0)


def combine_surprise(surprise, scored):
    """One surprise per step from all variates [..., variate, time]: the Bonferroni bound on the smallest
    tail probability of the V scored variates, -log min(1, V min_v p_v) = max(0, max_v s_v - log V).
    Returns (surprise, scored) [..., time]."""
    surprise = np.where(scored, np.asarray(surprise, np.float64), 0.0)
    count = np.asarray(scored).sum(axis=-2)
    combined = np.maximum(surprise.max(axis=-2) - np.log(np.maximum(count, 1)), 0.0)
    return combined, count > 0
