"""RMSNorm, eps added inside the square root (Toto 1.0: eps 1e-8 with a weight; Toto 2.0: its config's eps,
weight optional)."""

from __future__ import annotations

import jax.numpy as jnp
from flax import nnx

RMS_EPS = 1e-8


class RMSNorm(nnx.Module):
    def __init__(self, dim: int, *, eps: float = RMS_EPS, use_scale: bool = True, axis_name: str = "embed"):
        self.eps = eps
        self.scale = nnx.Param(jnp.ones((dim,), jnp.float32), logical_axes=(axis_name,)) if use_scale else None

    def __call__(self, x):
        x32 = x.astype(jnp.float32)
        normed = x32 / jnp.sqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
        if self.scale is not None:
            normed = normed * self.scale[...]
        return normed.astype(x.dtype)
