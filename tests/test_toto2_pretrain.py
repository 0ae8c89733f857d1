"""Toto 2.0 pretraining: config dispatch, hidden spans and the pinball loss against hand-computed numbers,
hidden points presented to the model as forecast patches are, a tiny model learning, bit-exact resume of
``train()`` and a sharded step equal to the single-device one.

One compiled single-device program is shared by the learning, resume and sharding tests (compiles dominate).
The u-muP AdamW is used there (NorMuon's step compiles slower; its parity is in test_toto2_training.py).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from toto_jax.config import ConfigError, TotoConfig
from toto_jax.data import make_iterator
from toto_jax.models.toto2 import Toto2
from toto_jax.models.toto2.config import QUANTILE_LEVELS
from toto_jax.models.toto2.forecast import QuantileSpec, forecast_quantiles
from toto_jax.models.toto2.model import Toto2Output
from toto_jax.sharding import make_mesh
from toto_jax.train import toto2_objective
from toto_jax.train.checkpointing import load_model_from_run
from toto_jax.train.config import TrainConfig, load_config
from toto_jax.train.optimizer import make_optimizer
from toto_jax.train.toto2_objective import MaskingConfig, hidden_spans, pinball_loss, quantile_loss_terms
from toto_jax.train.trainer import TrainProgram, toto2_training_flops_per_step, train

ROOT = Path(__file__).parents[1]
TINY = ROOT / "experiments" / "configs" / "toto2_tiny.yaml"
FAST_COMPILE = {"xla_backend_optimization_level": 0}
OVERRIDES = (
    "optimizer.name=umup_adamw", "optimizer.learning_rate=1e-2", "logging.peak_flops_per_device=1e12",
    "logging.progress_bar=false", "logging.tensorboard=false", "checkpoint.async_save=false",
)  # fmt: skip


# ---- config ------------------------------------------------------------------------------------------------
def test_family_selects_the_model_config():
    config = load_config(TINY)
    assert config.model.family == "toto2" and config.optimizer.resolved_name("toto2") == "umup_normuon"
    assert TrainConfig.from_dict(config.to_dict()) == config  # the dumped run config reads back
    assert load_config(None).model == TotoConfig()  # Toto 1.0 stays the default
    with pytest.raises(ConfigError, match="model.family"):
        load_config(TINY, ["model.family=toto3"])
    with pytest.raises(ValueError, match="model.family toto2"):
        load_config(None, ["optimizer.name=umup_normuon"])
    with pytest.raises(ConfigError, match="masking.min_span_patches"):
        load_config(TINY, ["masking.min_span_patches=5", "masking.max_span_patches=2"])


def test_normuon_takes_the_matrices_and_adamw_the_rest():
    config = load_config(TINY)
    params = jax.eval_shape(lambda: nnx.state(Toto2(config.model), nnx.Param))
    state = jax.eval_shape(make_optimizer(config.optimizer, params, "toto2").init, params)
    labels = str(state)
    assert "UmupNorMuonState" in labels and "UmupAdamWState" in labels


def test_flops_grow_with_batch_and_quadratically_in_attention():
    model = load_config(TINY).model
    one, two = (toto2_training_flops_per_step(model, b, 4, 72) for b in (1, 2))
    assert one > 0 and two == pytest.approx(2 * one)


# ---- spans and loss ------------------------------------------------------------------------------------------
def runs(row) -> list[tuple[int, int]]:
    """(start, length) of the True runs of a 1-D bool array."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], row.astype(int), [0]])))
    return [(int(a), int(b - a)) for a, b in zip(edges[::2], edges[1::2])]


def test_hidden_spans_are_one_contiguous_run_per_target_variate():
    patch, shape = 4, (64, 3, 40)
    masking = MaskingConfig(min_span_patches=2, max_span_patches=5, forecast_probability=0.3)
    draw = lambda key, masking: jax.jit(lambda k: hidden_spans(k, shape, patch, masking, 1))(key)  # noqa: E731
    hidden = np.asarray(draw(jax.random.PRNGKey(0), masking))
    np.testing.assert_array_equal(hidden, np.repeat(hidden[..., ::patch], patch, axis=-1))  # whole patches
    assert not hidden[:, 2].any() and not hidden[..., :patch].any()  # exogenous variate, first patch
    for row in hidden[:, :2, ::patch].reshape(-1, 10):
        ((start, length),) = runs(row)
        assert start >= 1 and 2 <= length <= 5
    np.testing.assert_array_equal(hidden, draw(jax.random.PRNGKey(0), masking))
    # Forecast samples: every target variate hides the same tail.
    forecast = dataclasses.replace(masking, forecast_probability=1.0)
    tails = np.asarray(draw(jax.random.PRNGKey(1), forecast))[:, :, ::patch]
    np.testing.assert_array_equal(tails[:, 0], tails[:, 1])
    assert tails[:, :2, -1].all() and 2 <= tails[:, 0].sum(-1).min() and tails[:, 0].sum(-1).max() <= 5


def test_pinball_loss_by_hand_and_against_numpy():
    target = jnp.ones((1,))
    assert float(pinball_loss(jnp.zeros((9, 1)), target)[0]) == pytest.approx(0.5)  # mean of the levels
    assert float(pinball_loss(jnp.full((9, 1), 3.0), target)[0]) == pytest.approx(2 * 0.5)  # mean of 1 - level
    rng = np.random.default_rng(0)
    quantiles, target = rng.standard_normal((9, 7)), rng.standard_normal(7)
    expected = np.mean([[max(q * (y - x), (q - 1) * (y - x)) for x, y in zip(row, target)]
                        for q, row in zip(QUANTILE_LEVELS, quantiles)], axis=0)  # fmt: skip
    np.testing.assert_allclose(pinball_loss(jnp.asarray(quantiles), jnp.asarray(target)), expected, rtol=1e-6)


def test_loss_counts_hidden_observed_target_points_in_scaled_space():
    patch, batch, variates, time = 2, 1, 2, 8
    series = np.arange(1.0, 1.0 + variates * time, dtype=np.float32).reshape(batch, variates, time)
    observed = np.ones(series.shape, bool)
    observed[0, 0, 5] = False  # unobserved: not counted though hidden
    hidden = np.zeros(series.shape, bool)
    hidden[0, :, 4:8] = True  # patches 2 and 3 of both variates; variate 1 is exogenous
    loc, scale = np.full(series.shape, 2.0, np.float32), np.full(series.shape, 4.0, np.float32)
    quantiles = np.zeros((9, batch, variates, time // patch, patch), np.float32)
    output = Toto2Output(jnp.asarray(quantiles), jnp.asarray(loc), jnp.asarray(scale))
    terms = quantile_loss_terms(output, jnp.asarray(series), jnp.asarray(observed), jnp.asarray(hidden), patch,
                                num_exogenous_variables=1)  # fmt: skip
    counted = series[0, 0, [4, 6, 7]]  # hidden, observed, target variate
    scaled = np.arcsinh((counted - 2.0) / 4.0)
    assert float(terms.count) == 3
    assert float(terms.loss) == pytest.approx(float(np.sum(0.5 * scaled)), rel=1e-6)  # quantiles 0 below target


def test_hidden_points_reach_the_model_as_forecast_patches():
    """A hidden tail gives the quantiles forecasting gives for the same context (one pass), and the values
    under a hidden span do not matter."""
    config = load_config(TINY).model
    graphdef, state = nnx.split(Toto2(config, rngs=nnx.Rngs(3)))
    patch, context, horizon = config.patch_size, 32, 3
    rng = np.random.default_rng(0)
    series = (5 + rng.standard_normal((2, 3, context + horizon * patch))).astype(np.float32)
    hidden = np.zeros(series.shape, bool)
    hidden[..., context:] = True
    ids = np.array([[0, 0, 1], [0, 1, 1]], np.int32)
    call = jax.jit(lambda state, series: nnx.merge(graphdef, state)(series, None, ids, hidden=hidden),
                   compiler_options=FAST_COMPILE)  # fmt: skip
    output = call(state, series)
    np.testing.assert_array_equal(output.quantiles, call(state, np.where(hidden, 100.0, series)).quantiles)
    scaled = output.quantiles[..., context // patch - 1 : -1, :]
    as_patches = lambda x: x[..., context:].reshape(*x.shape[:-1], horizon, patch)  # noqa: E731
    real = jnp.sort(jnp.sinh(scaled) * as_patches(output.scale) + as_patches(output.loc), axis=0)
    future = np.zeros((2, 3, horizon * patch), np.float32)
    forecast = lambda state, *arrays: forecast_quantiles(nnx.merge(graphdef, state), QuantileSpec(horizon, horizon),
                                                         *arrays)  # noqa: E731
    expected = jax.jit(forecast, compiler_options=FAST_COMPILE)(
        state, series[..., :context], np.ones((2, 3, context), bool), future, future.astype(bool), ids,
        np.ones((2, 3), bool),
    )
    np.testing.assert_allclose(real.reshape(expected.shape), expected, rtol=1e-5, atol=1e-5)


# ---- training ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def config():
    return load_config(TINY, OVERRIDES)


@pytest.fixture(scope="module")
def program(config):
    return TrainProgram(config, make_mesh((1, 1, 1), devices=jax.devices()[:1]), compiler_options=FAST_COMPILE)


def held_out_windows(config, batches: int = 4) -> dict[str, np.ndarray]:
    """Windows from another data seed; their last two patches are scored (hidden and forecast)."""
    iterator = make_iterator(dataclasses.replace(config.data, seed=123))
    windows = [next(iterator) for _ in range(batches)]
    windows = {key: np.concatenate([w[key] for w in windows]) for key in ("series", "padding_mask", "id_mask")}
    scored = np.zeros(windows["series"].shape, bool)
    scored[..., -2 * config.model.patch_size :] = True
    return {**windows, "scored": scored}


def test_a_tiny_model_learns(config, program):
    windows = held_out_windows(config)
    state = program.init(config.seed)
    before = program.validation_loss(state.params, windows)
    iterator = make_iterator(config.data)
    for _ in range(40):
        state, metrics = program.step(state, program.put_batch(next(iterator)))
    after = program.validation_loss(state.params, windows)
    assert np.isfinite(float(metrics["loss"])) and float(metrics["valid_points"]) > 0
    assert after < 0.95 * before, (before, after)


def test_resume_is_bit_exact(config, program, tmp_path):
    run = lambda steps, workdir: train(dataclasses.replace(config, steps=steps), workdir, program=program)  # noqa: E731
    straight = run(8, tmp_path / "straight")
    run(4, tmp_path / "interrupted")
    resumed = run(8, tmp_path / "interrupted")
    assert int(resumed.step) == 8
    for a, b in zip(jax.tree.leaves(jax.device_get(straight)), jax.tree.leaves(jax.device_get(resumed))):
        np.testing.assert_array_equal(a, b)
    loaded = load_model_from_run(tmp_path / "interrupted")  # a Toto 2.0 model, taus included
    # the run's architecture; forecasting from it keeps to the context it trained on
    assert isinstance(loaded, Toto2) and loaded.config == config.model.replace(max_context=config.data.context_length)
    for a, b in zip(jax.tree.leaves(nnx.state(loaded, nnx.Param)), jax.tree.leaves(jax.device_get(resumed.params))):
        np.testing.assert_array_equal(a, b)


def test_sharded_step_equals_single_device_step(config, program):
    sharded = TrainProgram(config, make_mesh((2, 2, 2)), compiler_options=FAST_COMPILE)
    state = jax.device_get(program.init(config.seed))
    batch = next(make_iterator(config.data))
    expected_state, expected = jax.device_get(program.step(program.place(state), program.put_batch(batch)))
    actual_state, actual = jax.device_get(sharded.step(sharded.place(state), sharded.put_batch(batch)))
    for key in expected:
        np.testing.assert_allclose(actual[key], expected[key], rtol=1e-5, err_msg=key)
    for a, b in zip(jax.tree.leaves(actual_state), jax.tree.leaves(expected_state)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
