"""Toto 2.0 attention: fused q/k/v projections with grouped-query heads, QK RMSNorm, an optional learned
per-dimension query scale, logits scaled by 1/d_k (u-muP), and unit-scaled in/out projections.

Time attention is causal with rotary positions on the first half of each head (optionally xPos scaled) and
masks patches across group ids; variate attention is bidirectional among variates with equal group id.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from ...layers.attention import attend
from ...sharding import constrain
from .config import Toto2Config
from .unit_scaled import PerDimScale, ScaledDense, ScaledRMSNorm

ROPE_BASE = 10000.0
XPOS_SCALE_BASE = 256.0


class Rotary(NamedTuple):
    """Tables for the rotated first half of each head: [tokens, head_dim // 2] each."""

    cos: jax.Array
    sin: jax.Array
    query_scale: jax.Array  # xPos: queries multiply by it, keys divide (ones without xPos)


def rotary_tables(positions, head_dim: int, use_xpos: bool, last_position=None) -> Rotary:
    """positions: [tokens]. xPos centres on floor((last position + 1) / 2) of the call; ``last_position``
    (default: the largest position) is the last *real* token when a call is padded past it."""
    width = head_dim // 2
    positions = positions.astype(jnp.float32)
    theta = 1.0 / (ROPE_BASE ** (jnp.arange(0, width, 2, dtype=jnp.float32) / width))
    angles = jnp.repeat(positions[:, None] * theta[None, :], 2, axis=-1)
    if use_xpos:
        base = (jnp.arange(0, width, 2, dtype=jnp.float32) + 0.4 * width) / (1.4 * width)
        last = jnp.max(positions) if last_position is None else jnp.asarray(last_position, jnp.float32)
        centre = jnp.floor((last + 1.0) / 2.0)
        scale = jnp.repeat(base[None, :] ** ((positions - centre) / XPOS_SCALE_BASE)[:, None], 2, axis=-1)
    else:
        scale = jnp.ones_like(angles)
    return Rotary(jnp.cos(angles), jnp.sin(angles), scale)


def _rotate_pairs(x):
    pairs = x.reshape(*x.shape[:-1], -1, 2)
    return jnp.stack([-pairs[..., 1], pairs[..., 0]], axis=-1).reshape(x.shape)


def apply_rotary(x, rotary: Rotary, key: bool):
    """x: [..., tokens, heads, head_dim]; rotates (and xPos-scales) the first half of the head."""
    width = x.shape[-1] // 2
    part, rest = x[..., :width], x[..., width:]
    cos, sin, scale = (t[:, None, :] for t in rotary)  # broadcast over heads
    rotated = cos * part + sin * _rotate_pairs(part)
    rotated = rotated / scale if key else rotated * scale
    return jnp.concatenate([rotated.astype(x.dtype), rest], axis=-1)


CACHE_AXES = ("batch", "variate", "time", "activation_kv_heads", None)


class LayerCache(NamedTuple):
    """Keys and values of one time layer: [batch, variate, max_tokens, kv_heads, head_dim]."""

    keys: jax.Array
    values: jax.Array


class _Attention(nnx.Module):
    def __init__(self, config: Toto2Config, *, dtype, rngs: nnx.Rngs):
        d, heads, kv_heads = config.d_model, config.num_heads, config.kv_heads
        bias = config.attn_bias
        # The reference's fused in_proj has fan-in d_model: the split projections keep its output scale.
        in_proj = dict(fused_with="in_proj", use_bias=bias, dtype=dtype, rngs=rngs)
        self.q_proj = ScaledDense(d, (heads, config.head_dim), ("embed", "heads", "head_dim"), **in_proj)
        self.k_proj = ScaledDense(d, (kv_heads, config.head_dim), ("embed", "kv_heads", "head_dim"), **in_proj)
        self.v_proj = ScaledDense(d, (kv_heads, config.value_dim), ("embed", "kv_heads", "head_dim"), **in_proj)
        self.out_proj = ScaledDense(heads * config.value_dim, d, ("heads", "embed"), use_bias=bias, dtype=dtype,
                                    rngs=rngs)  # fmt: skip
        norm = dict(eps=config.norm_eps, use_scale=config.qk_norm_weight, axis_name="head_dim")
        self.q_norm = ScaledRMSNorm(config.head_dim, **norm) if config.qk_norm else None
        self.k_norm = ScaledRMSNorm(config.head_dim, **norm) if config.qk_norm else None
        self.per_dim_scale = PerDimScale(config.head_dim) if config.per_dim_scale else None
        self.scale = 1.0 / config.head_dim

    def _qkv(self, x):
        q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)  # [..., tokens, heads, dim]
        q = constrain(q, ("batch", "variate", "time", "activation_heads", None))
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        if self.per_dim_scale is not None:
            q = self.per_dim_scale(q)
        return q, k, v

    def _out(self, attended):
        return self.out_proj(attended.reshape(*attended.shape[:-2], -1))


class TimeAttention(_Attention):
    """x: [batch, variate, tokens, embed]; mask: [batch, variate, 1, tokens, keys]."""

    def __call__(self, x, rotary: Rotary, mask, cache: LayerCache | None = None, offset=0):
        q, k, v = self._qkv(x)
        q, k = apply_rotary(q, rotary, key=False), apply_rotary(k, rotary, key=True)
        if cache is not None:
            start = (0, 0, offset, 0, 0)
            # The cache is split as the key/value heads that write it (tensor parallelism keeps it local).
            k = constrain(jax.lax.dynamic_update_slice(cache.keys, k.astype(cache.keys.dtype), start), CACHE_AXES)
            v = constrain(jax.lax.dynamic_update_slice(cache.values, v.astype(cache.values.dtype), start), CACHE_AXES)
            cache = LayerCache(k, v)
        attended = attend(q, k.astype(q.dtype), v.astype(q.dtype), mask, self.scale)
        return self._out(attended), cache


class VariateAttention(_Attention):
    """x: [batch, variate, tokens, embed]; mask: [batch, tokens, 1, variate, variate]."""

    def __call__(self, x, mask):
        q, k, v = (jnp.swapaxes(t, 1, 2) for t in self._qkv(x))  # [batch, tokens, variate, heads, dim]
        return self._out(jnp.swapaxes(attend(q, k, v, mask, self.scale), 1, 2))
