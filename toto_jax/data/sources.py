"""Picklable random-access grain sources of raw series.

Every source implements ``__len__`` and ``__getitem__(index) -> record | None``
where a record is ``{"target": float32 [variates, length], "series_index": int}``
with NaN for missing values. ``None`` means "skipped by the bad-data policy"
(see ``quality.py``); the pipeline drops it and counts it.

Sources hold no open file handles or caches when pickled, so grain can send
them to spawned worker processes; each process re-opens files lazily.
"""

from __future__ import annotations

import bisect
import collections
import os
import pathlib
import threading
from typing import Any, Sequence

import numpy as np

from toto_jax import storage
from toto_jax.data import quality, synthetic
from toto_jax.data.quality import DataError

PARQUET_SUFFIXES = (".parquet", ".pq")
ARROW_SUFFIXES = (".arrow", ".feather", ".ipc")
TIME_COLUMN_NAMES = ("timestamp", "time", "date", "datetime", "ds")
LABEL_COLUMN_NAMES = ("label", "labels", "is_anomaly", "anomaly")


class ArraySource:
    """In-memory list of series (1-D or [variates, length] arrays)."""

    def __init__(self, series: Sequence[Any], name: str = "arrays"):
        self.name = name
        self._series = list(series)
        self.bad_data = quality.BadDataLog(name)

    def __len__(self) -> int:
        return len(self._series)

    def __getitem__(self, index: int):
        target = quality.clean_target(self._series[index], self.bad_data, f"series {index}")
        return None if target is None else {"target": target, "series_index": int(index)}

    def __repr__(self) -> str:
        return f"ArraySource(name={self.name!r}, len={len(self)})"


class SyntheticSource:
    """Deterministic synthetic series: record ``i`` depends only on (seed, i).

    ``length`` is the generated length (the pipeline uses the training window
    length); a ``short_fraction`` of series is shorter, down to ``min_length``,
    so that left padding is exercised as in real corpora.
    """

    def __init__(
        self,
        num_series: int = 1_000_000,
        length: int = 1024,
        seed: int = 0,
        max_variates: int = 8,
        kernelsynth_fraction: float = 0.5,
        periodic_fraction: float = 0.0,
        outlier_fraction: float = 0.0,
        short_fraction: float = 0.1,
        min_length: int = 16,
        name: str = "synthetic",
    ):
        if num_series <= 0 or length <= 0 or max_variates <= 0:
            raise DataError(
                f"synthetic source needs positive num_series, length, max_variates; got "
                f"{num_series}, {length}, {max_variates}"
            )
        for field, value in (("kernelsynth_fraction", kernelsynth_fraction),
                             ("periodic_fraction", periodic_fraction), ("outlier_fraction", outlier_fraction),
                             ("short_fraction", short_fraction)):
            if not 0.0 <= value <= 1.0:
                raise DataError(f"synthetic {field} must lie in [0, 1], got {value}")
        self.num_series = int(num_series)
        self.length = int(length)
        self.seed = int(seed)
        self.max_variates = int(max_variates)
        self.kernelsynth_fraction = float(kernelsynth_fraction)
        self.periodic_fraction = float(periodic_fraction)
        self.outlier_fraction = float(outlier_fraction)
        self.short_fraction = float(short_fraction)
        self.min_length = int(min(min_length, length))
        self.name = name
        self.bad_data = quality.BadDataLog(name)

    def __len__(self) -> int:
        return self.num_series

    def generate(self, index: int) -> tuple[str, np.ndarray]:
        rng = np.random.default_rng([self.seed, int(index)])
        length = self.length
        if rng.random() < self.short_fraction:
            length = int(rng.integers(self.min_length, self.length + 1))
        return synthetic.synthetic_group(
            rng, length, self.max_variates, self.kernelsynth_fraction, self.periodic_fraction, self.outlier_fraction
        )

    def __getitem__(self, index: int):
        _, target = self.generate(index)
        target = quality.clean_target(target, self.bad_data, f"synthetic {index}")
        return None if target is None else {"target": target, "series_index": int(index)}

    def __repr__(self) -> str:
        return f"SyntheticSource(num_series={self.num_series}, length={self.length}, seed={self.seed})"


# --------------------------------------------------------------------------
# Parquet / Arrow
# --------------------------------------------------------------------------


def _list_value_type(arrow_type):
    """(depth, leaf type) of list<...> / list<list<...>> arrow types, else (0, type)."""
    import pyarrow as pa

    depth = 0
    while pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type) or pa.types.is_fixed_size_list(arrow_type):
        arrow_type = arrow_type.value_type
        depth += 1
    return depth, arrow_type


def _check_target_schema(schema, path: str) -> str | None:
    """Returns why the file does not follow the layout, or None if it does."""
    import pyarrow as pa

    if "target" not in schema.names:
        return f"{path}: no 'target' column (columns: {schema.names})"
    depth, leaf = _list_value_type(schema.field("target").type)
    if depth not in (1, 2):
        return (
            f"{path}: 'target' must be list<number> (one series per row) or "
            f"list<list<number>> (multivariate), got {schema.field('target').type}"
        )
    if not (pa.types.is_integer(leaf) or pa.types.is_floating(leaf) or pa.types.is_decimal(leaf)):
        return f"{path}: 'target' values must be numeric, got {leaf}"
    return None


def _target_row_to_array(column, row: int):
    """One row of a list / nested-list arrow column -> [v, L] float array (NaN for nulls)."""
    import pyarrow as pa

    scalar = column[row]
    if not scalar.is_valid:
        return None
    values = scalar.values
    if pa.types.is_list(values.type) or pa.types.is_large_list(values.type) or pa.types.is_fixed_size_list(values.type):
        # Null variates have equal offsets, i.e. length 0 (then all-NaN, dropped later).
        lengths = np.diff(values.offsets.to_numpy(zero_copy_only=False))
        flat = values.flatten().to_numpy(zero_copy_only=False)
        dtype = np.result_type(flat.dtype, np.float32) if flat.dtype.kind in "biuf" else object
        # Variates share the row's start timestamp: align at the start, NaN-pad the end.
        out = np.full((len(lengths), int(lengths.max(initial=0))), np.nan, dtype=dtype)
        offset = 0
        for i, n in enumerate(lengths):
            out[i, :n] = flat[offset : offset + n]
            offset += n
        return out
    return values.to_numpy(zero_copy_only=False)


class ParquetSource:
    """A directory (or list) of Parquet / Arrow IPC files, one row per series.

    Layout: a ``target`` column holding ``list<number>`` or
    ``list<list<number>>`` (variates x time); optional ``start`` / ``freq`` /
    ``item_id`` columns are ignored here. Parquet is read lazily one row group at
    a time with a per-process LRU cache bounded by ``cache_row_groups`` and
    ``cache_mb``, so corpora larger than memory work; Arrow IPC files are
    memory-mapped. Random access to rows of different row groups costs one
    row-group read each: the pipeline therefore shuffles Parquet rows in blocks
    (``SourceConfig.shuffle_block``) so consecutive reads hit the cache.
    """

    def __init__(
        self,
        path: str | os.PathLike | Sequence[str | os.PathLike],
        name: str | None = None,
        cache_row_groups: int = 64,
        cache_mb: float = 256.0,
        on_bad_file: str = "skip",
    ):
        import pyarrow.parquet as pq

        if on_bad_file not in ("skip", "raise"):
            raise DataError(f"on_bad_file must be 'skip' or 'raise', got {on_bad_file!r}")
        files = _list_files(path, PARQUET_SUFFIXES + ARROW_SUFFIXES)
        self.name = name or str(path)
        self.cache_row_groups = max(1, int(cache_row_groups))
        self.cache_bytes = int(cache_mb * 2**20)
        self.bad_data = quality.BadDataLog(self.name)
        self.skipped_files: list[str] = []
        self._files: list[str] = []
        # Per file: cumulative row counts of its row groups (Arrow: record batches).
        self._group_ends: list[list[int]] = []
        file_row_ends = []
        total = 0
        for file in files:
            try:
                if file.endswith(PARQUET_SUFFIXES):
                    with storage.open_file(file) as stream:
                        metadata = pq.ParquetFile(stream).metadata
                    problem = _check_target_schema(metadata.schema.to_arrow_schema(), file)
                    group_rows = [metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)]
                else:
                    table = _read_arrow(file)
                    problem = _check_target_schema(table.schema, file)
                    group_rows = [table.num_rows]
            except Exception as error:  # pyarrow raises several types for corrupt files
                problem = f"{file}: unreadable ({type(error).__name__}: {error})"
            if problem is not None:
                if on_bad_file == "raise":
                    raise DataError(problem)
                self.skipped_files.append(file)
                self.bad_data.record("bad_file", problem)
                continue
            ends = list(np.cumsum(group_rows, dtype=np.int64).tolist())
            if not ends or ends[-1] == 0:
                continue
            self._files.append(file)
            self._group_ends.append(ends)
            total += ends[-1]
            file_row_ends.append(total)
        if total == 0:
            raise DataError(f"no usable rows in {path} (files: {len(files)}, skipped: {self.skipped_files})")
        self._file_row_ends = file_row_ends
        self._init_cache()

    def _init_cache(self):
        self._cache: collections.OrderedDict = collections.OrderedDict()
        self._cached_bytes = 0
        self._cache_lock = threading.Lock()
        self.row_group_reads = 0  # how many row groups were read from disk (tests, profiling)

    def __getstate__(self):
        state = dict(self.__dict__)
        for key in ("_cache", "_cached_bytes", "_cache_lock", "row_group_reads"):
            state.pop(key)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._init_cache()

    def __len__(self) -> int:
        return self._file_row_ends[-1]

    def locate(self, index: int) -> tuple[int, int, int]:
        """(file index, row group index, row inside the group) of a global row."""
        if not 0 <= index < len(self):
            raise IndexError(f"row {index} out of range for {len(self)} rows")
        file_index = bisect.bisect_right(self._file_row_ends, index)
        row_in_file = index - (self._file_row_ends[file_index - 1] if file_index else 0)
        ends = self._group_ends[file_index]
        group = bisect.bisect_right(ends, row_in_file)
        return file_index, group, row_in_file - (ends[group - 1] if group else 0)

    def _row_group(self, file_index: int, group: int):
        key = (file_index, group)
        with self._cache_lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        file = self._files[file_index]
        if file.endswith(PARQUET_SUFFIXES):
            import pyarrow.parquet as pq

            with storage.open_file(file) as stream:  # one row group's byte ranges, also from a bucket
                column = pq.ParquetFile(stream).read_row_group(group, columns=["target"]).column("target")
        else:
            column = _read_arrow(file).column("target")
        with self._cache_lock:
            self.row_group_reads += 1
            if key not in self._cache:  # another thread may have read it meanwhile
                self._cache[key] = column
                self._cached_bytes += column.nbytes
            # Bounded by count and bytes; the newest group always stays.
            while len(self._cache) > 1 and (
                len(self._cache) > self.cache_row_groups or self._cached_bytes > self.cache_bytes
            ):
                _, evicted = self._cache.popitem(last=False)
                self._cached_bytes -= evicted.nbytes
        return column

    def __getitem__(self, index: int):
        file_index, group, row = self.locate(int(index))
        detail = f"{self._files[file_index]} row group {group} row {row}"
        try:
            column = self._row_group(file_index, group)
        except Exception as error:  # corrupt data pages only show up when read
            self.bad_data.record("unreadable_row_group", f"{detail}: {type(error).__name__}: {error}")
            return None
        try:
            raw = _target_row_to_array(column, row)
        except Exception as error:
            self.bad_data.record("unreadable_row", f"{detail}: {type(error).__name__}: {error}")
            return None
        target = quality.clean_target(raw, self.bad_data, detail)
        return None if target is None else {"target": target, "series_index": int(index)}

    def __repr__(self) -> str:
        return f"ParquetSource(name={self.name!r}, files={len(self._files)}, rows={len(self)})"


def _read_arrow(path: str):
    """Memory-maps an Arrow IPC file (file or stream format) without copying; objects in buckets are read."""
    import pyarrow as pa

    with (storage.open_file(path) if storage.is_remote(path) else pa.memory_map(path, "r")) as source:
        try:
            return pa.ipc.open_file(source).read_all()
        except pa.ArrowInvalid:
            source.seek(0)
            return pa.ipc.open_stream(source).read_all()


def _list_files(path, suffixes: tuple[str, ...]) -> list[str]:
    try:
        return storage.list_files(path, suffixes)
    except FileNotFoundError as error:
        raise DataError(str(error)) from None


# --------------------------------------------------------------------------
# CSV directories (NAB, cloud-monitoring and similar)
# --------------------------------------------------------------------------


def read_csv_series(path: str) -> dict:
    """Reads one CSV file as one series.

    The time column is the first column named like a timestamp
    (timestamp/TimeStamp/time/date/datetime/ds); anomaly label columns are
    dropped; every remaining column is a variate (non-numeric cells become
    missing). Returns {"target": float64 [v, L], "start": Timestamp | None,
    "freq": str | None, "non_numeric_cells": int}.
    """
    import pandas as pd

    with storage.open_file(path) as stream:
        frame = pd.read_csv(stream)
    lower = {column.lower(): column for column in frame.columns}
    time_column = next((lower[name] for name in TIME_COLUMN_NAMES if name in lower), None)
    value_columns = [
        column
        for column in frame.columns
        if column != time_column and column.lower() not in LABEL_COLUMN_NAMES and not column.lower().startswith("unnamed")
    ]
    if not value_columns:
        raise DataError(f"{path}: no value column (columns: {list(frame.columns)})")
    start = freq = None
    if time_column is not None:
        times = pd.to_datetime(frame[time_column], errors="coerce", utc=True).dt.tz_localize(None)
        order = np.argsort(times.to_numpy(), kind="stable")
        frame = frame.iloc[order]
        times = times.iloc[order]
        if times.notna().any():
            start = times.dropna().iloc[0]
        steps = times.diff().dropna()
        if len(steps):
            freq = pd.tseries.frequencies.to_offset(steps.median()).freqstr
    values = frame[value_columns].apply(pd.to_numeric, errors="coerce")
    non_numeric = int((values.isna() & frame[value_columns].notna()).to_numpy().sum())
    return {
        "target": values.to_numpy(dtype=np.float64).T,
        "start": start,
        "freq": freq,
        "non_numeric_cells": non_numeric,
    }


class CsvSource:
    """A directory of CSV files, one (multivariate) series per file.

    Fits NAB (``timestamp,value``) and cloud-monitoring
    (``TimeStamp,Value,Label`` + metadata JSON, which is ignored). Files are
    read on access; convert large corpora to Parquet (``toto-jax data convert``).
    """

    def __init__(self, path: str | os.PathLike, name: str | None = None):
        self._files = _list_files(path, (".csv",))
        self.name = name or str(path)
        self.bad_data = quality.BadDataLog(self.name)

    @property
    def files(self) -> list[str]:
        return list(self._files)

    def __len__(self) -> int:
        return len(self._files)

    def __getitem__(self, index: int):
        path = self._files[int(index)]
        try:
            series = read_csv_series(path)
        except Exception as error:  # a bad file is a skipped series, not a dead worker
            self.bad_data.record("unreadable_csv", f"{path}: {type(error).__name__}: {error}")
            return None
        if series["non_numeric_cells"]:
            self.bad_data.record("non_numeric_cells", path, count=series["non_numeric_cells"])
        target = quality.clean_target(series["target"], self.bad_data, path)
        return None if target is None else {"target": target, "series_index": int(index)}

    def __repr__(self) -> str:
        return f"CsvSource(name={self.name!r}, files={len(self)})"
