"""Training runs against object storage (GCS emulator and moto S3 on loopback, tests/storage_servers.py), all
on the Parquet corpus converted from the bundled NAB series: a run with both its corpus and its run directory in
gs:// stopped by SIGTERM saves its step, exits 75 and resumes to equal one uninterrupted local run bit for bit
(the same stop on local disk differs only in where orbax writes; a local resume is tested after SIGKILL in
test_train_run.py); time-based checkpoints are pruned like step-based ones; the persistent
compilation cache lives in a gs:// bucket; a missing bucket is refused before anything compiles, an s3://
run directory with the reason (orbax writes array stores to local and gs:// paths only)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import jax
import numpy as np
import pytest
from flax import nnx
from train_runs import finished_steps

from toto_jax import storage
from toto_jax.cli import main as cli_main
from toto_jax.data.convert import convert_csv_directory
from toto_jax.train.checkpointing import COMMIT_FILE, load_model_from_run
from toto_jax.train.metrics import read_jsonl
from toto_jax.train.preemption import PREEMPTED_EXIT_CODE

TINY = Path(__file__).parents[1] / "experiments" / "configs" / "tiny.yaml"
NAB = Path(__file__).parents[1] / "toto_jax" / "assets"
STEPS, EVERY = 40, 4


def command(workdir, corpus: str, cache: str, *overrides: str, every: int = EVERY) -> list[str]:
    return [
        sys.executable, "-m", "toto_jax.cli", "train", "--config", str(TINY), "--workdir", str(workdir),
        "--steps", str(STEPS), "--checkpoint-every", str(every), "--compilation-cache-dir", cache,
        "logging.every=2", "logging.progress_bar=false", "logging.peak_flops_per_device=1e12",
        f"data.sources=[{{type: parquet, path: '{corpus}'}}]", *overrides,
    ]  # fmt: skip


def completed_steps(workdir) -> list[int]:
    """Steps of the run's complete checkpoints, on local disk or in a bucket (where orbax writes the step in
    place and its commit marker last)."""
    if not storage.is_remote(workdir):
        return finished_steps(workdir)
    fs = storage.filesystem(workdir)
    fs.invalidate_cache()  # the run writes from another process
    return sorted(int(path.split("/")[-2]) for path in fs.glob(f"{workdir}/checkpoints/*/{COMMIT_FILE}"))


def stopped_and_resumed(workdir, corpus: str, cache: str, env: dict, log: Path) -> SimpleNamespace:
    """A run sent SIGTERM once it has a checkpoint, then the same command again (saving only at the end:
    the checkpoint cadence does not change the training)."""
    with open(log, "w") as output:  # a file, not a pipe: nobody reads a pipe while we poll
        victim = subprocess.Popen(command(workdir, corpus, cache), env=env, stdout=output, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 240
    while not completed_steps(workdir) and victim.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    victim.send_signal(signal.SIGTERM)
    victim.wait(timeout=120)
    victim_output = log.read_text()
    assert victim.returncode == PREEMPTED_EXIT_CODE, victim_output
    stopped_at = max(completed_steps(workdir))
    assert EVERY <= stopped_at < STEPS, (stopped_at, victim_output)
    resumed = subprocess.run(command(workdir, corpus, cache, every=STEPS), env=env, capture_output=True, text=True,
                             timeout=300)  # fmt: skip
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    return SimpleNamespace(workdir=workdir, stopped_at=stopped_at, victim_output=victim_output,
                           resumed_output=resumed.stdout + resumed.stderr)  # fmt: skip


@pytest.fixture(scope="module")
def runs(object_stores, tmp_path_factory):
    bucket = object_stores.new_bucket("gs")
    cache = f"{bucket}/compilation-cache"
    local_corpus = str(tmp_path_factory.mktemp("corpus") / "nab")
    convert_csv_directory(NAB, local_corpus)
    assert cli_main(["data", "convert", str(NAB), f"{bucket}/nab"]) == 0
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": "--xla_backend_optimization_level=0"}
    straight = tmp_path_factory.mktemp("straight")
    # step-based saves only at the end; time-based ones at (nearly) every logging step, pruned to keep_last=2
    uninterrupted = subprocess.run(
        command(straight, local_corpus, cache, "checkpoint.every_minutes=1e-6", every=STEPS),
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert uninterrupted.returncode == 0, uninterrupted.stdout + uninterrupted.stderr
    logs = tmp_path_factory.mktemp("victims")
    in_bucket = stopped_and_resumed(f"{bucket}/run", f"{bucket}/nab", cache, env, logs / "gs.txt")
    storage.filesystem(bucket).invalidate_cache()
    return SimpleNamespace(straight=straight, in_bucket=in_bucket, cache=cache)


def assert_resumed_equals_straight(run, straight: Path) -> None:
    assert f"stop signal: saved step {run.stopped_at}" in run.victim_output, run.victim_output
    assert f"resumed from step {run.stopped_at}" in run.resumed_output, run.resumed_output
    expected = jax.tree.leaves(nnx.state(load_model_from_run(straight), nnx.Param))
    got = jax.tree.leaves(nnx.state(load_model_from_run(run.workdir), nnx.Param))
    assert len(got) == len(expected)
    for a, b in zip(got, expected):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    straight_losses = {r["step"]: r["loss"] for r in read_jsonl(straight / "metrics.jsonl")}
    resumed_losses = {r["step"]: r["loss"] for r in read_jsonl(f"{run.workdir}/metrics.jsonl")}
    after_stop = [step for step in straight_losses if step > run.stopped_at]
    assert after_stop and all(resumed_losses[step] == straight_losses[step] for step in after_stop)


def test_run_from_a_bucket_into_a_bucket_stopped_and_resumed_equals_the_local_run(runs):
    """Corpus and run directory both in gs://: checkpoints (TensorStore's GCS driver), metrics.jsonl and
    TensorBoard events in the bucket; the SIGTERM save and the resume go through the bucket too."""
    assert_resumed_equals_straight(runs.in_bucket, runs.straight)
    run = storage.as_path(runs.in_bucket.workdir)
    assert {"config.yaml", "metrics.jsonl", "tensorboard", "checkpoints"} <= {p.name for p in run.iterdir()}
    assert completed_steps(runs.in_bucket.workdir) == [runs.in_bucket.stopped_at, STEPS]


def test_time_based_checkpoints_are_pruned_like_step_based_ones(runs):
    straight = runs.straight
    saved = sorted(int(p.name) for p in (straight / "checkpoints").iterdir() if p.name.isdigit())
    assert saved == [STEPS - 2, STEPS]  # keep_last=2 of the saves at every logging step


def test_compilation_cache_lives_in_the_bucket(runs):
    assert len(list(storage.as_path(runs.cache).iterdir())) >= 2  # at least the init and the train step


def test_missing_bucket_fails_before_training(object_stores, capsys):
    missing = "gs://no-such-bucket-toto/run"
    assert cli_main(["train", "--config", str(TINY), "--workdir", missing, "--steps", "2"]) == 2
    assert f"{missing}: bucket gs://no-such-bucket-toto does not exist" in capsys.readouterr().err


def test_s3_run_directory_is_refused_with_the_reason(object_stores, capsys):
    bucket = object_stores.new_bucket("s3")
    assert cli_main(["train", "--config", str(TINY), "--workdir", f"{bucket}/run", "--steps", "2"]) == 2
    assert f"{bucket}/run: run directories on s3:// are not supported" in capsys.readouterr().err
