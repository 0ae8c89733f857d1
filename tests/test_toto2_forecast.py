"""Toto 2.0 against toto-2 2.0.0 on random weights (every tensor perturbed, see ``reference2``): forward
quantiles for six architectures, and ``toto_jax.forecast`` with ``ForecastOptions.reference()`` against
``Toto2Model.forecast``: single pass, block decoding, known-future covariates, cap and scaler fallback, on
inputs with left padding, several id groups and values from 1e-2 to 1e6 with offsets. Tolerance 1e-4
relative per series and variate (float32)."""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path

import jax
import numpy as np
import pytest
from reference2 import (
    CONFIGS,
    config_dict,
    make_reference,
    per_variate_relative_error,
    reference_forecast,
    reference_forward,
    save_reference,
)

import toto_jax
from toto_jax import ForecastError, ForecastOptions

TOLERANCE = 1e-4
BATCH, VARIATES, TIME, HORIZON = 2, 3, 64, 36


def _series(seed=0):
    """Variates at 1e-2, 1 (+5) and 1e4 (+1e6) scales; series 0 left-padded by 20 steps, series 1 with an
    inner gap."""
    rng = np.random.default_rng(seed)
    scale = np.array([0.01, 1.0, 1e4])[None, :, None]
    offset = np.array([0.0, 5.0, 1e6])[None, :, None]
    x = rng.normal(size=(BATCH, VARIATES, TIME)) * scale + offset
    x[0, :, :20] = np.nan
    x[1, 1, 30:35] = np.nan
    return x


@functools.lru_cache(maxsize=None)
def _pair(name):
    """(toto-2 model, the same weights loaded by toto_jax) for one of ``reference2.CONFIGS``."""
    config = config_dict(**CONFIGS[name])
    reference = make_reference(config, head_gain=0.2)
    with tempfile.TemporaryDirectory() as directory:
        return reference, toto_jax.load(save_reference(reference, config, Path(directory)))


def _reference_quantiles(reference, x, ids, horizon, options: ForecastOptions, **known):
    return reference_forecast(
        reference, np.nan_to_num(x).astype(np.float32), ~np.isnan(x), ids, horizon,
        decode_block_size=options.decode_block_size or 0, quantile_real_cap_k=options.value_cap or 0.0,
        scaler_fallback_min_obs=options.scaler_fallback_min_obs, **known,
    )  # fmt: skip


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_forward_quantiles_match_toto2(name):
    reference, model = _pair(name)
    x = _series()
    mask = ~np.isnan(x)
    ids = np.array([[0, 0, 1], [0, 1, 1]])
    quantiles, loc, scale = reference_forward(reference, np.nan_to_num(x), mask, ids)
    out = model(np.nan_to_num(x).astype(np.float32), mask, ids)
    assert per_variate_relative_error(np.asarray(out.loc), loc) <= TOLERANCE
    assert per_variate_relative_error(np.asarray(out.scale), scale) <= TOLERANCE
    flat = lambda q: q.reshape(*q.shape[:-2], -1)  # noqa: E731
    assert per_variate_relative_error(flat(np.asarray(out.quantiles)), flat(quantiles)) <= TOLERANCE


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_single_pass_forecast_matches_toto2(name):
    reference, model = _pair(name)
    x = _series(1)
    ids = np.array([[0, 0, 1], [0, 1, 1]])
    options = ForecastOptions.reference()
    result = toto_jax.forecast(model, x, HORIZON, id_mask=np.broadcast_to(ids[..., None], x.shape), options=options)
    expected = _reference_quantiles(reference, x, ids, HORIZON, options)
    assert result.quantiles.shape == (BATCH, VARIATES, HORIZON, 9)
    assert per_variate_relative_error(np.moveaxis(result.quantiles, -1, 0), expected) <= TOLERANCE


@pytest.mark.parametrize(("name", "options"), [
    ("group3_xpos_weights", ForecastOptions.reference(decode_block_size=16)),
    ("gqa_variate_last", ForecastOptions.reference(decode_block_size=16)),
    ("per_dim_scale_bias", ForecastOptions.reference(decode_block_size=8, value_cap=3.0, scaler_fallback_min_obs=8)),
    ("group3_xpos_weights", ForecastOptions.reference(decode_block_size=8, value_cap=3.0, scaler_fallback_min_obs=8)),
], ids=["xpos_blocks", "gqa_blocks", "bias_blocks_cap_fallback", "xpos_blocks_cap_fallback"])  # fmt: skip
def test_block_decoding_matches_toto2(name, options):
    reference, model = _pair(name)
    x = _series(2)
    ids = np.zeros((BATCH, VARIATES), int)
    result = toto_jax.forecast(model, x, HORIZON, options=options)
    expected = _reference_quantiles(reference, x, ids, HORIZON, options)
    assert per_variate_relative_error(np.moveaxis(result.quantiles, -1, 0), expected) <= TOLERANCE


def test_known_future_covariates_match_toto2():
    reference, model = _pair("group4_two_variate")
    x = _series(3)
    rng = np.random.default_rng(4)
    future = rng.normal(size=(BATCH, 1, HORIZON)) * 1e4 + 1e6
    for options in (ForecastOptions.reference(), ForecastOptions.reference(decode_block_size=16)):
        result = toto_jax.forecast(model, x, HORIZON, options=options, future_exogenous_variables=future)
        patch_horizon = -(-HORIZON // 8) * 8
        pad = np.zeros((BATCH, 1, patch_horizon - HORIZON))
        known = dict(
            known_dynamic=np.concatenate([np.nan_to_num(x[:, 2:]), future, pad], -1).astype(np.float32),
            known_dynamic_mask=np.concatenate([~np.isnan(x[:, 2:]), np.ones(future.shape, bool), pad > 0], -1),
            known_dynamic_series_ids=np.zeros((BATCH, 1), int),
        )
        expected = _reference_quantiles(reference, x[:, :2], np.zeros((BATCH, 2), int), HORIZON, options, **known)
        assert result.quantiles.shape == (BATCH, 2, HORIZON, 9)  # covariates are not forecast
        assert per_variate_relative_error(np.moveaxis(result.quantiles, -1, 0), expected) <= TOLERANCE


def test_quantile_forecast_interface():
    _, model = _pair("mha_variate_first")
    x = _series(5)
    result = toto_jax.forecast(model, x, 20)  # the safe defaults: gaps filled, normalized, capped, fallback
    knots = result.quantiles
    assert np.all(np.isfinite(knots)) and np.all(np.diff(knots, axis=-1) >= 0)
    for i, level in enumerate((0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)):
        np.testing.assert_array_equal(result.quantile(level), knots[..., i])  # exact at the knots
    np.testing.assert_array_equal(result.median, knots[..., 4])
    between = result.quantile([0.1, 0.15, 0.2, 0.45, 0.85, 0.9])
    assert np.all(np.diff(between, axis=0) >= 0)  # monotone between the knots
    np.testing.assert_allclose(between[1], (knots[..., 0] + knots[..., 1]) / 2, rtol=1e-12)
    np.testing.assert_allclose(result.mean, knots @ np.array([0.15] + [0.1] * 7 + [0.15]), rtol=1e-12)
    with pytest.raises(ValueError, match="covers levels 0.1 to 0.9"):
        result.quantile(0.95)
    with pytest.raises(ValueError, match="no standard deviation"):
        result.std
    with pytest.raises(ForecastError, match="draws no sample paths"):
        toto_jax.forecast(model, x, 20, num_samples=8)
    with pytest.raises(ForecastError, match="shorter than the horizon"):
        toto_jax.forecast(model, x, 20, future_exogenous_variables=np.zeros((1, 10)))
    bad = np.zeros((BATCH, 1, 20))
    bad[1, 0, 7] = np.nan
    with pytest.raises(ForecastError, match=r"series 1, covariate 0 \(variate 2\): future value at step 7"):
        toto_jax.forecast(model, x, 20, future_exogenous_variables=bad)
    with pytest.raises(ForecastError, match="has 3 covariates"):
        toto_jax.forecast(model, x, 20, future_exogenous_variables=np.zeros((3, 20)))
    with pytest.raises(ForecastError, match="multiple of the patch size"):
        toto_jax.forecast(model, x, 20, options=ForecastOptions(decode_block_size=12))


def test_tools_dispatch_on_a_toto2_checkpoint(tmp_path, capsys):
    """``toto-jax forecast`` writes the quantile columns of ``toto_jax.forecast``; the evaluation harness and
    the GluonTS predictor report the model's own quantiles (flat beyond the outer knots)."""
    import pandas as pd

    from toto_jax.cli import main
    from toto_jax.eval.baselines import QUANTILE_LEVELS
    from toto_jax.eval.gluonts_adapter import TotoPredictor
    from toto_jax.eval.harness import TotoForecaster

    _, model = _pair("mha_variate_first")
    checkpoint = toto_jax.export_torch(model, tmp_path / "toto2")
    rng = np.random.default_rng(6)
    values = 10 + np.cumsum(rng.normal(size=(40, 2)), axis=0)
    stamps = pd.date_range("2024-01-01", periods=40, freq="h")
    pd.DataFrame({"timestamp": stamps, "a": values[:, 0], "b": values[:, 1]}).to_csv(tmp_path / "in.csv", index=False)
    arguments = ["forecast", "--checkpoint", str(checkpoint), "--input", str(tmp_path / "in.csv"),
                 "--horizon", "12", "--quantiles", "0.1,0.25,0.9"]  # fmt: skip
    assert main(arguments + ["--output", str(tmp_path / "out.csv")]) == 0
    written = pd.read_csv(tmp_path / "out.csv")
    expected = toto_jax.forecast(model, values.T, 12)
    np.testing.assert_allclose(written.filter(like="q0.25").to_numpy().T, expected.quantile(0.25)[0], rtol=1e-6)
    np.testing.assert_allclose(written.filter(like="median").to_numpy().T, expected.median[0], rtol=1e-6)
    assert main(arguments + ["--output", str(tmp_path / "bad.csv"), "--samples", "8"]) == 2
    assert "leave the sample count unset (--samples" in capsys.readouterr().err and not (tmp_path / "bad.csv").exists()

    window = TotoForecaster(model)([values[:, 0]], 12, season=24)[0]
    single = toto_jax.forecast(model, [values[:, 0][None]], 12)
    np.testing.assert_allclose(window.quantiles[QUANTILE_LEVELS.index(0.3)], single.quantile(0.3)[0, 0])
    np.testing.assert_allclose(window.quantiles[0], single.quantile(0.1)[0, 0])  # 0.05: flat below 0.1
    entry = {"target": values[:, 0], "start": pd.Period("2024-01-01 00:00", freq="h")}
    (gluonts_forecast,) = TotoPredictor(model, 12).predict([entry])
    np.testing.assert_allclose(gluonts_forecast.quantile(0.5), single.median[0, 0], rtol=1e-6)


def test_memory_budget_splits_the_series_over_calls():
    """A budget too small for the batch splits it over calls with the same result; one that cannot hold a
    single series is refused by name."""
    _, model = _pair("gqa_variate_last")
    from toto_jax.forecasting.decode import working_bytes
    from toto_jax.forecasting.placement import forecast_placement
    from toto_jax.forecasting.quantile import _PROGRAMS
    from toto_jax.forecasting.weights import placed_weights

    x = _series(7)
    compiled = len(_PROGRAMS)
    whole = toto_jax.forecast(model, x, 12)
    assert len(_PROGRAMS) == compiled + 1
    whole_bytes = working_bytes(list(_PROGRAMS.values())[-1], placed_weights(model, forecast_placement(None)))
    split = toto_jax.forecast(model, x, 12, options=ForecastOptions(memory_budget=whole_bytes - 1))
    assert len(_PROGRAMS) == compiled + 2  # a program for one series at a time was compiled and used
    np.testing.assert_allclose(split.quantiles, whole.quantiles, rtol=1e-6)
    with pytest.raises(ForecastError, match="one series needs .* beyond the memory budget"):
        toto_jax.forecast(model, x, 12, options=ForecastOptions(memory_budget=1))


def test_series_split_over_devices_give_the_same_quantiles():
    """``ForecastOptions(devices=4)``: the compiled pass is partitioned over 4 of the 8 virtual CPU devices,
    its inputs split along the series, and the quantiles equal the one-device run's."""
    _, model = _pair("gqa_variate_last")
    from toto_jax.forecasting.quantile import _PROGRAMS

    x = np.concatenate([_series(7), _series(8)])[:3]
    one = toto_jax.forecast(model, x, 12)
    split = toto_jax.forecast(model, x, 12, options=ForecastOptions(devices=4))
    program = list(_PROGRAMS.values())[-1]
    assert "num_partitions=4" in program.as_text()
    assert program.input_shardings[0][-1].spec == jax.sharding.PartitionSpec(("data", "fsdp")) and len(program.input_shardings[0][-1].device_set) == 4
    np.testing.assert_allclose(split.quantiles, one.quantiles, rtol=1e-5, atol=1e-6 * np.abs(one.quantiles).max())
    with pytest.raises(ForecastError, match="ForecastOptions.devices is 99, but this process has 8 local devices"):
        toto_jax.forecast(model, x, 12, options=ForecastOptions(devices=99))


def test_forecast_on_a_mesh_splits_the_weights_over_the_tensor_axis():
    """``forecast(..., mesh=)`` on a data 4 x tensor 2 mesh of the 8 virtual CPU devices, block decoding (the KV
    cache) with grouped-query attention: the program is partitioned 8 ways, the query and key/value kernels
    hold half their heads per device, and the quantiles (2 series padded to the data axis) equal the
    one-device run's to float32 rounding of the split sums (1e-5 relative). The one-device forecast is
    ``test_block_decoding_matches_toto2[gqa_blocks]``'s, so its program is shared."""
    _, model = _pair("gqa_variate_last")
    from toto_jax.forecasting.quantile import _PROGRAMS
    from toto_jax.sharding import make_mesh

    x = _series(2)
    options = ForecastOptions.reference(decode_block_size=16)
    mesh = make_mesh((4, 1, 2), devices=jax.devices())
    split = toto_jax.forecast(model, x, HORIZON, options=options, mesh=mesh)
    program = next(program for key, program in _PROGRAMS.items() if key[-1][0] == mesh)
    assert "num_partitions=8" in program.as_text()
    shardings = jax.tree_util.tree_leaves_with_path(program.input_shardings[0][0])
    for name in ("q_proj", "k_proj", "v_proj"):
        kernel = getattr(model.transformer.groups.layers[0].attention, name).kernel  # [groups, embed, heads, dim]
        sharding = next(s for path, s in shardings if f"['{name}']['kernel']" in jax.tree_util.keystr(path))
        assert sharding.shard_shape(kernel.shape)[2] == kernel.shape[2] // 2, name
    one = toto_jax.forecast(model, x, HORIZON, options=options)
    np.testing.assert_allclose(split.quantiles, one.quantiles, rtol=1e-5, atol=1e-6 * np.abs(one.quantiles).max())


def test_a_mesh_that_cannot_hold_the_forecast_is_refused_by_name():
    """A mesh without the rules' axes, a mesh beside ``ForecastOptions.devices``, rules without a mesh, and
    weights the mesh cannot split evenly (2 key/value heads over 4 tensor devices) are named errors."""
    _, model = _pair("gqa_variate_last")
    from toto_jax.sharding import make_mesh

    x = _series(7)
    named = jax.make_mesh((2, 4), ("data", "model"), axis_types=(jax.sharding.AxisType.Auto,) * 2)
    with pytest.raises(ForecastError, match=r"mesh has axes \('data', 'model'\), but the rules map logical axes to "
                                            r"'fsdp', 'tensor'"):  # fmt: skip
        toto_jax.forecast(model, x, 12, mesh=named)
    mesh = make_mesh((2, 1, 4), devices=jax.devices())
    with pytest.raises(ForecastError, match="ForecastOptions.devices is 2 and a mesh is given"):
        toto_jax.forecast(model, x, 12, options=ForecastOptions(devices=2), mesh=mesh)
    with pytest.raises(ForecastError, match="rules= places parameters on a mesh: give mesh= with it"):
        toto_jax.forecast(model, x, 12, rules=())
    with pytest.raises(ForecastError, match=r"cannot evenly split .*k_proj.kernel \(2, 32, 2, 8\)"):
        toto_jax.forecast(model, x, 12, mesh=mesh)
