"""Evaluation metrics and baselines: hand-computed values, and gluonts' Evaluator where it applies."""

import numpy as np
import pytest

from toto_jax.eval import baselines, metrics


def test_seasonality_follows_gluonts_defaults():
    assert metrics.seasonality("5min") == 288
    assert metrics.seasonality("5T") == 288
    assert metrics.seasonality("h") == 24
    assert metrics.seasonality("H") == 24
    assert metrics.seasonality("D") == 1
    assert metrics.seasonality("7min") == 1  # 1440 is not a multiple of 7: gluonts falls back to 1
    assert metrics.seasonality(None) == 1
    from gluonts.time_feature import get_seasonality

    for freq in ("min", "10min", "h", "2h", "D", "W", "MS", "s", "15s"):
        assert metrics.seasonality(freq) == get_seasonality(freq), freq


def test_seasonal_error_by_hand():
    context = np.array([1.0, 2.0, 4.0, 1.0, 3.0, 5.0])
    # season 3: |1-1| + |3-2| + |5-4| over 3 pairs
    assert metrics.seasonal_error(context, 3) == pytest.approx(2 / 3)
    # season 1: |1|+|2|+|3|+|2|+|2| over 5
    assert metrics.seasonal_error(context, 1) == pytest.approx(10 / 5)
    # a context not longer than the season falls back to season 1
    assert metrics.seasonal_error(context, 6) == pytest.approx(2.0)
    # missing values drop the pairs they belong to: pairs (1,1),(3,nan),(5,4)
    assert metrics.seasonal_error(np.array([1.0, np.nan, 4.0, 1.0, 3.0, 5.0]), 3) == pytest.approx(1 / 2)


def test_point_metrics_by_hand():
    target = np.array([1.0, 2.0, 3.0, np.nan])
    point = np.array([2.0, 2.0, 1.0, 100.0])
    assert metrics.mae(target, point) == pytest.approx(1.0)  # (1 + 0 + 2) / 3, NaN step ignored
    assert metrics.mse(target, point) == pytest.approx(5 / 3)
    assert metrics.mase(target, point, 0.5) == pytest.approx(2.0)
    with pytest.raises(ValueError, match="shape"):
        metrics.mae(target, point[:2])


def test_quantile_losses_by_hand():
    target = np.array([10.0, 20.0])
    q10 = np.array([8.0, 25.0])
    # 2|(y - p)(1{p>=y} - q)|: (10-8)*(0-0.1) -> 0.4; (20-25)*(1-0.1) -> 9
    np.testing.assert_allclose(metrics.quantile_loss(target, q10, 0.1), [0.4, 9.0])
    quantiles = np.stack([q10, np.array([10.0, 20.0]), np.array([13.0, 21.0])])
    levels = (0.1, 0.5, 0.9)
    # level 0.9: (10-13)*(1-0.9) -> 0.6; (20-21)*0.1 -> 0.2
    expected_wql = np.mean([9.4, 0.0, 0.8]) / 30.0
    assert metrics.weighted_quantile_loss(target, quantiles, levels) == pytest.approx(expected_wql)
    np.testing.assert_allclose(metrics.crps_from_quantiles(target, quantiles, levels), [1.0 / 3, 9.2 / 3])
    with pytest.raises(ValueError, match="levels"):
        metrics.weighted_quantile_loss(target, quantiles, (0.1, 0.5, 1.0))
    with pytest.raises(ValueError, match="shape"):
        metrics.weighted_quantile_loss(target, quantiles[:2], levels)
    assert np.isnan(metrics.weighted_quantile_loss(np.zeros(2), quantiles, levels))


def test_crps_from_samples_by_hand_and_limits():
    # samples {0, 2}, y = 1: E|X-y| = 1, E|X-X'| = (0+2+2+0)/4 = 1 -> CRPS = 0.5
    np.testing.assert_allclose(metrics.crps_from_samples(np.array([1.0]), np.array([[0.0, 2.0]])), [0.5])
    # y = 3: E|X-y| = 2 -> 1.5
    np.testing.assert_allclose(metrics.crps_from_samples(np.array([3.0]), np.array([[2.0, 0.0]])), [1.5])
    # a point mass gives the absolute error
    np.testing.assert_allclose(metrics.crps_from_samples(np.array([1.0, 5.0]), np.array([[3.0], [5.0]])), [2.0, 0.0])
    # the O(n log n) form equals the O(n^2) definition
    rng = np.random.default_rng(0)
    samples, target = rng.normal(size=(4, 33)), rng.normal(size=4)
    direct = np.abs(samples - target[:, None]).mean(-1) - 0.5 * np.abs(
        samples[:, :, None] - samples[:, None, :]
    ).mean((-1, -2))
    np.testing.assert_allclose(metrics.crps_from_samples(target, samples), direct, rtol=1e-12)
    # many samples of N(0,1) at y=0: CRPS = 2 phi(0) - 1/sqrt(pi) = (sqrt(2) - 1) / sqrt(pi)
    normal = rng.normal(size=(1, 200_000))
    assert metrics.crps_from_samples(np.zeros(1), normal)[0] == pytest.approx((np.sqrt(2) - 1) / np.sqrt(np.pi), rel=1e-2)
    # the quantile-grid estimate approaches the same value
    from statistics import NormalDist

    grid = np.linspace(0.005, 0.995, 199)
    normal_quantiles = np.array([NormalDist().inv_cdf(q) for q in grid])
    estimate = metrics.crps_from_quantiles(np.zeros(1), normal_quantiles[:, None], grid)[0]
    assert estimate == pytest.approx((np.sqrt(2) - 1) / np.sqrt(np.pi), rel=2e-2)


def test_geometric_mean_ratio():
    value, count = metrics.geometric_mean_ratio([1.0, 4.0, 3.0, np.nan], [2.0, 2.0, 0.0, 1.0])
    assert count == 2  # a zero baseline and a NaN value are left out
    assert value == pytest.approx(np.sqrt(0.5 * 2.0))
    assert metrics.geometric_mean_ratio([0.0], [1.0], floor=1e-3) == (pytest.approx(1e-3), 1)
    assert np.isnan(metrics.geometric_mean_ratio([1.0], [0.0])[0])


def test_metrics_match_gluonts_evaluator():
    """MASE (median), MSE (mean), seasonal error and mean weighted quantile loss as gluonts computes them."""
    import pandas as pd
    from gluonts.evaluation import Evaluator
    from gluonts.model.forecast import SampleForecast

    rng = np.random.default_rng(1)
    length, horizon = 240, 24
    series = 50 + 10 * np.sin(np.arange(length) * 2 * np.pi / 24) + rng.normal(0, 2, length)
    index = pd.period_range("2021-03-01", periods=length, freq="h")
    samples = series[-horizon:][None] + rng.normal(0.5, 3, size=(200, horizon))
    forecast = SampleForecast(samples=samples, start_date=index[length - horizon], item_id="x")
    levels = (0.1, 0.5, 0.9)
    aggregate, _ = Evaluator(quantiles=levels, num_workers=0)([pd.DataFrame(series, index=index)], [forecast])

    context, target = series[:-horizon], series[-horizon:]
    season = metrics.seasonality("h")
    scale = metrics.seasonal_error(context, season)
    median = forecast.quantile(0.5)
    assert scale == pytest.approx(aggregate["seasonal_error"], rel=1e-10)
    assert metrics.mase(target, median, scale) == pytest.approx(aggregate["MASE"], rel=1e-10)
    assert metrics.mse(target, samples.mean(0)) == pytest.approx(aggregate["MSE"], rel=1e-10)
    quantiles = np.stack([forecast.quantile(q) for q in levels])
    assert metrics.weighted_quantile_loss(target, quantiles, levels) == pytest.approx(
        aggregate["mean_wQuantileLoss"], rel=1e-10
    )


def test_quantile_loss_matches_gluonts_ev():
    from gluonts.ev import stats

    rng = np.random.default_rng(2)
    label, prediction = rng.normal(size=50), rng.normal(size=50)
    for q in (0.1, 0.5, 0.85):
        np.testing.assert_allclose(
            metrics.quantile_loss(label, prediction, q), stats.quantile_loss({"label": label, str(q): prediction}, q)
        )


def test_seasonal_naive_by_hand():
    context = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0])
    np.testing.assert_array_equal(baselines.seasonal_naive_point(context, 5, 3), [5.0, 6.0, 7.0, 5.0, 6.0])
    np.testing.assert_array_equal(baselines.seasonal_naive_point(context, 2, 10), [7.0, 7.0])  # naive fallback
    np.testing.assert_array_equal(baselines.seasonal_naive_point(np.array([1.0, np.nan, 3.0]), 2, 2), [2.0, 3.0])
    (window,) = baselines.SeasonalNaive()([context], 4, 2)
    np.testing.assert_array_equal(window.median, [6.0, 7.0, 6.0, 7.0])
    # a point mass: every quantile is the point forecast, the CRPS is the absolute error
    assert window.quantiles.shape == (len(baselines.QUANTILE_LEVELS), 4)
    np.testing.assert_array_equal(window.quantiles, np.broadcast_to(window.median, window.quantiles.shape))
    target = np.array([6.0, 8.0, 5.0, 7.0])
    np.testing.assert_allclose(metrics.crps_from_samples(target, window.samples), np.abs(target - window.median))
    np.testing.assert_allclose(
        metrics.crps_from_quantiles(target, window.quantiles, baselines.QUANTILE_LEVELS), np.abs(target - window.median)
    )


def test_statsforecast_baselines():
    rng = np.random.default_rng(3)
    series = 20 + 5 * np.sin(np.arange(300) * 2 * np.pi / 12) + rng.normal(0, 0.3, 300)
    model = baselines.make_baseline("auto_ets")
    (window,) = model([series[:-24]], 24, 12)
    assert model.fallbacks == 0
    assert window.quantiles.shape == (len(baselines.QUANTILE_LEVELS), 24)
    assert np.all(np.diff(window.quantiles, axis=0) >= 0)
    # a clean seasonal series: AutoETS beats the seasonal naive forecast's noise level
    assert metrics.mae(series[-24:], window.median) < 0.5
    with pytest.raises(ValueError, match="unknown baseline"):
        baselines.make_baseline("prophet")


def test_auto_ets_fits_long_seasons_without_a_seasonal_component():
    # R's forecast::ets (and statsforecast's port of its recursion) handle seasons up to 24 steps.
    ets, arima = baselines.make_baseline("auto_ets"), baselines.make_baseline("auto_arima")
    assert ets.season_length(24, 2048) == 24
    assert ets.season_length(288, 2048) == 1
    assert ets.season_length(12, 16) == 8  # at most half the context
    assert arima.season_length(288, 2048) == 288
    rng = np.random.default_rng(4)
    series = 100 + np.sin(np.arange(2000) * 2 * np.pi / 288) + rng.normal(0, 0.1, 2000)
    (window,) = ets([series], 48, 288)
    assert ets.fallbacks == 0 and np.isfinite(window.quantiles).all()


def test_missing_statsforecast_explains_how_to_install(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "statsforecast.models", None)
    with pytest.raises(ImportError, match="pip install 'toto-jax\\[eval\\]'"):
        baselines.make_baseline("auto_arima")
