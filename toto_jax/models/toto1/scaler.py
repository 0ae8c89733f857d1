"""Input scalers: global std/mean, causal std/mean, and causal patch std/mean (float32-exact, see
``toto_jax.layers.statistics``)."""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp

from ...layers.statistics import causal_moments, centre

STD_MEAN_MINIMUM_SCALE = 1e-3
CAUSAL_MINIMUM_SCALE = 0.1


class Scaled(NamedTuple):
    scaled: jnp.ndarray  # (x - loc) / scale, [batch, variate, time]
    loc: jnp.ndarray  # [batch, variate, time] (causal) or [batch, variate, 1] (global)
    scale: jnp.ndarray


def _weights(mask: jnp.ndarray, prefix_length: int | jnp.ndarray | None) -> jnp.ndarray:
    weights = mask.astype(jnp.float32)
    if prefix_length is not None:
        weights = weights * (jnp.arange(mask.shape[-1]) < prefix_length)
    return weights


def std_mean_scale(x, mask, prefix_length=None, minimum_scale: float = STD_MEAN_MINIMUM_SCALE) -> Scaled:
    """Global (non-causal) mean/std over the valid (and prefix) points of each series."""
    x = x.astype(jnp.float32)
    weights = _weights(mask, prefix_length)
    centred, shift = centre(x, weights > 0)
    total = weights.sum(-1, keepdims=True)
    denominator = jnp.maximum(total, 1.0)
    mean_c = (centred * weights).sum(-1, keepdims=True) / denominator
    variance = (((centred - mean_c) * weights) ** 2).sum(-1, keepdims=True) / denominator
    scale = jnp.sqrt(variance + minimum_scale)
    loc = shift * (total / denominator) + mean_c  # exactly 0 for a series without valid points
    return Scaled((x - loc) / scale, loc, scale)


def causal_statistics(
    x,
    mask,
    minimum_scale: float = CAUSAL_MINIMUM_SCALE,
    use_bessel_correction: bool = True,
    stabilize_with_global: bool = False,
    scale_factor_exponent: float = 10.0,
    prefix_length=None,
) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Running (Welford) mean and scale at every time step, optionally clamped by global statistics.

    Statistics at step t use only points <= t. With ``stabilize_with_global`` the causal scale is kept
    within [10^-e, 10^e] times the scale of the first ``prefix_length`` points.
    """
    x = x.astype(jnp.float32)
    weights = mask.astype(jnp.float32)
    loc, m2, count = causal_moments(x, weights)
    denominator = jnp.maximum(count, 1.0)
    if use_bessel_correction:
        variance = m2 / jnp.maximum(denominator - 1.0, 1.0)
    else:
        variance = m2 / denominator
    scale = jnp.sqrt(variance + minimum_scale)

    if stabilize_with_global:
        centred, _ = centre(x, weights > 0)
        global_weights = _weights(mask, prefix_length)
        global_denominator = jnp.maximum(global_weights.sum(-1, keepdims=True), 1.0)
        global_mean_c = (centred * global_weights).sum(-1, keepdims=True) / global_denominator
        global_variance = (((centred - global_mean_c) * global_weights) ** 2).sum(-1, keepdims=True)
        global_scale = jnp.sqrt(global_variance / global_denominator + minimum_scale)
        lower = jnp.maximum(minimum_scale, global_scale * (10.0 ** (-scale_factor_exponent)))
        upper = global_scale * (10.0**scale_factor_exponent)
        scale = jnp.minimum(jnp.maximum(scale, lower), upper)  # torch.clamp order: max wins on conflict

    return loc, scale


def causal_std_mean_scale(x, mask, prefix_length=None, **options) -> Scaled:
    loc, scale = causal_statistics(x, mask, prefix_length=prefix_length, **options)
    return Scaled((x - loc) / scale, loc, scale)


def causal_patch_std_mean_scale(x, mask, patch_size: int, prefix_length=None, **options) -> Scaled:
    """Causal statistics taken at the last step of each patch and held for the whole patch."""
    batch, variate, time = x.shape
    if time % patch_size:
        raise ValueError(f"time steps ({time}) must be a multiple of the patch size ({patch_size})")
    loc, scale = causal_statistics(x, mask, prefix_length=prefix_length, **options)
    patches = time // patch_size
    loc = jnp.repeat(loc.reshape(batch, variate, patches, patch_size)[..., -1], patch_size, axis=-1)
    scale = jnp.repeat(scale.reshape(batch, variate, patches, patch_size)[..., -1], patch_size, axis=-1)
    return Scaled((x - loc) / scale, loc, scale)


def apply_scaler(
    kind: str,
    x,
    mask,
    *,
    patch_size: int,
    stabilize_with_global: bool,
    scale_factor_exponent: float,
    prefix_length=None,
) -> Scaled:
    """Dispatch on the config's scaler name with the reference's constructor defaults for each kind."""
    if kind == "std_mean":
        return std_mean_scale(x, mask, prefix_length)
    if kind == "causal_std_mean":
        # The reference builds this scaler with its defaults: no global stabilisation.
        return causal_std_mean_scale(x, mask, prefix_length)
    if kind == "causal_patch_std_mean":
        return causal_patch_std_mean_scale(
            x,
            mask,
            patch_size,
            prefix_length,
            stabilize_with_global=stabilize_with_global,
            scale_factor_exponent=scale_factor_exponent,
        )
    raise ValueError(f"unknown scaler {kind!r}")
