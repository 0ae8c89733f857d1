"""The default ``ForecastOptions`` on what real observability data looks like, with the bundled model.

Trailing and inner gaps, counters near 1e9 and beyond the float32 range, glitches, long horizons, pandas
objects and empty inputs, each through ``toto_jax.forecast`` with its defaults, against
``ForecastOptions.reference()`` where the reference's behaviour is the failure the defaults fix.
Synthetic series only (no shared data).
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

import toto_jax
from toto_jax.forecasting import ForecastError, ForecastOptions, forecast
from toto_jax.forecasting.preprocessing import (
    fill_gaps,
    normalize_context,
    value_bounds,
)

REFERENCE = ForecastOptions.reference()
HORIZON = 64


@pytest.fixture(scope="module")
def model():
    return toto_jax.load("default")


def cpu_series(length=1024, seed=0):
    """A CPU-utilisation-like series around 38 % with a daily (288-step) cycle and noise."""
    t = np.arange(length)
    rng = np.random.default_rng(seed)
    return 38 + 6 * np.sin(2 * np.pi * t / 288) + rng.normal(0, 1.0, length)


def test_trailing_gaps_are_forecast_through_not_fed_as_zeros(model):
    """The newest points missing (ingestion lag): the defaults forecast from the observed level, exactly as
    a forecast of the series without the gap over horizon + gap steps, cut after the gap; the reference's
    masked zeros pull the forecast far below the level (the failure this fixes)."""
    series = cpu_series()
    level = series[-288:].mean()
    for gap in (10, 30):
        lagged = series.copy()
        lagged[-gap:] = np.nan
        result = forecast(model, lagged[None], HORIZON, num_samples=None)
        trimmed = forecast(model, series[None, :-gap], HORIZON + gap, num_samples=None)
        np.testing.assert_array_equal(result.mean[0, 0], trimmed.mean[0, 0, gap:])
        assert abs(result.mean[0, 0, :16].mean() - level) < 5
        reference = forecast(model, lagged[None], HORIZON, num_samples=None, options=REFERENCE)
        assert reference.mean[0, 0, :16].mean() < level - 10, gap
    # series of one batch with different gaps: each is cut after its own gap
    lagged = np.stack([series, series])[:, None].copy()
    lagged[0, 0, -5:] = np.nan
    batch = forecast(model, lagged, HORIZON, num_samples=None)
    longer = forecast(model, series[None, :-5], HORIZON + 5, num_samples=None)
    np.testing.assert_allclose(batch.mean[0, 0], longer.mean[0, 0, 5:], rtol=1e-5)
    whole = forecast(model, series[None], HORIZON, num_samples=None)
    np.testing.assert_allclose(batch.mean[1, 0], whole.mean[0, 0], rtol=1e-5)


def test_inner_gaps_and_a_variates_own_trailing_gap_are_filled(model):
    """Inner gaps are interpolated linearly, a variate's own trailing gap (others observed) carries its last
    value, and leading missing steps stay left padding: the forecast equals that of the filled series."""
    base = np.stack([cpu_series(seed=1), cpu_series(seed=2)])
    holed = base.copy()
    holed[0, 500:540] = np.nan
    holed[1, -7:] = np.nan
    holed[1, :100] = np.nan
    filled = base.copy()
    filled[0, 500:540] = np.linspace(base[0, 499], base[0, 540], 42)[1:-1]
    filled[1, -7:] = base[1, -8]
    filled[1, :100] = np.nan
    holed_mean, filled_mean = (forecast(model, x, HORIZON, num_samples=None).mean for x in (holed, filled))
    np.testing.assert_allclose(holed_mean, filled_mean, rtol=1e-6)
    values, valid = fill_gaps(holed, ~np.isnan(holed))
    np.testing.assert_allclose(values[valid], filled[~np.isnan(filled)])
    assert not valid[1, :100].any() and valid[1, 100:].all()


def test_large_counters_keep_their_signal_and_offsets_are_exact(model):
    """A byte counter at 1e9 + a 50-unit cycle: float64 (and integer) input is normalized in float64, so
    the forecast of x + c is the forecast of x plus c, for c up to 1e15; output stays float64. Values
    beyond the float32 range are forecast through the same path; the reference's float32 cast refuses
    them by name instead of forecasting infinities."""
    t = np.arange(1024)
    signal = np.round(8 * 50 * np.sin(2 * np.pi * t / 96)) / 8  # on a grid that float64 holds exactly at 1e15
    base = forecast(model, signal[None], HORIZON, num_samples=None)
    assert base.mean.dtype == np.float64
    for offset in (1e9, 1e12, 1e15):
        shifted = forecast(model, (signal + offset)[None], HORIZON, num_samples=None)
        assert np.abs(shifted.mean - offset - base.mean).max() < 1e-3 * np.ptp(signal), offset
    counter = np.round(signal * 100).astype(np.int64) + 3_000_000_000
    as_int = forecast(model, counter[None], HORIZON, num_samples=None)
    assert as_int.mean.dtype == np.float64 and np.abs(as_int.mean - 3e9).max() < 1e4
    huge = forecast(model, (signal * 1e40)[None], HORIZON, num_samples=None)
    np.testing.assert_allclose(huge.mean / 1e40, base.mean, rtol=1e-4, atol=1e-3)
    with pytest.raises(ForecastError, match=r"series 0, variate 0: value .*e\+4\d at step 0 is beyond the float32"):
        forecast(model, (signal * 1e40 + 1e41)[None], HORIZON, num_samples=None, options=REFERENCE)
    # float32 input gives float32 output, as the reference's
    assert forecast(model, signal[None].astype(np.float32), HORIZON, num_samples=None).mean.dtype == np.float32


@pytest.mark.parametrize("glitch", [1e10, 1e20, 1e300])
def test_one_glitch_does_not_wreck_the_default_forecast(model, glitch):
    """One absurd value in the context: the defaults clip it and forecast the series' own level; the
    reference's forecast is wrecked (all 0 from the scaler overflowing, or far outside the data)."""
    series = cpu_series()
    clean = forecast(model, series[None], HORIZON, num_samples=None).mean
    spiked = series.copy()
    spiked[700] = glitch
    result = forecast(model, spiked[None], HORIZON, num_samples=None).mean
    assert np.abs(result - clean).max() < 3
    if glitch < 1e38:
        wrecked = forecast(model, spiked[None], HORIZON, num_samples=None, options=REFERENCE).mean
        assert np.abs(wrecked - clean).max() > 20


def test_long_horizons_warn_and_stay_within_the_value_cap(model):
    """A horizon 5x the context warns with the ratio, and every sample path stays within the context's
    range widened by value_cap standard deviations; the cap is what bounds them."""
    series = cpu_series(192)
    with pytest.warns(UserWarning, match=r"horizon \(1024 steps\) is 5.3x the longest context \(192 observed"):
        result = forecast(model, series[None], 1024, num_samples=8, options=ForecastOptions(value_cap=1.0))
    std = series.std()
    assert result.samples.min() >= series.min() - std - 1e-6 and result.samples.max() <= series.max() + std + 1e-6
    low, high = value_bounds(series[None], np.ones((1, 192), bool), 1.0)
    np.testing.assert_allclose([low[0, 0], high[0, 0]], [series.min() - std, series.max() + std])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        forecast(model, series[None], 3 * 192, num_samples=8, options=ForecastOptions(value_cap=1.0))  # no warning


def test_pandas_in_pandas_out(model):
    """A DataFrame is rows = time steps, columns = variates (hundreds of rows are not read as series); the
    forecast equals that of the transposed array, and ``to_dataframe`` continues the time index with the
    variates as columns, whatever the datetime unit or time zone; a Series is one variate."""
    values = np.stack([cpu_series(600, seed=3), cpu_series(600, seed=4)], axis=1)  # [time, variate]
    index = pd.date_range("2026-01-01", periods=600, freq="5min", tz="Europe/Paris")
    frame = pd.DataFrame(values, index=index, columns=["cpu", "memory"])
    expected = forecast(model, values.T, HORIZON, num_samples=4, seed=1)
    for unit in ("s", "ms", "us", "ns"):
        result = forecast(model, frame.set_axis(index.as_unit(unit)), HORIZON, num_samples=4, seed=1)
        np.testing.assert_allclose(result.samples, expected.samples, rtol=1e-6)
        table = result.to_dataframe("median")
        assert list(table.columns) == ["cpu", "memory"] and len(table) == HORIZON
        assert table.index[0] == index[-1] + pd.Timedelta(minutes=5)
        assert (np.diff(table.index.asi8) == np.diff(table.index.asi8)[0]).all()
        assert table.index[-1] == index[-1] + HORIZON * pd.Timedelta(minutes=5)
        np.testing.assert_allclose(table.to_numpy().T, result.median[0])
    series = pd.Series(values[:, 0], index=pd.RangeIndex(0, 1200, 2), name="cpu")
    single = forecast(model, series, HORIZON, num_samples=None)
    array = forecast(model, values[None, :, 0], HORIZON, num_samples=None)
    np.testing.assert_allclose(single.mean, array.mean, rtol=1e-6)
    assert list(single.to_dataframe().index[:2]) == [1200, 1202]
    with pytest.raises(ForecastError, match="column 'host' is not numeric"):
        forecast(model, frame.assign(host="a"), HORIZON, num_samples=None)
    irregular = frame.drop(index=frame.index[[10, 11, 12]])
    with pytest.raises(ForecastError, match="irregular timestamps"):
        forecast(model, irregular, HORIZON, num_samples=None)


@pytest.mark.parametrize(
    "series, message",
    [
        (np.zeros((0, 100)), r"series 0 has no variates \(shape \(0, 100\)\)"),
        (np.zeros((0, 1, 100)), r"no series given \(batch size 0"),
        (np.zeros((1, 0)), "series 0 has no time steps"),
        ([], "no series given"),
        (pd.DataFrame({"cpu": []}, index=pd.DatetimeIndex([])), "the DataFrame has no rows"),
        (np.full((1, 50), np.nan), "series 0 has no observed values"),
    ],
)
def test_empty_inputs_name_the_problem(model, series, message):
    with pytest.raises(ForecastError, match=message):
        forecast(model, series, HORIZON, num_samples=None)


def test_arrays_that_look_transposed_warn(model):
    with pytest.warns(UserWarning, match="500 variates of only 2 time steps each"):
        forecast(model, np.ones((500, 2)), 4, num_samples=None)


def test_normalize_is_exact_in_float64():
    """Mean and standard deviation of values near the float64 limit without overflow; constant variates keep
    unit scale; missing steps stay 0."""
    values = np.array([[1e307, 1.5e308, -1e308, np.nan], [5.0, 5.0, 5.0, 5.0]])
    valid = ~np.isnan(values)
    normalized, shift, unit = normalize_context(np.nan_to_num(values), valid, "standardize")
    expected = np.array([1e307, 1.5e308, -1e308]) / 1e300
    np.testing.assert_allclose(shift[0, 0] / 1e300, expected.mean())
    np.testing.assert_allclose(unit[0, 0] / 1e300, expected.std())
    assert normalized[0, 3] == 0 and unit[1, 0] == 1.0 and (normalized[1] == 0).all()


def count_series(length=1024, seed=0):
    """Event counts (requests, errors): a cycle whose troughs are 0 for a third of the time, Poisson noise."""
    t = np.arange(length)
    rate = np.maximum(0, 3 * np.sin(2 * np.pi * t / 96))
    return np.random.default_rng(seed).poisson(rate).astype(np.float64)


def test_default_forecast_carries_sample_paths_and_the_mean_path_is_one_argument_away(model):
    """Without ``num_samples`` a Toto 1.0 forecast draws ``DEFAULT_NUM_SAMPLES`` paths, so median and
    quantiles are there, equal to asking for that many paths; ``num_samples=None`` is the deterministic
    mean path alone; a Toto 2.0 forecast gives its quantiles without samples either way."""
    from toto_jax.forecasting.options import DEFAULT_NUM_SAMPLES

    series = cpu_series()[None]
    result = forecast(model, series, 16)
    assert result.samples.shape == (1, 1, 16, DEFAULT_NUM_SAMPLES)
    explicit = forecast(model, series, 16, DEFAULT_NUM_SAMPLES)
    np.testing.assert_array_equal(result.samples, explicit.samples)
    low, median, high = result.quantile([0.1, 0.5, 0.9])[:, 0, 0]
    assert (low <= median).all() and (median <= high).all() and (high - low).min() > 0
    mean_path = forecast(model, series, 16, num_samples=None)
    assert mean_path.samples is None and mean_path.mean.shape == (1, 1, 16)
    with pytest.raises(ValueError, match="quantiles need sample paths"):
        mean_path.quantile(0.5)
    with pytest.raises(ForecastError, match="num_samples must be a positive integer, None or 'auto', got 'many'"):
        forecast(model, series, 16, "many")
    toto2 = toto_jax.load("toto2-small")
    for quantile_forecast in (forecast(toto2, series, 16), forecast(toto2, series, 16, num_samples=None)):
        assert quantile_forecast.samples is None and quantile_forecast.quantiles.shape == (1, 1, 16, 9)
    with pytest.raises(ForecastError, match="draws no sample paths"):
        forecast(toto2, series, 16, 8)


def test_counts_stay_non_negative_and_series_with_negatives_do_not(model):
    """A count series (all >= 0) is forecast >= 0 in every sample path, the mean and every quantile, by both
    families; without the bound (``infer_nonnegative=False``, and the reference) a quarter of the sample
    paths' steps go negative. A series with negative values is not bounded: shifted by -0.5 it is exactly
    the unbounded forecast shifted (``normalize="standardize"`` is shift-equivariant)."""
    counts = count_series()[None]
    free = ForecastOptions(infer_nonnegative=False)
    unbounded = forecast(model, counts, HORIZON, options=free)
    assert (unbounded.samples < 0).mean() > 0.1 and unbounded.quantile(0.1).min() < 0
    bounded = forecast(model, counts, HORIZON)
    assert bounded.samples.min() >= 0 and bounded.mean.min() >= 0 and bounded.quantile(0.1).min() >= 0
    assert forecast(model, counts, HORIZON, num_samples=None).mean.min() >= 0
    assert ForecastOptions.reference().infer_nonnegative is False
    shifted = forecast(model, counts - 0.5, HORIZON)
    np.testing.assert_allclose(shifted.samples, unbounded.samples - 0.5, rtol=0, atol=1e-9)
    # per variate: a count variate beside a signed one is bounded, the signed one is not
    pair = np.concatenate([counts, counts - 0.5])
    both = forecast(model, pair, HORIZON)
    assert both.samples[:, 0].min() >= 0 and both.samples[:, 1].min() < -0.5

    toto2 = toto_jax.load("toto2-small")
    assert forecast(toto2, counts, HORIZON, options=free).quantiles.min() < 0
    quantiles = forecast(toto2, counts, HORIZON)
    assert quantiles.quantiles.min() >= 0 and quantiles.mean.min() >= 0
    np.testing.assert_allclose(forecast(toto2, counts - 0.5, HORIZON).quantiles,
                               forecast(toto2, counts, HORIZON, options=free).quantiles - 0.5, rtol=0, atol=1e-9)


def test_infer_nonnegative_is_an_option_and_a_flag():
    """On by default, off in ``ForecastOptions.reference()``; ``--[no-]infer-nonnegative`` sets it over either."""
    import argparse

    from toto_jax.forecasting.options import add_options_arguments, options_from_args

    parser = argparse.ArgumentParser()
    add_options_arguments(parser)
    assert options_from_args(parser.parse_args([])).infer_nonnegative is True
    assert options_from_args(parser.parse_args(["--no-infer-nonnegative"])) == ForecastOptions(infer_nonnegative=False)
    assert options_from_args(parser.parse_args(["--reference-options"])).infer_nonnegative is False
    assert options_from_args(parser.parse_args(["--reference-options", "--infer-nonnegative"])) == (
        ForecastOptions.reference(infer_nonnegative=True))  # fmt: skip
    with pytest.raises(ValueError, match="ForecastOptions.infer_nonnegative must be True or False, got 1"):
        ForecastOptions(infer_nonnegative=1)
