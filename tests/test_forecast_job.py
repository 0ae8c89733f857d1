"""Dataset forecast jobs (``toto_jax.forecasting.job``, ``toto-jax forecast --output DIR/``): a generated long
Parquet dataset forecast into a directory of Parquet shards, locally and in the GCS emulator
(tests/storage_servers.py); resume after SIGKILL and SIGTERM, two processes through ``launch/local.sh``, a
changed command refused, bad series named. A tiny Toto 1.0 (tests/tiny_models.py) keeps it fast, and the
resume tests forecast its mean path (``num_samples=None``, ``--samples 0``): one path, the same determinism."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pds
import pyarrow.parquet as pq
import pytest

import toto_jax
from toto_jax import storage
from toto_jax.cli import main as cli_main
from toto_jax.forecasting.dataset import Dataset, DatasetError
from toto_jax.forecasting.job import JobError

forecast_dataset = toto_jax.forecast_dataset  # the public name

ROOT = Path(__file__).resolve().parents[1]
HORIZON = 16
# 36 series of 40-120 steps (patch 8, 2,840 rows): 10 shards of one 300-row row group, batches of 3 series
SERIES, ROWS_PER_GROUP, ROWS_PER_SHARD, SERIES_PER_BATCH, MIN_LENGTH, SHARDS = 36, 300, 300, 3, 16, 10


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from tiny_models import tiny_toto1

    path = tmp_path_factory.mktemp("model") / "tiny"
    toto_jax.save(tiny_toto1(), path)
    return path


@pytest.fixture(scope="module")
def model(checkpoint):
    return toto_jax.load(checkpoint)


def long_frame(series: int = SERIES, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    parts = []
    for i in range(series):
        length = int(rng.choice([40, 80, 120]))
        stamps = pd.date_range("2026-01-01", periods=length, freq="5min")
        values = 1e9 * (i % 3 == 0) + 50 + np.cumsum(rng.normal(0, 1, length))  # counters near 1e9 too
        parts.append(pd.DataFrame({"unique_id": f"host-{i:03d}", "ds": stamps, "y": values}))
    return pd.concat(parts, ignore_index=True)


def write_parquet(frame: pd.DataFrame, path) -> None:
    table = pa.Table.from_pandas(frame, preserve_index=False)
    if storage.is_remote(path):
        with storage.filesystem(str(path)).open(str(path), "wb") as stream:
            pq.write_table(table, stream, row_group_size=ROWS_PER_GROUP)
    else:
        pq.write_table(table, path, row_group_size=ROWS_PER_GROUP)


def read_union(directory) -> pd.DataFrame:
    directory = str(directory)
    fs = storage.filesystem(directory) if storage.is_remote(directory) else None
    if fs is not None:
        fs.invalidate_cache()
    path = directory.split("://", 1)[1] if fs is not None else directory
    table = pds.dataset(path, format="parquet", filesystem=fs).to_table()
    return table.to_pandas().sort_values(["unique_id", "ds"], ignore_index=True)


def job_arguments(**overrides) -> dict:
    arguments = dict(num_samples=None, min_length=MIN_LENGTH, rows_per_shard=ROWS_PER_SHARD,
                     series_per_batch=SERIES_PER_BATCH, progress=False)  # fmt: skip
    return {**arguments, **overrides}


def cli_command(checkpoint, source, output, *extra) -> list[str]:
    return [sys.executable, "-m", "toto_jax.cli", "forecast", "--checkpoint", str(checkpoint), "--input", str(source),
            "--output", str(output) + "/", "--horizon", str(HORIZON), "--min-length", str(MIN_LENGTH),
            "--rows-per-shard", str(ROWS_PER_SHARD), "--series-per-batch", str(SERIES_PER_BATCH), "--samples", "0",
            *extra]  # fmt: skip


def environment(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOTO_")}
    env.update(PYTHONUNBUFFERED="1", PYTHONPATH=f"{ROOT}:{ROOT / 'tests'}", **extra)
    return env


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    directory = tmp_path_factory.mktemp("data")
    frame = long_frame()
    write_parquet(frame, directory / "metrics.parquet")
    return directory / "metrics.parquet", frame


@pytest.fixture(scope="module")
def uninterrupted(model, dataset, checkpoint, tmp_path_factory):
    """The job run once without interruption, through the API (the reference every other run must equal)."""
    output = tmp_path_factory.mktemp("uninterrupted") / "out"
    summary = forecast_dataset(model, dataset[0], output, HORIZON, model_name=str(checkpoint), **job_arguments())
    assert summary.complete and summary.series == SERIES and summary.shards == SHARDS
    return output


def test_output_layout_summary_and_values(uninterrupted, dataset, model):
    """Parts readable as one dataset with the long-output columns, a _SUCCESS summary, and each series'
    forecast equal to toto_jax.forecast of that series (to float32 rounding of the padded batch)."""
    forecasts = read_union(uninterrupted)
    assert list(forecasts.columns) == ["unique_id", "ds", "mean"]
    assert forecasts["unique_id"].nunique() == SERIES and len(forecasts) == SERIES * HORIZON
    names = sorted(p.name for p in uninterrupted.iterdir())
    assert names == ["_SUCCESS", "_job.json"] + [f"part-{i:05d}.parquet" for i in range(SHARDS)]
    success = json.loads((uninterrupted / "_SUCCESS").read_text())
    assert success["complete"] and success["series"] == SERIES and success["skipped"] == {}
    frame = dataset[1]
    for name in ("host-000", "host-007"):
        history = frame[frame.unique_id == name]
        expected = toto_jax.forecast(model, history["y"].to_numpy()[None], HORIZON, num_samples=None).mean[0, 0]
        got = forecasts[forecasts.unique_id == name]
        np.testing.assert_allclose(got["mean"], expected, rtol=1e-5)
        assert (got["ds"].to_numpy() == pd.date_range(history["ds"].iloc[-1], periods=HORIZON + 1, freq="5min")[1:]).all()


def test_job_in_a_bucket_equals_the_local_job(object_stores, model, dataset, checkpoint, uninterrupted):
    """A long Parquet dataset in the GCS emulator forecast into a gs:// directory: the union equals the same job
    run locally, bit for bit."""
    bucket = object_stores.new_bucket("gs")
    write_parquet(dataset[1], f"{bucket}/in/metrics.parquet")
    summary = forecast_dataset(model, f"{bucket}/in", f"{bucket}/out/", HORIZON, model_name=str(checkpoint),
                               **job_arguments())  # fmt: skip
    assert summary.complete and summary.committed == SHARDS
    pd.testing.assert_frame_equal(read_union(f"{bucket}/out"), read_union(uninterrupted))
    assert storage.as_path(f"{bucket}/out/_SUCCESS").exists()


def _wait_for(path: Path, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.02)


def test_killed_then_stopped_job_resumes_to_the_uninterrupted_output(checkpoint, dataset, uninterrupted, tmp_path):
    """SIGKILL after the first shard, then the same command: output equal to an uninterrupted run. SIGTERM
    exits 75 with whole shards only (each part holds its whole shard); the same command then completes it."""
    output = tmp_path / "out"
    command = cli_command(checkpoint, dataset[0], output)
    run = subprocess.Popen(command, env=environment(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    _wait_for(output / "part-00000.parquet", run)
    run.kill()
    run.communicate()
    assert not (output / "_SUCCESS").exists()
    resumed = subprocess.run(command, env=environment(), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    pd.testing.assert_frame_equal(read_union(output), read_union(uninterrupted))
    assert not [p for p in output.iterdir() if p.name.startswith(".")]  # the killed run's half-written shard

    stopped_output = tmp_path / "stopped"
    command = cli_command(checkpoint, dataset[0], stopped_output)
    run = subprocess.Popen(command, env=environment(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    _wait_for(stopped_output / "part-00000.parquet", run)
    run.send_signal(signal.SIGTERM)
    out, _ = run.communicate(timeout=120)
    assert run.returncode == 75, out
    assert "the same command resumes the job" in out
    parts = sorted(stopped_output.glob("part-*.parquet"))
    assert 1 <= len(parts) < SHARDS and not (stopped_output / "_SUCCESS").exists()
    assert not [p for p in stopped_output.iterdir() if p.name.startswith(".")]  # no half-written shard left
    expected = read_union(uninterrupted)
    for part in parts:  # every committed part is its whole shard
        written = pq.read_table(part).to_pandas().sort_values(["unique_id", "ds"], ignore_index=True)
        whole = expected[expected.unique_id.isin(written.unique_id.unique())].reset_index(drop=True)
        pd.testing.assert_frame_equal(written, whole)
    resumed = subprocess.run(command, env=environment(), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    pd.testing.assert_frame_equal(read_union(stopped_output), expected)


def test_two_processes_through_local_sh_write_the_same_union(checkpoint, dataset, uninterrupted, tmp_path):
    output = tmp_path / "out"
    command = ["bash", str(ROOT / "launch" / "local.sh"), "2", "--"] + cli_command(checkpoint, dataset[0], output)
    result = subprocess.run(command, env=environment(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    import re

    shares = dict(re.findall(r"\[(\d)\] .*\((\d+) series in", result.stdout))
    assert sorted(shares) == ["0", "1"] and all(int(n) > 0 for n in shares.values()), result.stdout
    assert sum(int(n) for n in shares.values()) == SERIES
    pd.testing.assert_frame_equal(read_union(output), read_union(uninterrupted))
    success = json.loads((output / "_SUCCESS").read_text())
    assert success["complete"] and success["series"] == SERIES


def test_a_changed_command_is_refused_by_name(checkpoint, dataset, uninterrupted, tmp_path, capsys):
    import shutil

    output = tmp_path / "out"
    shutil.copytree(uninterrupted, output)
    before = {p.name: p.read_bytes() for p in output.iterdir()}
    command = cli_command(checkpoint, dataset[0], output)[3:]
    changed = [*command[: command.index("--horizon")], "--horizon", "12", *command[command.index("--horizon") + 2:]]
    assert cli_main(changed) == 2
    error = capsys.readouterr().err
    assert f"{output} holds another job (horizon 16 there, 12 now)" in error and "--overwrite" in error
    assert {p.name: p.read_bytes() for p in output.iterdir()} == before
    assert cli_main([*command, "--clip-outliers", "none"]) == 2
    assert "options" in capsys.readouterr().err
    assert cli_main(command) == 0  # the same command: already complete, nothing rewritten
    assert "complete; 36 series forecast" in capsys.readouterr().out
    renamed = [*command[:2], str(checkpoint) + "/.", *command[3:]]  # the same weights by another name
    assert command[1] == "--checkpoint" and cli_main(renamed) == 0
    assert {p.name: p.read_bytes() for p in output.iterdir()} == before


def test_split_ids_are_named(model, tmp_path):
    """Rows of one id that are not consecutive: within a shard, and across shards (found once all are in)."""
    frame = long_frame(6)
    first = frame[frame.unique_id == "host-001"]
    moved = pd.concat([frame.drop(first.index[-5:]), first.tail(5)], ignore_index=True)  # host-001's tail at the end
    write_parquet(moved, tmp_path / "within.parquet")
    with pytest.raises(DatasetError, match="series 'host-001' is not contiguous: its rows in .*within.parquet"):
        forecast_dataset(model, tmp_path / "within.parquet", tmp_path / "a", HORIZON,
                         **job_arguments(rows_per_shard=10**6))  # fmt: skip
    write_parquet(moved, tmp_path / "across.parquet")
    with pytest.raises(DatasetError, match="series 'host-001' is not contiguous: its rows are in .*across.parquet"):
        forecast_dataset(model, tmp_path / "across.parquet", tmp_path / "b", HORIZON, **job_arguments())
    assert not (tmp_path / "b" / "_SUCCESS").exists()


def test_bad_series_are_skipped_with_their_reason_or_stop_the_job(model, tmp_path):
    """--on-error skip: too short, all-NaN and non-numeric series go to _errors/ with the reason and the rest
    is forecast; --on-error fail: the first is named and nothing is written."""
    frame = long_frame(8).astype({"y": object})
    frame.loc[frame.unique_id == "host-002", "y"] = np.nan
    frame.loc[frame[frame.unique_id == "host-004"].index[3], "y"] = "n/a?"
    frame = frame.drop(frame[frame.unique_id == "host-006"].index[10:])  # 10 steps
    frame.to_csv(tmp_path / "metrics.csv", index=False)
    summary = forecast_dataset(model, tmp_path / "metrics.csv", tmp_path / "out", HORIZON, **job_arguments())
    assert summary.complete and summary.series == 5
    assert summary.skipped == {"all NaN": 1, "non-numeric": 1, "too short": 1}
    errors = pds.dataset(tmp_path / "out" / "_errors").to_table().to_pandas().set_index("unique_id")["reason"]
    assert errors["host-002"] == "no observed values (all NaN)"
    assert errors["host-004"] == "column 'y' is not numeric (row 3 of the series: 'n/a?')"
    assert errors["host-006"] == "too short: 10 observed steps, fewer than the minimum of 16"
    assert sorted(read_union(tmp_path / "out").unique_id.unique()) == [f"host-{i:03d}" for i in (0, 1, 3, 5, 7)]
    with pytest.raises(JobError, match=r"series 'host-002' in .*metrics.csv: no observed values \(all NaN\) "
                                       r"\(--on-error fail: nothing was written\)"):  # fmt: skip
        forecast_dataset(model, tmp_path / "metrics.csv", tmp_path / "failed", HORIZON,
                         **job_arguments(on_error="fail"))  # fmt: skip
    assert not (tmp_path / "failed").exists()


def test_rows_missing_from_the_grid_are_gaps_and_irregular_series_are_skipped(model, tmp_path):
    frame = long_frame(3)
    gappy = frame[frame.unique_id == "host-001"].index
    frame = frame.drop(gappy[[5, 6, 20]])  # three rows missing from a 5-minute grid: NaN gaps
    irregular = frame[frame.unique_id == "host-002"].index
    frame.loc[irregular[7], "ds"] += pd.Timedelta("90s")
    write_parquet(frame, tmp_path / "in.parquet")
    summary = forecast_dataset(model, tmp_path / "in.parquet", tmp_path / "out", HORIZON, **job_arguments())
    assert summary.series == 2 and summary.skipped == {"bad timestamps": 1}
    errors = pds.dataset(tmp_path / "out" / "_errors").to_table().to_pandas()
    assert errors["unique_id"].tolist() == ["host-002"] and "irregular timestamps" in errors["reason"][0]


def test_wide_files_samples_and_a_quantile_model(model, tmp_path):
    """A directory of wide CSV files (one multivariate series each; keyed 'file/column', a column named like
    another's prefix included), Toto 1.0 sample
    quantiles (by default 64 paths and the 10 / 50 / 90 % levels, as toto-jax forecast writes them), and Toto
    2.0 quantiles with covariates read from a future table keyed like the input."""
    stamps = pd.date_range("2026-01-01", periods=64, freq="h")
    (tmp_path / "in").mkdir()
    rng = np.random.default_rng(0)
    for host in ("a", "b"):
        pd.DataFrame({"timestamp": stamps, "cpu": rng.normal(50, 5, 64), "cpu_user": rng.normal(8, 1, 64)}).to_csv(
            tmp_path / "in" / f"{host}.csv", index=False)  # fmt: skip
    summary = forecast_dataset(model, tmp_path / "in", tmp_path / "out", HORIZON,
                               **job_arguments(num_samples=8, quantiles=[0.2, 0.8]))  # fmt: skip
    forecasts = read_union(tmp_path / "out")
    assert summary.series == 4 and sorted(forecasts.unique_id.unique()) == ["a/cpu", "a/cpu_user", "b/cpu", "b/cpu_user"]
    assert list(forecasts.columns) == ["unique_id", "ds", "mean", "median", "q0.2", "q0.8"]
    assert (forecasts["q0.2"] <= forecasts["q0.8"]).all()
    defaults = {k: v for k, v in job_arguments().items() if k != "num_samples"}
    forecast_dataset(model, tmp_path / "in", tmp_path / "default", HORIZON, **defaults)
    columns = list(read_union(tmp_path / "default").columns)
    assert columns == ["unique_id", "ds", "mean", "median", "q0.1", "q0.5", "q0.9"]
    assert json.loads((tmp_path / "default" / "_job.json").read_text())["samples"] == 64

    toto2 = toto_jax.load("toto2-small")
    frame = long_frame(4)
    frame["load"] = np.arange(len(frame)) % 7
    write_parquet(frame, tmp_path / "cov.parquet")
    future = []
    for name, group in frame.groupby("unique_id"):
        future.append(pd.DataFrame({"unique_id": name, "load": 1.0,
                                    "ds": pd.date_range(group.ds.iloc[-1], periods=HORIZON + 1, freq="5min")[1:]}))  # fmt: skip
    pd.concat(future).to_parquet(tmp_path / "future.parquet")
    summary = forecast_dataset(toto2, tmp_path / "cov.parquet", tmp_path / "out2", HORIZON, covariates=["load"],
                               future_covariates=tmp_path / "future.parquet", **job_arguments())  # fmt: skip
    forecasts = read_union(tmp_path / "out2")
    assert summary.series == 4 and list(forecasts.columns) == ["unique_id", "ds", "mean", "median", "q0.1", "q0.5", "q0.9"]
    assert np.isfinite(forecasts[["mean", "q0.1", "q0.9"]].to_numpy()).all()


def test_dataset_shards_come_from_metadata(dataset):
    shards = Dataset(dataset[0], rows_per_shard=ROWS_PER_SHARD).shards
    assert [s.row_groups for s in shards] == [(i,) for i in range(SHARDS)]
    assert sum(s.rows for s in shards) == len(dataset[1])


def test_the_batch_checks_take_only_plain_series():
    """The per-batch fast check (``dataset._plain_series``) passes regular, numeric, long-enough series with an
    observed covariate, and leaves every other series to the series-by-series checks."""
    from toto_jax.forecasting.dataset import _plain_series

    lengths = [20, 20, 20, 5, 20]
    starts = np.cumsum([0] + lengths[:-1])
    ends = starts + lengths
    ticks = np.concatenate([np.arange(n) * 300 for n in lengths])
    ticks[starts[1] + 7] += 30  # series 1: one irregular step
    y, load = np.ones(sum(lengths)), np.ones(sum(lengths))
    load[starts[2]:ends[2]] = np.nan  # series 2: its covariate never observed
    numbers = [(y, np.zeros_like(y, bool)), (load, np.zeros_like(load, bool))]
    assert _plain_series(starts, ends, ticks, numbers, 10).tolist() == [300, 0, 0, 0, 300]  # series 3: too short
    numbers[0][1][3] = True  # a non-numeric value anywhere: every series is checked on its own
    assert not _plain_series(starts, ends, ticks, numbers, 10).any()


def test_a_batch_of_alike_series_is_prepared_as_series_by_series():
    """``inputs.prepare_context`` takes a batch of equal-shaped series at once; the arrays equal the general path's
    (forced by a padding mask of ones), inner gaps and a context cut included."""
    from toto_jax.config import TotoConfig
    from toto_jax.forecasting.inputs import _prepare_alike, prepare_context, read_rows
    from toto_jax.forecasting.options import ForecastOptions

    config = TotoConfig(patch_size=8, stride=8, embed_dim=16, num_heads=2, num_layers=2, mlp_hidden_dim=32,
                        spacewise_every_n_layers=2, k_components=2, max_context=48)  # fmt: skip
    values = np.random.default_rng(0).normal(size=(5, 2, 61))
    values[1, 0, 20:25] = np.nan
    values[3, 1, :30] = np.nan
    for gaps in ("fill", "mask"):
        options = ForecastOptions(gaps=gaps)
        rows = read_rows(values, 4, config.patch_size)
        assert _prepare_alike(config, rows, options, config.max_context) is not None  # the batch path is taken
        fast = prepare_context(config, rows, options)
        general = prepare_context(config, rows, options, padding_mask=np.ones(values.shape, bool))
        for name in ("values", "valid", "ids", "trailing"):
            np.testing.assert_array_equal(getattr(fast, name), getattr(general, name), err_msg=f"{gaps}: {name}")


def test_series_begin_where_their_ids_change_however_the_ids_are_encoded():
    """``dataset._run_starts`` on text ids, on dictionary-encoded ids (how Parquet ids are read), on a dictionary
    that holds one id twice (equal ids under two indices are one series), and on a chunked column."""
    from toto_jax.forecasting.dataset import _run_starts

    ids = ["a", "a", "b", "b", "b", "a", "c", "c"]
    starts = [0, 2, 5, 6]
    repeated = pa.DictionaryArray.from_arrays(pa.array([0, 2, 1, 3, 1, 0, 4, 4], pa.int32()),
                                              pa.array(["a", "b", "a", "b", "c"]))  # fmt: skip
    assert repeated.to_pylist() == ids
    for encoded in (pa.array(ids), pa.array(ids).dictionary_encode(), repeated,
                    pa.chunked_array([pa.array(ids[:3]), pa.array(ids[3:])])):  # fmt: skip
        assert _run_starts(encoded).tolist() == starts, encoded.type


def test_batches_worked_on_together_equal_one_at_a_time(model, dataset, uninterrupted, tmp_path, monkeypatch):
    """A job keeps ``TASKS_IN_FLIGHT`` batches computing at once; the output equals one batch at a time."""
    from toto_jax.forecasting import job

    monkeypatch.setattr(job, "TASKS_IN_FLIGHT", 1)
    forecast_dataset(model, dataset[0], tmp_path / "one", HORIZON, **job_arguments())
    pd.testing.assert_frame_equal(read_union(tmp_path / "one"), read_union(uninterrupted))


def test_forecasts_from_several_threads_compile_each_program_once(monkeypatch):
    """Threads forecasting with a model no other test uses (so nothing is compiled yet) at once, as a job's batches
    in flight do, wait for one compilation of each program, and get the same forecasts."""
    import threading

    from flax import nnx

    from toto_jax.config import TotoConfig
    from toto_jax.forecasting.decode import compiled_program_count
    from toto_jax.forecasting.placement import Placement

    config = TotoConfig(patch_size=8, stride=8, embed_dim=24, num_heads=2, num_layers=2, mlp_hidden_dim=40,
                        spacewise_every_n_layers=2, k_components=3)  # fmt: skip
    model = toto_jax.Toto(config, rngs=nnx.Rngs(5))

    compilations = []
    compile_program = Placement.compile

    def counted(self, function, *arguments):
        compilations.append(function)
        return compile_program(self, function, *arguments)

    monkeypatch.setattr(Placement, "compile", counted)
    values = np.random.default_rng(3).normal(size=(3, 1, 53))
    before = compiled_program_count()
    results, barrier = [None] * 4, threading.Barrier(4)

    def run(i):
        barrier.wait()
        results[i] = toto_jax.forecast(model, values, 13, num_samples=None).mean

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(compilations) == compiled_program_count() - before > 0
    for result in results[1:]:
        np.testing.assert_array_equal(result, results[0])
