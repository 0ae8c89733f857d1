"""Statistics of the synthetic generator (toto_jax.data.synthetic), not only shapes."""

import pickle

import numpy as np
import pytest

from toto_jax.data import SyntheticSource, synthetic


def autocorrelation(x: np.ndarray, lag: int) -> float:
    """Correlation of the series with itself ``lag`` steps later."""
    return float(np.corrcoef(x[:-lag], x[lag:])[0, 1])


def test_synthetic_source_is_deterministic_per_index_and_seed():
    source = SyntheticSource(num_series=100, length=300, seed=7)
    copy = pickle.loads(pickle.dumps(source))
    for index in (0, 5, 99):
        np.testing.assert_array_equal(source[index]["target"], copy[index]["target"])
        np.testing.assert_array_equal(source[index]["target"], source[index]["target"])
    other_seed = SyntheticSource(num_series=100, length=300, seed=8)
    assert not np.array_equal(source[5]["target"], other_seed[5]["target"], equal_nan=True)
    assert not np.array_equal(source[5]["target"][:1], source[6]["target"][:1], equal_nan=True)


def test_synthetic_source_covers_both_families_multivariate_and_short_series():
    source = SyntheticSource(num_series=200, length=256, seed=0, max_variates=6, short_fraction=0.2)
    kinds, variates, lengths = [], [], []
    for index in range(200):
        kind, target = source.generate(index)
        kinds.append(kind)
        variates.append(target.shape[0])
        lengths.append(target.shape[1])
        assert target.dtype == np.float32 and 1 <= target.shape[0] <= 6
    assert 0.35 < kinds.count("kernelsynth") / 200 < 0.65
    assert 0.4 < np.mean(np.array(variates) == 1) < 0.8  # half forced univariate, plus v=1 draws
    assert max(variates) == 6
    assert 0.1 < np.mean(np.array(lengths) < 256) < 0.3


def test_periodic_family_share_and_exact_repetition():
    source = SyntheticSource(num_series=300, length=2048, seed=1, periodic_fraction=0.3, short_fraction=0.0)
    default = SyntheticSource(num_series=300, length=2048, seed=1, short_fraction=0.0)
    kinds = [source.generate(index)[0] for index in range(300)]
    assert 0.2 < kinds.count("periodic") / 300 < 0.4
    assert "periodic" not in {default.generate(index)[0] for index in range(100)}  # off by default
    with pytest.raises(Exception, match="periodic_fraction must lie in"):
        SyntheticSource(periodic_fraction=1.5)


def test_outlier_augmentation_adds_isolated_extremes():
    rng = np.random.default_rng(0)
    clean = rng.normal(0, 1, (2, 4000))
    spiked = synthetic.add_outliers(np.random.default_rng(1), clean)
    changed = spiked != clean
    assert 1 <= changed.sum(axis=1).min() and changed.sum(axis=1).max() <= 9  # 1-3 runs of 1-3 steps
    assert np.abs(spiked - clean)[changed].min() > 5 * clean.std() * 0.9
    def share_extreme(source):  # series with a point > 50 interquartile ranges from the median
        rows = (source[i]["target"][0] for i in range(300))
        return np.mean([np.nanmax(np.abs(t - np.nanmedian(t))) > 50 * (np.subtract(*np.nanpercentile(t, [75, 25])) + 1e-9)
                        for t in rows])  # fmt: skip

    with_outliers = share_extreme(SyntheticSource(300, length=512, seed=2, outlier_fraction=0.5, short_fraction=0))
    without = share_extreme(SyntheticSource(300, length=512, seed=2, short_fraction=0))
    assert with_outliers > without + 0.25


@pytest.mark.parametrize("seed", range(6))
def test_periodic_group_repeats_its_season(seed):
    rng = np.random.default_rng(seed)
    group = synthetic.periodic_group(rng, 3000, 2)
    assert group.shape == (2, 3000) and np.isfinite(group).all()
    # Find the period as the best-correlating lag: one season back explains the series (noise is at
    # most 10 % of the cycle's range, trends and level shifts are slow), half a season back does not.
    lags = np.arange(8, 1441)
    correlations = [autocorrelation(group[0], lag) for lag in lags]
    best = lags[int(np.argmax(correlations))]
    assert max(correlations) > 0.6
    cycle = synthetic.periodic_template(np.random.default_rng(seed), best)
    assert cycle.min() == 0.0 and cycle.max() == 1.0


def test_kernelsynth_periodic_kernel_period_in_autocorrelation():
    period, length = 24, 2400
    rng = np.random.default_rng(0)
    term = synthetic._ProductTerm(spectral=(("periodic", period / length, 1.0),))
    values = [synthetic.sample_gp(rng, [term], length) for _ in range(20)]
    at_period = np.mean([autocorrelation(v, period) for v in values])
    at_half = np.mean([autocorrelation(v, period // 2) for v in values])
    assert at_period > 0.9
    assert at_period > at_half + 0.3


def test_kernelsynth_white_and_linear_terms():
    rng = np.random.default_rng(1)
    length = 4000
    white = synthetic.sample_gp(rng, [synthetic._ProductTerm(white=True)], length)
    assert abs(autocorrelation(white, 1)) < 0.05 and 0.9 < white.std() < 1.1
    # Linear kernel (u - c)(u' - c): every draw is an exact straight line through u = c.
    line = synthetic.sample_gp(rng, [synthetic._ProductTerm(linear_offsets=(0.5,))], length)
    np.testing.assert_allclose(np.diff(line, 2), 0.0, atol=1e-9)
    assert abs(line[length // 2]) < 1e-9


def test_daily_seasonality_visible_in_autocorrelation_at_minute_resolution():
    rng = np.random.default_rng(2)
    minutes = np.arange(3 * synthetic.MINUTES_PER_DAY)  # 1-minute steps, 3 days
    profile = synthetic.daily_weekly_profile(rng, minutes, weekly=False)
    noisy = profile + 0.05 * rng.standard_normal(len(profile))
    day = synthetic.MINUTES_PER_DAY
    assert autocorrelation(noisy, day) > 0.8
    assert autocorrelation(noisy, day) > autocorrelation(noisy, day // 2) + 0.5


def test_weekly_profile_has_lower_weekends():
    rng = np.random.default_rng(3)
    minutes = np.arange(0, 2 * synthetic.MINUTES_PER_WEEK, 60)  # hourly, two weeks
    profile = synthetic.daily_weekly_profile(rng, minutes, weekly=True)
    weekend = (minutes // synthetic.MINUTES_PER_DAY) % 7 >= 5
    assert profile[weekend].mean() < 0.95 * profile[~weekend].mean()


def test_spike_rate_and_heights():
    rng = np.random.default_rng(4)
    spikes = synthetic.spike_train(rng, 200_000, rate=0.005, magnitude=2.0)
    rate = np.mean(spikes > 0)
    assert abs(rate - 0.005) < 0.0008
    assert spikes[spikes > 0].min() >= 2.0


def test_heavy_tailed_noise_has_heavy_tails():
    rng = np.random.default_rng(5)
    noise = synthetic.heavy_tailed_noise(rng, 200_000, degrees_of_freedom=3.0)
    gaussian = rng.standard_normal(200_000)
    # P(|t_3| > 5) ~ 1.5%; a Gaussian essentially never exceeds 5.
    assert np.mean(np.abs(noise) > 5) > 0.008
    assert np.mean(np.abs(gaussian) > 5) < 1e-4
    scaled = noise / noise.std()
    assert np.mean(np.abs(scaled) > 4 * 1.0) > 10 * np.mean(np.abs(gaussian) > 4)


def test_bursts_level_shifts_sawtooth_counters():
    rng = np.random.default_rng(6)
    bursts = synthetic.burst_indicator(rng, 100_000, rate=0.001, mean_length=20)
    assert set(np.unique(bursts)) == {0.0, 1.0}
    assert 0.005 < bursts.mean() < 0.05  # ~ rate * mean length
    shifts = synthetic.level_shifts(rng, 10_000, rate=0.01)
    assert 50 < np.count_nonzero(np.diff(shifts)) < 150
    saw = synthetic.sawtooth(rng, 5000, mean_period=50)
    drops = np.flatnonzero(np.diff(saw) < 0)
    assert 70 < len(drops) < 130 and saw.min() >= 0 and saw.max() < 1
    counter = synthetic.counter_from_rate(rng, np.full(10_000, 3.0))
    assert np.all(np.diff(counter) >= 0)
    with_resets = synthetic.counter_from_rate(rng, np.full(10_000, 3.0), reset_probability=0.001)
    assert np.any(np.diff(with_resets) < 0)


@pytest.mark.parametrize("kind", synthetic.OBSERVABILITY_KINDS)
def test_observability_metric_kinds(kind):
    rng = np.random.default_rng(7)
    minutes = np.arange(4 * synthetic.MINUTES_PER_DAY // 5) * 5
    driver = synthetic.daily_weekly_profile(rng, minutes)
    driver /= driver.mean()
    values = np.stack([synthetic.metric_from_driver(rng, kind, driver, step=5) for _ in range(20)])
    assert np.isfinite(values).all()
    if kind == "cpu_percent":
        assert values.min() >= 0 and values.max() <= 100
        assert np.mean(values == 100.0) > 0  # saturation happens
    elif kind == "error_count":
        assert np.array_equal(values, np.round(values)) and values.min() >= 0
        assert np.mean(values == 0) > 0.5  # sparse / intermittent
    elif kind == "counter":
        assert np.mean(np.diff(values, axis=1) >= 0) > 0.99
    elif kind == "traffic":
        # Seasonal load: daily period visible.
        assert np.mean([autocorrelation(v, 288) for v in values]) > 0.5
    elif kind == "latency":
        assert values.min() > 0
    elif kind == "memory_gc":
        assert np.mean(np.diff(values, axis=1) < 0) > 0.005  # GC drops


def test_observability_group_variates_share_a_latent_driver():
    rng = np.random.default_rng(8)
    minutes = np.arange(2000) * 5
    driver = synthetic.daily_weekly_profile(rng, minutes)
    other = synthetic.daily_weekly_profile(np.random.default_rng(99), minutes)
    same = [np.corrcoef(synthetic.metric_from_driver(rng, "traffic", driver, 5),
                        synthetic.metric_from_driver(rng, "cpu_percent", driver, 5))[0, 1] for _ in range(10)]
    different = [np.corrcoef(synthetic.metric_from_driver(rng, "traffic", driver, 5),
                             synthetic.metric_from_driver(rng, "cpu_percent", other, 5))[0, 1] for _ in range(10)]
    assert np.median(same) > 0.6
    assert np.median(same) > np.median(different) + 0.3
