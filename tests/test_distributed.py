"""Multi-process training on this machine: 2 processes x 2 CPU devices against 1 process x 4 devices, and a
2-process run with its run directory in the GCS emulator stopped by SIGTERM and resumed.

Every run goes through ``launch/local.sh`` / the ``toto-jax`` CLI in subprocesses, as a user would.
``data.host_split=batch`` makes the global batch independent of the host count, so the runs must agree.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import jax
import numpy as np
import pytest

import toto_jax
from toto_jax import storage
from toto_jax.forecasting.options import ForecastOptions
from toto_jax.train.checkpointing import COMMIT_FILE
from toto_jax.train.metrics import read_jsonl
from toto_jax.train.preemption import PREEMPTED_EXIT_CODE

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "experiments" / "configs" / "tiny.yaml"
# A given peak skips measuring the machine's (seconds of matmuls); it changes only the logged MFU.
COMMON = ["data.host_split=batch", "logging.every=1", "checkpoint.keep_last=10", "checkpoint.async_save=false",
          "logging.peak_flops_per_device=1e12", "logging.progress_bar=false"]
STEPS = 4  # of the reference runs, which save only at the end


def _env(devices: int, cache: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOTO_")}
    env.update(
        JAX_PLATFORMS="cpu",
        # Optimisation level 0 compiles faster; every run in this file uses it, so they stay comparable.
        XLA_FLAGS=f"--xla_force_host_platform_device_count={devices} --xla_backend_optimization_level=0",
        JAX_COMPILATION_CACHE_DIR=str(cache),
        PYTHONUNBUFFERED="1",
    )
    return env


def _train_command(workdir, steps: int, batch_per_host: int, *extra: str, every: int = 2) -> list[str]:
    return [
        sys.executable, "-m", "toto_jax.cli", "train", "--config", str(TINY), "--workdir", str(workdir),
        "--steps", str(steps), "--checkpoint-every", str(every), *COMMON, f"data.batch_size={batch_per_host}", *extra,
    ]  # fmt: skip


def _two_process_command(workdir) -> list[str]:
    command = ["bash", str(ROOT / "launch" / "local.sh"), "2", "--devices", "2", "--"]
    return command + _train_command(workdir, STEPS, 4, every=STEPS)


def _losses(workdir) -> dict[int, float]:
    return {row["step"]: row["loss"] for row in read_jsonl(f"{workdir}/metrics.jsonl") if "loss" in row}


def _params(workdir: Path) -> list[np.ndarray]:
    from flax import nnx

    return [np.asarray(x) for x in jax.tree.leaves(nnx.state(toto_jax.load(workdir), nnx.Param))]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("distributed")
    cache = base / "xla_cache"
    two = subprocess.run(
        _two_process_command(base / "two_process"), env=_env(2, cache), capture_output=True, text=True, timeout=300
    )
    assert two.returncode == 0, two.stdout[-3000:] + two.stderr[-3000:]
    one = subprocess.run(_train_command(base / "one_process", STEPS, 8, every=STEPS), env=_env(4, cache),
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert one.returncode == 0, one.stdout[-3000:] + one.stderr[-3000:]
    return base, cache


def test_two_processes_match_one_process(runs):
    base, _ = runs
    two, one = _losses(base / "two_process"), _losses(base / "one_process")
    assert sorted(two) == sorted(one) == list(range(1, STEPS + 1))
    np.testing.assert_allclose([two[s] for s in sorted(two)], [one[s] for s in sorted(one)], rtol=1e-5)
    for a, b in zip(_params(base / "two_process"), _params(base / "one_process")):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_only_process_zero_writes_metrics(runs):
    base, _ = runs
    rows = (base / "two_process" / "metrics.jsonl").read_text().splitlines()
    assert len([r for r in rows if '"loss"' in r]) == STEPS  # one writer, not two


def test_two_process_run_in_a_bucket_stopped_by_sigterm_resumes_bit_identically(runs, object_stores, tmp_path):
    """``local.sh 2`` with its run directory in the GCS emulator gets SIGTERM (at the launcher, as a scheduler
    signals a container's first process) while it starts: both processes agree on a step, save it to the bucket
    and exit 75. The same command resumes and ends with the weights and losses of the uninterrupted local
    2-process run, bit for bit, with one writer of metrics.jsonl."""
    base, cache = runs
    workdir = f"{object_stores.new_bucket('gs')}/run"
    command = _two_process_command(workdir)
    env = {**_env(2, cache), **object_stores.environment}
    log = tmp_path / "victim.txt"
    with open(log, "w") as output:  # a file, not a pipe: nobody reads a pipe while we poll
        victim = subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT)
    # Process 0 writes config.yaml after both processes joined (JAX's preemption notifier then listens in
    # each) and before it compiles and runs its first step, so the stop comes well before the last step.
    fs = storage.filesystem(workdir)
    deadline = time.monotonic() + 240
    while victim.poll() is None and time.monotonic() < deadline and not fs.exists(f"{workdir}/config.yaml"):
        time.sleep(0.05)
        fs.invalidate_cache()
    victim.send_signal(signal.SIGTERM)
    victim.wait(timeout=120)
    output = log.read_text()
    assert victim.returncode == PREEMPTED_EXIT_CODE, output[-6000:]
    saved = re.findall(r"^\[(\d)\] .*stop signal: saved step (\d+)", output, re.MULTILINE)
    assert len(saved) == 2 and saved[0][1] == saved[1][1], output[-6000:]  # both processes, the same step
    stopped_at = int(saved[0][1])
    assert 1 <= stopped_at < STEPS

    resumed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert resumed.stderr.count(f"resumed from step {stopped_at}") == 2, resumed.stderr[-3000:]
    fs.invalidate_cache()
    committed = fs.glob(f"{workdir}/checkpoints/*/{COMMIT_FILE}")  # orbax's marker of a finished gs:// save
    assert sorted(int(path.split("/")[-2]) for path in committed) == [stopped_at, STEPS]
    assert _losses(workdir) == _losses(base / "two_process")
    assert len(read_jsonl(f"{workdir}/metrics.jsonl")) == STEPS
    for a, b in zip(_params(workdir), _params(base / "two_process"), strict=True):
        np.testing.assert_array_equal(a, b)


def test_killed_process_fails_the_launch_and_one_process_resumes_on_another_mesh(runs):
    """Kill a worker after the first checkpoint: local.sh stops the peer and exits non-zero in bounded time.
    The next launch (one process, two devices, mesh (1, 2, 1)) restores the 2-process checkpoint and goes on."""
    base, cache = runs
    workdir = base / "killed"
    command = ["bash", str(ROOT / "launch" / "local.sh"), "2", "--devices", "2", "--grace", "5", "--"]
    command += _train_command(workdir, 200, 4)
    launcher = subprocess.Popen(
        command, env=_env(2, cache), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    pids, output = {}, []

    def read_output():  # progress bars end lines with \r, so lines can be rare: read beside the polling
        for line in launcher.stdout:
            output.append(line)
            match = re.search(r"process (\d) pid (\d+)", line)
            if match:
                pids[int(match.group(1))] = int(match.group(2))

    reader = threading.Thread(target=read_output, daemon=True)
    reader.start()
    killed_at = None
    deadline = time.monotonic() + 600
    while launcher.poll() is None and time.monotonic() < deadline:
        if (workdir / "checkpoints" / "2").exists() and 1 in pids:
            os.kill(pids[1], 9)
            killed_at = time.monotonic()
            break
        time.sleep(0.1)
    launcher.wait(timeout=60)
    reader.join(timeout=10)
    assert killed_at is not None, "".join(line for line in output if "INFO absl" not in line)[-6000:]
    assert launcher.returncode != 0
    assert time.monotonic() - killed_at < 60, "local.sh did not stop the surviving process in time"
    saved = sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())
    assert saved and saved[-1] < 200

    command = ["bash", str(ROOT / "launch" / "local.sh"), "1", "--devices", "2", "--"]
    command += _train_command(workdir, saved[-1] + 2, 8, "mesh.shape=[1,2,1]")
    resumed = subprocess.run(command, env=_env(2, cache), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert f"resumed from step {saved[-1]}" in resumed.stdout + resumed.stderr
    assert max(_losses(workdir)) == saved[-1] + 2
