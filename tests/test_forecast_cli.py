"""``toto-jax forecast`` round trips on NAB series and its input errors.

Reads ``../shared/data/nab`` (= /work/shared/data/nab, read-only): the tail of two NAB series is copied
into tmp dirs, in the wide and the long layout. Writes only to tmp dirs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from reference import make_reference, reference_config, save_reference

import toto_jax
from toto_jax.cli import main
from toto_jax.forecasting import forecast
from toto_jax.preprocessing import DEFAULT_CLIP_OUTLIERS
from toto_jax.sampling import DEFAULT_SAMPLING

NAB = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "nab" / "data"
DAILY = NAB / "artificialNoAnomaly" / "art_daily_small_noise.csv"  # 5-minute steps
TAXI = NAB / "realKnownCause" / "nyc_taxi.csv"  # 30-minute steps


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    config = reference_config()
    return save_reference(make_reference(config, seed=5), config, tmp_path_factory.mktemp("checkpoint"))


def test_wide_csv_round_trip_with_plot(checkpoint, tmp_path):
    """Wide NAB CSV -> forecast CSV: horizon rows, timestamps continuing the 5-minute grid, mean/median/
    quantile columns equal to the Python API's forecast with the same seed; the PNG is written."""
    history = pd.read_csv(DAILY).tail(45)
    history.loc[history.index[20], "value"] = 1e7  # a glitch, which the CLI clips by default
    source = tmp_path / "daily.csv"
    history.to_csv(source, index=False)
    output, plot = tmp_path / "forecast.csv", tmp_path / "forecast.png"
    code = main([
        "forecast", "--checkpoint", str(checkpoint), "--input", str(source), "--horizon", "12",
        "--samples", "16", "--quantiles", "0.1,0.9", "--output", str(output), "--plot", str(plot), "--seed", "3",
    ])  # fmt: skip
    assert code == 0
    result = pd.read_csv(output, parse_dates=["timestamp"])
    assert list(result.columns) == ["timestamp", "value_mean", "value_median", "value_q0.1", "value_q0.9"]
    last = pd.Timestamp(history["timestamp"].iloc[-1])
    expected_times = pd.date_range(last + pd.Timedelta(minutes=5), periods=12, freq="5min")
    assert (pd.DatetimeIndex(result["timestamp"]) == expected_times).all()
    direct = forecast(
        toto_jax.load(checkpoint), [history["value"].to_numpy(np.float32)[None]], 12, num_samples=16, seed=3,
        standardize=True, clip_outliers=DEFAULT_CLIP_OUTLIERS, sampling=DEFAULT_SAMPLING,  # the CLI's defaults
    )
    np.testing.assert_allclose(result["value_mean"], direct.mean[0, 0], rtol=1e-5)
    np.testing.assert_allclose(result["value_q0.9"], direct.quantile(0.9)[0, 0], rtol=1e-5)
    assert (result["value_q0.1"] <= result["value_median"]).all()
    assert (result["value_median"] <= result["value_q0.9"]).all()
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and plot.stat().st_size > 10_000


def test_sampling_option(checkpoint, tmp_path, capsys):
    """``--sampling independent`` gives the API's reference sampling; an unknown mode is refused by name."""
    history = pd.read_csv(DAILY).tail(45)
    source, output = tmp_path / "daily.csv", tmp_path / "forecast.csv"
    history.to_csv(source, index=False)
    arguments = ["forecast", "--checkpoint", str(checkpoint), "--input", str(source), "--horizon", "8",
                 "--samples", "8", "--quantiles", "0.5", "--output", str(output), "--seed", "2"]  # fmt: skip
    assert main(arguments + ["--sampling", "independent"]) == 0
    direct = forecast(toto_jax.load(checkpoint), [history["value"].to_numpy(np.float32)[None]], 8, num_samples=8,
                      seed=2, standardize=True, clip_outliers=DEFAULT_CLIP_OUTLIERS, sampling="independent")  # fmt: skip
    np.testing.assert_allclose(pd.read_csv(output)["value_q0.5"], direct.quantile(0.5)[0, 0], rtol=1e-5)
    with pytest.raises(SystemExit):
        main(arguments + ["--sampling", "smooth"])
    assert "invalid choice: 'smooth' (choose from 'independent', 'comonotone')" in capsys.readouterr().err


def test_long_parquet_round_trip(checkpoint, tmp_path):
    """Long layout (unique_id, ds, y) with two NAB series of different lengths and frequencies, one value
    missing -> Parquet with one block of horizon rows per id, each on its own time grid."""
    daily = pd.read_csv(DAILY).tail(40)
    taxi = pd.read_csv(TAXI).tail(29)
    taxi.loc[taxi.index[5], "value"] = np.nan
    frame = pd.concat([
        pd.DataFrame({"unique_id": "daily", "ds": daily["timestamp"], "y": daily["value"]}),
        pd.DataFrame({"unique_id": "taxi", "ds": taxi["timestamp"], "y": taxi["value"]}),
    ])  # fmt: skip
    source, output = tmp_path / "long.parquet", tmp_path / "forecast.parquet"
    frame.to_parquet(source)
    assert main(["forecast", "--checkpoint", str(checkpoint), "--input", str(source), "--horizon", "7",
                 "--output", str(output)]) == 0  # fmt: skip
    result = pd.read_parquet(output)
    assert list(result.columns) == ["unique_id", "ds", "mean"]
    assert result["unique_id"].tolist() == ["daily"] * 7 + ["taxi"] * 7
    taxi_times = pd.DatetimeIndex(result.loc[result["unique_id"] == "taxi", "ds"])
    start = pd.Timestamp(taxi["timestamp"].iloc[-1]) + pd.Timedelta(minutes=30)
    assert (taxi_times == pd.date_range(start, periods=7, freq="30min")).all()
    assert np.isfinite(result["mean"]).all()


def _write_wide(path, timestamps, **columns):
    pd.DataFrame({"timestamp": timestamps, **columns}).to_csv(path, index=False)


@pytest.mark.parametrize(
    "case, message",
    [
        ("non_numeric", "column 'load' is not numeric (row 2: 'n/a?')"),
        ("duplicate", "duplicate timestamp 2024-01-01 02:00:00"),
        ("irregular", "irregular timestamps"),
        ("all_nan", "column(s) ['empty'] have no observed values"),
        ("horizon", "--horizon must be positive"),
        ("quantiles_without_samples", "--quantiles need sample paths"),
    ],
)
def test_bad_input_is_reported_and_nothing_is_written(checkpoint, tmp_path, capsys, case, message):
    """Each bad input exits with status 2 and a one-line message naming the column or series; no output
    file (not even a temporary one) is left in the output directory."""
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
        args = ["--horizon", "0"] if case == "horizon" else ["--horizon", "4", "--quantiles", "0.5"]
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    code = main(["forecast", "--checkpoint", str(checkpoint), "--input", str(source), "--output",
                 str(out_dir / "f.csv"), "--plot", str(out_dir / "f.png"), *args])  # fmt: skip
    assert code == 2
    error = capsys.readouterr().err
    assert message in error and error.count("\n") == 1
    assert list(out_dir.iterdir()) == []
