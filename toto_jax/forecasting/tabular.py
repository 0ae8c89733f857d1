"""Tables of time series in and out: CSV or Parquet, wide or long layout, timestamps and their frequency.

- wide: a timestamp column and one numeric column per variate -> one multivariate series;
- long: columns ``unique_id``, ``ds``, ``y`` (the usual forecasting-library convention) -> one univariate
  series per ``unique_id``, lengths may differ.

Every problem is reported as a ``TableError`` naming the file, column or series; writes are atomic
(temporary file + rename), so a failed run leaves nothing half written.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

LONG_COLUMNS = ("unique_id", "ds", "y")
TIMESTAMP_NAMES = ("timestamp", "ds", "date", "datetime", "time")
SUFFIXES = (".csv", ".parquet", ".pq")


class TableError(ValueError):
    """A table that cannot be read as time series, with the reason."""


@dataclasses.dataclass
class SeriesTable:
    layout: str  # "wide" or "long"
    names: list[str]  # wide: variate columns; long: unique_ids
    values: list[np.ndarray]  # wide: one [variate, time] array; long: one [1, time] array per id
    timestamps: list[pd.DatetimeIndex]  # one per entry of ``values``
    frequency: list[pd.DateOffset | pd.Timedelta]
    timestamp_column: str = "ds"

    def future_timestamps(self, horizon: int) -> list[pd.DatetimeIndex]:
        return [
            pd.date_range(start=stamps[-1], periods=horizon + 1, freq=freq)[1:]
            for stamps, freq in zip(self.timestamps, self.frequency)
        ]


def _check_suffix(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise TableError(f"{path}: unsupported file type {suffix!r}; use .csv or .parquet")
    return "csv" if suffix == ".csv" else "parquet"


def read_table(path: str | Path) -> pd.DataFrame:
    path = Path(path)
    kind = _check_suffix(path)
    if not path.is_file():
        raise FileNotFoundError(f"input file not found: {path}")
    try:
        return pd.read_csv(path) if kind == "csv" else pd.read_parquet(path)
    except Exception as error:  # parser errors of either library, reported with the file name
        raise TableError(f"{path}: cannot read {kind}: {error}") from None


def infer_frequency(stamps: pd.DatetimeIndex, series: str):
    """A regular step: a calendar offset where pandas can name one (months, business days), else the
    constant time delta. Duplicate or irregular timestamps are errors naming the series."""
    if len(stamps) < 2:
        raise TableError(f"series {series!r}: need at least two timestamps to infer a frequency")
    if stamps.has_duplicates:
        duplicate = stamps[stamps.duplicated()][0]
        raise TableError(f"series {series!r}: duplicate timestamp {duplicate}")
    if not stamps.is_monotonic_increasing:
        raise TableError(f"series {series!r}: timestamps are not in increasing order")
    if len(stamps) >= 3:
        named = pd.infer_freq(stamps)
        if named is not None:
            return pd.tseries.frequencies.to_offset(named)
    steps = np.diff(stamps.asi8)
    if np.all(steps == steps[0]):
        return pd.Timedelta(int(steps[0]), unit="ns")
    where = int(np.flatnonzero(steps != steps[0])[0]) + 1
    raise TableError(
        f"series {series!r}: irregular timestamps (step {pd.Timedelta(int(steps[0]))} until {stamps[where - 1]}, "
        f"then {pd.Timedelta(int(steps[where - 1]))}); resample to a regular frequency first"
    )


def _parse_timestamps(column: pd.Series, what: str) -> pd.DatetimeIndex:
    try:
        stamps = pd.DatetimeIndex(pd.to_datetime(column))
    except (ValueError, TypeError) as error:
        raise TableError(f"{what}: cannot parse timestamps: {error}") from None
    if stamps.hasnans:
        raise TableError(f"{what}: missing timestamp at row {int(np.flatnonzero(stamps.isna())[0])}")
    return stamps


def _numeric(column: pd.Series, what: str) -> np.ndarray:
    if not (pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column)):
        converted = pd.to_numeric(column, errors="coerce")
        bad = converted.isna() & column.notna()
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise TableError(f"{what} is not numeric (row {row}: {column.iloc[row]!r})")
        column = converted
    return column.to_numpy(np.float64).astype(np.float32)


def _timestamp_column(frame: pd.DataFrame) -> str:
    lower = {str(c).lower(): c for c in frame.columns}
    for name in TIMESTAMP_NAMES:
        if name in lower:
            return lower[name]
    first = frame.columns[0]
    if not pd.api.types.is_numeric_dtype(frame[first]):
        return first
    raise TableError(
        f"no timestamp column: name one of {list(TIMESTAMP_NAMES)}, or put the timestamps in the first column"
    )


def parse_table(frame: pd.DataFrame) -> SeriesTable:
    if frame.empty:
        raise TableError("the input table is empty")
    if set(LONG_COLUMNS) <= set(frame.columns):
        return _parse_long(frame)
    return _parse_wide(frame)


def _parse_long(frame: pd.DataFrame) -> SeriesTable:
    names, values, timestamps, frequencies = [], [], [], []
    for unique_id, group in frame.groupby("unique_id", sort=False):
        name = str(unique_id)
        stamps = _parse_timestamps(group["ds"], f"series {name!r}")
        order = np.argsort(stamps.asi8, kind="stable")
        stamps = stamps[order]
        y = _numeric(group["y"], f"column 'y' of series {name!r}")[order]
        if np.all(np.isnan(y)):
            raise TableError(f"series {name!r} has no observed values (all NaN)")
        frequencies.append(infer_frequency(stamps, name))
        names.append(name)
        values.append(y[None, :])
        timestamps.append(stamps)
    return SeriesTable("long", names, values, timestamps, frequencies, "ds")


def _parse_wide(frame: pd.DataFrame) -> SeriesTable:
    time_column = _timestamp_column(frame)
    variates = [c for c in frame.columns if c != time_column]
    if not variates:
        raise TableError(f"no value columns besides the timestamp column {time_column!r}")
    stamps = _parse_timestamps(frame[time_column], f"column {time_column!r}")
    rows = np.array([_numeric(frame[c], f"column {c!r}") for c in variates])
    empty = [str(c) for c, row in zip(variates, rows) if np.all(np.isnan(row))]
    if empty:
        raise TableError(f"column(s) {empty} have no observed values (all NaN)")
    frequency = infer_frequency(stamps, str(time_column))
    return SeriesTable("wide", [str(c) for c in variates], [rows], [stamps], [frequency], str(time_column))


def forecast_frame(table: SeriesTable, horizon: int, columns: dict[str, np.ndarray]) -> pd.DataFrame:
    """Forecast statistics in the input's layout.

    ``columns`` maps a statistic name ("mean", "median", "q0.1", ...) to an array [batch, variate, horizon]
    in the order of ``table.values``. Wide output: the timestamp column, then ``<variate>_<statistic>``;
    long output: ``unique_id``, ``ds``, then one column per statistic.
    """
    future = table.future_timestamps(horizon)
    if table.layout == "wide":
        out = {table.timestamp_column: future[0]}
        for v, name in enumerate(table.names):
            for statistic, array in columns.items():
                out[f"{name}_{statistic}"] = array[0, v]
        return pd.DataFrame(out)
    parts = []
    for b, name in enumerate(table.names):
        part = {"unique_id": np.repeat(name, horizon), "ds": future[b]}
        part.update({statistic: array[b, 0] for statistic, array in columns.items()})
        parts.append(pd.DataFrame(part))
    return pd.concat(parts, ignore_index=True)


def check_output_path(path: str | Path) -> None:
    path = Path(path)
    _check_suffix(path)
    if not path.parent.exists():
        raise FileNotFoundError(f"output directory does not exist: {path.parent}")


def atomic_write(path: str | Path, write) -> None:
    """Call ``write(temporary_path)``, then rename onto ``path``; on any failure nothing is left behind."""
    path = Path(path)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
    os.close(handle)
    try:
        write(temporary)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_table(frame: pd.DataFrame, path: str | Path) -> None:
    path = Path(path)
    kind = _check_suffix(path)
    if kind == "csv":
        atomic_write(path, lambda p: frame.to_csv(p, index=False))
    else:
        atomic_write(path, lambda p: frame.to_parquet(p, index=False))
