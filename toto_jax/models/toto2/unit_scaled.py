"""u-muP unit-scaled building blocks of Toto 2.0, with the forward and backward scales of dd-unit-scaling /
unit-scaling.

In u-muP an op scales its output and its input gradients separately: ``scale_grad(x, forward, backward)``
is ``forward * x`` going forward and multiplies the incoming gradient by ``backward`` going back (a plain
``x * s`` would use ``s`` both ways). The rules, as toto-2's modules use them by default (one process, no
gradient accumulation, so the "batch" below is counted from the array this call sees; under ``jax.jit``
that is the global array, as dd-unit-scaling's world-size multiplier makes it for data parallelism):

* linear: output ``* fan_in ** -1/2`` (readouts: ``fan_in ** -1``). Input gradient: tied to the output
  scale (the "to_output_scale" constraint of ``uu.Linear``) unless the layer is unconstrained, then
  ``fan_out ** -1/2`` of the reference's (possibly fused) weight. Weight and bias gradients:
  ``batch ** -1/2`` with ``batch = elements of the input / fan_in``. N(0, 1) weights, zero biases.
* residuals: ``residual_split`` leaves the value alone and scales the gradients of the branch by
  ``tau / sqrt(1 + tau^2)`` and of the skip by ``1 / sqrt(1 + tau^2)``; ``residual_add`` applies the same
  factors forward only.
* RMSNorm weight and per-dimension-scale parameter gradients: ``sqrt(dim / elements of the input)``.
* SiLU: one scale both ways (constrained), so its plain JAX gradient is already the reference's.

Parameters carry their u-muP type for the optimisers (``toto_jax.train.umup``) as ``nnx.Param`` metadata:
``mup_type`` ("weight", "output", "bias", "norm"), ``mup_depth`` (the transformer sets its depth on the
parameters inside its layer stack) and ``fused_with`` (the reference's fused matrix a kernel is a column
block of, e.g. attention's ``in_proj``).
"""

from __future__ import annotations

import math
from typing import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from ...layers.activations import swiglu
from ...layers.linear import Dense
from ...layers.norm import RMSNorm

# unit_scaling's empirical output scale of SiLU at mult=1: log-interpolation between 2 and sqrt(2/(1-1/pi)).
_SILU_ALPHA = 1.0 / (1.0 + 0.25)
SILU_OUTPUT_SCALE = math.exp(_SILU_ALPHA * math.log((2 / (1 - 1 / math.pi)) ** 0.5) + (1 - _SILU_ALPHA) * math.log(2.0))
# dd-unit-scaling's softplus: output and input-gradient scales measured for N(0, 1) inputs.
SOFTPLUS_OUTPUT_SCALE = 1.0 / 0.52103
SOFTPLUS_INPUT_GRAD_SCALE = 1.0 / 0.20833444
# per_dim_scale compensates the softplus output scale (identity at zero params), forward and backward.
PER_DIM_OUTPUT_SCALE = 0.52103
# PerDimScale's parameter gradient is divided by what softplus' backward (its grad scale times sigmoid(0))
# and the division by log 2 multiply it by at zero.
PER_DIM_PARAM_GRAD_SCALE = math.log(2.0) / (0.5 * SOFTPLUS_INPUT_GRAD_SCALE)


@jax.custom_vjp
def scale_grad(x, forward, backward):
    """``forward * x``, whose gradient is ``backward *`` the incoming one. The scales (floats or 0-d arrays,
    e.g. the stored residual taus) get no gradient."""
    return (x * forward).astype(x.dtype)


def _scale_grad_forward(x, forward, backward):
    return scale_grad(x, forward, backward), (forward, backward)


def _scale_grad_backward(scales, gradient):
    forward, backward = scales
    return (gradient * backward).astype(gradient.dtype), jnp.zeros_like(forward), jnp.zeros_like(backward)


scale_grad.defvjp(_scale_grad_forward, _scale_grad_backward)


def batch_grad_scale(x, features: int) -> float:
    """u-muP's ``batch ** -1/2`` for gradients of parameters shared by every row of ``x`` (rows of ``features``)."""
    return (x.size // features) ** -0.5


def unit_silu(x):
    return jax.nn.silu(x) * SILU_OUTPUT_SCALE


def _tau_factors(tau):
    """tau may be a Python float or a float32 scalar array (the checkpoints store each layer's tau)."""
    denominator = (1 + tau**2) ** 0.5
    return tau / denominator, 1 / denominator


@jax.custom_vjp
def residual_split(x, tau):
    """(branch input, skip): both ``x``; their gradients scaled by the tau rule and summed into ``x``'s."""
    return x, x


def _residual_split_forward(x, tau):
    return (x, x), tau


def _residual_split_backward(tau, gradients):
    # The sum is formed as [tokens, features], the shape the layers' matmuls read: XLA then hands it to them
    # as it is, and keeps it. As [..., features], the matmuls read a reshape of it, and XLA CPU fused the
    # residual stream's whole chain of scaled sums into each layer's gradient instead, recomputing the
    # later layers' terms for every layer (quadratic in depth: ~55 % of the Toto 2.0 small step's gradient).
    branch_factor, skip_factor = _tau_factors(tau)
    branch, skip = gradients
    rows = lambda g: g.reshape(-1, g.shape[-1])  # noqa: E731
    gradient = (rows(branch) * branch_factor).astype(branch.dtype) + (rows(skip) * skip_factor).astype(skip.dtype)
    return gradient.reshape(branch.shape), jnp.zeros_like(tau)


residual_split.defvjp(_residual_split_forward, _residual_split_backward)


def residual_add(branch, skip, tau):
    """``(tau * branch + skip) / sqrt(1 + tau^2)``; gradients pass unscaled (``residual_split`` scales them)."""
    branch_factor, skip_factor = _tau_factors(tau)
    return scale_grad(branch, branch_factor, 1.0) + scale_grad(skip, skip_factor, 1.0)


class ScaledDense(Dense):
    """Dense with N(0, 1) init whose output is multiplied by ``in_features ** -power``.

    ``input_grad_fan_out``: None ties the input gradient's scale to the output scale (u-muP's constrained
    hidden layer); a number makes it ``input_grad_fan_out ** -1/2``, the fan-out of the reference's weight,
    which for a column block of a fused matrix (SwiGLU's ``fc1``) is the fused width, not this block's.
    """

    def __init__(
        self,
        in_features: int,
        out_shape: int | Sequence[int],
        axes: Sequence[str | None],
        *,
        readout: bool = False,
        input_grad_fan_out: int | None = None,
        fused_with: str | None = None,
        use_bias: bool = False,
        dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        super().__init__(in_features, out_shape, axes, use_bias=use_bias, unit_init=True, dtype=dtype, rngs=rngs)
        self.in_features = in_features
        self.output_scale = 1.0 / in_features if readout else 1.0 / in_features**0.5
        self.input_grad_scale = self.output_scale if input_grad_fan_out is None else input_grad_fan_out**-0.5
        self.kernel.set_metadata(mup_type="output" if readout else "weight")
        if fused_with is not None:
            self.kernel.set_metadata(fused_with=fused_with)
        if self.bias is not None:
            self.bias.set_metadata(mup_type="bias")

    def __call__(self, x):
        parameter_grad_scale = batch_grad_scale(x, self.in_features)
        x = scale_grad(x, 1.0, self.input_grad_scale).astype(self.dtype)
        kernel = scale_grad(self.kernel[...], 1.0, parameter_grad_scale).astype(self.dtype)
        y = jnp.tensordot(x, kernel, axes=((x.ndim - 1,), (0,)))
        if self.bias is not None:
            y = y + scale_grad(self.bias[...], 1.0, parameter_grad_scale).astype(self.dtype)
        return scale_grad(y, self.output_scale, 1.0)


class ScaledRMSNorm(RMSNorm):
    """RMSNorm whose weight gradient is scaled by ``sqrt(dim / elements of the input)``."""

    def __init__(self, dim: int, **kwargs):
        super().__init__(dim, **kwargs)
        if self.scale is not None:
            self.scale.set_metadata(mup_type="norm")

    def __call__(self, x):
        x32 = x.astype(jnp.float32)
        normed = x32 / jnp.sqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
        if self.scale is not None:
            normed = normed * scale_grad(self.scale[...], 1.0, batch_grad_scale(x, x.shape[-1]))
        return normed.astype(x.dtype)


class PerDimScale(nnx.Module):
    """A learned positive factor per feature, ``softplus(p) / log 2`` (1 at p = 0)."""

    def __init__(self, dim: int):
        self.per_dim_scale = nnx.Param(jnp.zeros((dim,), jnp.float32), logical_axes=("head_dim",), mup_type="norm")

    def __call__(self, x):
        p = scale_grad(self.per_dim_scale[...], 1.0, PER_DIM_PARAM_GRAD_SCALE)
        softplus = jax.nn.softplus(scale_grad(p, 1.0, SOFTPLUS_INPUT_GRAD_SCALE))
        softplus = scale_grad(softplus, SOFTPLUS_OUTPUT_SCALE, 1.0)
        factor = scale_grad((softplus / math.log(2.0)).astype(x.dtype), 1.0, batch_grad_scale(x, x.shape[-1]))
        return scale_grad(scale_grad(x, 1.0, PER_DIM_OUTPUT_SCALE) * factor, PER_DIM_OUTPUT_SCALE, 1.0)


class ResidualMLP(nnx.Module):
    """``add(linear2(silu(linear1(x))), skip_proj(x))`` with tau 1: the input embedding and the output head.

    ``kind="input"``: all hidden scales, ``linear1`` and ``skip_proj`` unconstrained; ``kind="output"``:
    ``linear2`` and ``skip_proj`` are unconstrained readouts (toto-2's Input/OutputResidualMLP).
    """

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, axes, *, kind: str, dtype, rngs: nnx.Rngs):
        in_axis, out_axis = axes
        readout = kind == "output"
        dense = dict(use_bias=True, dtype=dtype, rngs=rngs)
        self.linear1 = ScaledDense(in_dim, hidden_dim, (in_axis, "mlp"),
                                   input_grad_fan_out=None if readout else hidden_dim, **dense)  # fmt: skip
        self.linear2 = ScaledDense(hidden_dim, out_dim, ("mlp", out_axis), readout=readout,
                                   input_grad_fan_out=out_dim if readout else None, **dense)  # fmt: skip
        self.skip_proj = ScaledDense(in_dim, out_dim, (in_axis, out_axis), readout=readout, input_grad_fan_out=out_dim,
                                     **dense)  # fmt: skip

    def __call__(self, x):
        branch, skip = residual_split(x, 1.0)
        return residual_add(self.linear2(unit_silu(self.linear1(branch))), self.skip_proj(skip), 1.0)


class SwiGLU(nnx.Module):
    """``w_out(silu(x @ w_gate) * (x @ w_up))``; the reference's fused ``fc1`` holds [w_up | w_gate].

    Both reference linears are unconstrained: input gradients scale by their fan-outs (``fc1``: both halves).
    """

    def __init__(self, embed_dim: int, hidden_dim: int, *, use_bias: bool, dtype, rngs: nnx.Rngs):
        # fc1 is one linear of fan-in embed_dim: both halves share its output scale.
        fc1 = dict(input_grad_fan_out=2 * hidden_dim, fused_with="fc1", use_bias=use_bias, dtype=dtype, rngs=rngs)
        self.w_up = ScaledDense(embed_dim, hidden_dim, ("embed", "mlp"), **fc1)
        self.w_gate = ScaledDense(embed_dim, hidden_dim, ("embed", "mlp"), **fc1)
        self.w_out = ScaledDense(hidden_dim, embed_dim, ("mlp", "embed"), input_grad_fan_out=embed_dim,
                                 use_bias=use_bias, dtype=dtype, rngs=rngs)  # fmt: skip

    def __call__(self, x):
        return self.w_out(swiglu(self.w_gate(x), self.w_up(x)))
