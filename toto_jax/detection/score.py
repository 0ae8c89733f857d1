"""The surprise of every observed step, from one causal, teacher-forced, jitted pass per window.

Toto's output at patch k is its distribution for patch k + 1, so one forward pass over a window of ``context``
steps predicts every step after its first patch. Window j scores the steps [patch + j stride, patch + (j + 1)
stride) from the last ``stride`` of its outputs; its inputs are the ``context`` steps before its last scored
patch, left-padded as missing at the start of a series. Every scored step has seen ``context - stride`` steps
of history (all there is near the start), and no step at or after itself. All windows of all series are one
batch, split into calls of ``batch_size`` windows per device over ``ForecastOptions.devices`` (as forecasting).

Each window is prepared only from its *prefix*, the steps before the first step it scores, so that a step's
score never depends on a later step:

- gaps: a missing step is fed to the model as the last observed value before it (``gaps="fill"``: causal,
  unlike forecasting's interpolation) or masked (``"mask"``); it is not scored (surprise 0);
- normalization (``ForecastOptions.normalize``): the prefix's mean and standard deviation, in float64, so 1e9
  counters keep their signal;
- glitch clipping (``ForecastOptions.clip_outliers``): a step beyond the prefix's clip range is history as a
  gap (filled or masked, as ``gaps`` says) and stays out of the normalization statistics, so one glitch neither
  inflates the scaler nor biases what the model expects next (clipped to the range's edge, it still did: the
  next ~60 steps predicted ~1.6 sigma low); it is never clipped as the value being scored: a glitch is scored
  at its full value. A prefix with fewer than ``CLIP_MIN_HISTORY`` observed steps (the start of a series) has
  no reliable range and clips nothing;
- the scaler's global stabilisation takes its statistics from the prefix (``prefix_length``).

The surprise of an observed step x is -log of its two-sided tail probability 2 min(P(X <= x), P(X >= x)),
floored at 1e-30 (69 nats): under Toto 1.0's Student-T mixture, each tail summed from the components' own
tails (``StudentTMixture.tails``); under Toto 2.0's nine quantiles, the distribution ``quantile_tails``
builds from them (its first output patch at patch k predicts patch k + 1, de-scaled with the statistics up
to patch k). Its normal score Phi^-1(P(X <= x)) says on which side, and how far, x lies: a run of steps all
a little above (or below) what the model expects is a drift no single step's surprise shows.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.scipy.special import ndtri

from ..forecasting.options import ForecastOptions
from ..forecasting.placement import forecast_placement
from ..forecasting.preprocessing import normalize_context, outlier_bounds
from ..models import is_toto2
from .options import DetectError

TAIL_FLOOR = 1e-30
CLIP_MIN_HISTORY = 128  # observed prefix steps a clip range is taken from; shorter pasts are not clipped
INPUT_LIMIT = 1e30  # normalized inputs beyond float32's range (an unclipped 1e300 glitch) are held here


@dataclasses.dataclass(frozen=True)
class Windows:
    """How a series is covered: window j scores steps [patch + j stride, patch + (j + 1) stride) with the last
    ``stride`` of its ``context`` outputs; its inputs are the ``context`` steps before its last scored patch
    (left-padded as missing at the start of a series), the first ``context - stride`` of them its prefix."""

    context: int
    stride: int
    patch: int

    def starts(self, length: int) -> np.ndarray:
        """First input step of each window (negative: left padding)."""
        count = max(1, -(-(length - self.patch) // self.stride))
        return (np.arange(count) + 1) * self.stride - self.context

    @property
    def first_kept(self) -> int:
        """Index (in a window's outputs) of the first prediction it keeps."""
        return self.context - self.stride

    @property
    def prefix(self) -> int:
        """Window steps before its first scored step: what its statistics come from."""
        return self.patch + self.first_kept


def window_plan(config, options: ForecastOptions, stride: int | None) -> Windows:
    patch = config.patch_size
    context = min(options.context_length or config.max_context, config.max_context)
    context = max(patch, context // patch * patch)
    if stride is None:
        stride = max(patch, context // 2 // patch * patch)
    if stride % patch or stride > context:
        raise DetectError(
            f"DetectOptions.stride must be a multiple of the patch size ({patch}) no larger than the context "
            f"({context}), got {stride}"
        )
    return Windows(context, stride, patch)


def _carry_forward(values, valid):
    """Each missing step [..., time] takes the last observed value before it; steps before the first
    observation stay missing."""
    steps = np.arange(values.shape[-1])
    last = np.maximum.accumulate(np.where(valid, steps, -1), axis=-1)
    filled = np.take_along_axis(values, np.maximum(last, 0), axis=-1)
    return np.where(last >= 0, filled, values), last >= 0


@dataclasses.dataclass
class Batch:
    """Model inputs and targets of a set of windows [window, variate, context], float32."""

    inputs: np.ndarray
    input_valid: np.ndarray
    targets: np.ndarray
    target_valid: np.ndarray
    prefix: np.ndarray  # [window] steps the statistics come from


def prepare_windows(values, valid, starts, windows: Windows, options: ForecastOptions) -> Batch:
    """One series [variate, time] (float64, validity mask) -> its windows, prepared from their prefixes."""
    context, patch, prefix = windows.context, windows.patch, windows.prefix
    span = context + patch
    length = values.shape[-1]
    left = max(0, -int(starts[0]))
    width = left + max(length, int(starts[-1]) + span)
    padded = np.full((values.shape[0], width), np.nan)
    padded_valid = np.zeros(padded.shape, bool)
    padded[:, left : left + length], padded_valid[:, left : left + length] = values, valid
    index = left + starts[:, None] + np.arange(span)
    window_values = np.moveaxis(padded[:, index], 0, 1)  # [window, variate, span]
    window_valid = np.moveaxis(padded_valid[:, index], 0, 1)
    fit = window_valid & (np.arange(span) < prefix)
    inputs, input_valid = window_values[..., :context], window_valid[..., :context]
    if options.clip_outliers is not None:
        low, high = outlier_bounds(window_values, fit, options.clip_outliers)
        enough = fit.sum(-1, keepdims=True) >= CLIP_MIN_HISTORY  # a short past has no reliable range
        outlier = enough & ((window_values < low) | (window_values > high))
        fit &= ~outlier  # nor the scaler's statistics
        input_valid = input_valid & ~outlier[..., :context]  # a glitch is history as a gap: filled or masked
    _, shift, unit = normalize_context(np.where(window_valid, window_values, 0.0), fit, options.normalize)
    if options.gaps == "fill":
        inputs, input_valid = _carry_forward(np.where(input_valid, inputs, 0.0), input_valid)
    inputs = np.clip((inputs - shift) / unit, -INPUT_LIMIT, INPUT_LIMIT)
    targets = np.clip((window_values[..., patch:] - shift) / unit, -3e38, 3e38)
    return Batch(np.where(input_valid, inputs, 0.0).astype(np.float32), input_valid,
                 np.where(window_valid[..., patch:], targets, 0.0).astype(np.float32), window_valid[..., patch:],
                 np.full(len(starts), prefix, np.int32))  # fmt: skip


def _surprise_and_normal_score(below, above, valid):
    """(surprise, normal score): the surprise, -log of the two-sided tail probability 2 min(P(X <= x),
    P(X >= x)), floored; and the normal score Phi^-1(P(X <= x)) (0 at the median, +-3 at the 0.13 % tails),
    from the smaller tail so that far tails keep their precision. Both 0 where not ``valid``."""
    smaller = jnp.minimum(below, above)
    surprise = jnp.abs(jnp.log(jnp.clip(2.0 * smaller, TAIL_FLOOR, 1.0)))  # -log(1) would be -0.0 in the output
    lower_quantile = ndtri(jnp.clip(smaller, TAIL_FLOOR / 2, 0.5))
    normal_score = jnp.where(below < above, lower_quantile, -lower_quantile)
    return jnp.where(valid, surprise, 0.0), jnp.where(valid, normal_score, 0.0)


def quantile_tails(knots, levels, x, floor):
    """(P(X <= x), P(X >= x)) of the distribution whose quantile function runs linearly between sorted
    ``knots`` [level, ...] at ``levels`` and continues beyond the outer knots with exponential tails whose
    density at the outer knot matches the neighbouring interval's (scale = that interval's width, at least
    ``floor``), so a step far beyond the outer knots gets a finite, decreasing tail probability."""
    levels = jnp.asarray(levels, jnp.float32)
    low, high = knots[0], knots[-1]
    width = knots[1:] - knots[:-1]
    mass = (levels[1:] - levels[:-1]).reshape((-1,) + (1,) * x.ndim)
    # Inside: each interval adds its mass as far as x has passed through it (a zero-width one as a step).
    passed = jnp.where(width > 0, jnp.clip((x - knots[:-1]) / jnp.where(width > 0, width, 1.0), 0.0, 1.0),
                       (x >= knots[1:]).astype(x.dtype))  # fmt: skip
    before = jnp.where(width > 0, jnp.clip((knots[1:] - x) / jnp.where(width > 0, width, 1.0), 0.0, 1.0),
                       (x <= knots[:-1]).astype(x.dtype))  # fmt: skip
    below = levels[0] + jnp.sum(mass * passed, axis=0)
    above = (1.0 - levels[-1]) + jnp.sum(mass * before, axis=0)
    lower_scale = jnp.maximum(width[0], floor)
    upper_scale = jnp.maximum(width[-1], floor)
    lower_tail = levels[0] * jnp.exp(jnp.minimum((x - low) / lower_scale, 0.0))
    upper_tail = (1.0 - levels[-1]) * jnp.exp(jnp.minimum((high - x) / upper_scale, 0.0))
    below = jnp.where(x < low, lower_tail, jnp.where(x > high, 1.0 - upper_tail, below))
    above = jnp.where(x > high, upper_tail, jnp.where(x < low, 1.0 - lower_tail, above))
    return below, above


@functools.partial(jax.jit, static_argnums=0, donate_argnums=4)
def _surprise(graphdef, params, inputs, input_valid, targets, target_valid, prefix):
    model = nnx.merge(graphdef, params)
    if is_toto2(model):
        return _toto2_surprise(model, inputs, input_valid, targets, target_valid)
    output = model(inputs, input_valid, prefix_length=prefix[:, None, None])
    below, above = output.distribution.tails((targets - output.loc) / output.scale)
    return _surprise_and_normal_score(below, above, target_valid)


def _toto2_surprise(model, inputs, input_valid, targets, target_valid):
    """Toto 2.0: the first output patch at patch k is its quantiles of patch k + 1 (as it trains), de-scaled
    with the causal statistics at patch k (what a hidden patch k + 1 would carry: the data up to patch k)."""
    from ..models.toto2.config import QUANTILE_LEVELS
    from ..models.toto2.scaler import MINIMUM_SCALE

    patch = model.config.patch_size
    output = model(inputs, input_valid)
    scaled = output.quantiles[..., :patch]  # [quantile, batch, variate, patches, patch]
    scaled = scaled.reshape(scaled.shape[:-2] + (-1,))
    knots = jnp.sort(jnp.sinh(scaled.astype(jnp.float32)) * output.scale + output.loc, axis=0)
    below, above = quantile_tails(knots, QUANTILE_LEVELS, targets, 1e-4 * output.scale)
    # A flat history leaves the scaler at its floor, where the model's quantiles (of an all-zero input) sit up
    # to ~2 floor units off-centre, patch position by patch position: a step that repeats the flat level would
    # read as a 0.1 tail every patch, a drift on every flat line. At the floor the quantiles have no unit to
    # measure that step against, so repeating the level is the median; any departure is scored by the tails.
    repeats = (output.scale <= MINIMUM_SCALE) & (jnp.abs(targets - output.loc) <= output.scale)
    below, above = jnp.where(repeats, 0.5, below), jnp.where(repeats, 0.5, above)
    return _surprise_and_normal_score(below, above, target_valid)


def surprise(model, rows: list[np.ndarray], valid: list[np.ndarray], options: ForecastOptions,
             stride: int | None, batch_size: int) -> list[np.ndarray]:  # fmt: skip
    """Surprise (nats, float32) [variate, time] of every step of each series, and its normal score (the signed
    side of the surprise: ``_surprise_and_normal_score``), both 0 where unscored: missing steps and the first
    patch. Returns (surprises, normal_scores), one array per series each."""
    windows = window_plan(model.config, options, stride)
    placement = forecast_placement(options.devices)
    graphdef, params = nnx.split(model)
    params = placement.put_parameters(params)
    prepared, owners = [], []
    for number, (row, mask) in enumerate(zip(rows, valid)):
        starts = windows.starts(row.shape[-1])
        prepared.append(prepare_windows(row, mask, starts, windows, options))
        owners.append((number, starts))
    fields = [np.concatenate([getattr(b, f.name) for b in prepared]) for f in dataclasses.fields(Batch)]
    total = fields[0].shape[0]
    rows_per_call = placement.row_multiple(min(batch_size * placement.count, placement.row_multiple(total)))
    outputs = []
    calls = range(0, total, rows_per_call)
    if options.progress if options.progress is not None else len(calls) > 1:
        from tqdm.auto import tqdm

        calls = tqdm(calls, desc="detect", unit="call")
    for begin in calls:
        chunk = [f[begin : begin + rows_per_call] for f in fields]
        pad = rows_per_call - chunk[0].shape[0]
        if pad:
            chunk = [np.concatenate([c, np.zeros((pad,) + c.shape[1:], c.dtype)]) for c in chunk]
        chunk[-1] = np.maximum(chunk[-1], 1)  # padded rows: a harmless prefix
        outputs.append((_surprise(graphdef, params, *placement.put(chunk)), rows_per_call - pad))
    # Dispatched calls run while the next ones are prepared; results are read once all are queued.
    scored = np.stack([np.concatenate([np.asarray(output[k])[:rows] for output, rows in outputs]) for k in (0, 1)])
    scored = scored[..., windows.first_kept :]  # [2, window, variate, stride]
    surprises, normal_scores, offset = [], [], 0
    for (number, starts), row in zip(owners, rows):
        length = row.shape[-1]
        kept = np.moveaxis(scored[:, offset : offset + len(starts)], 1, 2).reshape(2, row.shape[0], -1)
        out = np.zeros((2,) + row.shape, np.float32)
        if length > windows.patch:
            out[..., windows.patch :] = kept[..., : length - windows.patch]
        if np.isnan(out).any():  # a model that produced NaN: never a silent score
            variate, step = (int(i[0]) for i in np.nonzero(np.isnan(out).any(axis=0)))
            raise DetectError(f"series {number}, variate {variate}: the model's distribution at step {step} is NaN")
        offset += len(starts)
        surprises.append(out[0])
        normal_scores.append(out[1])
    return surprises, normal_scores
