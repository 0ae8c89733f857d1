"""Gated activations with hand-written gradients: one elementwise pass each way."""

from __future__ import annotations

import jax


@jax.custom_vjp
def swiglu(gate, up):
    """``silu(gate) * up``. Differentiated through ``jax.nn``, silu saves its sigmoid and partial products as extra
    activations and its backward takes several passes over the [tokens, hidden] arrays; this gradient recomputes
    the sigmoid from ``gate`` in the one pass that reads the output's cotangent."""
    return jax.nn.silu(gate) * up


def _swiglu_forward(gate, up):
    return swiglu(gate, up), (gate, up)


def _swiglu_backward(residuals, cotangent):
    gate, up = residuals
    sigmoid = jax.nn.sigmoid(gate)
    silu = gate * sigmoid
    d_gate = cotangent * up * (sigmoid + silu * (1.0 - sigmoid))  # d silu / d gate = s + silu (1 - s)
    return d_gate.astype(gate.dtype), (cotangent * silu).astype(up.dtype)


swiglu.defvjp(_swiglu_forward, _swiglu_backward)
