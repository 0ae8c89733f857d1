"""Tables in and out (``toto_jax.forecasting.tabular``): float64 values, timestamps in any datetime unit and
time zone, the step inference and its errors, future timestamps, atomic writes with the usual permissions.

No model and no data files: every table is built here; writes go to tmp dirs only. The whole module also
runs under pandas 3 (``test_tabular_and_cli_under_pandas_3``), which parses times in microseconds where
pandas 2 uses nanoseconds.
"""

from __future__ import annotations

import io
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from toto_jax.forecasting import tabular
from toto_jax.forecasting.tabular import TableError, future_timestamps, infer_frequency

ROOT = Path(__file__).resolve().parents[1]
UNITS = ("s", "ms", "us", "ns")
ZONES = (None, "UTC", "America/New_York")
FIVE = pd.Timedelta(minutes=5)


def _index(start, periods, step, unit, tz=None) -> pd.DatetimeIndex:
    """A DatetimeIndex without a ``freq`` attribute (as parsed from a file), in ``unit``."""
    stamps = pd.date_range(start, periods=periods, freq=step, tz=tz)
    return pd.DatetimeIndex(list(stamps)).as_unit(unit)


def _steps(last, future) -> list[pd.Timedelta]:
    return [pd.Timedelta(t - last) for t in future]


def test_pandas_version_is_the_expected_one():
    """The subprocess of ``test_tabular_and_cli_under_pandas_3`` really imports pandas 3."""
    expected = os.environ.get("TOTO_JAX_EXPECT_PANDAS")
    if expected is None:
        pytest.skip("only meaningful in the pandas-3 subprocess")
    assert pd.__version__.split(".")[0] == expected, pd.__version__


@pytest.mark.parametrize("tz", ZONES)
@pytest.mark.parametrize("unit", UNITS)
@pytest.mark.parametrize("periods", [2, 3, 50])
def test_five_minute_steps_in_every_unit_and_zone(unit, tz, periods):
    """2, 3 and 50 rows at 5-minute steps, stored in s/ms/us/ns, naive or zoned: the step is 5 minutes and
    the future continues the grid 5, 10, 15 minutes after the last stamp, in the input's zone."""
    stamps = _index("2024-03-10 00:30", periods, "5min", unit, tz)
    frequency = infer_frequency(stamps, "cpu")
    assert pd.Timedelta(frequency) == FIVE
    future = future_timestamps(stamps[-1], frequency, 3)
    assert _steps(stamps[-1], future) == [FIVE, 2 * FIVE, 3 * FIVE]
    assert str(future.tz) == str(stamps.tz)
    assert future[0] == pd.Timestamp("2024-03-10 00:30", tz=tz) + periods * FIVE


@pytest.mark.parametrize("unit", UNITS)
def test_hourly_steps_across_a_daylight_saving_change(unit):
    """Hourly local times across New York's spring-forward night: one absolute hour per step, and the
    future stays one hour apart in absolute time (wall clock 01:00, 03:00, 04:00)."""
    stamps = _index("2024-03-09 22:00", 3, "h", unit, "America/New_York")
    future = future_timestamps(stamps[-1], infer_frequency(stamps, "load"), 3)
    assert _steps(stamps[-1], future) == [pd.Timedelta(hours=h) for h in (1, 2, 3)]
    assert [t.hour for t in future] == [1, 3, 4]


@pytest.mark.parametrize("unit", UNITS)
def test_calendar_frequencies(unit):
    """Month ends and local days across a daylight-saving change stay calendar steps in every unit."""
    months = _index("2024-01-31", 4, "ME", unit)
    future = future_timestamps(months[-1], infer_frequency(months, "sales"), 3)
    assert list(future) == [pd.Timestamp(d) for d in ("2024-05-31", "2024-06-30", "2024-07-31")]
    days = _index("2024-03-28", 4, "D", unit, "Europe/Paris")  # 2024-03-31 is 23 hours long in Paris
    future = future_timestamps(days[-1], infer_frequency(days, "visits"), 2)
    assert list(future) == [pd.Timestamp(d, tz="Europe/Paris") for d in ("2024-04-01", "2024-04-02")]


def test_future_timestamps_accepts_strings_and_rejects_bad_steps():
    last = pd.Timestamp("2024-01-01 00:00").as_unit("s")
    assert list(future_timestamps(last, "500ms", 2)) == [last + pd.Timedelta(milliseconds=m) for m in (500, 1000)]
    assert len(future_timestamps(last, FIVE, 0)) == 0
    with pytest.raises(ValueError, match="positive time step"):
        future_timestamps(last, pd.Timedelta(0), 3)
    with pytest.raises(ValueError, match="non-negative integer"):
        future_timestamps(last, FIVE, -1)


@pytest.mark.parametrize("unit", UNITS)
def test_irregular_timestamps_are_reported_with_true_step_sizes(unit):
    """A missing 5-minute step is an error naming the series, the regular step (5 minutes), where it ends
    and the odd step (10 minutes), in every unit (pandas 3's microseconds once printed 5 minutes as 0.3 s)."""
    stamps = _index("2024-01-01 00:00", 6, "5min", unit).delete(3)
    with pytest.raises(TableError) as error:
        infer_frequency(stamps, "cpu")
    assert str(error.value) == (
        "series 'cpu': irregular timestamps (step 0 days 00:05:00 until 2024-01-01 00:10:00, "
        "then 0 days 00:10:00); resample to a regular frequency first"
    )


@pytest.mark.parametrize(
    "stamps, message",
    [
        (["2024-01-01"], "need at least two timestamps"),
        (["2024-01-01", "2024-01-01", "2024-01-02"], "duplicate timestamp 2024-01-01"),
        (["2024-01-02", "2024-01-01", "2024-01-03"], "not in increasing order"),
    ],
)
def test_frequency_errors(stamps, message):
    with pytest.raises(TableError, match=message):
        infer_frequency(pd.DatetimeIndex(stamps), "s1")


@pytest.mark.parametrize("rows", [2, 3])
def test_csv_with_five_minute_steps(rows):
    """The issue's case: a 2- or 3-row CSV at 5-minute steps (parsed to microseconds by pandas 3) gives
    future timestamps 5 minutes apart, and large values keep every digit (float64, no float32 cast)."""
    lines = ["timestamp,bytes,cpu"] + [f"2024-05-01 10:{5 * i:02d}:00,{1e9 + i + 0.25},{40 + i}" for i in range(rows)]
    table = tabular.parse_table(pd.read_csv(io.StringIO("\n".join(lines))))
    assert table.values[0].dtype == np.float64
    np.testing.assert_array_equal(table.values[0][0], [1e9 + i + 0.25 for i in range(rows)])
    (future,) = table.future_timestamps(4)
    last = pd.Timestamp(f"2024-05-01 10:{5 * (rows - 1):02d}:00")
    assert list(future) == [last + k * FIVE for k in range(1, 5)]


def test_long_table_float64_and_nullable_integers():
    """Long layout: a nullable integer column with a missing value reads as float64 with NaN."""
    frame = pd.DataFrame({
        "unique_id": ["a"] * 3 + ["b"] * 2,
        "ds": ["2024-01-01", "2024-01-02", "2024-01-03", "2024-01-01 00:00", "2024-01-01 00:05"],
        "y": pd.array([2**53, None, 7, 1, 2], dtype="Int64"),
    })  # fmt: skip
    table = tabular.parse_table(frame)
    assert [v.dtype for v in table.values] == [np.float64, np.float64]
    np.testing.assert_array_equal(table.values[0][0], [2.0**53, np.nan, 7.0])
    assert [pd.Timedelta(f) for f in table.frequency] == [pd.Timedelta(days=1), FIVE]


@pytest.mark.parametrize("unit", ["ms", "us"])
def test_parquet_keeps_its_unit_and_zone(tmp_path, unit):
    """Parquet stores the unit (ms, us; seconds become ms) and zone it was given; forecasts continue the
    grid in each (pandas 2 reads a CSV in ns only, so this is where it meets other units)."""
    stamps = _index("2024-01-01", 2, "5min", unit, "Asia/Kolkata")
    path = tmp_path / "in.parquet"
    pd.DataFrame({"ds": stamps, "y": [1.0, 2.0], "unique_id": "x"}).to_parquet(path)
    table = tabular.parse_table(tabular.read_table(path))
    assert table.timestamps[0].unit == unit and str(table.timestamps[0].tz) == "Asia/Kolkata"
    frame = tabular.forecast_frame(table, 2, {"mean": np.zeros((1, 1, 2))})
    assert list(frame["ds"]) == [stamps[-1] + FIVE, stamps[-1] + 2 * FIVE]


def test_time_zone_offsets_in_csv():
    """Offsets in the text: one offset keeps its zone; offsets that change (a daylight-saving change)
    are read as the instants they name, in UTC, one hour apart."""
    fixed = "timestamp,v\n2024-01-01T00:00+02:00,1\n2024-01-01T01:00+02:00,2\n"
    table = tabular.parse_table(pd.read_csv(io.StringIO(fixed)))
    (future,) = table.future_timestamps(1)
    assert future[0] == pd.Timestamp("2024-01-01T02:00+02:00") and future.tz is not None
    changing = "timestamp,v\n2024-03-10T00:00-05:00,1\n2024-03-10T01:00-05:00,2\n2024-03-10T03:00-04:00,3\n"
    table = tabular.parse_table(pd.read_csv(io.StringIO(changing)))
    assert pd.Timedelta(table.frequency[0]) == pd.Timedelta(hours=1)
    (future,) = table.future_timestamps(1)
    assert future[0] == pd.Timestamp("2024-03-10T04:00-04:00")


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_atomic_write_gives_the_usual_permissions(tmp_path, umask):
    """Written files get 0666 less the umask (mkstemp's 0600 made outputs private), and nothing else is
    left in the directory."""
    previous = os.umask(umask)
    try:
        tabular.write_table(pd.DataFrame({"a": [1.0]}), tmp_path / "out.csv")
        tabular.atomic_write(tmp_path / "plot.png", lambda p: Path(p).write_bytes(b"png"))
    finally:
        os.umask(previous)
    for name in ("out.csv", "plot.png"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o666 & ~umask
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.csv", "plot.png"]


def test_atomic_write_without_overwrite_keeps_the_existing_file(tmp_path):
    path = tmp_path / "out.csv"
    path.write_text("precious\n")
    with pytest.raises(FileExistsError, match="out.csv already exists"):
        tabular.write_table(pd.DataFrame({"a": [1.0]}), path, overwrite=False)
    assert path.read_text() == "precious\n" and list(tmp_path.iterdir()) == [path]
    tabular.write_table(pd.DataFrame({"a": [1.0]}), tmp_path / "new.csv", overwrite=False)
    assert (tmp_path / "new.csv").read_text() == "a\n1.0\n"
    with pytest.raises(RuntimeError):  # a failing writer leaves nothing behind
        tabular.atomic_write(tmp_path / "bad.csv", lambda p: (_ for _ in ()).throw(RuntimeError("disk full")))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new.csv", "out.csv"]


# The CLI tests that also run under pandas 3: a wide CSV (parsed to microseconds) with its plot, timestamp
# units and zones, and the error paths (no model).
PANDAS3_CLI_TESTS = (
    "test_wide_csv_round_trip_with_plot",
    "test_timestamp_units_and_zones_through_the_cli",
    "test_input_is_never_overwritten",
    "test_bad_input_is_reported_and_nothing_is_written",
)


def test_tabular_and_cli_under_pandas_3():
    """This module and a few CLI round trips in a subprocess that imports pandas 3 first (the test
    environment pins pandas 2 for gluonts/statsforecast; the Makefile installs pandas 3 on the side,
    without dependencies, into ``<venv>/pandas3``)."""
    if os.environ.get("TOTO_JAX_EXPECT_PANDAS"):
        pytest.skip("already the pandas-3 subprocess")
    pandas3 = Path(os.environ.get("TOTO_JAX_PANDAS3", Path(sys.prefix) / "pandas3"))
    if not (pandas3 / "pandas" / "__init__.py").is_file():
        pytest.fail(f"pandas 3 is not installed in {pandas3}: run `make test`, or `{sys.executable} -m pip install "
                    f"--no-deps --target {pandas3} 'pandas>=3,<4'`")  # fmt: skip
    path = os.pathsep.join([str(pandas3), *filter(None, [os.environ.get("PYTHONPATH")])])
    env = {**os.environ, "PYTHONPATH": path, "TOTO_JAX_EXPECT_PANDAS": "3"}
    selection = " or ".join(PANDAS3_CLI_TESTS)
    command = [sys.executable, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider", "-W", "error::FutureWarning",
               "tests/test_tabular.py", "tests/test_forecast_cli.py",
               "-k", f"not test_forecast_cli or {selection}"]  # fmt: skip
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    assert "PASSED tests/test_tabular.py::test_pandas_version_is_the_expected_one" in output, output[-3000:]
    for name in PANDAS3_CLI_TESTS:
        assert f"PASSED tests/test_forecast_cli.py::{name}" in output, output[-3000:]
