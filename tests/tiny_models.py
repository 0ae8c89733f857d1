"""A tiny Toto 1.0 for the tests that move checkpoints around (buckets, the Hub), and parameter equality."""

from __future__ import annotations

import numpy as np
from flax import nnx

import toto_jax
from toto_jax.config import TotoConfig


def tiny_toto1() -> toto_jax.Toto:
    config = TotoConfig(
        patch_size=8, stride=8, embed_dim=16, num_heads=2, num_layers=2, mlp_hidden_dim=32,
        spacewise_every_n_layers=2, k_components=2,
    )  # fmt: skip
    return toto_jax.Toto(config, rngs=nnx.Rngs(0))


def assert_same_parameters(a, b):
    flat_a, flat_b = dict(nnx.to_flat_state(nnx.state(a))), dict(nnx.to_flat_state(nnx.state(b)))
    assert flat_a.keys() == flat_b.keys()
    for key in flat_a:
        np.testing.assert_array_equal(np.asarray(flat_a[key][...]), np.asarray(flat_b[key][...]), err_msg=str(key))
