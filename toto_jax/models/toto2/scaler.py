"""Toto 2.0's causal patch scaler: running mean and std (Bessel-corrected, floor 1e-6) taken at the last step
of each patch and held for the whole patch, then ``asinh`` of the standardised values.

toto-2 accumulates in float64; here the float32-exact centred statistics of ``toto_jax.layers.statistics``.
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp

from ...layers.statistics import causal_moments

MINIMUM_SCALE = 1e-6


class PatchStatistics(NamedTuple):
    loc: jnp.ndarray  # [..., time], constant within each patch
    scale: jnp.ndarray


def _hold_patch_last(x, patch_size: int):
    patches = x.reshape(*x.shape[:-1], -1, patch_size)[..., -1]
    return jnp.repeat(patches, patch_size, axis=-1)


def patch_statistics(x, mask, patch_size: int) -> PatchStatistics:
    moments = causal_moments(x, mask)
    variance = moments.m2 / jnp.maximum(moments.count - 1.0, 1.0)
    scale = jnp.maximum(jnp.sqrt(variance), MINIMUM_SCALE)
    return PatchStatistics(_hold_patch_last(moments.loc, patch_size), _hold_patch_last(scale, patch_size))


def fallback_statistics(x, mask, stats: PatchStatistics, patch_size: int, min_obs: int) -> PatchStatistics:
    """Leading patches seen by fewer than ``min_obs`` observations take the mean/std of the first ``min_obs``
    observations (later points do not leak in); toto-2's ``scaler_fallback_min_obs``."""
    if min_obs <= 0:
        return stats
    mask = mask.astype(bool)
    first_n = (jnp.cumsum(mask, axis=-1) <= min_obs) & mask
    moments = causal_moments(x, first_n)  # the running statistics of the first n points end at their total
    n = jnp.maximum(moments.count[..., -1:], 1.0)
    donor_loc = moments.loc[..., -1:]
    donor_scale = jnp.maximum(jnp.sqrt(moments.m2[..., -1:] / jnp.maximum(n - 1.0, 1.0)), MINIMUM_SCALE)
    seen = jnp.cumsum(mask.reshape(*mask.shape[:-1], -1, patch_size).sum(-1), axis=-1)
    below = jnp.repeat(seen < min_obs, patch_size, axis=-1)
    return PatchStatistics(
        jnp.where(below, donor_loc, stats.loc), jnp.where(below, donor_scale, stats.scale)
    )


def standardise(x, mask, stats: PatchStatistics):
    """asinh((x - loc) / scale) where observed, 0 elsewhere (the model's input space)."""
    return jnp.arcsinh(jnp.where(mask, (x - stats.loc) / stats.scale, 0.0))
