"""Toto 2.0 forecasting as one compiled program: a single pass over the context plus masked prediction
patches, or block decoding (``block_patches``) with median feedback through a static KV cache in a scan.

Semantics follow toto-2's ``Toto2Model.forecast``: the last context patch counts as observed, context patches
without observations get group id -1, the scaler is re-run over the whole buffer for every block (so the
statistics see the fed-back medians), real-space quantiles are de-scaled with the statistics of the patch
they predict, infinities clamped to the patch's finite extremes, optionally capped to the context range
widened by ``cap_k`` anchor scales, and sorted. One deliberate copy of a reference detail: in the decode
steps, variate attention groups by the ids of the buffer's *first* patches (toto-2 slices its group ids
from the start), which differs from the decoded patches' own ids only where leading patches are empty.
"""

from __future__ import annotations

import dataclasses
from functools import partial

import jax
import jax.numpy as jnp
from flax import nnx

from .config import QUANTILE_LEVELS
from .model import Toto2, time_mask, variate_mask
from .scaler import PatchStatistics, fallback_statistics, standardise

MEDIAN = QUANTILE_LEVELS.index(0.5)


@dataclasses.dataclass(frozen=True)
class QuantileSpec:
    """Static choices of one compiled forecast."""

    horizon_patches: int
    block_patches: int  # >= horizon_patches: one pass
    cap_k: float = 0.0  # 0: no cap
    fallback_min_obs: int = 0  # 0: no scaler fallback
    has_missing_values: bool = True

    @property
    def blocks(self) -> int:
        return -(-self.horizon_patches // self.block_patches)


def _statistics(model: Toto2, target, mask, spec: QuantileSpec) -> PatchStatistics:
    stats = model.statistics(target, mask)
    return fallback_statistics(target, mask, stats, model.config.patch_size, spec.fallback_min_obs)


def _patches(x, patch: int):
    return x.reshape(*x.shape[:-1], -1, patch)


def _clamp_infinite(values):
    """+inf -> the largest finite value of its patch (last axis), -inf -> the smallest, as toto-2."""
    high = jnp.max(jnp.where(jnp.isfinite(values), values, -jnp.inf), axis=-1, keepdims=True)
    low = jnp.min(jnp.where(jnp.isfinite(values), values, jnp.inf), axis=-1, keepdims=True)
    return jnp.where(values == jnp.inf, high, jnp.where(values == -jnp.inf, low, values))


def _to_real(model: Toto2, hidden, stats: PatchStatistics, start: int, patches: int, bounds):
    """Scaled quantiles of ``patches`` patches from ``start`` (a time step) -> sorted real quantiles
    [quantile, batch, variate, patches, patch]."""
    patch = model.config.patch_size
    scaled = model.quantiles(hidden)[..., :patch]  # the first output patch (num_output_patches == 1 here)
    loc, scale = (_patches(jax.lax.dynamic_slice_in_dim(s, start, patches * patch, axis=-1), patch) for s in stats)
    real = _clamp_infinite(jnp.sinh(scaled) * scale + loc)
    if bounds is not None:
        real = jnp.clip(real, bounds[0], bounds[1])
    return jnp.sort(real, axis=0)


def _feed_back(buffer, mask, medians, is_target, start):
    """Write a block's medians [batch, variate, steps] into the target variates from time step ``start``."""
    current = jax.lax.dynamic_slice_in_dim(buffer, start, medians.shape[-1], axis=-1)
    current_mask = jax.lax.dynamic_slice_in_dim(mask, start, medians.shape[-1], axis=-1)
    target = is_target[..., None]
    buffer = jax.lax.dynamic_update_slice_in_dim(buffer, jnp.where(target, medians, current), start, axis=-1)
    mask = jax.lax.dynamic_update_slice_in_dim(mask, current_mask | target, start, axis=-1)
    return buffer, mask


def forecast_quantiles(model: Toto2, spec: QuantileSpec, context, context_mask, future, future_mask, series_ids,
                       is_target):  # fmt: skip
    """Real-space quantiles [quantile, batch, variate, blocks * block_patches * patch].

    context, context_mask: [batch, variate, time] (time a multiple of the patch size); future, future_mask:
    [batch, variate, blocks * block_patches * patch] (zeros / False for targets, known values for covariates);
    series_ids: [batch, variate]; is_target: [batch, variate] (covariates get no median feedback).
    """
    patch = model.config.patch_size
    time = context.shape[-1]
    context_patches, block = time // patch, spec.block_patches
    predicted = spec.blocks * block
    # The last context patch counts as observed for targets (toto-2: training never leaves it empty).
    last_patch = jnp.arange(time) >= time - patch
    context_mask = context_mask | (is_target[..., None] & last_patch)
    buffer = jnp.concatenate([context, future], axis=-1)
    mask = jnp.concatenate([context_mask, future_mask], axis=-1)
    observed = _patches(context_mask, patch).any(-1)
    id_length = max(context_patches + predicted, 2 * block)
    group_ids = jnp.concatenate(
        [jnp.where(observed, series_ids[..., None], -1),
         jnp.broadcast_to(series_ids[..., None], (*series_ids.shape, id_length - context_patches))], axis=-1,
    )  # fmt: skip

    stats = _statistics(model, buffer, mask, spec)
    bounds = None
    if spec.cap_k > 0:
        anchor = spec.cap_k * stats.scale[..., time - 1 : time, None]
        high = jnp.max(jnp.where(context_mask, context, -jnp.inf), axis=-1, keepdims=True)[..., None]
        low = jnp.min(jnp.where(context_mask, context, jnp.inf), axis=-1, keepdims=True)[..., None]
        bounds = (jnp.where(jnp.isinf(low), 0.0, low) - anchor, jnp.where(jnp.isinf(high), 0.0, high) + anchor)
    scaled = standardise(buffer, mask, stats)
    context_tokens = model.embed(scaled[..., :time], context_mask)
    first_end = time + block * patch
    first_tokens = model.embed(scaled[..., time:first_end], mask[..., time:first_end])
    tokens = jnp.concatenate([context_tokens, first_tokens], axis=2)
    first_ids = group_ids[..., : context_patches + block]
    masks = (time_mask(first_ids, spec.has_missing_values), variate_mask(first_ids))
    if spec.blocks == 1:
        hidden, _ = model.encode(tokens, jnp.arange(context_patches + block), *masks)
        return _flat(_to_real(model, hidden[..., context_patches - 1 : -1, :], stats, time, block, bounds))

    batch, variates = series_ids.shape
    max_tokens = context_patches + predicted
    cache = model.init_cache(batch, variates, max_tokens)
    pad_keys = lambda m: jnp.pad(m, [(0, 0)] * (m.ndim - 1) + [(0, max_tokens - m.shape[-1])])  # noqa: E731
    hidden, cache = model.encode(tokens, jnp.arange(context_patches + block), pad_keys(masks[0]), masks[1], cache, 0)
    quantiles = _to_real(model, hidden[..., context_patches - 1 : -1, :], stats, time, block, bounds)
    # Decode steps attend to every cached position except the context's empty patches.
    key_valid = pad_keys(first_ids != -1) | (jnp.arange(max_tokens) >= context_patches + block)
    decode_variate_mask = variate_mask(group_ids[..., : 2 * block])
    buffer, mask = _feed_back(buffer, mask, _flat(quantiles[MEDIAN]), is_target, time)

    def step(carry, k):
        buffer, mask, cache = carry
        stats = _statistics(model, buffer, mask, spec)
        start = time + (k - 1) * block * patch  # the previous block, re-read as observed medians
        window = lambda x: jax.lax.dynamic_slice_in_dim(x, start, 2 * block * patch, axis=-1)  # noqa: E731
        scaled = standardise(window(buffer), window(mask), PatchStatistics(*map(window, stats)))
        tokens = jnp.concatenate(
            [model.embed(scaled[..., : block * patch], jnp.ones_like(scaled[..., : block * patch], bool)),
             model.embed(scaled[..., block * patch :], window(mask)[..., block * patch :])], axis=2,
        )  # fmt: skip
        offset = context_patches + (k - 1) * block
        positions = offset + jnp.arange(2 * block)
        # The last block may be partial: the reference's call ends at its last real patch (xPos centre).
        last_real = offset + block + jnp.minimum(block, spec.horizon_patches - k * block) - 1
        allowed = (jnp.arange(max_tokens)[None, :] <= positions[:, None]) & key_valid[..., None, :]
        hidden, cache = model.encode(tokens, positions, allowed[:, :, None], decode_variate_mask, cache, offset,
                                     last_real)  # fmt: skip
        block_quantiles = _to_real(model, hidden[..., block - 1 : -1, :], stats, start + block * patch, block, bounds)
        buffer, mask = _feed_back(buffer, mask, _flat(block_quantiles[MEDIAN]), is_target, start + block * patch)
        return (buffer, mask, cache), block_quantiles

    _, rest = jax.lax.scan(step, (buffer, mask, cache), jnp.arange(1, spec.blocks))
    rest = jnp.moveaxis(rest, 0, 3)  # [quantile, batch, variate, blocks - 1, block, patch]
    rest = rest.reshape(*rest.shape[:3], -1, patch)
    return _flat(jnp.concatenate([quantiles, rest], axis=3))


def _flat(x):
    return x.reshape(*x.shape[:-2], -1)


@partial(jax.jit, static_argnums=(0, 1), keep_unused=True)  # every weight an argument: see decode._FUNCTIONS
def compiled_forecast(graphdef, spec: QuantileSpec, state, *arrays):
    """``forecast_quantiles`` as one jitted program per (model structure, spec, shapes)."""
    return forecast_quantiles(nnx.merge(graphdef, state), spec, *arrays)
