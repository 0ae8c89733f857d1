"""``toto-jax forecast`` round trips on NAB series, its options, its file safety, its plots and its input errors.

Reads ``../shared/data/nab`` (= /work/shared/data/nab, read-only): the tail of two NAB series is copied
into tmp dirs, in the wide and the long layout. Writes only to tmp dirs. The CLI's defaults are
``ForecastOptions()``, so every comparison with the Python API uses ``options=ForecastOptions()`` (or
the options the flags name) on float64 values.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import matplotlib.dates as mdates
import numpy as np
import pandas as pd
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from reference import make_reference, reference_config, save_reference

import toto_jax
from toto_jax.cli import main
from toto_jax.forecasting import ForecastOptions, forecast, plotting

NAB = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "nab" / "data"
DAILY = NAB / "artificialNoAnomaly" / "art_daily_small_noise.csv"  # 5-minute steps
TAXI = NAB / "realKnownCause" / "nyc_taxi.csv"  # 30-minute steps


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    config = reference_config()
    return save_reference(make_reference(config, seed=5), config, tmp_path_factory.mktemp("checkpoint"))


@pytest.fixture(scope="module")
def model(checkpoint):
    return toto_jax.load(checkpoint)


@pytest.fixture
def figures(monkeypatch):
    """The matplotlib figures the CLI draws (closed by pyplot, still inspectable)."""
    drawn = []
    original = plotting.forecast_figure

    def spy(*args, **kwargs):
        drawn.append(original(*args, **kwargs))
        return drawn[-1]

    monkeypatch.setattr(plotting, "forecast_figure", spy)
    return drawn


def _forecast_cli(checkpoint, source, output, *args) -> int:
    return main(["forecast", "--checkpoint", str(checkpoint), "--input", str(source), "--output", str(output), *args])


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _check_panels(figure, names: list[str]) -> None:
    """One panel per series, each with axis labels and its own visible dates; the suptitle sits above
    the first panel (title included) without overlapping it."""
    canvas = FigureCanvasAgg(figure)  # pyplot closed the figure; draw it again to measure it
    canvas.draw()
    renderer = canvas.get_renderer()
    axes = figure.axes
    assert [axis.get_title() for axis in axes] == names
    for axis in axes:
        assert axis.get_xlabel().startswith("time") and axis.get_ylabel() == "value"
        assert isinstance(axis.xaxis.get_major_formatter(), mdates.ConciseDateFormatter)
        dates = [label.get_text() for label in axis.get_xticklabels() if label.get_visible() and label.get_text()]
        assert len(dates) >= 3, (axis.get_title(), dates)
    title = figure._suptitle
    assert title is not None and title.get_text()
    assert title.get_window_extent(renderer).y0 >= axes[0].get_tightbbox(renderer).y1 - 0.5


@pytest.mark.shared_data
def test_wide_csv_round_trip_with_plot(checkpoint, model, tmp_path, figures):
    """Wide NAB CSV -> forecast CSV: horizon rows, timestamps continuing the 5-minute grid, mean/median/
    quantile columns equal to the Python API's forecast (``ForecastOptions()``, same seed). The PNG's
    panel has axis labels, dates and a title above it, and its y-limits ignore the history's 1e7
    glitch (marked at the edge) instead of squashing the series into a flat line."""
    history = pd.read_csv(DAILY).tail(45)
    history.loc[history.index[20], "value"] = 1e7  # a glitch, which the default options clip
    source = tmp_path / "daily.csv"
    history.to_csv(source, index=False)
    output, plot = tmp_path / "forecast.csv", tmp_path / "forecast.png"
    code = _forecast_cli(checkpoint, source, output, "--horizon", "12", "--samples", "16", "--quantiles", "0.1,0.9",
                         "--plot", str(plot), "--seed", "3")  # fmt: skip
    assert code == 0
    result = pd.read_csv(output, parse_dates=["timestamp"])
    assert list(result.columns) == ["timestamp", "value_mean", "value_median", "value_q0.1", "value_q0.9"]
    last = pd.Timestamp(history["timestamp"].iloc[-1])
    expected_times = pd.date_range(last + pd.Timedelta(minutes=5), periods=12, freq="5min")
    assert (pd.DatetimeIndex(result["timestamp"]) == expected_times).all()
    direct = forecast(model, [history["value"].to_numpy(np.float64)[None]], 12, num_samples=16, seed=3,
                      options=ForecastOptions())  # fmt: skip
    np.testing.assert_allclose(result["value_mean"], direct.mean[0, 0], rtol=1e-6)
    np.testing.assert_allclose(result["value_q0.9"], direct.quantile(0.9)[0, 0], rtol=1e-6)
    assert (result["value_q0.1"] <= result["value_median"]).all()
    assert (result["value_median"] <= result["value_q0.9"]).all()
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and plot.stat().st_size > 10_000

    (figure,) = figures
    _check_panels(figure, ["value"])
    assert "daily.csv" in figure._suptitle.get_text()
    low, high = figure.axes[0].get_ylim()
    observed = history["value"].drop(history.index[20])
    shown = np.concatenate([observed, result["value_q0.1"], result["value_q0.9"]])
    assert low <= shown.min() and shown.max() <= high  # everything but the glitch is in view ...
    assert high - low < 3 * (shown.max() - shown.min())  # ... and fills the panel
    assert "off-scale history" in figure.axes[0].get_legend_handles_labels()[1]


@pytest.mark.shared_data
def test_long_parquet_round_trip_with_plot(checkpoint, model, tmp_path, figures):
    """Long layout (unique_id, ds, y) with two NAB series of different lengths and frequencies, one value
    missing -> Parquet with one block of horizon rows per id, each on its own time grid, equal to the
    API's forecast of the float64 series; the plot has dates, labels on both panels. ``--samples 0`` is the
    mean path alone: one ``mean`` column."""
    daily = pd.read_csv(DAILY).tail(40)
    taxi = pd.read_csv(TAXI).tail(29)
    taxi.loc[taxi.index[5], "value"] = np.nan
    frame = pd.concat([
        pd.DataFrame({"unique_id": "daily", "ds": daily["timestamp"], "y": daily["value"]}),
        pd.DataFrame({"unique_id": "taxi", "ds": taxi["timestamp"], "y": taxi["value"]}),
    ])  # fmt: skip
    source, output, plot = tmp_path / "long.parquet", tmp_path / "forecast.parquet", tmp_path / "long.png"
    frame.to_parquet(source)
    assert _forecast_cli(checkpoint, source, output, "--horizon", "7", "--samples", "0", "--plot", str(plot)) == 0
    result = pd.read_parquet(output)
    assert list(result.columns) == ["unique_id", "ds", "mean"]
    assert result["unique_id"].tolist() == ["daily"] * 7 + ["taxi"] * 7
    taxi_times = pd.DatetimeIndex(result.loc[result["unique_id"] == "taxi", "ds"])
    start = pd.Timestamp(taxi["timestamp"].iloc[-1]) + pd.Timedelta(minutes=30)
    assert (taxi_times == pd.date_range(start, periods=7, freq="30min")).all()
    series = [daily["value"].to_numpy(np.float64)[None], taxi["value"].to_numpy(np.float64)[None]]
    direct = forecast(model, series, 7, num_samples=None, options=ForecastOptions())
    np.testing.assert_allclose(result["mean"], direct.mean[:, 0].ravel(), rtol=1e-6)
    (figure,) = figures
    _check_panels(figure, ["daily", "taxi"])


@pytest.mark.shared_data
def test_option_flags(checkpoint, model, tmp_path, capsys):
    """The ``ForecastOptions`` flags: ``--reference-options`` with ``--sampling comonotone`` on top gives
    the API's forecast with ``ForecastOptions.reference(sampling="comonotone")``; the old flags are gone;
    a bad value is refused by name."""
    history = pd.read_csv(DAILY).tail(45)
    source, output = tmp_path / "daily.csv", tmp_path / "forecast.csv"
    history.to_csv(source, index=False)
    arguments = ["--horizon", "8", "--samples", "8", "--quantiles", "0.5", "--seed", "2"]
    assert _forecast_cli(checkpoint, source, output, *arguments, "--reference-options", "--sampling", "comonotone") == 0
    options = ForecastOptions.reference(sampling="comonotone")
    direct = forecast(model, [history["value"].to_numpy(np.float64)[None]], 8, num_samples=8, seed=2, options=options)
    np.testing.assert_allclose(pd.read_csv(output)["value_q0.5"], direct.quantile(0.5)[0, 0], rtol=1e-6)
    default = forecast(model, [history["value"].to_numpy(np.float64)[None]], 8, num_samples=8, seed=2)
    assert np.abs(default.quantile(0.5) - direct.quantile(0.5)).max() > 1e-3  # the flags made a difference
    with pytest.raises(SystemExit):
        _forecast_cli(checkpoint, source, output, *arguments, "--sampling", "smooth")
    assert "invalid choice: 'smooth' (choose from 'independent', 'comonotone')" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        _forecast_cli(checkpoint, source, output, *arguments, "--no-standardize")
    assert "unrecognized arguments: --no-standardize" in capsys.readouterr().err


def test_large_counters_stay_float64(checkpoint, model, tmp_path, monkeypatch):
    """A byte counter (1e9 + a signal of amplitude 50) reaches the API as float64 (a float32 cast
    quantizes it to steps of 64) and its forecast equals the API's forecast of the float64 values."""
    from toto_jax.forecasting import api

    stamps = pd.date_range("2024-01-01", periods=64, freq="min")
    signal = 50 * np.sin(np.arange(64) / 4) + np.arange(64) * 0.125
    source, output = tmp_path / "bytes.csv", tmp_path / "forecast.csv"
    pd.DataFrame({"timestamp": stamps, "bytes": 1e9 + signal}).to_csv(source, index=False)
    seen = []
    original = api.forecast

    def spy(model, series, *args, **kwargs):
        seen.append(series)
        return original(model, series, *args, **kwargs)

    monkeypatch.setattr(api, "forecast", spy)
    assert _forecast_cli(checkpoint, source, output, "--horizon", "8") == 0
    ((values,),) = seen
    assert values.dtype == np.float64
    np.testing.assert_array_equal(values[0], pd.read_csv(source)["bytes"].to_numpy())
    direct = original(model, (1e9 + signal)[None], 8, options=ForecastOptions())
    np.testing.assert_allclose(pd.read_csv(output)["bytes_mean"], direct.mean[0, 0], rtol=0, atol=1e-3)


def test_trailing_gap_and_a_glitch_with_the_bundled_model(tmp_path):
    """The CLI's defaults are the API's: a CPU series whose newest 20 rows are empty (ingestion lag) and
    which holds one 1e20 glitch is forecast from its observed level, its forecast timestamps continue
    after the empty rows, and the values equal ``forecast(..., options=ForecastOptions())``."""
    stamps = pd.date_range("2026-03-01", periods=700, freq="5min")
    rng = np.random.default_rng(0)
    cpu = 38 + 6 * np.sin(2 * np.pi * np.arange(700) / 288) + rng.normal(0, 1, 700)
    cpu[300] = 1e20
    cpu[-20:] = np.nan
    source, output = tmp_path / "cpu.csv", tmp_path / "forecast.csv"
    pd.DataFrame({"timestamp": stamps, "cpu": cpu}).to_csv(source, index=False)
    assert _forecast_cli("default", source, output, "--horizon", "32") == 0
    result = pd.read_csv(output, parse_dates=["timestamp"])
    assert result["timestamp"].iloc[0] == stamps[-1] + pd.Timedelta(minutes=5)
    level = np.nanmean(cpu[-300:-20][cpu[-300:-20] < 100])
    assert abs(result["cpu_mean"].iloc[:8].mean() - level) < 5
    direct = forecast(toto_jax.load("default"), cpu[None], 32)
    np.testing.assert_allclose(result["cpu_mean"], direct.mean[0, 0], rtol=1e-6)


@pytest.mark.parametrize("case", ["csv_two_rows", "parquet_ms_zoned"])
def test_timestamp_units_and_zones_through_the_cli(checkpoint, tmp_path, case):
    """Forecast timestamps continue the input's grid whatever the datetime unit (a CSV parses to
    microseconds under pandas 3; Parquet keeps ms) and time zone: a 2-row 5-minute CSV, and a long
    Parquet table in ms with a time zone, of two ids of 2 and 3 rows at 5 and 15 minutes."""
    if case == "csv_two_rows":
        source, output = tmp_path / "two.csv", tmp_path / "forecast.csv"
        source.write_text("timestamp,cpu\n2024-05-01 10:00:00,41.5\n2024-05-01 10:05:00,42.0\n")
        assert _forecast_cli(checkpoint, source, output, "--horizon", "3") == 0
        result = pd.read_csv(output, parse_dates=["timestamp"])
        expected = [pd.Timestamp("2024-05-01 10:05") + pd.Timedelta(minutes=5 * k) for k in (1, 2, 3)]
        assert list(result["timestamp"]) == expected
        return
    zone = "Europe/Paris"
    frame = pd.concat([
        pd.DataFrame({"unique_id": "a", "ds": pd.date_range("2024-03-31 01:50", periods=2, freq="5min", tz=zone),
                      "y": [1.0, 2.0]}),
        pd.DataFrame({"unique_id": "b", "ds": pd.date_range("2024-03-31 01:30", periods=3, freq="15min", tz=zone),
                      "y": [3.0, 4.0, 5.0]}),
    ])  # fmt: skip
    frame["ds"] = frame["ds"].dt.as_unit("ms")
    source, output = tmp_path / "zoned.parquet", tmp_path / "forecast.parquet"
    frame.to_parquet(source)
    assert _forecast_cli(checkpoint, source, output, "--horizon", "2") == 0
    result = pd.read_parquet(output)
    assert str(result["ds"].dt.tz) == zone
    # 01:55 + 5 min crosses Paris's spring-forward gap: 02:00 local does not exist, it is 03:00 CEST.
    expected = {
        "a": [pd.Timestamp("2024-03-31 03:00", tz=zone), pd.Timestamp("2024-03-31 03:05", tz=zone)],
        "b": [pd.Timestamp("2024-03-31 03:15", tz=zone), pd.Timestamp("2024-03-31 03:30", tz=zone)],
    }
    for name, stamps in expected.items():
        assert list(result.loc[result["unique_id"] == name, "ds"]) == stamps


@pytest.mark.shared_data
def test_existing_output_needs_overwrite_and_files_get_usual_permissions(checkpoint, tmp_path, capsys):
    """An existing --output or --plot is an error naming it unless --overwrite is given, checked before
    the model loads (the checkpoint given first does not exist and is never reached) and leaving both
    files as they were; with --overwrite both are replaced by files with mode 0666 less the umask (not
    the temporary file's 0600, nor the old file's mode)."""
    history = pd.read_csv(DAILY).tail(30)
    source = tmp_path / "daily.csv"
    history.to_csv(source, index=False)
    output, plot = tmp_path / "forecast.csv", tmp_path / "forecast.png"
    missing = tmp_path / "no-such-checkpoint"
    arguments = ["--horizon", "4", "--plot", str(plot)]
    for existing in (output, plot):
        for path in (output, plot):
            path.unlink(missing_ok=True)
        existing.write_text("keep me\n")
        existing.chmod(0o600)
        assert _forecast_cli(missing, source, output, *arguments) == 2
        error = capsys.readouterr().err
        flag = "--output" if existing == output else "--plot"
        assert f"{flag} {existing} already exists; pass --overwrite to replace it" in error
        assert existing.read_text() == "keep me\n"
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["daily.csv", existing.name])
    output.write_text("keep me\n")
    output.chmod(0o600)
    previous = os.umask(0o027)
    try:
        assert _forecast_cli(checkpoint, source, output, *arguments, "--overwrite") == 0
    finally:
        os.umask(previous)
    columns = ["timestamp", "value_mean", "value_median", "value_q0.1", "value_q0.5", "value_q0.9"]
    assert list(pd.read_csv(output).columns) == columns and len(pd.read_csv(output)) == 4
    assert _mode(output) == 0o640 and _mode(plot) == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["daily.csv", "forecast.csv", "forecast.png"]


@pytest.mark.shared_data
def test_dataset_job_is_checked_before_the_model_loads(tmp_path, capsys):
    """A directory of inputs: an output directory holding other files, --plot, or an output file stop the run
    before the model loads (the checkpoint does not exist) and before anything is written."""
    inputs, out = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    out.mkdir()
    for name in ("a.csv", "b.csv"):
        pd.read_csv(DAILY).tail(30).to_csv(inputs / name, index=False)
    (out / "b.csv").write_text("keep me\n")
    missing = tmp_path / "no-such-checkpoint"
    assert _forecast_cli(missing, inputs, out, "--horizon", "4") == 2
    assert f"{out} holds files that are not a dataset job's (['b.csv'])" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["b.csv"] and (out / "b.csv").read_text() == "keep me\n"
    assert _forecast_cli(missing, inputs, f"{tmp_path}/new/", "--horizon", "4", "--plot", str(tmp_path / "p.png")) == 2
    assert "--plot draws the series of one table" in capsys.readouterr().err
    assert _forecast_cli(missing, inputs, tmp_path / "out.csv", "--horizon", "4") == 2
    assert f"--input {inputs}: a directory or a bucket is a dataset" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "out"]


@pytest.mark.shared_data
@pytest.mark.parametrize("how", ["same_path", "other_spelling", "symlink", "hard_link", "directory"])
def test_input_is_never_overwritten(checkpoint, tmp_path, capsys, how):
    """--output naming the input (the same path, another spelling of it, a symbolic or hard link to it,
    or the input directory itself) is refused even with --overwrite; the input is left unchanged."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    source = inputs / "daily.csv"
    pd.read_csv(DAILY).tail(30).to_csv(source, index=False)
    before = source.read_bytes()
    if how == "same_path":
        target, output = source, source
    elif how == "other_spelling":
        target, output = source, inputs / ".." / "in" / "daily.csv"
    elif how == "symlink":
        target, output = source, tmp_path / "link.csv"
        output.symlink_to(source)
    elif how == "hard_link":
        target, output = source, tmp_path / "link.csv"
        os.link(source, output)
    else:
        target, output = inputs, inputs
    listing = sorted(tmp_path.rglob("*"))
    assert _forecast_cli(checkpoint, target, output, "--horizon", "4", "--overwrite") == 2
    error = capsys.readouterr().err
    if how == "directory":
        assert f"--output {inputs} holds the input {source}; the inputs are never overwritten" in error
    else:
        assert f"--output {output} is the input file {source}" in error and "not even with --overwrite" in error
    assert source.read_bytes() == before and sorted(tmp_path.rglob("*")) == listing


def _write_wide(path, timestamps, **columns):
    pd.DataFrame({"timestamp": timestamps, **columns}).to_csv(path, index=False)


@pytest.mark.parametrize(
    "case, message",
    [
        ("non_numeric", "column 'load' is not numeric (row 2: 'n/a?')"),
        ("duplicate", "duplicate timestamp 2024-01-01 02:00:00"),
        ("irregular", "irregular timestamps (step 0 days 01:00:00 until 2024-01-01 06:00:00, then 0 days 02:00:00)"),
        ("all_nan", "column(s) ['empty'] have no observed values"),
        ("horizon", "--horizon must be positive"),
        ("quantiles_without_samples", "quantile levels need sample paths: the mean path alone (--samples 0, "),
        ("negative_samples", "--samples must be positive (or 0: the mean path alone), got -2"),
        ("memory_budget", "--memory-budget-gb must be positive, got -1"),
    ],
)
def test_bad_input_is_reported_and_nothing_is_written(checkpoint, tmp_path, capsys, case, message):
    """Each bad input exits with status 2 and a one-line message naming the column or series (an
    irregular step with its true sizes, in any datetime unit); no output file (not even a temporary one)
    is left in the output directory."""
    stamps = pd.date_range("2024-01-01", periods=20, freq="h")
    values = np.arange(20.0)
    source = tmp_path / "in.csv"
    args = ["--horizon", "4"]
    if case == "non_numeric":
        _write_wide(source, stamps, load=[str(v) for v in values[:2]] + ["n/a?"] + [str(v) for v in values[3:]])
    elif case == "duplicate":
        _write_wide(source, stamps.insert(2, stamps[2])[:20], load=values)
    elif case == "irregular":
        gap = stamps.delete(7).append(pd.DatetimeIndex([stamps[-1] + pd.Timedelta(hours=1)]))  # one step missing
        _write_wide(source, gap, load=values)
    elif case == "all_nan":
        _write_wide(source, stamps, load=values, empty=np.full(20, np.nan))
    else:
        _write_wide(source, stamps, load=values)
        args = {
            "horizon": ["--horizon", "0"],
            "quantiles_without_samples": ["--horizon", "4", "--samples", "0", "--quantiles", "0.5"],
            "memory_budget": ["--horizon", "4", "--memory-budget-gb", "-1"],
            "negative_samples": ["--horizon", "4", "--samples", "-2"],
        }[case]
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    code = _forecast_cli(checkpoint, source, out_dir / "f.csv", "--plot", str(out_dir / "f.png"), *args)
    assert code == 2
    error = capsys.readouterr().err
    assert message in error and error.count("\n") == 1
    assert list(out_dir.iterdir()) == []


@pytest.mark.shared_data
def test_a_read_csv_dataframe_forecasts_as_the_cli_reads_the_file(checkpoint, model, tmp_path):
    """``pd.read_csv`` of a NAB file (its timestamp a column of strings, a RangeIndex) forecasts directly: the
    API reads it as the CLI reads the file (same defaults, same draws, so the same numbers), and
    ``to_dataframe`` continues its 30-minute grid. A long frame (unique_id, ds, y) gives one series per id,
    each variate named by its id. A frame whose layout cannot be read says what to do."""
    taxi = pd.read_csv(TAXI).tail(300)
    source, output = tmp_path / "taxi.csv", tmp_path / "forecast.csv"
    taxi.to_csv(source, index=False)
    assert _forecast_cli(checkpoint, source, output, "--horizon", "8") == 0
    written = pd.read_csv(output, parse_dates=["timestamp"])
    result = forecast(model, pd.read_csv(source), 8)
    for column, values in (("value_mean", result.mean), ("value_q0.1", result.quantile(0.1))):
        np.testing.assert_allclose(written[column], values[0, 0], rtol=1e-6)
    median = result.to_dataframe("median")
    assert list(median.columns) == ["value"] and (median.index == pd.DatetimeIndex(written["timestamp"])).all()
    assert median.index[0] == pd.Timestamp(taxi["timestamp"].iloc[-1]) + pd.Timedelta(minutes=30)
    indexed = pd.read_csv(source, index_col="timestamp", parse_dates=["timestamp"])
    np.testing.assert_allclose(forecast(model, indexed, 8).samples, result.samples, rtol=1e-6)

    daily = pd.read_csv(DAILY).tail(200)
    long = pd.concat([pd.DataFrame({"unique_id": "taxi", "ds": taxi["timestamp"], "y": taxi["value"]}),
                      pd.DataFrame({"unique_id": "daily", "ds": daily["timestamp"], "y": daily["value"]})])  # fmt: skip
    both = forecast(model, long, 8, num_samples=None)
    np.testing.assert_allclose(both.mean[0], forecast(model, indexed, 8, num_samples=None).mean[0], rtol=1e-6)
    assert list(both.to_dataframe(series=1).columns) == ["daily"]
    assert both.to_dataframe(series=1).index[0] == pd.Timestamp(daily["timestamp"].iloc[-1]) + pd.Timedelta(minutes=5)

    hosts = pd.DataFrame({"host": ["a", "b", "c"] * 10, "value": np.arange(30.0)})
    with pytest.raises(ValueError, match=r"series 0: column 'host': cannot parse timestamps: .*; a DataFrame's rows are "
                       r"time steps and its columns variates: make the time its index \(frame\.set_index"):  # fmt: skip
        forecast(model, hosts, 8)


@pytest.mark.shared_data
def test_the_default_forecast_has_bands_and_taxi_counts_stay_non_negative(tmp_path, figures):
    """The first command a user runs, on NYC taxi counts with the bundled model and no flags: the forecast has
    mean, median and 10 / 50 / 90 % columns, equal to the API's default forecast; the plot shades the
    0.1-0.9 band around the median; counts stay >= 0 in every column. ``--no-infer-nonnegative`` shows the
    failure this prevents: the 10 % quantile of taxi counts goes below 0 (as the reference's would)."""
    taxi = pd.read_csv(TAXI).tail(2048)
    source, output, plot = tmp_path / "taxi.csv", tmp_path / "forecast.csv", tmp_path / "taxi.png"
    taxi.to_csv(source, index=False)
    assert _forecast_cli("default", source, output, "--horizon", "96", "--plot", str(plot)) == 0
    result = pd.read_csv(output)
    statistics = ["mean", "median", "q0.1", "q0.5", "q0.9"]
    assert list(result.columns) == ["timestamp"] + [f"value_{s}" for s in statistics]
    assert (result.drop(columns="timestamp") >= 0).all().all()
    assert (result["value_q0.9"] - result["value_q0.1"]).min() > 0
    direct = forecast(toto_jax.load("default"), taxi["value"].to_numpy(np.float64)[None], 96)
    np.testing.assert_allclose(result["value_q0.9"], direct.quantile(0.9)[0, 0], rtol=1e-6)
    (figure,) = figures
    legend = figure.axes[0].get_legend_handles_labels()[1]
    assert "0.1-0.9 quantiles" in legend and "median" in legend

    free = tmp_path / "free.csv"
    assert _forecast_cli("default", source, free, "--horizon", "96", "--no-infer-nonnegative") == 0
    assert pd.read_csv(free)["value_q0.1"].min() < 0
