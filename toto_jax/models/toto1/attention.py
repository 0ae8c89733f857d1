"""Time-wise (causal, rotary) and variate-wise (bidirectional, id-masked) multi-head attention.

Both project with one fused QKV kernel of shape [embed, 3, heads, head_dim]. The reference's fused
``wQKV`` orders its output features as (qkv, head_dim, heads); the checkpoint loader permutes them
into (qkv, heads, head_dim) so that heads are contiguous and shard cleanly over a tensor axis.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from ...layers.attention import attend
from ...layers.linear import Dense
from ...sharding import constrain
from .rope import RotaryTables, apply_rotary


CACHE_AXES = ("batch", "variate", "time", "activation_heads", None)


class LayerCache(NamedTuple):
    """Keys and values of one time-wise layer: [batch, variate, max_tokens, heads, head_dim]."""

    keys: jax.Array
    values: jax.Array


class _AttentionBase(nnx.Module):
    def __init__(self, embed_dim: int, num_heads: int, dropout: float, *, dtype=jnp.float32, rngs: nnx.Rngs):
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.scale = 1.0 / float(self.head_dim) ** 0.5
        self.dropout = dropout
        self.wQKV = Dense(
            embed_dim, (3, num_heads, self.head_dim), ("embed", "qkv", "heads", "head_dim"), dtype=dtype, rngs=rngs
        )
        self.wO = Dense(embed_dim, embed_dim, ("heads", "embed"), dtype=dtype, rngs=rngs)

    def _qkv(self, x):
        qkv = self.wQKV(x)  # [..., 3, heads, head_dim]
        qkv = constrain(qkv, ("batch", "variate", "time", None, "activation_heads", None))
        return qkv[..., 0, :, :], qkv[..., 1, :, :], qkv[..., 2, :, :]

    def _out(self, attended):
        merged = attended.reshape(*attended.shape[:-2], -1)  # heads outer, head_dim inner
        return self.wO(merged)


class TimeAttention(_AttentionBase):
    """Causal attention along time for each variate, with rotary xPos positions and an optional KV cache."""

    def __call__(self, x, rotary: RotaryTables, cache: LayerCache | None = None, offset=0, dropout_key=None):
        # x: [batch, variate, time, embed]
        q, k, v = self._qkv(x)
        q = apply_rotary(q, rotary)
        k = apply_rotary(k, rotary, inverse_scale=True)
        length = x.shape[2]
        if cache is None:
            keys, values = k, v
            key_positions = jnp.arange(length)
        else:
            start = (0, 0, offset, 0, 0)
            # The cache is split as the heads that write it (tensor parallelism keeps it local to each device).
            keys = constrain(jax.lax.dynamic_update_slice(cache.keys, k.astype(cache.keys.dtype), start), CACHE_AXES)
            values = constrain(jax.lax.dynamic_update_slice(cache.values, v.astype(cache.values.dtype), start), CACHE_AXES)
            cache = LayerCache(keys, values)
            key_positions = jnp.arange(keys.shape[2])
        query_positions = offset + jnp.arange(length)
        mask = key_positions[None, :] <= query_positions[:, None]  # [Q, K]; also hides unwritten cache slots
        attended = attend(q, keys.astype(q.dtype), values.astype(q.dtype), mask, self.scale, self.dropout, dropout_key)
        return self._out(attended), cache


# Beyond this many variates, variate attention runs over blocks of this many query variates at a time:
# its scores grow with variates squared (2000 variates x 16 patches x 4 heads: 1 GiB per layer at once,
# 64 MiB per block of 128).
VARIATE_QUERY_BLOCK = 128


class VariateAttention(_AttentionBase):
    """Bidirectional attention across variates at each time step, only among variates with equal id."""

    def __call__(self, x, variate_ids, dropout_key=None):
        # x: [batch, variate, time, embed]; variate_ids: [batch, time, variate]
        q, k, v = self._qkv(x)
        swap = lambda t: jnp.swapaxes(t, 1, 2)  # noqa: E731  -> [batch, time, variate, heads, head_dim]
        q, k, v = swap(q), swap(k), swap(v)
        variates = q.shape[2]

        def same_group(query_ids):  # [batch, time, 1 (heads), queries, variates]
            return (query_ids[..., :, None] == variate_ids[..., None, :])[:, :, None]

        if variates <= 2 * VARIATE_QUERY_BLOCK:
            attended = attend(q, k, v, same_group(variate_ids), self.scale, self.dropout, dropout_key)
            return self._out(swap(attended))
        # Query blocks, one at a time (each query's softmax is the same as in one pass); padded queries are dropped.
        blocks = -(-variates // VARIATE_QUERY_BLOCK)
        pad = blocks * VARIATE_QUERY_BLOCK - variates

        def split(t):  # [batch, time, variate, ...] -> [blocks, batch, time, block, ...]
            t = jnp.pad(t, [(0, 0), (0, 0), (0, pad)] + [(0, 0)] * (t.ndim - 3))
            t = t.reshape(*t.shape[:2], blocks, VARIATE_QUERY_BLOCK, *t.shape[3:])
            return jnp.moveaxis(t, 2, 0)

        keys = None if dropout_key is None else jax.random.split(dropout_key, blocks)

        def block(args):
            q_block, ids_block, key = args
            return attend(q_block, k, v, same_group(ids_block), self.scale, self.dropout, key)

        attended = jax.lax.map(block, (split(q), split(variate_ids), keys))
        attended = jnp.moveaxis(attended, 0, 2).reshape(*q.shape[:2], -1, *q.shape[3:])[:, :, :variates]
        return self._out(swap(attended))
