"""Rolling-window harness, ``toto-jax eval``, the LSF protocol and the GluonTS adapter, with a tiny random
model. ``test_lsf_*`` read ETTh1 from ../shared/data (CC BY-ND, read unmodified).

Every tool forecasts with ``ForecastOptions`` (one set of defaults): the tests compare each tool's numbers
with ``forecast(..., options=...)`` on inputs with a glitch, which the default options clip and the
reference options do not."""

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from flax import nnx

import toto_jax
from toto_jax.cli import main
from toto_jax.config import TotoConfig
from toto_jax.eval import harness, lsf
from toto_jax.eval.baselines import SeasonalNaive, WindowForecast
from toto_jax.forecasting import forecast
from toto_jax.forecasting.options import ForecastOptions
from toto_jax.models.toto1 import Toto

ETTH1 = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ett" / "ETT-small" / "ETTh1.csv"


@pytest.fixture(scope="module")
def tiny_model():
    config = TotoConfig(patch_size=8, stride=8, embed_dim=32, num_layers=2, num_heads=4, mlp_hidden_dim=64,
                        dropout=0.0, spacewise_every_n_layers=2, k_components=3)  # fmt: skip
    return Toto(config, rngs=nnx.Rngs(0))


@pytest.fixture(scope="module")
def tiny_checkpoint(tiny_model, tmp_path_factory):
    return toto_jax.export_torch(tiny_model, tmp_path_factory.mktemp("ckpt") / "tiny")


def _seasonal(length, period, seed, level=10.0):
    rng = np.random.default_rng(seed)
    return level + np.sin(np.arange(length) * 2 * np.pi / period) + 0.1 * rng.normal(size=length)


@pytest.fixture(scope="module")
def series_dir(tmp_path_factory):
    """A NAB-like CSV (5 min), a cloud-monitoring-like CSV (hourly, with labels) and a Parquet file."""
    root = tmp_path_factory.mktemp("series")
    (root / "nab").mkdir()
    times = pd.date_range("2020-01-01", periods=1200, freq="5min")
    pd.DataFrame({"timestamp": times, "value": _seasonal(1200, 288, 0)}).to_csv(root / "nab" / "cpu.csv", index=False)
    hours = pd.date_range("2020-01-01", periods=400, freq="h")
    pd.DataFrame({"TimeStamp": hours.strftime("%Y-%m-%dT%H:%M:%SZ"), "Value": _seasonal(400, 24, 1),
                  "Label": 0}).to_csv(root / "api.csv", index=False)  # fmt: skip
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({"item_id": ["p0"], "start": [pd.Timestamp("2020-01-01")], "freq": ["h"],
                      "target": [_seasonal(300, 24, 2).astype(np.float32).tolist()]})  # fmt: skip
    pq.write_table(table, root / "part-0.parquet")
    return root


def test_prediction_lengths_follow_gift_eval():
    assert harness.prediction_length("5min", "short") == 48
    assert harness.prediction_length("h", "medium") == 480
    assert harness.prediction_length("D", "long") == 450
    assert harness.prediction_length("W-SUN", "short") == 8
    with pytest.raises(ValueError, match="unknown horizon term"):
        harness.prediction_length("h", "huge")


def test_window_starts():
    # 10% of 1000 over a horizon of 48 -> 3 windows ending at the end of the series
    assert harness.window_starts(1000, 48) == [856, 904, 952]
    assert harness.window_starts(1000, 48, max_windows=2) == [904, 952]
    assert harness.window_starts(1000, 48, stride=10) == [932, 942, 952]
    # windows leaving too little history are dropped
    assert harness.window_starts(200, 100, test_fraction=1.0, min_history=64) == [100]
    assert harness.window_starts(100, 100) == []


def test_read_series_layouts(series_dir):
    found = {s.name: s for s in harness.read_series([series_dir])}
    assert set(found) == {"nab/cpu.csv", "api.csv", "p0"}
    assert found["nab/cpu.csv"].season == 288 and len(found["nab/cpu.csv"].values) == 1200
    assert found["api.csv"].season == 24 and len(found["api.csv"].values) == 400  # the label column is dropped
    assert found["p0"].season == 24
    np.testing.assert_allclose(found["p0"].values, _seasonal(300, 24, 2).astype(np.float32))
    with pytest.raises(FileNotFoundError):
        harness.read_series([series_dir / "missing"])


def test_evaluate_ratios(tiny_model, series_dir):
    series = harness.read_series([series_dir])
    series.append(harness.Series("short-one", _seasonal(60, 24, 9), "h"))  # no room for a 48-step window
    truth = {len(s.values): s.values for s in series}

    def oracle(contexts, horizon, season):
        # knows each series by its length: forecasts the actual future
        out = []
        for context in contexts:
            full = next(v for v in truth.values() if np.array_equal(v[: len(context)], context, equal_nan=True))
            out.append(WindowForecast.point_mass(full[len(context) : len(context) + horizon]))
        return out

    toto = harness.TotoForecaster(tiny_model, num_samples=8, options=ForecastOptions(context_length=64))
    forecasters = {"toto": toto, "seasonal_naive": SeasonalNaive(), "oracle": oracle}
    result = harness.evaluate(forecasters, series, ["short"], test_fraction=0.25, max_windows=2, keep_examples=1)
    records = result.records
    assert sorted(records.series.unique()) == ["api.csv", "nab/cpu.csv", "p0"]  # the short series is skipped
    assert len(records) == 3 * 3 and set(records.windows) == {2}
    summary = harness.summarize(records).set_index(["term", "forecaster"])
    assert summary.loc[("short", "seasonal_naive"), "MASE_ratio"] == pytest.approx(1.0)
    assert summary.loc[("short", "oracle"), "CRPS_ratio"] == pytest.approx(1e-6)  # floored perfect score
    toto = records[records.forecaster == "toto"]
    assert np.all(np.isfinite(toto[["MASE", "CRPS", "WQL", "MAE", "MSE", "CRPS_samples"]].to_numpy()))
    # pooled metrics agree with a direct computation
    naive = records[(records.forecaster == "seasonal_naive") & (records.series == "api.csv")]
    values = truth[400]
    starts = harness.window_starts(400, 48, test_fraction=0.25, max_windows=2)
    errors = np.concatenate([values[s : s + 48] - values[s - 24 : s][np.arange(48) % 24] for s in starts])
    targets = np.concatenate([values[s : s + 48] for s in starts])
    assert naive.MAE.item() == pytest.approx(np.abs(errors).mean())
    assert naive.MSE.item() == pytest.approx(np.square(errors).mean())
    assert naive.CRPS.item() == pytest.approx(np.abs(errors).sum() / np.abs(targets).sum())
    assert naive.WQL.item() == pytest.approx(np.abs(errors).sum() / np.abs(targets).sum())  # a point mass
    scales = [np.abs(values[24:s] - values[: s - 24]).mean() for s in starts]
    expected_mase = np.mean([np.abs(errors[i * 48 : (i + 1) * 48]).mean() / scales[i] for i in range(2)])
    assert naive.MASE.item() == pytest.approx(expected_mase)
    assert set(result.examples) == {("short", "api.csv")}
    assert "seasonal_naive" in harness.format_table(harness.summarize(records))


def _glitched(length, period, seed, at):
    values = _seasonal(length, period, seed)
    values[at] = 1e6  # one glitch: the default options clip it, the reference options feed it to the model
    return values


def test_toto_forecaster_forecasts_whole_histories_with_its_options(tiny_model):
    """Each window's whole history (float64, lengths differ) goes to ``forecast`` with the forecaster's
    options; ``forecast`` keeps the last ``options.context_length`` steps, so the result equals a forecast of
    the histories' last 64 steps. Options None are ``ForecastOptions()``."""
    histories = [_glitched(300, 24, 0, 280), _glitched(250, 24, 1, 240)]
    options = ForecastOptions(context_length=64)
    forecaster = harness.TotoForecaster(tiny_model, num_samples=8, seed=3, options=options)
    got = forecaster(histories, 16, 24)
    cut = forecast(tiny_model, [h[None, -64:] for h in histories], 16, num_samples=8, seed=3, options=options)
    for i, window in enumerate(got):
        np.testing.assert_allclose(window.samples, cut.samples[i, 0], rtol=1e-6)
        assert np.all(np.abs(window.median) < 1e3)  # the glitch was clipped
    reference = ForecastOptions.reference(context_length=64)
    unclipped = harness.TotoForecaster(tiny_model, num_samples=8, seed=3, options=reference)(histories, 16, 24)
    assert not np.allclose(unclipped[0].samples, got[0].samples)
    assert harness.TotoForecaster(tiny_model).options == ForecastOptions()


def test_eval_cli_forecast_flags_reach_the_options(tiny_checkpoint, tmp_path):
    """``toto-jax eval``'s forecast flags are ``add_options_arguments``': the toto rows of its metrics equal
    the harness's with ``TotoForecaster(options=...)``, and each flag set gives different numbers."""
    data = tmp_path / "data"
    data.mkdir()
    times = pd.date_range("2020-01-01", periods=600, freq="5min")
    pd.DataFrame({"timestamp": times, "value": _glitched(600, 288, 3, 495)}).to_csv(data / "cpu.csv", index=False)
    model = toto_jax.load(tiny_checkpoint)
    series = harness.read_series([data])
    cases = {
        (): ForecastOptions(context_length=64),
        ("--reference-options",): ForecastOptions.reference(context_length=64),
        ("--sampling", "independent"): ForecastOptions(context_length=64, sampling="independent"),
    }
    found = []
    for flags, options in cases.items():
        out = tmp_path / ("eval" + "".join(flags))
        code = main(["eval", str(data), "--checkpoint", str(tiny_checkpoint), "--terms", "short", "--baselines",
                     "seasonal_naive", "--num-samples", "8", "--max-windows", "2", "--seed", "1",
                     "--context-length", "64", "--output-dir", str(out), *flags])  # fmt: skip
        assert code == 0
        written = pd.read_csv(out / "metrics.csv").set_index("forecaster").loc["toto"]
        toto = harness.TotoForecaster(model, num_samples=8, seed=1, options=options)
        expected = harness.evaluate({"toto": toto, "seasonal_naive": SeasonalNaive()}, series, ["short"],
                                    max_windows=2).records.set_index("forecaster").loc["toto"]  # fmt: skip
        assert written.windows == expected.windows == 2
        for metric in ("MASE", "CRPS", "WQL", "MAE", "MSE", "CRPS_samples"):
            assert written[metric] == pytest.approx(expected[metric], rel=1e-6), (flags, metric)
        found.append(written.CRPS)
    assert len({round(crps, 6) for crps in found}) == len(cases), found


def test_eval_cli(tiny_checkpoint, series_dir, tmp_path, capsys):
    out = tmp_path / "eval"
    code = main(["eval", str(series_dir), "--checkpoint", str(tiny_checkpoint), "--terms", "short",
                 "--baselines", "seasonal_naive", "--num-samples", "8", "--max-windows", "2",
                 "--context-length", "64", "--output-dir", str(out), "--plot", "--plot-count", "2"])  # fmt: skip
    assert code == 0
    printed = capsys.readouterr()
    assert "MASE/SN" in printed.out and "toto" in printed.out
    assert "CRPS wins: the share of series where the forecaster's CRPS is below seasonal naive's" in printed.out
    progress = [line for line in printed.err.splitlines() if line.startswith("[short]")]
    assert len(progress) == 3 and "left)" not in progress[0]  # three series; nothing to estimate from at first
    assert all(re.search(r" \([0-9hms]+ elapsed, about [0-9hms]+ left\)$", line) for line in progress[1:]), progress
    metrics = pd.read_csv(out / "metrics.csv")
    assert set(metrics.forecaster) == {"toto", "seasonal_naive"} and len(metrics) == 6
    summary = pd.read_csv(out / "summary.csv")
    assert {"MASE_ratio", "CRPS_ratio", "WQL_ratio"} <= set(summary.columns)
    assert len(list((out / "plots").glob("*.png"))) == 2


def test_eval_cli_explains_missing_statsforecast(tiny_checkpoint, series_dir, tmp_path, capsys, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "statsforecast.models", None)
    code = main(["eval", str(series_dir), "--checkpoint", str(tiny_checkpoint), "--output-dir", str(tmp_path)])
    assert code == 2
    assert "pip install 'toto-jax[eval]'" in capsys.readouterr().err


def test_eval_cli_bad_input(tiny_checkpoint, tmp_path, capsys):
    assert main(["eval", str(tmp_path / "nothing"), "--checkpoint", str(tiny_checkpoint)]) == 2
    assert "no such file or directory" in capsys.readouterr().err
    assert main(["eval", str(tmp_path), "--terms", "short,forever", "--checkpoint", str(tiny_checkpoint)]) == 2
    assert "unknown term" in capsys.readouterr().err
    assert main(["eval", str(tmp_path), "--context-length", "0", "--checkpoint", str(tiny_checkpoint)]) == 2
    assert "--context-length must be a positive integer" in capsys.readouterr().err


@pytest.mark.shared_data
def test_lsf_splits_and_scores():
    values, columns = lsf.read_ett(ETTH1)
    assert columns == ["HUFL", "HULL", "MUFL", "MULL", "LUFL", "LULL", "OT"]
    data = lsf.normalise(values)
    np.testing.assert_allclose(data[:, : lsf.TRAIN_STEPS].mean(1), 0, atol=1e-9)
    np.testing.assert_allclose(data[:, : lsf.TRAIN_STEPS].std(1), 1, atol=1e-9)
    starts = lsf.lsf_window_starts(96, 1)
    assert starts[0] == 11520 and starts[-1] + 96 == 14400 and len(starts) == 2880 - 96 + 1

    def persistence(contexts, horizon):  # repeats the last observed value
        return np.repeat(contexts[..., -1:], horizon, axis=-1)

    (result,) = lsf.evaluate_lsf(persistence, values, [96], context_length=512, stride=500)
    starts = lsf.lsf_window_starts(96, 500)
    errors = np.stack([data[:, s : s + 96] - data[:, s - 1 : s] for s in starts])
    assert result["windows"] == len(starts)
    assert result["MAE"] == pytest.approx(np.abs(errors).mean())
    assert result["MSE"] == pytest.approx(np.square(errors).mean())


@pytest.mark.shared_data
def test_lsf_context_length_is_decided_once(tiny_model):
    """The protocol's context is the forecast's: ``options.context_length``, else the model's max_context."""
    assert lsf.toto_lsf_forecaster(tiny_model).context_length == tiny_model.config.max_context
    assert lsf.toto_lsf_forecaster(tiny_model).options == ForecastOptions()
    assert lsf.toto_lsf_forecaster(tiny_model, options=ForecastOptions(context_length=256)).context_length == 256
    values, _ = lsf.read_ett(ETTH1)
    with pytest.raises(ValueError, match="needs a context_length"):
        lsf.evaluate_lsf(lambda contexts, horizon: contexts[..., -horizon:], values, [96])
    too_long = lsf.toto_lsf_forecaster(tiny_model, options=ForecastOptions(context_length=lsf.TRAIN_STEPS * 2))
    with pytest.raises(ValueError, match="at most 11520 steps"):
        lsf.evaluate_lsf(too_long, values, [96])


@pytest.mark.shared_data
def test_lsf_cli(tiny_checkpoint, tmp_path, capsys):
    """``toto-jax eval --protocol lsf`` scores the median of ``forecast(..., options=ForecastOptions(...))``
    of the windows' last 256 steps, on data with a glitch. (The option flags are parsed once for both
    protocols: ``test_eval_cli_forecast_flags_reach_the_options``.)"""
    data = tmp_path / "ETTh1.csv"
    frame = pd.read_csv(ETTH1)
    frame.loc[12900, "OT"] = 1e6  # 20 steps before the second window (start 12920)
    frame.to_csv(data, index=False)
    code = main(["eval", str(data), "--protocol", "lsf", "--checkpoint", str(tiny_checkpoint), "--lsf-horizons",
                 "96", "--stride", "1400", "--context-length", "256", "--num-samples", "4",
                 "--output-dir", str(tmp_path / "out")])  # fmt: skip
    assert code == 0
    assert capsys.readouterr().err.splitlines()[-1] == "[lsf] ETTh1, horizon 96"  # progress (then a time left)
    table = pd.read_csv(tmp_path / "out" / "lsf.csv")
    assert table.horizon.tolist() == [96] and table.windows.tolist() == [2]  # starts 11520, 12920
    assert table.context.tolist() == [256]
    # the same numbers from the API, windows cut by hand (normalised with the train split's statistics)
    values, _ = lsf.read_ett(data)
    normalised = lsf.normalise(values)
    starts = [11520, 12920]
    contexts = np.stack([normalised[:, s - 256 : s] for s in starts])
    targets = np.stack([normalised[:, s : s + 96] for s in starts])
    options = ForecastOptions(context_length=256)
    median = forecast(toto_jax.load(tiny_checkpoint), contexts, 96, num_samples=4, options=options).median
    assert table.MAE.item() == pytest.approx(np.abs(targets - median).mean(), rel=1e-6)
    assert table.MSE.item() == pytest.approx(np.square(targets - median).mean(), rel=1e-6)


def test_gluonts_predictor(tiny_model):
    from gluonts.evaluation import Evaluator
    from gluonts.model.forecast import SampleForecast

    from toto_jax.eval.gluonts_adapter import TotoPredictor

    start = pd.Period("2021-01-01 00:00", freq="h")
    dataset = [
        {"target": _seasonal(200, 24, 3), "start": start, "item_id": "a"},
        {"target": np.stack([_seasonal(150, 24, 4), _seasonal(150, 12, 5)]), "start": start, "item_id": "b"},
        {"target": _seasonal(120, 24, 6), "start": start, "item_id": "c"},
    ]
    dataset[0]["target"][150] = 1e6  # a glitch: the predictor clips contexts by default
    predictor = TotoPredictor(tiny_model, prediction_length=16, num_samples=6, batch_size=2)
    assert predictor.options == ForecastOptions()
    forecasts = list(predictor.predict(dataset))
    assert [f.item_id for f in forecasts] == ["a", "b", "c"]
    assert all(isinstance(f, SampleForecast) for f in forecasts)
    assert forecasts[0].samples.shape == (6, 16) and forecasts[1].samples.shape == (6, 16, 2)
    assert forecasts[0].start_date == start + 200 and forecasts[1].start_date == start + 150
    # "a" went alone into its forecast call (the only univariate entry of the first batch): the API's paths
    # with the default options (its whole float64 target: shorter than the model's max_context)
    direct = forecast(tiny_model, [dataset[0]["target"][None]], 16, num_samples=6, options=ForecastOptions())
    np.testing.assert_allclose(forecasts[0].samples, direct.samples[0, 0].T)
    # options reach every call: a 96-step context is the forecast of the targets' last 96 steps
    short = TotoPredictor(tiny_model, 16, num_samples=6, batch_size=2, options=ForecastOptions(context_length=96))
    cut = forecast(tiny_model, [dataset[0]["target"][None, -96:]], 16, num_samples=6, options=ForecastOptions())
    np.testing.assert_allclose(next(iter(short.predict(dataset[:1]))).samples, cut.samples[0, 0].T, rtol=1e-6)
    assert np.isfinite(forecasts[2].samples).all()
    # gluonts' own evaluator consumes the forecasts
    truth = [pd.DataFrame(np.concatenate([dataset[i]["target"], _seasonal(16, 24, 7)]),
                          index=pd.period_range(start, periods=len(dataset[i]["target"]) + 16, freq="h"))
             for i in (0, 2)]  # fmt: skip
    aggregate, _ = Evaluator(quantiles=(0.1, 0.5, 0.9), num_workers=0)(truth, [forecasts[0], forecasts[2]])
    assert np.isfinite(aggregate["mean_wQuantileLoss"]) and np.isfinite(aggregate["MASE"])
