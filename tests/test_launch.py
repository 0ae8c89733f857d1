"""Launch scripts: syntax, dry runs that print each worker's exact command, and local.sh failure and signal
handling."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAUNCH = ROOT / "launch"


@pytest.mark.parametrize("script", ["local.sh", "tpu_pod.sh", "slurm_gpu.sbatch"])
def test_scripts_parse(script):
    subprocess.run(["bash", "-n", str(LAUNCH / script)], check=True)


def test_tpu_pod_dry_run_prints_create_and_worker_commands():
    out = subprocess.run(
        [
            "bash", str(LAUNCH / "tpu_pod.sh"), "--name", "toto-v5", "--zone", "us-east5-a", "--create",
            "--type", "v5p-64", "--config", "experiments/configs/toto_base.yaml", "--workdir", "gs://bucket/run",
            "--repo", "https://example.org/toto-jax.git", "--dry-run", "--", "steps=10",
        ],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    assert "gcloud compute tpus tpu-vm create toto-v5 --zone us-east5-a --accelerator-type v5p-64" in out
    assert "--worker=all" in out
    assert "toto-jax train --config experiments/configs/toto_base.yaml --workdir gs://bucket/run steps=10" in out


def test_tpu_pod_requires_its_arguments():
    result = subprocess.run(
        ["bash", str(LAUNCH / "tpu_pod.sh"), "--zone", "z", "--dry-run"], capture_output=True, text=True
    )
    assert result.returncode == 2 and "--name is required" in result.stderr


def test_slurm_dry_run_prints_srun_command():
    out = subprocess.run(
        ["bash", str(LAUNCH / "slurm_gpu.sbatch"), "experiments/configs/toto_base.yaml", "/runs/base", "steps=5"],
        check=True, capture_output=True, text=True, env={**os.environ, "DRY_RUN": "1"},
    ).stdout  # fmt: skip
    assert re.search(
        r"srun --kill-on-bad-exit=1 --ntasks-per-node=1 \S*toto-jax train --config "
        r"experiments/configs/toto_base.yaml --workdir /runs/base steps=5",
        out,
    )
    assert "#SBATCH --ntasks-per-node=1" in (LAUNCH / "slurm_gpu.sbatch").read_text()


def test_local_sh_sets_cluster_environment_and_prefixes_output():
    code = "import os; print(os.environ['TOTO_PROCESS_ID'], os.environ['TOTO_NUM_PROCESSES'], os.environ['XLA_FLAGS'])"
    result = subprocess.run(
        ["bash", str(LAUNCH / "local.sh"), "3", "--devices", "2", "--", sys.executable, "-c", code],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = sorted(line for line in result.stdout.splitlines() if line.startswith("["))
    assert [line.split()[:3] for line in lines] == [["[0]", "0", "3"], ["[1]", "1", "3"], ["[2]", "2", "3"]]
    assert all("--xla_force_host_platform_device_count=2" in line for line in lines)


def test_local_sh_puts_malloc_on_huge_pages_keeping_other_tunables():
    code = "import os; print(os.environ['GLIBC_TUNABLES'])"
    result = subprocess.run(
        ["bash", str(LAUNCH / "local.sh"), "1", "--", sys.executable, "-c", code],
        capture_output=True, text=True, timeout=60, env={**os.environ, "GLIBC_TUNABLES": "glibc.malloc.arena_max=2"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["[0]", "glibc.malloc.hugetlb=1:glibc.malloc.arena_max=2"]


def test_local_sh_exits_nonzero_soon_after_a_process_is_killed():
    """A killed worker must not leave its peers (blocked forever here) hanging: local.sh stops them."""
    code = "import time; time.sleep(600)"
    started = time.monotonic()
    launcher = subprocess.Popen(
        ["bash", str(LAUNCH / "local.sh"), "2", "--grace", "2", "--", sys.executable, "-c", code],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    pids = []
    while len(pids) < 2:
        line = launcher.stderr.readline()
        match = re.search(r"process (\d) pid (\d+)", line)
        if match:
            pids.append(int(match.group(2)))
    time.sleep(1.0)
    os.kill(pids[1], 9)
    _, stderr = launcher.communicate(timeout=30)
    assert launcher.returncode == 137  # 128 + SIGKILL
    assert "process 1" in stderr and "failed with status 137" in stderr
    assert time.monotonic() - started < 30
    for pid in pids:  # nothing left behind
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()


def test_local_sh_forwards_sigterm_and_exits_with_the_processes_status():
    """A scheduler signals the launcher only: every process gets the SIGTERM, can still print while it stops (the
    output-prefixing pipes stay open), and the launcher exits with their status (75 from toto-jax train)."""
    code = (
        "import os, signal, sys, time\n"
        "def stop(signum, frame):\n"
        "    time.sleep(0.5)\n"  # saving a checkpoint
        "    print('saved by', os.environ['TOTO_PROCESS_ID'], flush=True)\n"
        "    sys.exit(75)\n"
        "signal.signal(signal.SIGTERM, stop)\n"
        "print('ready', flush=True)\n"
        "time.sleep(600)\n"
    )
    launcher = subprocess.Popen(
        ["bash", str(LAUNCH / "local.sh"), "2", "--", sys.executable, "-c", code],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    ready = [launcher.stdout.readline() for _ in range(2)]
    assert sorted(line.split()[1] for line in ready) == ["ready", "ready"]
    launcher.send_signal(signal.SIGTERM)
    stdout, stderr = launcher.communicate(timeout=30)
    assert launcher.returncode == 75, stderr
    assert sorted(stdout.splitlines()) == ["[0] saved by 0", "[1] saved by 1"]
    assert "SIGTERM: forwarded to every process" in stderr
