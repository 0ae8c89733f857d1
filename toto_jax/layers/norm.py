"""RMSNorm with the reference's epsilon (1e-8), eps added inside the square root."""

from __future__ import annotations

import jax.numpy as jnp
from flax import nnx

RMS_EPS = 1e-8


class RMSNorm(nnx.Module):
    def __init__(self, dim: int, *, rngs: nnx.Rngs | None = None):
        self.scale = nnx.Param(jnp.ones((dim,), jnp.float32), logical_axes=("embed",))

    def __call__(self, x):
        x32 = x.astype(jnp.float32)
        normed = x32 / jnp.sqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + RMS_EPS)
        return (normed * self.scale[...]).astype(x.dtype)
