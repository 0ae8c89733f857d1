"""Forecast jobs: a dataset of series (``dataset.Dataset``) forecast into a directory of Parquet shards, in
bounded memory, resumable, over every local device and every process.

The output directory (local, ``gs://`` or ``s3://``)::

    _job.json                    what the job is: input, model, horizon, statistics, options, shard size
    part-00000.parquet ...       forecasts of input shard 0: unique_id, ds, mean [, median, q0.1 ...]
    _errors/part-00000.parquet   series of shard 0 that could not be forecast, with the reason
    _SUCCESS                     written last, when every shard is in: the summary (JSON)

``pyarrow.dataset.dataset(DIR)`` reads the forecasts as one table (names starting with ``_`` or ``.`` are not
data). Each part is committed at once (a rename locally; one object upload in a bucket), after its errors
file, so a part's presence means its shard is done. Re-running the same job skips committed shards; shard
boundaries come from the input's metadata and every batch's sample paths are seeded by (seed, shard, batch),
so the result is bit-identical to an uninterrupted run, on any number of processes. A different job against
the directory is refused by name. SIGTERM / SIGINT stop at the next batch: the shard under way is dropped,
only whole shards stay, and the CLI exits 75 (as training does), so the same command resumes.
"""

from __future__ import annotations

import base64
import collections
import concurrent.futures
import dataclasses
import json
import os
import queue
import signal
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from .. import storage
from .dataset import (
    DEFAULT_MIN_LENGTH,
    DEFAULT_ROWS_PER_SHARD,
    DEFAULT_SERIES_PER_BATCH,
    SUFFIXES,
    Dataset,
    DatasetError,
    SeriesBatch,
    series_key,
)
from .options import ForecastOptions
from .outputs import output_statistics, statistic_columns

JOB_FILE, SUCCESS_FILE, ERRORS_DIRECTORY = "_job.json", "_SUCCESS", "_errors"
ON_ERROR = ("skip", "fail")
JOB_FORMAT = 1
# Options that change how fast a forecast runs, never its values: a job may resume with others.
RESULT_NEUTRAL_OPTIONS = ("memory_budget", "progress", "devices", "bucket")
SCRATCH_PREFIX = ".toto-jax-part-"
PREFETCH_BATCHES = 2  # batches read ahead while the current one is forecast (bounded memory)
# Batches a task works on at once: one batch's host work (preparing, laying out rows) overlaps another's compiled
# work, which would otherwise wait for it (the mean-path job: 2,294 -> 2,469 series/s on 2 cores).
TASKS_IN_FLIGHT = 2


class JobError(ValueError):
    """A job that cannot run against its output: another job's directory, bad series with on_error='fail'."""


def part_name(shard: int) -> str:
    return f"part-{shard:05d}.parquet"


@dataclasses.dataclass
class JobSummary:
    output: str
    shards: int  # in the dataset
    committed: int  # shards whose forecasts are in (all of them when complete)
    series: int | None  # forecast, over every shard, once complete (None: on processes other than the first)
    skipped: dict[str, int] | None  # series skipped, by reason (likewise)
    series_this_run: int  # forecast and skipped by this process in this run
    seconds: float
    complete: bool
    stopped: bool  # a signal stopped this run before it finished
    verb: str = "forecast"  # what the job did to each series

    @property
    def series_per_second(self) -> float:
        return self.series_this_run / self.seconds if self.seconds > 0 else 0.0

    def describe(self) -> str:
        this_run = (f"{self.series_this_run} series in {self.seconds:.1f} s this run, "
                    f"{self.series_per_second:.1f} series/s")  # fmt: skip
        if not self.complete:
            return f"{self.output}: {self.committed} of {self.shards} shards committed ({this_run})"
        if self.series is None:  # another process sums up the job
            return f"{self.output}: complete ({this_run} by this process)"
        skipped = ", ".join(f"{count} {reason}" for reason, count in sorted(self.skipped.items())) or "none"
        return f"{self.output}: complete; {self.series} series {self.verb}, skipped: {skipped} ({this_run})"


def forecast_dataset(model, source, output, horizon: int, num_samples: int | str | None = "auto",
                     quantiles=None, *, seed: int = 0, options: ForecastOptions | None = None,
                     covariates=(), future_covariates=None, on_error: str = "skip",
                     min_length: int = DEFAULT_MIN_LENGTH, rows_per_shard: int = DEFAULT_ROWS_PER_SHARD,
                     series_per_batch: int = DEFAULT_SERIES_PER_BATCH, overwrite: bool = False,
                     model_name: str | None = None, progress: bool | None = None, mesh=None) -> JobSummary:  # fmt: skip
    """Forecast every series of ``source`` into the directory ``output``; returns the summary.

    ``model``: a loaded model, or what ``toto_jax.load`` takes (loaded once the input and output are checked).

    ``source``: a CSV/Parquet file, directory or glob, local or ``gs://`` / ``s3://``, long (``unique_id, ds,
    y`` [+ ``covariates``], each series' rows consecutive) or wide (one multivariate series per file).
    ``num_samples`` and ``quantiles`` decide the columns as for ``toto-jax forecast``
    (``outputs.output_statistics``: by default sample paths or the quantile head, and mean, median, q0.1, q0.5,
    q0.9; None or 0, Toto 1.0's mean path, the mean alone); ``seed`` and ``options`` mean what they mean for
    ``toto_jax.forecast``.
    ``future_covariates``: a table keyed like the input (``unique_id, ds`` + the covariate columns) holding
    the covariates' values over the horizon. ``on_error``: ``"skip"`` writes series that cannot be forecast
    (too short, all NaN, non-numeric, irregular) to ``_errors/`` with the reason; ``"fail"`` checks every
    series first and raises naming the first bad one, before anything is written. ``min_length``: fewest
    observed steps a series needs. ``rows_per_shard`` (Parquet) and ``series_per_batch`` fix the shard and
    batch boundaries, hence the results: a resumed job must keep them. ``overwrite`` starts the directory's
    job over instead of refusing a different one. Several processes (``toto_jax.distributed``) split the
    shards; each uses its local devices as ``options.devices`` or ``mesh`` say."""
    job = DatasetJob(source, output, covariates=covariates, on_error=on_error, min_length=min_length,
                     rows_per_shard=rows_per_shard, series_per_batch=series_per_batch)  # fmt: skip
    future = None if future_covariates is None else _FutureCovariates(future_covariates, job.dataset)
    if job.dataset.covariates and future is None:
        raise ValueError(f"covariates {job.dataset.covariates} need their future values: give future_covariates")
    model, model_name = loaded_model(model, model_name)
    task = ForecastTask(model, model_name, horizon, num_samples, quantiles, seed, options, future, mesh)
    return job.run(task, overwrite, progress)


def _check_positive(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def loaded_model(model, name: str | None = None):
    """(model, its name): a model as given, or what ``toto_jax.load`` takes, loaded (once the job's paths are
    known to be good: a mistyped output costs no model load)."""
    if isinstance(model, (str, os.PathLike)):
        import toto_jax

        return toto_jax.load(model), str(model)
    return model, name or "(in memory)"


def model_digest(model) -> str:
    """A digest of the model's configuration and parameters: which model made a job's outputs."""
    import hashlib

    import jax
    from flax import nnx

    digest = hashlib.blake2b(digest_size=16)
    digest.update(repr(model.config).encode())
    leaves = jax.tree_util.tree_leaves_with_path(nnx.state(model, nnx.Param))
    for path, leaf in sorted(leaves, key=lambda item: jax.tree_util.keystr(item[0])):
        digest.update(jax.tree_util.keystr(path).encode())
        digest.update(np.ascontiguousarray(jax.device_get(leaf)).tobytes())
    return digest.hexdigest()


def result_options(options) -> dict:
    """The fields of a ``ForecastOptions`` that change values (a job's identity), not just speed."""
    return {k: v for k, v in dataclasses.asdict(options).items() if k not in RESULT_NEUTRAL_OPTIONS}


class ForecastTask:
    """What a forecast job does with each batch of series: forecast them and lay the statistics out long."""

    verb = "forecast"

    def __init__(self, model, model_name: str, horizon, num_samples, quantiles, seed, options, future, mesh):
        from ..models import is_toto2

        options = ForecastOptions() if options is None else options
        if not isinstance(options, ForecastOptions):
            raise ValueError(f"options must be a ForecastOptions, got {type(options).__name__}")
        self.model, self.model_name, self.future, self.mesh = model, model_name, future, mesh
        self.horizon = _check_positive("horizon", horizon)
        self.seed = int(seed)
        self.options = options.replace(progress=False)
        self.num_samples, self.levels = output_statistics(is_toto2(model), num_samples, quantiles)

    def spec(self) -> dict:
        return {
            "task": self.verb,
            "model": self.model_name,
            "model_digest": model_digest(self.model),
            "horizon": self.horizon,
            "samples": self.num_samples,
            "quantiles": self.levels,
            "seed": self.seed,
            "options": result_options(self.options),
            "future_covariates": None if self.future is None else self.future.source,
        }

    def table(self, batch: SeriesBatch, file: str):
        """The forecasts of a batch's series as an Arrow table."""
        import pyarrow as pa

        from .api import forecast
        from .cli import with_future_covariates
        from .tabular import forecast_frame

        table = batch.table
        series, future = table.values, None
        if self.future is not None:
            series, future = with_future_covariates(self.model, table, self.future.values(table, self.horizon))
        elif len({values.shape for values in series}) == 1:  # a fleet's usual batch: one array, checked at once
            series = np.stack(series)
        seed = int(np.random.SeedSequence([self.seed, batch.shard, batch.number]).generate_state(1)[0])
        result = forecast(self.model, series, self.horizon, num_samples=self.num_samples, seed=seed,
                          options=self.options, future_exogenous_variables=future, mesh=self.mesh)  # fmt: skip
        statistics = statistic_columns(result, self.levels)
        if table.layout == "long":
            return _long_rows(table, self.horizon, statistics)
        frame = wide_to_long(forecast_frame(table, self.horizon, statistics), table, file, table.timestamp_column,
                             statistics)  # one row per step and variate, keyed like the long layout  # fmt: skip
        return pa.Table.from_pandas(frame, preserve_index=False)

    def empty_schema(self):
        """The columns of a part with no series (all of its shard's were skipped)."""
        import pyarrow as pa

        statistics = ["mean"] + (["median"] + [f"q{q:g}" for q in self.levels] if self.levels else [])
        return pa.schema([("unique_id", pa.string()), ("ds", pa.timestamp("us"))]
                         + [(name, pa.float64()) for name in statistics])  # fmt: skip


class DatasetJob:
    """A dataset read in shards and batches, each batch turned into rows by a task (``ForecastTask``, the
    detection package's ``DetectTask``) and written as the parts of an output directory; resumable, split over
    processes. The paths are checked here, before any model is loaded."""

    def __init__(self, source, output, *, covariates=(), on_error: str = "skip", min_length: int = DEFAULT_MIN_LENGTH,
                 rows_per_shard: int = DEFAULT_ROWS_PER_SHARD, series_per_batch: int = DEFAULT_SERIES_PER_BATCH):  # fmt: skip
        from .. import distributed

        distributed.initialize()
        if on_error not in ON_ERROR:
            raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
        self.on_error = on_error
        self.min_length = _check_positive("min_length", min_length)
        self.series_per_batch = _check_positive("series_per_batch", series_per_batch)
        self.output_name = str(output).rstrip("/")
        self.output = storage.as_path(self.output_name)  # the location, once, here
        storage.check_access(self.output_name)
        self.dataset = Dataset(source, covariates, rows_per_shard)
        _refuse_input_as_output(self.dataset, self.output_name)
        if JOB_FILE not in self._names():
            self._refuse_foreign_files()
        self.spec = {
            "format": JOB_FORMAT,
            "input": self.dataset.source if storage.is_remote(source) else os.path.abspath(source),
            "files": len(self.dataset.files),
            "shards": len(self.dataset.shards),
            "covariates": self.dataset.covariates,
            "on_error": on_error,
            "min_length": self.min_length,
            "rows_per_shard": rows_per_shard,
            "series_per_batch": self.series_per_batch,
        }

    def run(self, task, overwrite: bool = False, progress: bool | None = None) -> "JobSummary":
        """Run ``task`` over every shard not yet committed; returns the summary."""
        self.task = task
        self.spec = {**self.spec, **task.spec()}
        self.prepare(overwrite)
        return self._run(progress)

    # ---- before any forecast --------------------------------------------------------------------------------
    def prepare(self, overwrite: bool) -> None:
        """Refuse another job's directory (or start it over), check every series first with on_error='fail',
        then record the job; every process passes here together."""
        from .. import distributed

        existing = self._read_json(JOB_FILE)
        other_job = existing is not None and _defining(existing) != _defining(self.spec)
        if other_job and not overwrite:
            raise JobError(_difference(self.output_name, _defining(existing), _defining(self.spec)))
        if self.on_error == "fail":
            problems = distributed.exchange("job/checked", self._first_problem() or "")
            named = [p for p in problems if p]
            if named:
                raise JobError(named[0] + " (--on-error fail: nothing was written)")
        if distributed.is_coordinator():
            self._remove_scratch()
            if other_job:
                self._remove_job_files()
            if existing is None or other_job:
                self._write_json(JOB_FILE, self.spec)
        distributed.exchange("job/recorded", "")

    def _first_problem(self) -> str | None:
        for shard in self._my_shards():
            for batch in self.dataset.read(shard, self.series_per_batch, self.min_length):
                if batch.errors:
                    name, reason = batch.errors[0]
                    return f"series {name!r} in {shard.describe()}: {reason}"
        return None

    def _refuse_foreign_files(self) -> None:
        if self.output.exists() and not self.output.is_dir():
            raise JobError(f"{self.output_name} is a file; a dataset job writes a directory: name a new one")
        others = sorted(self._names())
        if others:
            raise JobError(f"{self.output_name} holds files that are not a dataset job's ({others[:3]}): name a new "
                           "or empty directory")  # fmt: skip

    def _remove_scratch(self) -> None:
        """Shards a killed run was writing (local outputs keep them beside the parts, for the final rename)."""
        if not storage.is_remote(self.output_name):
            for name in self._names():
                if name.startswith(SCRATCH_PREFIX):
                    storage.rmtree(self.output / name)

    def _remove_job_files(self) -> None:
        for path in self.output.iterdir():
            if path.name in (JOB_FILE, SUCCESS_FILE) or (path.name.startswith("part-") and path.name.endswith(".parquet")):
                path.unlink()
            elif path.name == ERRORS_DIRECTORY:
                storage.rmtree(path)

    def _read_json(self, name: str):
        return json.loads((self.output / name).read_text()) if name in self._names() else None

    def _write_json(self, name: str, value) -> None:
        self.output.mkdir(parents=True, exist_ok=True)
        _commit_bytes(self.output / name, json.dumps(value, indent=1).encode())

    def _my_shards(self):
        from ..distributed import host_shard

        return [self.dataset.shards[i] for i in host_shard(len(self.dataset.shards))]

    # ---- the work -------------------------------------------------------------------------------------------
    def _run(self, progress: bool | None) -> JobSummary:
        from .. import distributed

        began = time.perf_counter()
        committed = self._committed()
        todo = [shard for shard in self._my_shards() if shard.index not in committed]
        stop = _StopSignals()
        bar = _progress_bar(todo, progress)
        done_series = 0
        try:
            reader = _Prefetch(self.dataset, todo, self.series_per_batch, self.min_length)
            writer = None
            with concurrent.futures.ThreadPoolExecutor(TASKS_IN_FLIGHT, thread_name_prefix="toto-jax-task") as pool:
                for batch, rows in self._rows_in_order(reader, pool):
                    if writer is None or writer.shard != batch.shard:
                        writer = _ShardWriter(self.output, batch.shard)
                    writer.add(rows, batch.errors, batch)
                    done_series += batch.series
                    if bar is not None:
                        bar.update(batch.rows)
                        bar.set_postfix_str(f"{done_series / (time.perf_counter() - began):.0f} series/s")
                    if reader.shard_finished(batch):
                        writer.commit(self.dataset.shards[batch.shard], self.task.empty_schema())
                        writer = None
                    if stop.received:
                        break
            reader.close()
            if writer is not None:
                writer.abandon()
        finally:
            stop.restore()
            if bar is not None:
                bar.close()
        seconds = time.perf_counter() - began
        states = distributed.exchange("job/finished", json.dumps({"stopped": stop.received is not None}))
        stopped_anywhere = any(json.loads(s)["stopped"] for s in states)
        return self._finish(seconds, done_series, stop.received is not None or stopped_anywhere)

    def _rows_in_order(self, reader, pool):
        """(batch, its rows) in the reader's order, ``TASKS_IN_FLIGHT`` batches worked on at once."""
        flight: collections.deque = collections.deque()
        for batch in reader:
            flight.append((batch, pool.submit(self._rows, batch)))
            if len(flight) == TASKS_IN_FLIGHT:
                batch, rows = flight.popleft()
                yield batch, rows.result()
        for batch, rows in flight:
            yield batch, rows.result()

    def _rows(self, batch: SeriesBatch):
        return None if batch.table is None else self.task.table(batch, self.dataset.shards[batch.shard].file)

    def _names(self) -> set[str]:
        """The names in the output directory now (a bucket's listing is read afresh: other processes write)."""
        if storage.is_remote(self.output_name):
            fs = storage.filesystem(self.output_name)
            fs.invalidate_cache()
            try:
                return {entry.rstrip("/").rsplit("/", 1)[-1] for entry in fs.ls(self.output_name, detail=False)}
            except FileNotFoundError:
                return set()
        return {p.name for p in self.output.iterdir()} if self.output.is_dir() else set()

    def _committed(self) -> set[int]:
        names = self._names()
        return {s.index for s in self.dataset.shards if part_name(s.index) in names}

    def _finish(self, seconds: float, series_this_run: int, stopped: bool) -> JobSummary:
        from .. import distributed

        committed = self._committed()
        complete = len(committed) == len(self.dataset.shards)
        series, skipped, keys = None, None, []
        if complete and distributed.is_coordinator():
            series, skipped = 0, {}
            for shard in self.dataset.shards:
                stats = _part_stats(self.output / part_name(shard.index))
                series += stats["series"]
                for reason, count in stats["skipped"].items():
                    skipped[reason] = skipped.get(reason, 0) + count
                keys.append(np.frombuffer(base64.b64decode(stats["keys"]), np.uint64))
            _check_contiguous(keys, self.dataset, self.output)
        summary = JobSummary(self.output_name, len(self.dataset.shards), len(committed), series, skipped,
                             series_this_run, seconds, complete, stopped, self.task.verb)  # fmt: skip
        if complete and distributed.is_coordinator() and SUCCESS_FILE not in self._names():
            self._write_json(SUCCESS_FILE, {**dataclasses.asdict(summary), "job": self.spec})
        return summary


def wide_to_long(frame, table, file: str, time_column: str, columns) -> "pd.DataFrame":  # noqa: F821
    """A wide frame (``time_column`` + ``<variate>_<column>`` for each of ``columns``) as long rows keyed
    ``FILE/VARIATE`` (the file's stem): one dataset's parts share one layout whatever the input's."""
    import pandas as pd

    stem = Path(file.split("://", 1)[-1]).stem
    stamps = frame[time_column].to_numpy()
    parts = [pd.DataFrame({"unique_id": f"{stem}/{name}", "ds": stamps,
                           **{c: frame[f"{name}_{c}"].to_numpy() for c in columns}}) for name in table.names]  # fmt: skip
    return pd.concat(parts, ignore_index=True)


def _long_rows(table, horizon: int, statistics: dict[str, np.ndarray]):
    """Long forecast rows (``unique_id, ds``, a column per statistic) built in Arrow (through pandas, a Python
    string per row for the ids: 50 ms per 4,096 series against 18)."""
    import pyarrow as pa

    rows = np.repeat(np.arange(len(table.names), dtype=np.int32), horizon)
    ids = pa.DictionaryArray.from_arrays(rows, pa.array(table.names, pa.string())).cast(pa.string())
    columns = {"unique_id": ids, "ds": pa.array(table.future_timestamp_column(horizon))}
    columns.update({name: pa.array(values[:, 0].reshape(-1)) for name, values in statistics.items()})
    return pa.table(columns)


def _refuse_input_as_output(dataset: Dataset, output: str) -> None:
    """The inputs are never written: the output may not be, or lie under, an input file or directory."""
    root = output if storage.is_remote(output) else os.path.realpath(output)
    for file in dataset.files:
        name = file if storage.is_remote(file) else os.path.realpath(file)
        if name == root or name.startswith(root.rstrip("/") + "/"):
            raise JobError(f"--output {output} holds the input {file}; the inputs are never overwritten: name "
                           "another directory")  # fmt: skip


def _defining(spec: dict) -> dict:
    """What makes two jobs the same: all but the model's name (the digest of its weights decides)."""
    return {key: value for key, value in spec.items() if key != "model"}


def _difference(output: str, existing: dict, wanted: dict) -> str:
    changed = [f"{key} {existing.get(key)!r} there, {wanted.get(key)!r} now" for key in sorted(set(existing) | set(wanted))
               if existing.get(key) != wanted.get(key)]  # fmt: skip
    return (f"{output} holds another job ({'; '.join(changed)}): name a new directory, or pass "
            "--overwrite (overwrite=True) to start it over")


def _commit_bytes(path, data: bytes) -> None:
    """Write ``data`` to ``path`` at once: a rename locally, one upload in a bucket."""
    if storage.is_remote(path):
        with path.open("wb") as stream:
            stream.write(data)
        return
    from .tabular import atomic_write

    atomic_write(Path(path), lambda temporary: Path(temporary).write_bytes(data))


def _commit_file(local: Path, path) -> None:
    if storage.is_remote(path):
        storage.filesystem(str(path)).put_file(str(local), str(path))
    else:
        os.replace(local, path)


class _ShardWriter:
    """One shard's forecasts, written batch by batch to a local temporary file and committed whole."""

    def __init__(self, output, shard: int):
        self.output, self.shard = output, shard
        self.scratch = Path(tempfile.mkdtemp(prefix=SCRATCH_PREFIX, dir=None if storage.is_remote(output) else output))
        self.file = self.scratch / part_name(shard)
        self.writer = None
        self.errors: list[tuple[str, str]] = []
        self.series = 0
        self.keys: list[int] = []

    def add(self, table, errors, batch: SeriesBatch) -> None:
        import pyarrow.parquet as pq

        if table is not None:
            if self.writer is None:
                self.writer = pq.ParquetWriter(self.file, table.schema)
            self.writer.write_table(table)
            self.series += len(batch.table.values) if batch.table.layout == "long" else len(batch.table.names)
            names = batch.table.names if batch.table.layout == "long" else ["\0wide\0" + str(batch.shard)]
            self.keys.extend(series_key(n) for n in names)
        self.errors.extend(errors)
        self.keys.extend(series_key(name) for name, _ in errors if batch.table is None or batch.table.layout == "long")

    def commit(self, shard, empty_schema) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        stats = {"series": self.series, "skipped": _reasons(self.errors),
                 "keys": base64.b64encode(np.asarray(self.keys, np.uint64).tobytes()).decode()}  # fmt: skip
        if self.writer is None:  # no series of the shard could be used: an empty part marks it done
            self.writer = pq.ParquetWriter(self.file, empty_schema)
        self.writer.add_key_value_metadata({"toto_jax.shard": json.dumps(stats)})
        self.writer.close()
        if self.errors:
            errors = pa.table({"unique_id": [n for n, _ in self.errors], "reason": [r for _, r in self.errors],
                               "input": [shard.describe()] * len(self.errors)})  # fmt: skip
            errors_file = self.scratch / f"errors-{part_name(self.shard)}"
            pq.write_table(errors, errors_file)
            directory = self.output / ERRORS_DIRECTORY
            directory.mkdir(parents=True, exist_ok=True)
            _commit_file(errors_file, directory / part_name(self.shard))
        _commit_file(self.file, self.output / part_name(self.shard))  # last: the shard is done
        self._clean()

    def abandon(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self._clean()

    def _clean(self) -> None:
        import shutil

        shutil.rmtree(self.scratch, ignore_errors=True)


def _reasons(errors: list[tuple[str, str]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for _, reason in errors:
        kind = reason.split(":", 1)[0] if reason.startswith("too short") else _kind(reason)
        counts[kind] = counts.get(kind, 0) + 1
    return counts


def _kind(reason: str) -> str:
    for words, kind in (("all NaN", "all NaN"), ("not numeric", "non-numeric"), ("timestamp", "bad timestamps"),
                        ("covariate", "bad covariates")):  # fmt: skip
        if words in reason:
            return kind
    return "unreadable"


def _part_stats(path) -> dict:
    import pyarrow.parquet as pq

    with storage.open_file(path) as f:
        metadata = pq.ParquetFile(f).metadata.metadata or {}
    return json.loads(metadata[b"toto_jax.shard"])


def _check_contiguous(keys: list[np.ndarray], dataset: Dataset, output) -> None:
    """An id in two shards had its rows split: name it (once every shard is in, so across processes too)."""
    import pyarrow.parquet as pq

    if not keys:
        return
    every = np.concatenate(keys)
    unique, counts = np.unique(every, return_counts=True)
    if (counts == 1).all():
        return
    twice = unique[counts > 1][0]
    shards = [s for s, k in zip(dataset.shards, keys) if (k == twice).any()]
    name = "?"  # the id is read back from the first shard's part or errors file, where it was written
    for path in (output / part_name(shards[0].index), output / ERRORS_DIRECTORY / part_name(shards[0].index)):
        if name == "?" and path.exists():
            with storage.open_file(path) as f:
                ids = pq.read_table(f, columns=["unique_id"]).column(0).unique().to_pylist()
            name = next((str(i) for i in ids if series_key(str(i)) == int(twice)), "?")
    raise DatasetError(f"series {name!r} is not contiguous: its rows are in {shards[0].describe()} and "
                       f"{shards[1].describe()}. A dataset job reads every series' rows as one run: sort the input "
                       "by unique_id")  # fmt: skip


class _FutureCovariates:
    """The covariates' future values, read for each batch's series from a table keyed like the input (opened once:
    each batch reads only its ids' rows, a Parquet file's row groups pruned by their statistics)."""

    def __init__(self, source, dataset: Dataset):
        import pyarrow.dataset as ds

        self.source = str(source)
        files = storage.list_files(source, SUFFIXES)
        kinds = {"csv" if f.lower().endswith(".csv") else "parquet" for f in files}
        if len(kinds) > 1:
            raise DatasetError(f"{source}: future covariates in one format, CSV or Parquet, not both")
        filesystem = None
        if storage.is_remote(source):
            from pyarrow.fs import FSSpecHandler, PyFileSystem

            filesystem = PyFileSystem(FSSpecHandler(storage.filesystem(source)))
            files = [f.split("://", 1)[1] for f in files]
        self.data = ds.dataset(files, format=kinds.pop(), filesystem=filesystem)
        self.whole = None  # a wide layout's table, read on first use

    def values(self, table, horizon: int) -> np.ndarray:
        import pyarrow.dataset as ds

        from .tabular import future_covariates_from_frame

        if table.layout == "long":
            frame = self.data.to_table(filter=ds.field("unique_id").cast("string").isin(table.names)).to_pandas()
        else:
            if self.whole is None:
                self.whole = self.data.to_table().to_pandas()
            frame = self.whole
        return future_covariates_from_frame(frame, table, horizon, self.source)


class _Prefetch:
    """The shards' batches, read by a thread ``PREFETCH_BATCHES`` ahead of the forecasts (reading overlaps the
    compute; memory stays bounded). ``shard_finished`` says whether a batch was its shard's last."""

    def __init__(self, dataset: Dataset, shards, series_per_batch: int, min_length: int):
        self.queue: queue.Queue = queue.Queue(PREFETCH_BATCHES)
        self.closing = threading.Event()
        self.last: set[tuple[int, int]] = set()
        self.thread = threading.Thread(target=self._read, args=(dataset, shards, series_per_batch, min_length),
                                       daemon=True)  # fmt: skip
        self.thread.start()

    def _read(self, dataset, shards, series_per_batch, min_length) -> None:
        try:
            for shard in shards:
                previous = None
                for batch in dataset.read(shard, series_per_batch, min_length):
                    if previous is not None and not self._put(("batch", previous)):
                        return
                    previous = batch
                if previous is None:  # a shard with no series of its own (all of a neighbour's): an empty batch
                    previous = SeriesBatch(shard.index, 0, None, [], 0)
                if not self._put(("last", previous)):
                    return
            self._put(("end", None))
        except BaseException as error:  # noqa: BLE001 - handed to the consuming thread, which raises it
            self._put(("error", error))

    def _put(self, item) -> bool:
        while not self.closing.is_set():
            try:
                self.queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self):
        while True:
            kind, value = self.queue.get()
            if kind == "end":
                return
            if kind == "error":
                raise value
            if kind == "last":
                self.last.add((value.shard, value.number))
            yield value

    def shard_finished(self, batch: SeriesBatch) -> bool:
        return (batch.shard, batch.number) in self.last

    def close(self) -> None:
        self.closing.set()
        self.thread.join(timeout=60)


class _StopSignals:
    """SIGTERM / SIGINT mark the job as stopping; it stops after the batch under way (main thread only)."""

    def __init__(self):
        self.received = None
        self.previous = {}
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGTERM, signal.SIGINT):
                self.previous[signum] = signal.signal(signum, self._handle)

    def _handle(self, signum, frame) -> None:
        self.received = signum

    def restore(self) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)


def _progress_bar(shards, progress: bool | None):
    from .. import distributed

    if progress is False or (progress is None and not distributed.is_coordinator()) or not shards:
        return None
    from tqdm.auto import tqdm

    rows = [s.rows for s in shards]
    total = None if any(r is None for r in rows) else sum(rows)
    return tqdm(total=total, desc="forecast", unit="row", unit_scale=True, dynamic_ncols=True)
