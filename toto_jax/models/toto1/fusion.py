"""Variate-label fusion for exogenous variables (the reference's ``enable_variate_labels``).

Each variate gets one extra token prepended to its sequence: the L2-normalised *target* label, or the
*exogenous* label for the last ``num_exogenous_variables`` variates.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx


class VariateLabels(nnx.Module):
    def __init__(self, embed_dim: int, *, rngs: nnx.Rngs):
        self.target_variate_label = nnx.Param(jax.random.normal(rngs.params(), (embed_dim,)), logical_axes=("embed",))
        self.exogenous_variate_label = nnx.Param(
            jax.random.normal(rngs.params(), (embed_dim,)), logical_axes=("embed",)
        )

    def prepend(self, tokens, token_ids, num_exogenous_variables: int):
        batch, variate, _, embed = tokens.shape
        is_exogenous = jnp.arange(variate) >= variate - num_exogenous_variables
        labels = jnp.where(
            is_exogenous[:, None], self.exogenous_variate_label[...][None], self.target_variate_label[...][None]
        )
        labels = labels / jnp.maximum(jnp.linalg.norm(labels, axis=-1, keepdims=True), 1e-12)
        labels = jnp.broadcast_to(labels[None, :, None, :], (batch, variate, 1, embed)).astype(tokens.dtype)
        return jnp.concatenate([labels, tokens], axis=2), jnp.concatenate([token_ids[..., :1], token_ids], axis=2)
