"""Toto 2.0's pretraining objective: contiguous patch masking and a pinball loss at the nine quantile knots.

A training window [batch, variate, T] (T = context + one patch, the windows Toto 1.0 trains on; every patch
of it is model input here) gets runs of hidden patches. Hidden points reach the model exactly as forecast
patches do (``Toto2.__call__(hidden=...)``: value zeroed, mask channel set, left out of the scaler, series id
kept), so learning to fill the runs is learning to forecast several patches in one pass.

Decisions (the Toto 2.0 report is silent on them):

* Spans (``MaskingConfig``): each target variate gets one contiguous run of ``min_span_patches`` to
  ``max_span_patches`` patches (uniform length, uniform start); with probability ``forecast_probability`` a
  sample's run instead ends the window and covers all its target variates at once (the forecasting case,
  where every target's future is unknown while the covariates may be known). The first patch always stays
  visible (nothing precedes it to predict it from), so runs are clipped to T / patch - 1 patches. Exogenous
  variates (the last ``num_exogenous_variables``) are never hidden and never scored.
* Loss: the output at patch i predicts patch i + 1 (the model's next-patch convention); a point counts if it
  is hidden, observed (padding mask true, finite) and of a target variate. ``score_visible`` also counts the
  visible next patches (every observed target point after the first patch: Toto 1.0's next-patch objective
  on the visible part), an ablation the Toto 2.0 report does not settle.
* Scaled space: targets are ``asinh((x - loc) / scale)`` with the statistics the model holds at the
  *predicting* patch i (``Toto2Output.loc/scale``): those of the visible points up to the end of patch i,
  what forecasting de-scales a future patch with. For a hidden target they equal the target patch's own
  (nothing in it is visible); for a visible one the target patch's would include the target's own values.
* Per point, the pinball loss is averaged over the nine knots; the step's loss is the mean over counted
  points (sums and a count here, so microbatches and devices combine into one exact mean).
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp

from ..config import ConfigError
from ..models.toto2.config import QUANTILE_LEVELS
from ..models.toto2.model import Toto2Output
from ..models.toto2.scaler import PatchStatistics, standardise

_EPS = float(jnp.finfo(jnp.float32).eps)


@dataclasses.dataclass
class MaskingConfig:
    """Fields of the YAML ``masking:`` section (Toto 2.0 only). Lengths are in patches."""

    min_span_patches: int = 1
    max_span_patches: int = 8  # clipped to the window's patches - 1
    forecast_probability: float = 0.5  # a sample's span ends the window, on all its target variates
    score_visible: bool = False  # also score the visible next patches (Toto 1.0's objective on them)

    def validate(self) -> None:
        if not 1 <= self.min_span_patches <= self.max_span_patches:
            raise ConfigError(
                f"masking.min_span_patches ({self.min_span_patches}) must be in [1, masking.max_span_patches "
                f"({self.max_span_patches})]"
            )
        if not 0.0 <= self.forecast_probability <= 1.0:
            raise ConfigError(f"masking.forecast_probability must be in [0, 1], got {self.forecast_probability}")


class QuantileLossTerms(NamedTuple):
    """Sums over counted points (divide by ``count`` for the mean)."""

    loss: jax.Array
    count: jax.Array

    def __add__(self, other: "QuantileLossTerms") -> "QuantileLossTerms":  # type: ignore[override]
        return QuantileLossTerms(self.loss + other.loss, self.count + other.count)

    def means(self) -> dict[str, jax.Array]:
        return {"loss": self.loss / (self.count + _EPS)}


def hidden_spans(key, shape: tuple[int, int, int], patch_size: int, masking: MaskingConfig,
                 num_exogenous_variables: int = 0) -> jax.Array:  # fmt: skip
    """Bool [batch, variate, time] (time = ``shape[2]``, a multiple of ``patch_size``): the hidden points."""
    batch, variates, time = shape
    patches = time // patch_size
    if patches < 2:
        raise ConfigError(f"a Toto 2.0 training window needs >= 2 patches, got {patches}")
    longest = min(masking.max_span_patches, patches - 1)
    shortest = min(masking.min_span_patches, longest)
    length_key, start_key, forecast_key, tail_key = jax.random.split(key, 4)
    length = jax.random.randint(length_key, (batch, variates), shortest, longest + 1)
    # Starts uniform over [1, patches - length]: the run stays inside the window, after the first patch.
    start = 1 + jnp.floor(jax.random.uniform(start_key, (batch, variates)) * (patches - length)).astype(jnp.int32)
    tail_length = jax.random.randint(tail_key, (batch, 1), shortest, longest + 1)
    forecast = jax.random.bernoulli(forecast_key, masking.forecast_probability, (batch, 1))
    length = jnp.where(forecast, tail_length, length)
    start = jnp.where(forecast, patches - tail_length, start)
    position = jnp.arange(patches)
    hidden = (position >= start[..., None]) & (position < (start + length)[..., None])
    hidden = hidden & target_variates(variates, num_exogenous_variables)[:, None]
    return jnp.repeat(hidden, patch_size, axis=-1)


def target_variates(variates: int, num_exogenous_variables: int) -> jax.Array:
    return jnp.arange(variates) < variates - num_exogenous_variables


def pinball_loss(quantiles, target, levels=QUANTILE_LEVELS) -> jax.Array:
    """Mean over knots of max(level * u, (level - 1) * u), u = target - quantile; quantiles [knot, ...]."""
    levels = jnp.asarray(levels, jnp.float32).reshape(-1, *([1] * jnp.ndim(target)))
    error = target[None] - quantiles
    return jnp.mean(jnp.maximum(levels * error, (levels - 1.0) * error), axis=0)


def observed_points(series, padding_mask) -> jax.Array:
    return jnp.asarray(padding_mask, bool) & jnp.isfinite(series)


def model_inputs(series, padding_mask, id_mask):
    """Batch arrays -> (series with unobserved points zeroed, observed mask, series ids [batch, variate])."""
    observed = observed_points(series, padding_mask)
    return jnp.where(observed, series, 0.0), observed, id_mask[..., 0]


def quantile_loss_terms(output: Toto2Output, series, observed, hidden, patch_size: int,
                        num_exogenous_variables: int = 0, score_visible: bool = False) -> QuantileLossTerms:  # fmt: skip
    """Pinball sums over the hidden (``score_visible``: all), observed target-variate points of patches 1 ...
    (predicted by 0 ...), in the scaled space of the predicting patch's statistics."""
    later, earlier = slice(patch_size, None), slice(None, -patch_size)
    counted = observed[..., later] if score_visible else hidden[..., later] & observed[..., later]
    counted = counted & target_variates(series.shape[-2], num_exogenous_variables)[:, None]
    statistics = PatchStatistics(output.loc[..., earlier], output.scale[..., earlier])
    target = standardise(series[..., later], counted, statistics)
    predicted = output.quantiles[..., :-1, :patch_size]  # the first output patch: the next patch
    predicted = predicted.reshape(*predicted.shape[:-2], -1).astype(jnp.float32)
    pointwise = pinball_loss(predicted, target)
    return QuantileLossTerms(
        jnp.sum(jnp.where(counted, pointwise, 0.0), dtype=jnp.float32), jnp.sum(counted, dtype=jnp.float32)
    )
