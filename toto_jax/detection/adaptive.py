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
  the model expects to grow (a trend) is not an extreme at every new high;
- a level shift: the mean of the last ``level_span`` steps beyond the range of all earlier such means by
  ``level_margin`` of its width. A pattern that changes (a lower daily peak, a holiday, a slow drift) may
  give no single step a surprise above the recent maximum, but moves the short-term level out of its range;
- a seasonal shift, scored as a level shift: the same test on the change since one ``season`` earlier
  (x_t - x_{t - season}), so a day whose shape differs from the day before (a lower peak, a quiet holiday)
  counts although its level and its values stay in their ranges;
- a drift, scored as a level shift: a run of steps each a little off the model's expectation on one side, as
  a CUSUM of their normal scores (``drifts``) reaching a value it has never had, once per excursion of the sum
  (a drift that pauses and climbs again is one event).

score = 0.9 r / (1 + r); at least 0.5 + 0.4 r / (1 + r) at a level shift (at the default threshold, every
shift is flagged); 0.9 + 0.1 r / (1 + r) for an extreme: strictly increasing in r within each tier (a
corpus-wide threshold meets no ties), 0.45 at r = 1 (as surprising as the recent maximum), 0.5 at r = 1.25.
Only the first step of a run of extremes or of shifts is raised (one event, one alert).
Unscored steps (missing values, the first patch) score 0 and stay out of the history, as do the steps of a
warm-up: until a series has ``WARM_UP`` scored steps behind it, there is no history to compare with.
"""

from __future__ import annotations

import numpy as np

from .options import DetectOptions

WARM_UP = 64  # scored steps of history before a step is scored
_SURPRISE_WEIGHT = 0.9  # the top of the non-extreme tier
_SHIFT_FLOOR = 0.5  # the lowest score of a level shift: DetectOptions' default threshold


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


def level_shifts(values, valid, options: DetectOptions):
    """Steps [..., time] where the mean of the last ``level_span`` steps (all observed) lies beyond the range
    of every earlier such mean by ``level_margin`` of its width, once ``WARM_UP`` means lie behind it (none
    when ``level_span`` is None)."""
    span = options.level_span
    values = np.asarray(values, np.float64)
    if span is None or values.shape[-1] < span:
        return np.zeros(values.shape, bool)
    # Sums relative to the first observed value, so a 1e9 offset costs no precision.
    origin = np.take_along_axis(values, np.argmax(valid, axis=-1)[..., None], axis=-1)
    sums = np.cumsum(np.where(valid, values - origin, 0.0), axis=-1)
    counts = np.cumsum(valid, axis=-1)
    pad = np.zeros(values.shape[:-1] + (1,))
    sums, counts = np.concatenate([pad, sums], axis=-1), np.concatenate([pad, counts], axis=-1)
    windowed = sums[..., span:] - sums[..., :-span]
    full = counts[..., span:] - counts[..., :-span] == span
    mean = np.concatenate([np.full(values.shape[:-1] + (span - 1,), np.nan),
                           np.where(full, windowed / span, np.nan)], axis=-1)  # fmt: skip
    high = _previous(np.fmax.accumulate(mean, axis=-1), np.nan)
    low = _previous(np.fmin.accumulate(mean, axis=-1), np.nan)
    margin = options.level_margin * (high - low)
    history = _previous(np.cumsum(~np.isnan(mean), axis=-1), 0)
    return ((mean > high + margin) | (mean < low - margin)) & (history >= WARM_UP)


def season_steps(timestamps, season) -> int | None:
    """A season as a number of steps: ``season`` itself when it is an int, else (a duration such as "1D") that
    duration over the median interval of ``timestamps`` (None without timestamps, or when it is under 2 steps)."""
    if season is None or isinstance(season, int):
        return season
    if timestamps is None or len(timestamps) < 2:
        return None
    import pandas as pd

    stamps = pd.DatetimeIndex(timestamps).to_numpy()
    interval = np.median(np.diff(stamps) / np.timedelta64(1, "s"))  # any datetime64 unit
    steps = round(pd.Timedelta(season).total_seconds() / interval) if interval > 0 else 0
    return steps if steps >= 2 else None


def seasonal_shifts(values, valid, season: int | None, options: DetectOptions):
    """Level shifts (``level_shifts``, same span and margin) of the change since one season earlier,
    x_t - x_{t - season}: today's shape against yesterday's (a lower daily peak, a holiday), which moves neither
    the level nor any single step out of its range. None (or a season as long as the series): none."""
    values = np.asarray(values, np.float64)
    time = values.shape[-1]
    if season is None or options.level_span is None or season >= time:
        return np.zeros(values.shape, bool)
    both = np.zeros(values.shape, bool)
    both[..., season:] = valid[..., season:] & valid[..., :-season]
    change = np.zeros(values.shape)
    change[..., season:] = values[..., season:] - values[..., :-season]
    return level_shifts(np.where(both, change, 0.0), both, options)


def _onsets(flags):
    """The first step of each run of flagged steps [..., time]. A run of extremes (a climb to ever new highs) or
    of shifted means is one event, so only its first step is raised; the rest score by their surprise alone, as
    an alerting system raises one alert per event (and NAB counts every detection outside a window)."""
    flags = np.asarray(flags, bool)
    return flags & ~_previous(flags, False)


def drifts(normal_score, scored, options: DetectOptions):
    """Steps [..., time] where a two-sided CUSUM of the normal scores (``drift_allowance`` subtracted per step)
    passes every value it had before (a sum still at 0 is no drift), once ``WARM_UP`` scored steps lie behind it
    (none when ``drift_allowance`` is None); only the first such step of each excursion of the one-sided sum
    that leads (from leaving 0 to returning to it) is one: a drift that keeps growing is one event, one alert.
    Unscored steps leave the sums as they are."""
    scored = np.asarray(scored, bool)
    if options.drift_allowance is None:
        return np.zeros(scored.shape, bool)
    z = np.where(scored, np.asarray(normal_score, np.float64), 0.0)

    def cusum(increments):  # S_t = max(0, S_t-1 + x_t) from S = 0, as C_t - min(0, min_j<=t C_j) (Lindley)
        total = np.cumsum(np.where(scored, increments, 0.0), axis=-1)
        return total - np.minimum(np.minimum.accumulate(total, axis=-1), 0.0)

    upper, lower = cusum(z - options.drift_allowance), cusum(-z - options.drift_allowance)
    statistic = np.maximum(upper, lower)
    record = _previous(np.maximum.accumulate(np.where(scored, statistic, -np.inf), axis=-1), -np.inf)
    warm = _previous(np.cumsum(scored, axis=-1), 0) >= WARM_UP
    passed = scored & warm & (statistic > np.maximum(record, 0.0))
    steps = np.arange(z.shape[-1])
    first = np.zeros(passed.shape, bool)
    for side, leads in ((upper, upper >= lower), (lower, lower > upper)):
        candidate = passed & leads
        count = np.cumsum(candidate, axis=-1)
        began = np.maximum.accumulate(np.where(side <= 0, steps, -1), axis=-1)  # the excursion's last 0
        before = np.where(began >= 0, np.take_along_axis(count, np.maximum(began, 0), axis=-1), 0)
        first |= candidate & (count - before == 1)
    return first


def adaptive_scores(surprise, scored, extreme, shift, options: DetectOptions):
    """Anomaly scores [..., time] in [0, 1] from surprise [..., time] (nats), which steps carry one (``scored``),
    which are extremes (``extremes``) and which level shifts (``level_shifts``), of which only the first step
    of each run is raised; step t uses steps <= t only."""
    surprise = np.asarray(surprise, np.float64)
    scored = np.broadcast_to(np.asarray(scored, bool), surprise.shape)
    past = _previous(np.where(scored, surprise, -np.inf), -np.inf)
    reference = np.maximum(trailing_max(past, options.history), options.min_reference)
    ratio = np.where(scored, surprise, 0.0) / reference
    level = ratio / (1.0 + ratio)
    extreme, shift = _onsets(extreme), _onsets(shift)
    ordinary = np.where(shift, _SHIFT_FLOOR + (_SURPRISE_WEIGHT - _SHIFT_FLOOR) * level, _SURPRISE_WEIGHT * level)
    score = np.where(extreme, _SURPRISE_WEIGHT + (1.0 - _SURPRISE_WEIGHT) * level, ordinary)
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
