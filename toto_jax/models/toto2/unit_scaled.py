"""u-muP unit-scaled building blocks of Toto 2.0 (forward semantics of dd-unit-scaling / unit-scaling).

A unit-scaled linear multiplies its output (bias included) by ``fan_in ** -1/2`` (hidden layers) or
``fan_in ** -1`` (readouts), so N(0, 1) weights keep activations at unit scale. Residual branches are
mixed by a tau rule: ``add(branch, skip) = (tau * branch + skip) / sqrt(1 + tau^2)``. Only the forward
scales live here; the separate backward scales of u-muP training belong to the training code.
"""

from __future__ import annotations

import math
from typing import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from ...layers.linear import Dense

# unit_scaling's empirical output scale of SiLU at mult=1: log-interpolation between 2 and sqrt(2/(1-1/pi)).
_SILU_ALPHA = 1.0 / (1.0 + 0.25)
SILU_OUTPUT_SCALE = math.exp(_SILU_ALPHA * math.log((2 / (1 - 1 / math.pi)) ** 0.5) + (1 - _SILU_ALPHA) * math.log(2.0))
# dd-unit-scaling's softplus output scale, and per_dim_scale's compensation of it (identity at zero params).
SOFTPLUS_OUTPUT_SCALE = 1.0 / 0.52103
PER_DIM_OUTPUT_SCALE = 0.52103


def unit_silu(x):
    return jax.nn.silu(x) * SILU_OUTPUT_SCALE


def residual_add(branch, skip, tau):
    """tau may be a Python float or a float32 scalar array (the checkpoints store each layer's tau)."""
    denominator = (1 + tau**2) ** 0.5
    return branch * (tau / denominator) + skip * (1 / denominator)


class ScaledDense(Dense):
    """Dense with N(0, 1) init whose output is multiplied by ``in_features ** -power``."""

    def __init__(
        self,
        in_features: int,
        out_shape: int | Sequence[int],
        axes: Sequence[str | None],
        *,
        readout: bool = False,
        use_bias: bool = False,
        dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        super().__init__(in_features, out_shape, axes, use_bias=use_bias, unit_init=True, dtype=dtype, rngs=rngs)
        self.output_scale = 1.0 / in_features if readout else 1.0 / in_features**0.5

    def __call__(self, x):
        return super().__call__(x) * self.output_scale


class PerDimScale(nnx.Module):
    """A learned positive factor per feature, ``softplus(p) / log 2`` (1 at p = 0)."""

    def __init__(self, dim: int):
        self.per_dim_scale = nnx.Param(jnp.zeros((dim,), jnp.float32), logical_axes=("head_dim",))

    def __call__(self, x):
        factor = (jax.nn.softplus(self.per_dim_scale[...]) * SOFTPLUS_OUTPUT_SCALE) / math.log(2.0)
        return (x * factor.astype(x.dtype)) * PER_DIM_OUTPUT_SCALE


class ResidualMLP(nnx.Module):
    """``add(linear2(silu(linear1(x))), skip_proj(x))`` with tau 1: the input embedding and the output head.

    ``kind="input"``: all hidden scales; ``kind="output"``: ``linear2`` and ``skip_proj`` are readouts.
    """

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, axes, *, kind: str, dtype, rngs: nnx.Rngs):
        in_axis, out_axis = axes
        readout = kind == "output"
        self.linear1 = ScaledDense(in_dim, hidden_dim, (in_axis, "mlp"), use_bias=True, dtype=dtype, rngs=rngs)
        self.linear2 = ScaledDense(
            hidden_dim, out_dim, ("mlp", out_axis), readout=readout, use_bias=True, dtype=dtype, rngs=rngs
        )
        self.skip_proj = ScaledDense(
            in_dim, out_dim, (in_axis, out_axis), readout=readout, use_bias=True, dtype=dtype, rngs=rngs
        )

    def __call__(self, x):
        return residual_add(self.linear2(unit_silu(self.linear1(x))), self.skip_proj(x), 1.0)


class SwiGLU(nnx.Module):
    """``w_out(silu(x @ w_gate) * (x @ w_up))``; the reference's fused ``fc1`` holds [w_up | w_gate]."""

    def __init__(self, embed_dim: int, hidden_dim: int, *, use_bias: bool, dtype, rngs: nnx.Rngs):
        # fc1 is one linear of fan-in embed_dim: both halves share its output scale.
        self.w_up = ScaledDense(embed_dim, hidden_dim, ("embed", "mlp"), use_bias=use_bias, dtype=dtype, rngs=rngs)
        self.w_gate = ScaledDense(embed_dim, hidden_dim, ("embed", "mlp"), use_bias=use_bias, dtype=dtype, rngs=rngs)
        self.w_out = ScaledDense(hidden_dim, embed_dim, ("mlp", "embed"), use_bias=use_bias, dtype=dtype, rngs=rngs)

    def __call__(self, x):
        return self.w_out(self.w_up(x) * jax.nn.silu(self.w_gate(x)))
