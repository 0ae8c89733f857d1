"""Variate attention over many variates runs in blocks of query variates: the same outputs and gradients
as one pass (which the reference-parity tests check on few variates), with a fraction of the memory."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from toto_jax.models.toto1 import attention
from toto_jax.models.toto1.attention import VariateAttention


def test_blocked_variate_attention_equals_one_pass(monkeypatch):
    """200 variates in two id groups (blocks of 32 here: the last block padded, groups crossing block
    edges) give the outputs and parameter gradients of the one-pass computation; XLA's buffer assignment
    shows the blocked program needs less memory."""
    monkeypatch.setattr(attention, "VARIATE_QUERY_BLOCK", 32)
    layer = VariateAttention(32, 4, 0.0, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(1), (2, 200, 3, 32))
    ids = jnp.broadcast_to((jnp.arange(200) >= 120).astype(jnp.int32), (2, 3, 200))

    def run(layer, x):
        return layer(x, ids)

    def loss(layer, x):
        return jnp.sum(run(layer, x) ** 2)

    assert 200 > 2 * attention.VARIATE_QUERY_BLOCK
    blocked, blocked_grads = run(layer, x), nnx.grad(loss)(layer, x)
    blocked_bytes = jax.jit(lambda x: run(layer, x)).lower(x).compile().memory_analysis().temp_size_in_bytes
    monkeypatch.setattr(attention, "VARIATE_QUERY_BLOCK", 1024)  # one pass
    whole, whole_grads = run(layer, x), nnx.grad(loss)(layer, x)
    whole_bytes = jax.jit(lambda x: run(layer, x)).lower(x).compile().memory_analysis().temp_size_in_bytes
    np.testing.assert_allclose(blocked, whole, rtol=1e-5, atol=1e-6)
    for a, b in zip(jax.tree.leaves(nnx.state(blocked_grads)), jax.tree.leaves(nnx.state(whole_grads))):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    assert blocked_bytes < 0.5 * whole_bytes
    # a variate of the second group attends only to its group: changing the first group leaves it unchanged
    changed = x.at[:, :120].set(0.0)
    np.testing.assert_allclose(run(layer, changed)[:, 120:], whole[:, 120:], rtol=1e-5, atol=1e-6)
