"""The softmax attention core shared by both model families, with grouped-query heads."""

from __future__ import annotations

import jax
import jax.numpy as jnp

NEG_INF = jnp.finfo(jnp.float32).min


def attend(q, k, v, mask, scale: float, dropout_rate: float = 0.0, dropout_key=None):
    """Softmax attention over axis -3 of k/v.

    q: [..., Q, Hq, D]; k, v: [..., K, Hkv, D] with Hq a multiple of Hkv (query head h reads key/value
    head h // (Hq // Hkv), as grouped-query attention repeats each key head); mask broadcasts against
    [..., Hq, Q, K]. Returns [..., Q, Hq, D].
    """
    heads, kv_heads = q.shape[-2], k.shape[-2]
    group = heads // kv_heads
    grouped = q.reshape(*q.shape[:-2], kv_heads, group, q.shape[-1])
    logits = jnp.einsum("...qhgd,...khd->...hgqk", grouped, k, preferred_element_type=jnp.float32)
    logits = logits.reshape(*logits.shape[:-4], heads, *logits.shape[-2:]) * scale
    logits = jnp.where(mask, logits, NEG_INF)
    weights = jax.nn.softmax(logits, axis=-1)
    if dropout_key is not None and dropout_rate > 0.0:
        keep = jax.random.bernoulli(dropout_key, 1.0 - dropout_rate, weights.shape)
        weights = jnp.where(keep, weights / (1.0 - dropout_rate), 0.0)
    weights = weights.reshape(*weights.shape[:-3], kv_heads, group, *weights.shape[-2:])
    attended = jnp.einsum("...hgqk,...khd->...qhgd", weights.astype(v.dtype), v)
    return attended.reshape(*attended.shape[:-3], heads, attended.shape[-1])
