"""Float32-exact running statistics, shared by both families' causal scalers.

The references accumulate in float64. Here everything stays float32 but is computed on *centred* data:
each series is shifted by its first valid value before any sum. The statistics are shift invariant in exact
arithmetic, the subtraction of two nearby float32 numbers is exact, and the centred values are small, so
values around 1e9 with unit variance keep full precision. The shift is added back to the location at the
end (one rounding, as the references' final cast to float32).
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp


class CausalMoments(NamedTuple):
    loc: jnp.ndarray  # running mean at every step; 0 before the first valid point, as the references
    m2: jnp.ndarray  # running sum of squared deviations (Welford)
    count: jnp.ndarray  # running number of valid points


def centre(x: jnp.ndarray, valid: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Shift each series by its first valid value; invalid positions become exactly 0."""
    first = jnp.argmax(valid, axis=-1)[..., None]
    shift = jnp.take_along_axis(x, first, axis=-1)
    shift = jnp.where(jnp.any(valid, axis=-1, keepdims=True), shift, 0.0)
    centred = jnp.where(valid, x - shift, 0.0)
    return centred, shift


def causal_moments(x, weights) -> CausalMoments:
    """Running mean and Welford sum of squares along the last axis, using points with weight 1 only."""
    x = x.astype(jnp.float32)
    weights = weights.astype(jnp.float32)
    centred, shift = centre(x, weights > 0)
    count = jnp.cumsum(weights, axis=-1)
    denominator = jnp.maximum(count, 1.0)
    mean_c = jnp.cumsum(centred * weights, axis=-1) / denominator
    previous_mean_c = jnp.concatenate([jnp.zeros_like(mean_c[..., :1]), mean_c[..., :-1]], axis=-1)
    # Welford: every increment is (n-1)/n * delta^2 >= 0, so the running sum does not cancel.
    m2 = jnp.cumsum((centred - previous_mean_c) * (centred - mean_c) * weights, axis=-1)
    return CausalMoments(shift * (count / denominator) + mean_c, m2, count)
