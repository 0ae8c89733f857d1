"""Tables of time series in and out: CSV or Parquet, wide or long layout, timestamps and their frequency.

- wide: a timestamp column and one numeric column per variate -> one multivariate series;
- long: columns ``unique_id``, ``ds``, ``y`` (the usual forecasting-library convention) -> one univariate
  series per ``unique_id``, lengths may differ.

Every problem is reported as a ``TableError`` naming the file, column or series; writes are atomic
(temporary file + rename), so a failed run leaves nothing half written, and written files get the usual
permissions (0666 less the umask). Values stay float64 (large counters keep their last digits).

Timestamps may come in any datetime unit (pandas 3 parses to microseconds, Parquet keeps what was
stored, pandas 2 uses nanoseconds) and with or without a time zone: every computation works with
timestamp differences and ``pd.date_range``, never with the integer representation of a unit.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import warnings
from pathlib import Path
from typing import Sequence

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
    covariates: list[str] = dataclasses.field(default_factory=list)  # the last rows of every ``values`` array

    def future_timestamps(self, horizon: int) -> list[pd.DatetimeIndex]:
        return [future_timestamps(stamps[-1], freq, horizon) for stamps, freq in zip(self.timestamps, self.frequency)]

    def future_timestamp_column(self, horizon: int) -> pd.DatetimeIndex:
        """Every series' ``future_timestamps`` end to end: at once for fixed steps in one time zone and unit (a
        fleet's usual case; ``pd.date_range`` per series would cost as much as its forecast), else one by one."""
        zones = {stamps.tz for stamps in self.timestamps}
        units = {stamps.unit for stamps in self.timestamps}
        if len(zones) == 1 and len(units) == 1 and all(isinstance(f, pd.Timedelta) for f in self.frequency):
            unit = units.pop()
            last = np.array([stamps.asi8[-1] for stamps in self.timestamps])  # one unit: checked above
            step = np.array([f.to_timedelta64().astype(f"timedelta64[{unit}]").astype(np.int64) for f in self.frequency])
            ticks = (last[:, None] + step[:, None] * np.arange(1, horizon + 1)).reshape(-1)
            column = pd.DatetimeIndex(ticks.view(f"datetime64[{unit}]"))
            zone = zones.pop()
            return column if zone is None else column.tz_localize("UTC").tz_convert(zone)
        future = self.future_timestamps(horizon)
        stamps = [f.tz_convert("UTC").tz_localize(None) if f.tz is not None else f for f in future]
        column = pd.DatetimeIndex(np.concatenate([s.to_numpy() for s in stamps]))
        return column if not future or future[0].tz is None else column.tz_localize("UTC").tz_convert(future[0].tz)


def future_timestamps(last, frequency, horizon: int) -> pd.DatetimeIndex:
    """The ``horizon`` timestamps after ``last`` on the grid of ``frequency`` (a ``pd.Timedelta``, a
    ``pd.DateOffset`` such as month ends or business days, or a string like ``"5min"``), in ``last``'s
    time zone. Independent of the datetime unit of ``last``."""
    if isinstance(horizon, bool) or not isinstance(horizon, (int, np.integer)) or horizon < 0:
        raise ValueError(f"horizon must be a non-negative integer, got {horizon!r}")
    last = pd.Timestamp(last)
    if isinstance(frequency, str):
        frequency = pd.tseries.frequencies.to_offset(frequency)
    elif isinstance(frequency, (np.timedelta64, pd.Timedelta)):
        frequency = pd.Timedelta(frequency)
        if frequency <= pd.Timedelta(0):
            raise ValueError(f"frequency must be a positive time step, got {frequency}")
    return pd.date_range(start=last, periods=int(horizon) + 1, freq=frequency)[1:]


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


def infer_frequency(stamps: pd.DatetimeIndex, series_name: str):
    """A regular step: a calendar offset where pandas can name one (months, business days), else the
    constant time delta. Duplicate or irregular timestamps are errors naming the series. Any datetime
    unit, with or without a time zone (steps are measured in absolute time)."""
    stamps = pd.DatetimeIndex(stamps)
    if len(stamps) < 2:
        raise TableError(f"series {series_name!r}: need at least two timestamps to infer a frequency")
    if stamps.hasnans:
        missing = int(np.flatnonzero(stamps.isna())[0])
        raise TableError(f"series {series_name!r}: missing timestamp at position {missing}")
    if stamps.has_duplicates:
        duplicate = stamps[stamps.duplicated()][0]
        raise TableError(f"series {series_name!r}: duplicate timestamp {duplicate}")
    if not stamps.is_monotonic_increasing:
        raise TableError(f"series {series_name!r}: timestamps are not in increasing order")
    if len(stamps) >= 3:
        with warnings.catch_warnings():  # pandas 3 announces that infer_freq will return an offset
            warnings.filterwarnings("ignore", message=".*will return a BaseOffset object")
            named = pd.infer_freq(stamps)
        if named is not None:
            return pd.tseries.frequencies.to_offset(named)
    steps = pd.TimedeltaIndex(stamps[1:] - stamps[:-1])  # in the stamps' own unit, absolute time
    if (steps == steps[0]).all():
        return pd.Timedelta(steps[0])
    where = int(np.flatnonzero(steps != steps[0])[0]) + 1
    raise TableError(
        f"series {series_name!r}: irregular timestamps (step {steps[0]} until {stamps[where - 1]}, "
        f"then {steps[where - 1]}); resample to a regular frequency first"
    )


def parse_timestamps(column: pd.Series, what: str) -> pd.DatetimeIndex:
    try:
        with warnings.catch_warnings():  # pandas 2 warns about mixed time zones before returning objects
            warnings.filterwarnings("ignore", message=".*mixed time zones", category=FutureWarning)
            parsed = pd.to_datetime(column)
        if not pd.api.types.is_datetime64_any_dtype(parsed):
            raise ValueError("mixed time zones")
    except (ValueError, TypeError) as error:
        # Offsets that change within the column (a local time across a daylight-saving change, written as
        # +01:00 then +02:00): the instants are well defined, so read them in UTC.
        try:
            parsed = pd.to_datetime(column, utc=True)
        except (ValueError, TypeError):
            raise TableError(f"{what}: cannot parse timestamps: {error}") from None
    stamps = pd.DatetimeIndex(parsed)
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
    return column.to_numpy(np.float64, na_value=np.nan)


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


def parse_table(frame: pd.DataFrame, covariates: Sequence[str] = ()) -> SeriesTable:
    """``covariates``: columns that are covariates of the series (known-future values, not forecast); they
    become the last variates of every series (wide: of the one series; long: of each ``unique_id``'s)."""
    if frame.empty:
        raise TableError("the input table is empty")
    covariates = [str(c) for c in covariates]
    columns = [str(c) for c in frame.columns]
    missing = [c for c in covariates if c not in columns]
    if missing:
        raise TableError(f"covariate column(s) {missing} are not in the table (its columns: {columns})")
    if set(LONG_COLUMNS) <= set(frame.columns):
        return _parse_long(frame, covariates)
    return _parse_wide(frame, covariates)


def _parse_long(frame: pd.DataFrame, covariates: list[str]) -> SeriesTable:
    if set(covariates) & set(LONG_COLUMNS):
        raise TableError(f"covariates {sorted(set(covariates) & set(LONG_COLUMNS))} name a column of the long layout")
    names, values, timestamps, frequencies = [], [], [], []
    for unique_id, group in frame.groupby("unique_id", sort=False):
        name = str(unique_id)
        stamps = parse_timestamps(group["ds"], f"series {name!r}")
        order = np.argsort(stamps.asi8, kind="stable")
        stamps = stamps[order]
        rows = np.array([_numeric(group[c], f"column {c!r} of series {name!r}")[order] for c in ["y", *covariates]])
        if np.all(np.isnan(rows[0])):
            raise TableError(f"series {name!r} has no observed values (all NaN)")
        empty = [c for c, row in zip(covariates, rows[1:]) if np.all(np.isnan(row))]
        if empty:
            raise TableError(f"series {name!r}: covariate column(s) {empty} have no observed values (all NaN)")
        frequencies.append(infer_frequency(stamps, name))
        names.append(name)
        values.append(rows)
        timestamps.append(stamps)
    return SeriesTable("long", names, values, timestamps, frequencies, "ds", covariates)


def _parse_wide(frame: pd.DataFrame, covariates: list[str]) -> SeriesTable:
    time_column = _timestamp_column(frame)
    if str(time_column) in covariates:
        raise TableError(f"covariate {str(time_column)!r} is the timestamp column")
    targets = [c for c in frame.columns if c != time_column and str(c) not in covariates]
    if not targets:
        raise TableError(f"no value columns besides the timestamp column {time_column!r} and the covariates")
    by_name = {str(c): c for c in frame.columns}
    variates = targets + [by_name[c] for c in covariates]
    stamps = parse_timestamps(frame[time_column], f"column {time_column!r}")
    rows = np.array([_numeric(frame[c], f"column {c!r}") for c in variates])
    empty = [str(c) for c, row in zip(variates, rows) if np.all(np.isnan(row))]
    if empty:
        raise TableError(f"column(s) {empty} have no observed values (all NaN)")
    frequency = infer_frequency(stamps, str(time_column))
    return SeriesTable("wide", [str(c) for c in targets], [rows], [stamps], [frequency], str(time_column), covariates)


def read_future_covariates(path: str | Path, table: SeriesTable, horizon: int) -> np.ndarray:
    """Known covariate values for the ``horizon`` steps after every series of ``table``: [series, covariate,
    horizon] float64. The file has the table's layout: wide, its timestamp column and the covariate columns;
    long, ``unique_id``, ``ds`` and the covariate columns. Every step must be present, every value observed."""
    return future_covariates_from_frame(read_table(path), table, horizon, str(path))


def future_covariates_from_frame(frame: pd.DataFrame, table: SeriesTable, horizon: int, where: str) -> np.ndarray:
    """``read_future_covariates`` of a table already read (``where`` names it in errors)."""
    path = where
    layout_columns = [table.timestamp_column] if table.layout == "wide" else ["unique_id", "ds"]
    missing = [c for c in layout_columns + table.covariates if c not in [str(x) for x in frame.columns]]
    if missing:
        raise TableError(f"{path}: column(s) {missing} missing (future covariates need {layout_columns + table.covariates})")
    frame = frame.rename(columns={c: str(c) for c in frame.columns})
    if table.layout == "wide":
        groups = [frame]
    else:
        by_id = {str(name): group for name, group in frame.groupby(frame["unique_id"].astype(str), sort=False)}
        groups = [by_id.get(n, frame.iloc[:0]) for n in table.names]
    out = np.empty((len(groups), len(table.covariates), horizon))
    for row, (group, future) in enumerate(zip(groups, table.future_timestamps(horizon))):
        where = f"{path}" + ("" if table.layout == "wide" else f", series {table.names[row]!r}")
        if group.empty:
            raise TableError(f"{where}: no rows; the future covariates must cover the {horizon} steps after the "
                             "input's last timestamp")  # fmt: skip
        stamps = parse_timestamps(group[layout_columns[-1]], where)
        position = pd.Index(stamps).get_indexer(future)
        if (position < 0).any():
            raise TableError(f"{where}: no row for {future[int(np.flatnonzero(position < 0)[0])]}; the future "
                             f"covariates must cover the {horizon} steps after the input's last timestamp")  # fmt: skip
        for index, name in enumerate(table.covariates):
            values = _numeric(group[name], f"{where}: column {name!r}")[position]
            if np.isnan(values).any():
                raise TableError(f"{where}: column {name!r} has no value at {future[int(np.flatnonzero(np.isnan(values))[0])]}")
            out[row, index] = values
    return out


def forecast_frame(table: SeriesTable, horizon: int, columns: dict[str, np.ndarray]) -> pd.DataFrame:
    """Forecast statistics in the input's layout.

    ``columns`` maps a statistic name ("mean", "median", "q0.1", ...) to an array [batch, variate, horizon]
    in the order of ``table.values``. Wide output: the timestamp column, then ``<variate>_<statistic>``;
    long output: ``unique_id``, ``ds``, then one column per statistic.
    """
    if table.layout == "wide":
        out = {table.timestamp_column: table.future_timestamps(horizon)[0]}
        for v, name in enumerate(table.names):
            for statistic, array in columns.items():
                out[f"{name}_{statistic}"] = array[0, v]
        return pd.DataFrame(out)
    out = {"unique_id": np.repeat(np.asarray(table.names, dtype=object), horizon),
           "ds": table.future_timestamp_column(horizon)}  # fmt: skip
    out.update({statistic: array[:, 0].reshape(-1) for statistic, array in columns.items()})
    return pd.DataFrame(out)


def check_output_path(path: str | Path) -> None:
    path = Path(path)
    _check_suffix(path)
    if not path.parent.exists():
        raise FileNotFoundError(f"output directory does not exist: {path.parent}")


def _create_temporary(path: Path) -> Path:
    """An empty new file beside ``path`` with mode 0666 less the umask (``tempfile.mkstemp`` gives 0600)."""
    for _ in range(100):
        temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}{path.suffix}")
        try:
            os.close(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return temporary
    raise FileExistsError(f"cannot create a temporary file beside {path}")


def atomic_write(path: str | Path, write, overwrite: bool = True) -> None:
    """Call ``write(temporary_path)``, then rename onto ``path``; on any failure nothing is left behind.
    The file gets the usual permissions of a new file (0666 less the umask). With ``overwrite=False`` an
    existing ``path`` (even one created while ``write`` ran) is a ``FileExistsError`` and is left as is."""
    path = Path(path)
    temporary = _create_temporary(path)
    try:
        write(temporary)
        if overwrite:
            os.replace(temporary, path)
        else:
            _rename_without_overwriting(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _rename_without_overwriting(temporary: Path, path: Path) -> None:
    try:
        os.link(temporary, path)  # fails atomically if ``path`` exists
    except FileExistsError:
        raise FileExistsError(f"{path} already exists; pass --overwrite to replace it") from None
    except OSError:  # a file system without hard links: check, then rename
        if os.path.lexists(path):
            raise FileExistsError(f"{path} already exists; pass --overwrite to replace it") from None
        os.replace(temporary, path)
        return
    os.unlink(temporary)


def write_table(frame: pd.DataFrame, path: str | Path, overwrite: bool = True) -> None:
    path = Path(path)
    kind = _check_suffix(path)
    if kind == "csv":
        atomic_write(path, lambda p: frame.to_csv(p, index=False), overwrite)
    else:
        atomic_write(path, lambda p: frame.to_parquet(p, index=False), overwrite)
