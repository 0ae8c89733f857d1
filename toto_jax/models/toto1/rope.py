"""Rotary position embedding with xPos scaling, computed exactly as the reference does.

Two quirks of the reference are kept on purpose, because published weights were trained with them:
- the xPos scale vector is tiled as ``cat(scale, scale)`` while the rotation pairs neighbouring
  features ``(0, 1), (2, 3), ...``; so feature ``j`` is scaled by ``scale[j % (head_dim // 2)]``;
- the xPos exponent is centred on ``floor(max_position / 2)`` of the positions processed *in that
  call*. While decoding with a KV cache, keys cached from the context call keep the centre of the
  context call, and each decoded patch uses its own centre.
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp

ROPE_THETA = 10000.0
XPOS_SCALE_BASE = 512.0


class RotaryTables(NamedTuple):
    cos: jnp.ndarray  # [time, head_dim]
    sin: jnp.ndarray
    scale: jnp.ndarray  # xPos scale for queries; keys use its inverse


def _xpos_base(head_dim: int):
    even = jnp.arange(0, head_dim, 2, dtype=jnp.float32)
    return (even + 0.4 * head_dim) / (1.4 * head_dim)


def xpos_key_recentre(centre_from, centre_to, head_dim: int):
    """Factor [head_dim] turning keys rotated under xPos centre ``centre_from`` into keys under ``centre_to``.

    Keys are divided by ``base ** ((position - centre) / 512)``, so moving the centre is one constant
    factor per feature (tiled like the scale itself).
    """
    factor = _xpos_base(head_dim) ** ((centre_to - centre_from) / XPOS_SCALE_BASE)
    return jnp.concatenate([factor, factor])


def rotary_tables(offset, length: int, head_dim: int) -> RotaryTables:
    """Tables for positions ``offset .. offset + length - 1`` (``offset`` may be traced)."""
    positions = jnp.asarray(offset, jnp.float32) + jnp.arange(length, dtype=jnp.float32)
    even = jnp.arange(0, head_dim, 2, dtype=jnp.float32)
    inverse_frequency = 1.0 / (ROPE_THETA ** (even / head_dim))
    angles = jnp.repeat(positions[:, None] * inverse_frequency[None, :], 2, axis=-1)
    centre = jnp.floor(positions[-1] / 2.0)
    power = (positions - centre) / XPOS_SCALE_BASE
    scale = _xpos_base(head_dim)[None, :] ** power[:, None]
    scale = jnp.concatenate([scale, scale], axis=-1)
    return RotaryTables(jnp.cos(angles), jnp.sin(angles), scale)


def _rotate_half(x):
    pairs = x.reshape(*x.shape[:-1], -1, 2)
    return jnp.stack([-pairs[..., 1], pairs[..., 0]], axis=-1).reshape(x.shape)


def apply_rotary(x, tables: RotaryTables, inverse_scale: bool = False):
    """Rotate ``x`` of shape [..., time, heads, head_dim]; keys pass ``inverse_scale=True``."""
    scale = 1.0 / tables.scale if inverse_scale else tables.scale
    cos, sin, scale = (t[:, None, :] for t in (tables.cos, tables.sin, scale))  # broadcast over heads
    out = (x.astype(jnp.float32) * cos * scale) + (_rotate_half(x.astype(jnp.float32)) * sin * scale)
    return out.astype(x.dtype)
