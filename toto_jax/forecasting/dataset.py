"""Datasets of series too large for memory, read in batches of whole series: the input side of a forecast job.

A dataset is a CSV/Parquet file, a directory or a glob, local or in a bucket (``toto_jax.storage``), in the long
layout (``unique_id, ds, y`` [+ covariates], one series per id, the rows of one series consecutive: what a writer
sorted by id produces) or the wide one (a timestamp column + one column per variate: one multivariate series
per file).

It is cut into **shards** from file metadata alone, before any row is read: a Parquet file into runs of row
groups of about ``rows_per_shard`` rows, any other file into one shard. A series belongs to the shard its first
row lies in, and is read to its end even past the shard's last row group. Shards therefore depend only on the
files, never on how many processes read them or how often a job was interrupted, which is what lets a job
resume, and several hosts split it, with identical results.

Within a shard, rows stream in record batches (never a whole file) and leave as ``SeriesBatch``es of
``series_per_batch`` complete series. Every series is checked on its own (numeric values, enough observed
steps, regular timestamps; rows missing from a regular grid become NaN gaps): a bad one is reported with its
reason in ``SeriesBatch.errors`` and the others go on. Rows of one id that are not consecutive are a
``DatasetError`` naming the id.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Iterator, Sequence

import numpy as np
import pandas as pd

from .. import storage
from .tabular import LONG_COLUMNS, SeriesTable, TableError, parse_timestamps, infer_frequency, parse_table

PARQUET_SUFFIXES = (".parquet", ".pq")
SUFFIXES = (".csv",) + PARQUET_SUFFIXES
DEFAULT_ROWS_PER_SHARD = 1 << 21  # ~4,000 series of 512 steps: one shard is a few seconds of work
DEFAULT_SERIES_PER_BATCH = 1024
DEFAULT_MIN_LENGTH = 64  # one patch: fewer observed steps give the scaler too little to stand on
READ_ROWS = 1 << 16  # rows per record batch read
# Rows missing from a series' regular grid become NaN gaps, unless the filled grid would be this many times
# the rows there are (then the timestamps are reported as irregular).
MAX_FILL_RATIO = 4


class DatasetError(ValueError):
    """A dataset that cannot be read as series (no files, mixed layouts, an id whose rows are split)."""


@dataclasses.dataclass(frozen=True)
class Shard:
    index: int
    file: str
    row_groups: tuple[int, ...] | None  # Parquet: these row groups; None: the whole file
    rows: int | None  # rows in them (None for CSV, unknown before reading)

    def describe(self) -> str:
        if self.row_groups is None:
            return self.file
        first, last = self.row_groups[0], self.row_groups[-1]
        return f"{self.file} (row group{'s' if last > first else ''} {first}{f'-{last}' if last > first else ''})"


@dataclasses.dataclass
class SeriesBatch:
    shard: int
    number: int  # position within the shard: with ``shard`` it seeds the batch's sample paths
    table: SeriesTable | None  # the series that can be forecast (None: none in this batch)
    errors: list[tuple[str, str]]  # (series, reason) of those that cannot
    rows: int  # input rows this batch consumed (for progress)

    @property
    def series(self) -> int:
        return (0 if self.table is None else len(self.table.values) if self.table.layout == "long"
                else len(self.table.names)) + len(self.errors)  # fmt: skip


def series_key(name: str) -> int:
    """A 64-bit digest of a series name: what a job keeps per series to find ids split over shards."""
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "little")


class Dataset:
    """The files of ``source``, their layout and their shards (from metadata only).

    ``covariates``: columns that are covariates (known-future values, not forecast): the last variates of
    every series. Files are listed once, here; every later read names the file it reads."""

    def __init__(self, source, covariates: Sequence[str] = (), rows_per_shard: int = DEFAULT_ROWS_PER_SHARD):
        if isinstance(rows_per_shard, bool) or not isinstance(rows_per_shard, int) or rows_per_shard <= 0:
            raise ValueError(f"rows_per_shard must be a positive integer, got {rows_per_shard!r}")
        self.source = str(source)
        self.covariates = [str(c) for c in covariates]
        self.files = storage.list_files(source, SUFFIXES)
        self.layout = None
        self.shards = self._plan(rows_per_shard)

    def _check_layout(self, file: str, columns: list[str]) -> None:
        """Every file has the covariates and the layout of the first (each file is looked at once, here)."""
        missing = [c for c in self.covariates if c not in columns]
        if missing:
            raise DatasetError(f"{file}: covariate column(s) {missing} are not in the table (its columns: {columns})")
        layout = "long" if set(LONG_COLUMNS) <= set(columns) else "wide"
        if self.layout is not None and layout != self.layout:
            raise DatasetError(f"{file} is not in the {self.layout} layout of {self.files[0]}: a dataset's files "
                               "share one layout")  # fmt: skip
        self.layout = layout

    def _plan(self, rows_per_shard: int) -> list[Shard]:
        shards: list[Shard] = []
        for file in self.files:
            if not file.lower().endswith(PARQUET_SUFFIXES):
                self._check_layout(file, _csv_columns(file))
                shards.append(Shard(len(shards), file, None, None))
                continue
            with storage.open_file(file) as stream:
                parquet = _parquet_file(stream, file)
                self._check_layout(file, list(parquet.schema_arrow.names))
                metadata = parquet.metadata
            if self.layout == "wide":
                shards.append(Shard(len(shards), file, None, None))
                continue
            groups, rows = [], 0
            for group in range(metadata.num_row_groups):
                groups.append(group)
                rows += metadata.row_group(group).num_rows
                if rows >= rows_per_shard or group == metadata.num_row_groups - 1:
                    shards.append(Shard(len(shards), file, tuple(groups), rows))
                    groups, rows = [], 0
        return shards

    def read(self, shard: Shard, series_per_batch: int = DEFAULT_SERIES_PER_BATCH,
             min_length: int = DEFAULT_MIN_LENGTH) -> Iterator[SeriesBatch]:  # fmt: skip
        """The series of ``shard`` in batches of ``series_per_batch``, each checked on its own."""
        if self.layout == "wide":
            yield self._read_wide(shard, min_length)
            return
        rows = _LongRows(shard, self.covariates)
        number = 0
        for table, starts, names, consumed in rows.series_runs(series_per_batch):
            good, errors = _parse_long(table, starts, names, self.covariates, min_length)
            yield SeriesBatch(shard.index, number, good, errors, consumed)
            number += 1

    def _read_wide(self, shard: Shard, min_length: int) -> SeriesBatch:
        with storage.local_copy(storage.as_path(shard.file)) as local:
            frame = pd.read_csv(local) if str(local).lower().endswith(".csv") else pd.read_parquet(local)
        try:
            table = parse_table(frame, self.covariates)
        except TableError as error:
            return SeriesBatch(shard.index, 0, None, [(shard.file, str(error))], len(frame))
        observed = int(np.isfinite(table.values[0][: len(table.names)]).sum(axis=-1).min())
        if observed < min_length:
            reason = f"too short: {observed} observed steps, fewer than the minimum of {min_length}"
            return SeriesBatch(shard.index, 0, None, [(shard.file, reason)], len(frame))
        return SeriesBatch(shard.index, 0, table, [], len(frame))


def _parquet_file(stream, file: str, long: bool = False):
    """``file`` opened for reading; in the long layout its ids read as dictionaries (a fleet's ids repeat for every
    row of a series: decoding them to strings row by row was a third of the reading time)."""
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(stream, read_dictionary=["unique_id"] if long else None)
    except Exception as error:  # noqa: BLE001 - pyarrow raises several types for a damaged file
        raise DatasetError(f"{file}: cannot read Parquet: {error}") from None


def _csv_columns(file: str) -> list[str]:
    with storage.open_file(file) as stream:
        header = stream.readline().decode("utf-8-sig").strip()
    return [name.strip().strip('"') for name in header.split(",")] if header else []


class _LongRows:
    """Record batches of one shard of a long table, cut into runs of whole series."""

    def __init__(self, shard: Shard, covariates: list[str]):
        self.shard = shard
        self.columns = list(LONG_COLUMNS) + covariates
        self.seen: set[str] = set()  # ids met in this shard: one met again is split

    def _batches(self, stream) -> Iterator:
        """The shard's record batches, then the following row groups' until its last series ends."""
        import pyarrow as pa

        shard = self.shard
        if shard.row_groups is None:
            yield from _csv_batches(stream, shard.file, self.columns)
            return
        parquet = _parquet_file(stream, shard.file, long=True)
        skip = None  # the id of a series that began in the previous shard
        if shard.row_groups[0] > 0:
            previous = parquet.read_row_group(shard.row_groups[0] - 1, columns=["unique_id"]).column(0)
            skip = previous[len(previous) - 1].as_py() if len(previous) else None
        groups = list(shard.row_groups) + list(range(shard.row_groups[-1] + 1, parquet.metadata.num_row_groups))
        for position, group in enumerate(groups):
            past = position >= len(shard.row_groups)  # after the shard: only the rest of its last series
            for batch in parquet.iter_batches(READ_ROWS, row_groups=[group], columns=self.columns):
                table = pa.Table.from_batches([batch])
                if skip is not None:
                    rest = _first_other(table.column("unique_id"), skip)
                    if rest is None:
                        continue
                    table, skip = table.slice(rest), None
                    if past:  # every row of the shard belonged to the previous shard's series
                        return
                if past:
                    if self.last_id is None:
                        return
                    end = _first_other(table.column("unique_id"), self.last_id)
                    if end is not None:
                        yield table.slice(0, end)
                        return
                yield table

    def series_runs(self, series_per_batch: int) -> Iterator[tuple]:
        """(table of ``series_per_batch`` whole series, where each begins, their names, input rows consumed), the
        last run possibly shorter. Where series begin is found once per record batch read."""
        import pyarrow as pa

        pending, starts, consumed = None, np.zeros(0, np.int64), 0
        self.last_id = None  # of the rows read so far
        with storage.open_file(self.shard.file) as stream:
            for table in self._batches(stream):
                consumed += table.num_rows
                if not table.num_rows:
                    continue
                ids = table.column("unique_id")
                begins = _run_starts(ids)
                if pending is None or not pending.num_rows:
                    pending, starts = table, begins
                else:
                    if ids[0].as_py() == self.last_id:  # the last series goes on in this batch
                        begins = begins[1:]
                    starts = np.concatenate([starts, begins + pending.num_rows])
                    pending = pa.concat_tables([pending, table])
                self.last_id = ids[len(ids) - 1].as_py()
                while len(starts) > series_per_batch:  # the last run may continue in the next record batch
                    cut = int(starts[series_per_batch])
                    yield (*self._checked(pending.slice(0, cut), starts[:series_per_batch]), consumed)
                    consumed, pending = 0, pending.slice(cut)
                    starts = starts[series_per_batch:] - cut
        if pending is not None and pending.num_rows:
            for first in range(0, len(starts), series_per_batch):
                run = starts[first : first + series_per_batch]
                stop = int(starts[first + series_per_batch]) if first + series_per_batch < len(starts) else None
                part = pending.slice(int(run[0]), None if stop is None else stop - int(run[0]))
                yield (*self._checked(part, run - run[0]), consumed)
                consumed = 0

    def _checked(self, table, starts: np.ndarray) -> tuple:
        """(``table``, ``starts``, the series' names) after checking that none of its ids was met before in this
        shard."""
        names = [str(name) for name in table.column("unique_id").take(starts).to_pylist()]
        for name in names:
            if name in self.seen:
                raise DatasetError(
                    f"series {name!r} is not contiguous: its rows in {self.shard.describe()} are interrupted by "
                    "other series. A dataset job reads every series' rows as one run: sort the input by unique_id"
                )
            self.seen.add(name)
        return table, starts, names


def _csv_batches(stream, file: str, columns: list[str]) -> Iterator:
    """A CSV file's record batches, every column read as text (values are checked per series, not per file)."""
    import pyarrow as pa
    import pyarrow.csv as csv

    names = _csv_columns(file)
    text = {name: pa.string() for name in names}
    options = csv.ConvertOptions(column_types=text, include_columns=columns, strings_can_be_null=True)
    try:
        reader = csv.open_csv(stream, read_options=csv.ReadOptions(block_size=1 << 22), convert_options=options)
        for batch in reader:
            yield pa.Table.from_batches([batch])
    except pa.ArrowInvalid as error:
        raise DatasetError(f"{file}: cannot read CSV: {error}") from None


def _run_starts(ids) -> np.ndarray:
    """Positions where a new id begins (0 included)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if len(ids) == 0:
        return np.zeros(0, np.int64)
    ids = ids.combine_chunks() if hasattr(ids, "combine_chunks") else ids
    if pa.types.is_dictionary(ids.type) and ids.null_count == 0:
        # Equal indices are equal ids; where the index changes, the values decide (a dictionary may repeat one).
        indices = ids.indices.to_numpy()
        candidates = np.flatnonzero(indices[1:] != indices[:-1]) + 1
        values = ids.dictionary.take(pa.array(indices[np.concatenate([candidates - 1, candidates])]))
        count = len(candidates)
        changed = pc.not_equal(values.slice(0, count), values.slice(count)).to_numpy(zero_copy_only=False)
        return np.concatenate([[0], candidates[changed]])
    changed = pc.not_equal(ids.slice(1), ids.slice(0, len(ids) - 1)).to_numpy(zero_copy_only=False)
    return np.concatenate([[0], np.flatnonzero(changed) + 1])


def _first_other(ids, name) -> int | None:
    """The first position whose id differs from ``name`` (None: every row is ``name``)."""
    import pyarrow.compute as pc

    other = np.flatnonzero(~pc.equal(ids, name).to_numpy(zero_copy_only=False))
    return int(other[0]) if other.size else None


# ---- one batch of rows -> series -------------------------------------------------------------------------------
def _numbers(column) -> tuple[np.ndarray, np.ndarray]:
    """float64 values (NaN for nulls) and the rows whose text is not a number."""
    import pyarrow as pa

    column = column.combine_chunks() if hasattr(column, "combine_chunks") else column
    if pa.types.is_integer(column.type) or pa.types.is_floating(column.type) or pa.types.is_decimal(column.type):
        return column.to_numpy(zero_copy_only=False).astype(np.float64), np.zeros(len(column), bool)
    text = pd.Series(column.to_pandas(), dtype=object)
    values = pd.to_numeric(text, errors="coerce").to_numpy(np.float64, na_value=np.nan)
    blank = text.isna() | (text.astype(str).str.strip() == "")
    return values, np.isnan(values) & ~blank.to_numpy()


def _stamps(column) -> tuple[pd.DatetimeIndex | None, str | None]:
    """The rows' timestamps, or why they cannot be read."""
    import pyarrow as pa

    column = column.combine_chunks() if hasattr(column, "combine_chunks") else column
    if pa.types.is_timestamp(column.type) or pa.types.is_date(column.type):
        return pd.DatetimeIndex(column.to_pandas()), None
    try:
        return parse_timestamps(pd.Series(column.to_pandas(), dtype=object), "column 'ds'"), None
    except TableError as error:
        return None, str(error)


def _parse_long(table, starts: np.ndarray, names: list[str], covariates: list[str],
                min_length: int) -> tuple[SeriesTable | None, list]:  # fmt: skip
    """The series of ``table`` (beginning at ``starts``, called ``names``) that can be forecast, and the
    reasons of those that cannot."""
    ends = np.append(starts[1:], table.num_rows)
    columns = ["y", *covariates]
    numbers = [_numbers(table.column(c)) for c in columns]
    stamps, _ = _stamps(table.column("ds"))  # when some cannot be read, each series' own are parsed on their own
    good = SeriesTable("long", [], [], [], [], "ds", covariates)
    errors = []
    ticks = None if stamps is None or stamps.hasnans else stamps.asi8  # read once for the whole batch
    plain = _plain_series(starts, ends, ticks, numbers, min_length)
    steps: dict[int, pd.Timedelta] = {}  # one object per distinct step, not one per series
    for name, start, end, step in zip(names, starts, ends, plain):
        if step:  # the usual series, checked at once for the whole batch above
            good.names.append(name)
            good.values.append(numbers[0][0][None, start:end] if len(numbers) == 1
                               else np.stack([values[start:end] for values, _ in numbers]))  # fmt: skip
            good.timestamps.append(stamps[start:end])
            if step not in steps:
                steps[step] = pd.Timedelta(int(step), unit=stamps.unit)
            good.frequency.append(steps[step])
            continue
        try:
            series_stamps = stamps[start:end] if stamps is not None else _series_stamps(table, start, end)
            values = np.stack([_checked_values(values, bad, start, end, column, table)
                               for (values, bad), column in zip(numbers, columns)])  # fmt: skip
            series_ticks = ticks[start:end] if ticks is not None else None
            series_stamps, values, frequency = _on_grid(series_stamps, series_ticks, values, name)
            _check_observed(values, covariates, min_length)
        except TableError as error:
            errors.append((name, str(error).replace(f"series {name!r}: ", "")))
            continue
        good.names.append(name)
        good.values.append(values)
        good.timestamps.append(series_stamps)
        good.frequency.append(frequency)
    return (good if good.names else None), errors


def _plain_series(starts, ends, ticks, numbers, min_length: int) -> np.ndarray:
    """Each series' constant time step where it needs no further look (numeric, a constant positive step, enough
    observed targets, every covariate observed), else 0: a fleet's usual series are checked with a few array
    operations per batch instead of a dozen per series."""
    plain = np.zeros(len(starts), np.int64)
    if ticks is None or any(bad.any() for _, bad in numbers):
        return plain
    lengths = ends - starts
    steps = np.diff(ticks)
    first = np.where(lengths >= 2, steps[np.minimum(starts, len(steps) - 1)] if len(steps) else 0, 0)
    inside = np.ones(len(steps), bool)
    inside[ends[:-1] - 1] = False  # the step from one series to the next
    differs = (steps != np.repeat(first, lengths)[1:]) & inside
    irregular = np.add.reduceat(np.append(differs, False), starts) > 0
    observed = [np.add.reduceat(np.isfinite(values), starts) for values, _ in numbers]
    ok = (lengths >= 2) & (first > 0) & ~irregular & (observed[0] >= min_length)
    for count in observed[1:]:
        ok &= count > 0
    return np.where(ok, first, 0)


def _series_stamps(table, start: int, end: int) -> pd.DatetimeIndex:
    stamps, problem = _stamps(table.column("ds").slice(int(start), int(end - start)))
    if stamps is None:
        raise TableError(problem.replace("column 'ds': ", ""))
    return stamps


def _checked_values(values, bad, start, end, column, table) -> np.ndarray:
    where = np.flatnonzero(bad[start:end])
    if where.size:
        raw = table.column(column)[int(start + where[0])].as_py()
        raise TableError(f"column {column!r} is not numeric (row {int(where[0])} of the series: {raw!r})")
    return values[start:end]


def _on_grid(stamps: pd.DatetimeIndex, ticks: np.ndarray | None, values: np.ndarray, name: str):
    """Timestamps, values and frequency on a regular grid: a constant step as it is, rows missing from a grid
    (every step a multiple of the smallest) as NaN, calendar steps (month ends) as pandas names them.
    ``ticks``: the timestamps as integers of their unit, when there is no missing one (read once per batch:
    pandas' per-element access would cost more than the series' forecast)."""
    if ticks is None:
        if stamps.hasnans:
            raise TableError(f"missing timestamp at row {int(np.flatnonzero(stamps.isna())[0])} of the series")
        ticks = stamps.asi8
    if len(ticks) >= 2:
        steps = np.diff(ticks)
        if steps[0] > 0 and (steps == steps[0]).all():
            return stamps, values, pd.Timedelta(int(steps[0]), unit=stamps.unit)
        smallest = steps.min()
        if smallest > 0 and not (steps % smallest).any():
            length = int((ticks[-1] - ticks[0]) // smallest) + 1
            if length <= MAX_FILL_RATIO * len(ticks):
                positions = (ticks - ticks[0]) // smallest
                filled = np.full((values.shape[0], length), np.nan)
                filled[:, positions] = values
                step = pd.Timedelta(int(smallest), unit=stamps.unit)
                grid = pd.date_range(stamps[0], periods=length, freq=step)
                return grid, filled, step
    return stamps, values, infer_frequency(stamps, name)


def _check_observed(values: np.ndarray, covariates: list[str], min_length: int) -> None:
    observed = int(np.isfinite(values[0]).sum())
    if observed == 0:
        raise TableError("no observed values (all NaN)")
    if observed < min_length:
        raise TableError(f"too short: {observed} observed steps, fewer than the minimum of {min_length}")
    empty = [c for c, row in zip(covariates, values[1:]) if not np.isfinite(row).any()]
    if empty:
        raise TableError(f"covariate column(s) {empty} have no observed values (all NaN)")
