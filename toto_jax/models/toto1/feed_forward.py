"""SwiGLU feed-forward: ``w_out(silu(x @ w_gate) * (x @ w_up))`` (the reference chunks gate first)."""

from __future__ import annotations

import jax.numpy as jnp
from flax import nnx

from ...layers.activations import swiglu
from ...layers.linear import Dense
from ...sharding import constrain


class SwiGLU(nnx.Module):
    def __init__(self, embed_dim: int, hidden_dim: int, *, dtype=jnp.float32, rngs: nnx.Rngs):
        self.w_gate = Dense(embed_dim, hidden_dim, ("embed", "mlp"), dtype=dtype, rngs=rngs)
        self.w_up = Dense(embed_dim, hidden_dim, ("embed", "mlp"), dtype=dtype, rngs=rngs)
        self.w_out = Dense(hidden_dim, embed_dim, ("mlp", "embed"), dtype=dtype, rngs=rngs)

    def __call__(self, x):
        hidden = swiglu(self.w_gate(x), self.w_up(x))
        hidden = constrain(hidden, ("batch", "variate", "time", "activation_mlp"))
        return self.w_out(hidden)
