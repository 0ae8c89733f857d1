"""toto_jax.detect with the bundled Toto 1.0 model: causality, valid scores on awkward series, the combined
multivariate score, glitches, bad input, and the ``toto-jax detect`` round trip (files in a temp dir)."""

import numpy as np
import pandas as pd
import pytest

import toto_jax
from toto_jax.cli import main
from toto_jax.detection import DetectError, DetectOptions
from toto_jax.detection.adaptive import (adaptive_scores, combine_surprise, drifts, extremes, level_shifts,
                                        season_steps, seasonal_shifts, trailing_max)  # fmt: skip

# A short context keeps the compiled pass small; the windows' stride still makes series span several windows.
SHORT = toto_jax.ForecastOptions(context_length=256)
OPTIONS = DetectOptions(stride=128, history=300)


@pytest.fixture(scope="module")
def model():
    return toto_jax.load("default")


@pytest.fixture(scope="module")
def toto2():
    return toto_jax.load("toto2-small")


def daily(steps, variates=1, seed=0, period=96):
    rng = np.random.default_rng(seed)
    t = np.arange(steps)
    return np.stack([10 + 3 * np.sin(2 * np.pi * (t + 7 * v) / period) + 0.3 * rng.standard_normal(steps)
                     for v in range(variates)])  # fmt: skip


@pytest.mark.parametrize("family", ["toto1", "toto2"])
def test_a_later_change_moves_no_earlier_score(model, toto2, family):
    """Scores, combined scores and surprise up to step t are bit-identical when the steps after t change
    (a glitch, new noise), across window boundaries, for both families; the later scores do change. The
    timestamps make the default season ("1D") the series' 96-step period, so seasonal shifts take part."""
    model = model if family == "toto1" else toto2
    series = daily(1200, variates=2)
    stamps = pd.date_range("2024-01-01", periods=1200, freq="15min")
    assert season_steps(stamps, OPTIONS.season) == 96
    changed = series.copy()
    t = 700
    changed[:, t + 1 :] += np.random.default_rng(1).standard_normal((2, 1200 - t - 1))
    changed[0, t + 1] = 1e6
    before = toto_jax.detect(model, series, timestamps=stamps, options=OPTIONS, forecast_options=SHORT)
    after = toto_jax.detect(model, changed, timestamps=stamps, options=OPTIONS, forecast_options=SHORT)
    np.testing.assert_array_equal(after.scores[..., : t + 1], before.scores[..., : t + 1])
    np.testing.assert_array_equal(after.combined[: t + 1], before.combined[: t + 1])
    np.testing.assert_array_equal(after.surprise[..., : t + 1], before.surprise[..., : t + 1])
    assert not np.array_equal(after.scores[..., t + 1 :], before.scores[..., t + 1 :])
    assert after.scores[0, t + 1] > 0.9  # the glitch itself


@pytest.mark.parametrize("family", ["toto1", "toto2"])
@pytest.mark.parametrize("kind", ["constant", "gappy", "offset"])
def test_scores_valid_on_awkward_series(model, toto2, kind, family):
    """Constant, gappy (leading, inner and trailing gaps) and 1e9-offset series give finite scores in [0, 1]
    (none -0.0) with both families; missing steps score 0; an offset of 1e9 scores as the series without it (float64
    normalization)."""
    model = model if family == "toto1" else toto2
    series = daily(900)
    if kind == "constant":
        series = np.full((1, 900), 42.0)
    if kind == "gappy":
        series[0, :30] = np.nan
        series[0, 300:340] = np.nan
        series[0, 500:700:3] = np.nan
        series[0, -25:] = np.nan
    if kind == "offset":
        series = series + 1e9
    result = toto_jax.detect(model, series, options=OPTIONS, forecast_options=SHORT)
    for values in (result.scores, result.combined, result.surprise):
        assert np.all(np.isfinite(values)) and not np.signbit(values).any()  # no -0.0 in a written score
    assert np.all((result.scores >= 0) & (result.scores <= 1))
    assert np.all((result.combined >= 0) & (result.combined <= 1))
    if kind == "constant":
        assert result.scores.max() < OPTIONS.threshold
    if kind == "gappy":
        assert np.all(result.scores[0][np.isnan(series[0])] == 0)
    if kind == "offset":
        plain = toto_jax.detect(model, series - 1e9, options=OPTIONS, forecast_options=SHORT)
        np.testing.assert_allclose(result.surprise, plain.surprise, atol=2e-3)


def test_toto2_repeating_a_flat_line_is_unsurprising_and_leaving_it_is_a_tail(toto2):
    """A flat history holds Toto 2.0's scaler at its floor, where its quantiles of the all-zero input sit off
    the level (the retrained model put the level in the 0.1 tail at the last step of every patch, a drift alert
    on a constant): steps repeating the level score 0 nats, and the first step off it is still a far tail."""
    from toto_jax.detection.score import surprise

    series = np.full((1, 900), 42.0)
    series[0, 700] = 43.0
    scored = surprise(toto2, [series], [np.ones_like(series, bool)], SHORT, 128, 64)[0][0][0]
    assert np.all(scored[:700] == 0)
    assert scored[700] > 15


def test_a_glitch_is_scored_at_full_value_and_clipped_as_history(model):
    """Clipping bounds what the model sees, not what is scored: a 1000x glitch is flagged, and the steps after
    it, seen with the glitch clipped, are not."""
    series = daily(900)
    series[0, 600] = 1e4
    result = toto_jax.detect(model, series, options=OPTIONS, forecast_options=SHORT)
    assert result.flags[0, 600]
    assert result.surprise[0, 600] > 15  # a tail probability below 1e-6
    assert not result.flags[0, 620:].any()


def test_a_glitch_leaves_no_bias_in_the_steps_after_it(model):
    """A 1000x glitch beyond the clip range is history as a gap (filled, and out of the scaler's statistics),
    so the model's expectation of the steps after it is what it is without the glitch: their normal scores
    barely move (clipping it to the range's edge left it in the scaler: the next 60 steps scored ~1.6 sigma
    low, which a drift allowance of 1.5 flagged)."""
    from toto_jax.detection.score import surprise

    clean = daily(900)
    glitched = clean.copy()
    glitched[0, 600] = 1e4
    normal = [surprise(model, [s], [np.ones_like(s, bool)], SHORT, 128, 64)[1][0][0] for s in (clean, glitched)]
    np.testing.assert_array_equal(normal[1][:600], normal[0][:600])
    assert np.abs(normal[1][601:] - normal[0][601:]).max() < 0.3
    result = toto_jax.detect(model, glitched, options=OPTIONS.replace(drift_allowance=1.0), forecast_options=SHORT)
    assert result.flags[0, 600] and not result.flags[0, 601:].any()


def test_combined_score_of_several_variates(model):
    """A jump in one of three variates raises the combined score at that step; a one-variate series' combined
    score is its variate's score; the combination is Bonferroni's bound."""
    series = daily(900, variates=3)
    series[1, 650:] += 8.0
    result = toto_jax.detect(model, series[None], options=OPTIONS, forecast_options=SHORT)
    assert result.scores.shape == (1, 3, 900) and result.combined.shape == (1, 900)
    assert result.combined[0, 650] > OPTIONS.threshold
    assert result.combined[0, 650] >= result.combined[0, 400:640].max()
    single = toto_jax.detect(model, series[1:2], options=OPTIONS, forecast_options=SHORT)
    np.testing.assert_array_equal(single.combined, single.scores[0])
    surprise = np.array([[1.0, 5.0], [3.0, 0.5]])
    combined, scored = combine_surprise(surprise, np.ones((2, 2), bool))
    np.testing.assert_allclose(combined, [3.0 - np.log(2), 5.0 - np.log(2)])
    assert scored.all()


def test_adaptive_score_is_relative_to_the_series_history():
    """The same surprise scores higher in a series whose history is calm than in one whose history is noisy; a
    surprise that stays high is not raised again; an extreme scores in the top tier, a level shift at least
    0.5, each only at the first step of a run; the first steps, with no history, score 0."""
    rng = np.random.default_rng(0)
    calm, noisy = rng.gamma(1.0, 0.5, 500), rng.gamma(1.0, 3.0, 500)
    calm[400] = noisy[400] = 12.0
    calm[401] = 11.0
    options = DetectOptions(history=300)
    none = np.zeros((2, 500), bool)
    scores = adaptive_scores(np.stack([calm, noisy]), np.ones(500, bool), none, none, options)
    assert scores[0, 400] > 0.5 > scores[1, 400]
    assert scores[0, 401] < 0.5
    assert np.all((scores >= 0) & (scores < 0.9)) and np.all(scores[:, :64] == 0)
    marked = none.copy()
    marked[1, 400] = marked[1, 300] = marked[1, 401] = True
    with_extreme = adaptive_scores(np.stack([calm, noisy]), np.ones(500, bool), marked, none, options)
    assert with_extreme[1, 400] > 0.9 and with_extreme[1, 300] > 0.9
    assert with_extreme[1, 401] == scores[1, 401]  # a run is one event: only its first step is raised
    with_shift = adaptive_scores(np.stack([calm, noisy]), np.ones(500, bool), none, marked, options)
    assert 0.9 > with_shift[1, 400] > with_shift[1, 300] >= 0.5 > scores[1, 300]  # increasing in the surprise
    np.testing.assert_array_equal(np.delete(with_shift, [300, 400], axis=1), np.delete(scores, [300, 400], axis=1))


def test_extremes_need_a_new_range_and_surprise():
    """An extreme lies beyond every earlier observed value (missing steps ignored) and surprises the model."""
    values = np.array([[1.0, 3.0, np.nan, 2.0, 4.0, 4.0, 0.5, 5.0]])
    valid = ~np.isnan(values)
    surprise = np.array([[9.0, 9.0, 0.0, 9.0, 9.0, 9.0, 9.0, 1.0]])
    found = extremes(values, valid, surprise, DetectOptions(extreme_surprise=3.0))
    np.testing.assert_array_equal(found[0], [False, True, False, False, True, False, True, False])
    assert not extremes(values, valid, surprise, DetectOptions(extreme_surprise=None)).any()


def test_level_shifts_find_a_new_level_causally():
    """A pattern whose level drops (peaks of 10 become 6, no single step beyond the past range) shifts within a
    span of the drop; noise alone, a constant, a span with a gap and the first WARM_UP means do not; a later
    change moves no earlier shift; a 1e9 offset changes nothing; level_span None finds none."""
    rng = np.random.default_rng(0)
    values = np.where(np.arange(600) % 2, 10.0, 0.0) + rng.uniform(0, 0.5, 600)
    values[450:] = np.where(np.arange(450, 600) % 2, 6.0, 1.0) + rng.uniform(0, 0.5, 150)
    options = DetectOptions(level_span=12, level_margin=0.1)
    valid = np.ones(600, bool)
    found = level_shifts(values, valid, options)
    assert not found[:450].any() and found[450:462].any()
    assert not (values[450:] < values[:450].min()).any()  # not an extreme: the drop hides in the range
    np.testing.assert_array_equal(level_shifts(values + 1e9, valid, options), found)
    changed = values.copy()
    changed[300:] += 5.0
    np.testing.assert_array_equal(level_shifts(changed, valid, options)[:300], found[:300])
    gappy = valid.copy()
    gappy[455] = False
    assert not level_shifts(np.where(gappy, values, np.nan), gappy, options)[455:467].any()
    assert not level_shifts(np.full(600, 3.0), valid, options).any()
    early = values.copy()
    early[40:] -= 5.0
    assert not level_shifts(early, valid, options)[:12 + 64 - 1].any()
    assert not level_shifts(values, valid, options.replace(level_span=None)).any()


def test_seasonal_shifts_find_a_changed_day():
    """A day whose peak is lower (no value beyond the past range, no 12-step mean beyond the range of the past
    means) is a seasonal shift within a span of the change, against the day before; noise alone is not; a later
    change moves no earlier shift; season None, or one as long as the series, finds none."""
    rng = np.random.default_rng(0)
    period, days = 96, 10
    t = np.arange(period * days)
    values = 10 + 3 * np.sin(2 * np.pi * t / period) + 0.1 * rng.standard_normal(t.size)
    day = slice(7 * period, 8 * period)
    values[day] = 10 + 1.5 * np.sin(2 * np.pi * t[day] / period) + 0.1 * rng.standard_normal(period)
    valid = np.ones(t.size, bool)
    options = DetectOptions(level_span=12, level_margin=0.1)
    assert not level_shifts(values, valid, options).any() and not (values[day] > values[: 7 * period].max()).any()
    found = seasonal_shifts(values, valid, period, options)
    assert not found[4 * period : 7 * period].any() and found[7 * period : 7 * period + 24].any()
    changed = values.copy()
    changed[500:] += 5.0
    np.testing.assert_array_equal(seasonal_shifts(changed, valid, period, options)[:500], found[:500])
    assert not seasonal_shifts(values, valid, None, options).any()
    assert not seasonal_shifts(values, valid, t.size, options).any()
    assert not seasonal_shifts(values, valid, period, options.replace(level_span=None)).any()


def test_season_in_steps_from_timestamps():
    """A duration season is that duration over the median interval of the timestamps (any datetime64 unit, a
    missing row changes nothing); steps stay steps; no timestamps, or a season under 2 steps, give None."""
    stamps = pd.date_range("2024-01-01", periods=500, freq="15min")
    assert season_steps(stamps, "1D") == 96 and season_steps(stamps, "7D") == 672
    assert season_steps(stamps.as_unit("s").to_numpy(), "1D") == 96
    assert season_steps(stamps.delete(100), "1D") == 96
    assert season_steps(stamps, 12) == 12 and season_steps(None, 12) == 12
    assert season_steps(None, "1D") is None and season_steps(stamps, "15min") is None
    assert season_steps(stamps, None) is None


def test_drifts_follow_the_cusum_definition():
    """A drift is a step where the two-sided CUSUM of the normal scores, less the allowance per step, passes its
    past maximum (and 0), after WARM_UP scored steps, the first such step of an excursion of the leading
    one-sided sum; unscored steps leave the sums as they are. Matches the recursion step by step; a run of
    steps each 1.5 sigma above the model's expectation is found within a few steps although no single one is
    surprising; a later change moves no earlier drift; None finds none."""
    rng = np.random.default_rng(0)
    z = rng.standard_normal((2, 900))
    z[1, 600:630] = 1.5 + 0.1 * rng.standard_normal(30)
    scored = rng.random((2, 900)) > 0.1
    options = DetectOptions(drift_allowance=1.0)
    found = drifts(z, scored, options)

    expected = np.zeros((2, 900), bool)
    for row in range(2):
        up = down = record = 0.0
        seen, raised = 0, {"up": False, "down": False}  # whether the side's current excursion has a drift
        for t in range(900):
            if scored[row, t]:
                up, down = max(0.0, up + z[row, t] - 1.0), max(0.0, down - z[row, t] - 1.0)
                raised["up"] &= up > 0
                raised["down"] &= down > 0
                side = "up" if up >= down else "down"
                if seen >= 64 and max(up, down) > record and not raised[side]:
                    expected[row, t] = raised[side] = True
                record = max(record, up, down)
                seen += 1
    np.testing.assert_array_equal(found, expected)
    first = 600 + np.argmax(found[1, 600:])
    assert found[1, 600:].any() and first < 610 and not found[0, 600:610].any()
    changed = z.copy()
    changed[:, 500:] = 5.0
    np.testing.assert_array_equal(drifts(changed, scored, options)[:, :500], found[:, :500])
    assert not drifts(z, scored, options.replace(drift_allowance=None)).any()


def test_a_growing_drift_is_one_alert():
    """A drift that keeps passing its record, with pauses (each step 3 sigma high, then one 0.5 high: the sum
    dips and climbs again), is raised once, at its first step past the record, not at every climb; a second
    excursion, after the sum returns to 0, that passes the record again is a second drift."""
    z = np.zeros((1, 400))
    z[0, 100:140] = np.tile([3.0, 0.5], 20)  # the sum climbs by 2, dips by 0.5: a record every other step
    z[0, 140:200] = -1.0  # back to 0 (the lower sum gains nothing)
    z[0, 300:340] = 3.0  # climbs by 2 a step past the first excursion's peak (30) at its 16th step
    found = drifts(z, np.ones_like(z, bool), DetectOptions(drift_allowance=1.0))
    assert np.flatnonzero(found[0]).tolist() == [100, 315]


def test_trailing_max_matches_its_definition():
    values = np.random.default_rng(0).standard_normal((3, 101))
    for width in (1, 7, 50, 200):
        expected = np.stack([values[:, max(0, t - width + 1) : t + 1].max(-1) for t in range(101)], -1)
        np.testing.assert_array_equal(trailing_max(values, width), expected)


def test_dataframe_in_and_out(model):
    """A DataFrame's scores come back on its own time index with one score column per variate."""
    index = pd.date_range("2024-01-01", periods=700, freq="5min")
    frame = pd.DataFrame(daily(700, variates=2).T, index=index, columns=["cpu", "mem"])
    table = toto_jax.detect(model, frame, options=OPTIONS, forecast_options=SHORT).to_dataframe()
    assert table.index.equals(index)
    assert list(table.columns) == ["cpu_score", "cpu_surprise", "mem_score", "mem_surprise", "anomaly_score",
                                   "anomaly"]  # fmt: skip


def test_bad_input_is_named(model):
    series = daily(300, variates=2)
    series[1, 120] = np.inf
    with pytest.raises(DetectError, match="series 0, variate 1: infinite value at step 120"):
        toto_jax.detect(model, series)
    series[1] = np.nan
    with pytest.raises(DetectError, match=r"variate\(s\) \[1\] have no observed values"):
        toto_jax.detect(model, series)
    with pytest.raises(DetectError, match="numeric"):
        toto_jax.detect(model, np.array([["a", "b"]]))
    with pytest.raises(DetectError, match="DetectOptions.history must be a positive integer"):
        DetectOptions(history=0)
    with pytest.raises(DetectError, match="DetectOptions.level_span must be a positive integer or None"):
        DetectOptions(level_span=0)
    with pytest.raises(DetectError, match="DetectOptions.drift_allowance must be a non-negative number or None"):
        DetectOptions(drift_allowance=-1.0)
    with pytest.raises(DetectError, match="DetectOptions.season must be at least 2 steps"):
        DetectOptions(season=1)
    with pytest.raises(DetectError, match="DetectOptions.season must be a positive duration such as '1D', got 'daily'"):
        DetectOptions(season="daily")
    with pytest.raises(DetectError, match="timestamps of series 0 have 299 entries for 300 steps"):
        toto_jax.detect(model, daily(300), timestamps=pd.date_range("2024", periods=299, freq="h"))
    with pytest.raises(DetectError, match="timestamps has 1 entries, expected one per series"):
        toto_jax.detect(model, [daily(300), daily(300)], timestamps=[pd.date_range("2024", periods=300, freq="h")])
    with pytest.raises(DetectError, match="DetectOptions.threshold must lie in"):
        DetectOptions(threshold=2.0)
    with pytest.raises(DetectError, match="stride must be a multiple of the patch size"):
        toto_jax.detect(model, daily(300), options=DetectOptions(stride=100), forecast_options=SHORT)


def test_cli_round_trip(model, tmp_path, capsys):
    """Wide CSV and long Parquet tables come back in their layout with score columns equal to the API's; the
    plot is a PNG; an existing output needs --overwrite; a non-numeric column is refused by name."""
    index = pd.date_range("2024-01-01", periods=700, freq="5min")
    values = daily(700, variates=2)
    values[0, 500] = 1e3
    wide = pd.DataFrame({"timestamp": index, "cpu": values[0], "mem": values[1]})
    wide.to_csv(tmp_path / "wide.csv", index=False)
    flags = ["--context-length", "256", "--stride", "128", "--history", "300"]
    assert main(["detect", "--input", str(tmp_path / "wide.csv"), "--output", str(tmp_path / "scored.csv"),
                 "--plot", str(tmp_path / "scored.png"), *flags]) == 0  # fmt: skip
    scored = pd.read_csv(tmp_path / "scored.csv")
    expected = toto_jax.detect(model, values, timestamps=index, options=OPTIONS, forecast_options=SHORT)
    assert list(scored.columns) == ["timestamp", "cpu", "mem", "cpu_score", "mem_score", "anomaly_score", "anomaly"]
    np.testing.assert_allclose(scored[["cpu", "mem"]].to_numpy().T, values)
    np.testing.assert_allclose(scored[["cpu_score", "mem_score"]].to_numpy().T, expected.scores, atol=1e-12)
    np.testing.assert_allclose(scored["anomaly_score"], expected.combined, atol=1e-12)
    assert scored["anomaly"].iloc[500]
    assert (tmp_path / "scored.png").read_bytes()[:4] == b"\x89PNG"

    long = pd.concat([pd.DataFrame({"unique_id": name, "ds": index, "y": row}) for name, row in zip("ab", values)])
    long = long.iloc[::-1]  # rows out of order: the output keeps the input's row order
    long.to_parquet(tmp_path / "long.parquet", index=False)
    assert main(["detect", "--input", str(tmp_path / "long.parquet"), "--output", str(tmp_path / "out.parquet"),
                 *flags]) == 0  # fmt: skip
    out = pd.read_parquet(tmp_path / "out.parquet")
    assert list(out.columns) == ["unique_id", "ds", "y", "anomaly_score", "anomaly"]
    separate = toto_jax.detect(model, [values[:1], values[1:]], timestamps=[index, index], options=OPTIONS,
                               forecast_options=SHORT)  # fmt: skip
    for name, row in zip("ab", separate.combined):
        part = out[out.unique_id == name].sort_values("ds")
        np.testing.assert_allclose(part["anomaly_score"], row, atol=1e-12)

    before = (tmp_path / "scored.csv").read_bytes()
    assert main(["detect", "--input", str(tmp_path / "wide.csv"), "--output", str(tmp_path / "scored.csv")]) == 2
    assert "already exists; pass --overwrite" in capsys.readouterr().err
    assert (tmp_path / "scored.csv").read_bytes() == before
    wide.assign(host="x").to_csv(tmp_path / "text.csv", index=False)
    assert main(["detect", "--input", str(tmp_path / "text.csv"), "--output", str(tmp_path / "t.csv")]) == 2
    assert "'host'" in capsys.readouterr().err
    assert not (tmp_path / "t.csv").exists()


def test_mixture_tails_match_scipy_far_out():
    """StudentTMixture.tails: both tails of a Student-T mixture to 1e-4 relative against scipy, far into the
    upper tail too, where 1 - cdf would be 0 in float32."""
    import jax.numpy as jnp
    from scipy import stats

    from toto_jax.models.toto1.distribution import StudentTMixture

    df, loc, scale, logits = (np.array([[3.0, 7.5]]), np.array([[0.0, 2.0]]), np.array([[1.0, 0.5]]),
                              np.array([[0.3, -0.2]]))  # fmt: skip
    mixture = StudentTMixture(*(jnp.asarray(a, jnp.float32) for a in (df, loc, scale, logits)))
    x = np.array([-40.0, -3.0, 0.5, 2.0, 6.0, 300.0])
    below, above = (np.asarray(t) for t in mixture.tails(jnp.asarray(x[:, None], jnp.float32)))
    weights = np.exp(logits) / np.exp(logits).sum()
    expected_below = sum(w * stats.t.cdf(x, d, m, s) for w, d, m, s in zip(weights[0], df[0], loc[0], scale[0]))
    expected_above = sum(w * stats.t.sf(x, d, m, s) for w, d, m, s in zip(weights[0], df[0], loc[0], scale[0]))
    np.testing.assert_allclose(below[:, 0], expected_below, rtol=1e-4)
    np.testing.assert_allclose(above[:, 0], expected_above, rtol=1e-4)
    assert above[-1, 0] < 1e-6


def test_surprise_and_normal_score_of_tails():
    """The pass's two outputs from (P(X <= x), P(X >= x)): the surprise -log(2 min) and the normal score
    Phi^-1(P(X <= x)) against scipy, to 1e-4 relative, deep in both tails (where 1 - P would round to 1 in
    float32); both 0 at invalid steps."""
    import jax.numpy as jnp
    from scipy import special

    from toto_jax.detection.score import _surprise_and_normal_score

    below = np.array([1e-20, 1e-6, 0.02, 0.5, 0.9, 1 - 1e-6, 1.0], np.float64)
    above = np.array([1.0, 1 - 1e-6, 0.98, 0.5, 0.1, 1e-6, 1e-20], np.float64)
    valid = np.array([True] * 6 + [False])
    surprise, normal = (np.asarray(a) for a in _surprise_and_normal_score(
        jnp.asarray(below, jnp.float32), jnp.asarray(above, jnp.float32), jnp.asarray(valid)))  # fmt: skip
    smaller = np.minimum(below, above)
    np.testing.assert_allclose(surprise[:6], -np.log(2 * smaller[:6]), rtol=1e-4)
    expected = np.where(below < above, special.ndtri(smaller), -special.ndtri(smaller))
    np.testing.assert_allclose(normal[:6], expected[:6], rtol=1e-4, atol=1e-6)
    assert normal[0] < -9 and normal[5] > 4.5 and surprise[6] == normal[6] == 0


def test_quantile_tails_of_toto2_knots():
    """The Toto 2.0 distribution from nine quantiles: linear between the knots, exponential tails beyond them
    with the outer interval's width as scale; both tails agree with that definition, and a value far out has a
    tiny but positive tail probability."""
    import jax.numpy as jnp

    from toto_jax.detection.score import quantile_tails

    levels = np.arange(1, 10) / 10
    knots = np.array([-3.0, -2.0, -1.5, -0.5, 0.0, 0.2, 1.0, 2.0, 4.0])
    x = np.array([-5.0, -3.0, -1.75, 0.1, 3.0, 4.0, 10.0, 40.0])
    below, above = (np.asarray(t) for t in quantile_tails(jnp.asarray(knots[:, None], jnp.float32), levels,
                                                            jnp.asarray(x[None], jnp.float32)[0], 1e-4))  # fmt: skip
    inside = np.interp(x, knots, levels)
    far_below, far_above = 0.1 * np.exp((x + 3) / 1.0), 1 - 0.1 * np.exp((4 - x) / 2.0)
    expected_below = np.where(x < -3, far_below, np.where(x > 4, far_above, inside))
    np.testing.assert_allclose(below, expected_below, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(above, 1 - expected_below, rtol=1e-5, atol=1e-6)
    assert 0 < above[-1] < 1e-6


def test_windows_split_over_devices_give_the_same_scores(model):
    """ForecastOptions.devices splits the windows over 4 (virtual CPU) devices, batches padded to a multiple:
    the same surprise as one device."""
    series = [daily(900, seed=s) for s in range(3)]
    one = toto_jax.detect(model, series, options=OPTIONS.replace(batch_size=2), forecast_options=SHORT)
    four = toto_jax.detect(model, series, options=OPTIONS.replace(batch_size=2),
                           forecast_options=SHORT.replace(devices=4))  # fmt: skip
    for a, b in zip(one.surprise, four.surprise):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
