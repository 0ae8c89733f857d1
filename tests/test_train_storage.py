"""A run stopped by SIGTERM saves its step, exits 75 and resumes bit-identically; time-based checkpoints
are pruned like step-based ones; the persistent compilation cache lives in a gs:// bucket (GCS emulator on
loopback, tests/storage_servers.py); a missing bucket is refused before anything compiles.

(A gs:// run directory itself is not exercised here: TensorStore's GCS driver rejects the object
generations gcp-storage-emulator returns for the second OCDBT save of a run, "Malformed StorageGeneration".)"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest
from flax import nnx
from train_runs import finished_steps

from toto_jax import storage
from toto_jax.cli import main as cli_main
from toto_jax.train.checkpointing import load_model_from_run
from toto_jax.train.metrics import read_jsonl
from toto_jax.train.preemption import PREEMPTED_EXIT_CODE

TINY = Path(__file__).parents[1] / "experiments" / "configs" / "tiny.yaml"
STEPS, EVERY = 40, 4


def command(workdir: str, cache: str, *overrides: str) -> list[str]:
    return [
        sys.executable, "-m", "toto_jax.cli", "train", "--config", str(TINY), "--workdir", workdir,
        "--steps", str(STEPS), "--checkpoint-every", str(EVERY), "--compilation-cache-dir", cache,
        "logging.every=2", "logging.progress_bar=false", "logging.peak_flops_per_device=1e12", *overrides,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def runs(object_stores, tmp_path_factory):
    bucket = object_stores.new_bucket("gs")
    cache = f"{bucket}/compilation-cache"
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": "--xla_backend_optimization_level=0"}
    straight = tmp_path_factory.mktemp("straight")
    # step-based saves only at the end; time-based ones at (nearly) every logging step, pruned to keep_last=2
    uninterrupted = subprocess.run(
        command(str(straight), cache, "checkpoint.every_minutes=1e-6", f"checkpoint.every={STEPS}"),
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert uninterrupted.returncode == 0, uninterrupted.stdout + uninterrupted.stderr

    workdir = tmp_path_factory.mktemp("stopped")
    victim_log = tmp_path_factory.mktemp("victim") / "output.txt"
    with open(victim_log, "w") as output:  # a file, not a pipe: nobody reads a pipe while we poll
        victim = subprocess.Popen(command(str(workdir), cache), env=env, stdout=output, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 240
    while not finished_steps(workdir) and victim.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    victim.send_signal(signal.SIGTERM)
    victim.wait(timeout=120)
    victim_output = victim_log.read_text()
    assert victim.returncode == PREEMPTED_EXIT_CODE, victim_output
    stopped_at = max(finished_steps(workdir))
    assert EVERY <= stopped_at < STEPS, (stopped_at, victim_output)
    resumed = subprocess.run(command(str(workdir), cache), env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    return straight, workdir, stopped_at, victim_output, resumed.stdout + resumed.stderr, cache


def test_sigterm_saves_the_step_and_the_restart_is_bit_identical(runs):
    straight, workdir, stopped_at, victim_output, resumed_log, _ = runs
    assert f"stop signal: saved step {stopped_at}" in victim_output, victim_output
    assert f"resumed from step {stopped_at}" in resumed_log, resumed_log
    expected = jax.tree.leaves(nnx.state(load_model_from_run(straight), nnx.Param))
    got = jax.tree.leaves(nnx.state(load_model_from_run(workdir), nnx.Param))
    assert len(got) == len(expected)
    for a, b in zip(got, expected):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    straight_losses = {r["step"]: r["loss"] for r in read_jsonl(straight / "metrics.jsonl")}
    resumed_losses = {r["step"]: r["loss"] for r in read_jsonl(workdir / "metrics.jsonl")}
    after_stop = [step for step in straight_losses if step > stopped_at]
    assert after_stop and all(resumed_losses[step] == straight_losses[step] for step in after_stop)


def test_time_based_checkpoints_are_pruned_like_step_based_ones(runs):
    straight = runs[0]
    saved = sorted(int(p.name) for p in (straight / "checkpoints").iterdir() if p.name.isdigit())
    assert saved == [STEPS - 2, STEPS]  # keep_last=2 of the saves at every logging step


def test_compilation_cache_lives_in_the_bucket(runs):
    cache = runs[-1]
    assert len(list(storage.as_path(cache).iterdir())) >= 2  # at least the init and the train step


def test_missing_bucket_fails_before_training(object_stores, capsys):
    missing = "gs://no-such-bucket-toto/run"
    assert cli_main(["train", "--config", str(TINY), "--workdir", missing, "--steps", "2"]) == 2
    assert f"{missing}: bucket gs://no-such-bucket-toto does not exist" in capsys.readouterr().err


def test_s3_run_directory_is_refused_with_the_reason(object_stores, capsys):
    bucket = object_stores.new_bucket("s3")
    assert cli_main(["train", "--config", str(TINY), "--workdir", f"{bucket}/run", "--steps", "2"]) == 2
    assert f"{bucket}/run: run directories on s3:// are not supported" in capsys.readouterr().err
