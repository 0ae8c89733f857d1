"""Patch embedding: each variate is cut into patches (length ``patch_size``, step ``stride``) and projected."""

from __future__ import annotations

import jax.numpy as jnp
from flax import nnx

from ...layers.linear import Dense


def patchify(x, patch_size: int, stride: int):
    """[..., time] -> [..., patches, patch_size]."""
    time = x.shape[-1]
    if stride == patch_size:
        return x.reshape(*x.shape[:-1], time // patch_size, patch_size)
    count = (time - patch_size) // stride + 1
    index = jnp.arange(count)[:, None] * stride + jnp.arange(patch_size)[None, :]
    return x[..., index]


class PatchEmbedding(nnx.Module):
    def __init__(self, patch_size: int, stride: int, embed_dim: int, *, dtype=jnp.float32, rngs: nnx.Rngs):
        self.patch_size = patch_size
        self.stride = stride
        self.projection = Dense(patch_size, embed_dim, ("patch", "embed"), dtype=dtype, rngs=rngs)

    def __call__(self, scaled, id_mask):
        """Returns tokens [batch, variate, patches, embed] and one id per token [batch, variate, patches].

        A patch must not span two ids; ``toto_jax.models.toto1.validate_inputs`` checks that on concrete input.
        """
        tokens = self.projection(patchify(scaled, self.patch_size, self.stride))
        token_ids = patchify(id_mask, self.patch_size, self.stride).min(axis=-1)
        return tokens, token_ids
