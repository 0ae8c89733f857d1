"""Sharded train steps on 8 virtual CPU devices equal the single-device step; parameters are partitioned."""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np
import pytest
from flax import nnx

from toto_jax.data import make_iterator
from toto_jax.sharding import logical_to_pspec, make_mesh
from toto_jax.train.config import load_config
from toto_jax.train.trainer import TrainProgram

TINY = Path(__file__).parents[1] / "experiments" / "configs" / "tiny.yaml"
FAST_COMPILE = {"xla_backend_optimization_level": 0}


@pytest.fixture(scope="module")
def setup():
    assert jax.device_count() == 8, "conftest.py provides 8 virtual CPU devices"
    config = load_config(TINY)
    batch = next(make_iterator(config.data))
    single = TrainProgram(config, make_mesh((1, 1, 1), devices=jax.devices()[:1]), compiler_options=FAST_COMPILE)
    initial = jax.device_get(single.init(config.seed))
    state, metrics = single.step(single.place(initial), single.put_batch(batch))
    return config, batch, initial, jax.device_get(state), jax.device_get(metrics)


@pytest.mark.parametrize("shape, accumulation", [((8, 1, 1), 1), ((2, 4, 1), 1), ((2, 2, 2), 2)])
def test_sharded_step_matches_single_device(setup, shape, accumulation):
    config, batch, initial, expected_state, expected_metrics = setup
    config = load_config(TINY, [f"mesh.shape={list(shape)}",
                                f"optimizer.accumulation_steps={accumulation}"])  # fmt: skip
    program = TrainProgram(config, make_mesh(shape), compiler_options=FAST_COMPILE)
    state = program.place(initial)

    # parameters (and Adam moments) are laid out as the rules say
    flat = dict(nnx.to_flat_state(state.params))
    moments = dict(nnx.to_flat_state(state.opt_state[1][0].mu))
    partitioned = 0
    for path, variable in flat.items():
        spec = logical_to_pspec(variable.get_metadata()["logical_axes"], program.rules)
        assert variable.value.sharding.spec == spec, path
        assert moments[path].value.sharding.spec == spec, path
        shard_shape = variable.value.addressable_shards[0].data.shape
        expected = tuple(
            size // (np.prod([program.mesh.shape[a] for a in ((axes,) if isinstance(axes, str) else axes)]) if axes else 1)
            for size, axes in zip(variable.value.shape, tuple(spec) + (None,) * (variable.value.ndim - len(spec)))
        )
        assert shard_shape == expected, path
        partitioned += shard_shape != variable.value.shape
    if shape != (8, 1, 1):
        assert partitioned > 0  # fsdp/tensor axes really split parameters

    new_state, metrics = program.step(state, program.put_batch(batch))
    metrics = jax.device_get(metrics)
    for name in ("loss", "nll", "robust", "grad_norm"):
        assert abs(metrics[name] - expected_metrics[name]) <= 1e-5 * abs(expected_metrics[name]), name
    got = jax.tree.leaves(jax.device_get(new_state.params))
    want = jax.tree.leaves(expected_state.params)
    worst = max(float(np.max(np.abs(g - w))) for g, w in zip(got, want))
    assert worst <= 1e-5
    assert int(new_state.step) == 1


def test_batch_not_divisible_by_shards_is_a_clear_error(setup):
    config, batch, *_ = setup
    program = TrainProgram(config, make_mesh((8, 1, 1)))
    small = {k: v[:4] for k, v in batch.items()}
    with pytest.raises(ValueError, match="batch"):
        program.put_batch(small)
