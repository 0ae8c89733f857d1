"""Training runs through the CLI: learning on synthetic data, exact resume after SIGKILL, checkpoint
fallback, fine-tuning from a reference checkpoint, metrics files."""

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
from reference import make_reference, reference_config, save_reference
from train_runs import finished_steps

from toto_jax.data import make_iterator
from toto_jax.sharding import make_mesh
from toto_jax.train.checkpointing import (
    RunCheckpoints,
    is_run_directory,
    load_model_from_run,
)
from toto_jax.train.config import ConfigError, load_config
from toto_jax.train.metrics import read_jsonl, read_records
from toto_jax.train.optimizer import schedule_from_config
from toto_jax.train.trainer import TrainProgram

ROOT = Path(__file__).parents[1]
TINY = ROOT / "experiments" / "configs" / "tiny.yaml"
STEPS, EVERY = 120, 20
FAST_COMPILE = {"xla_backend_optimization_level": 0}


def command(workdir: Path, *options: str, overrides: tuple[str, ...] = (), steps: int = STEPS) -> list[str]:
    return [
        sys.executable, "-m", "toto_jax.cli", "train", "--config", str(TINY), "--workdir", str(workdir),
        "--steps", str(steps), "--checkpoint-every", str(EVERY), *options, "logging.progress_bar=false", *overrides,
    ]  # fmt: skip


def environment(cache: Path | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["JAX_PLATFORMS"] = "cpu"
    env["XLA_FLAGS"] = env.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0"  # faster compiles
    if cache is not None:  # later runs of the same program load the executable instead of compiling it
        env["JAX_COMPILATION_CACHE_DIR"] = str(cache)
        env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
        env["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"
    return env


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """An uninterrupted run and one killed with SIGKILL after its first checkpoint, then resumed."""
    base = tmp_path_factory.mktemp("runs")
    straight, killed = base / "straight", base / "killed"
    env = environment(base / "compilation_cache")
    uninterrupted = subprocess.run(command(straight), env=env, capture_output=True, text=True, timeout=300)
    assert uninterrupted.returncode == 0, uninterrupted.stdout + uninterrupted.stderr
    victim = subprocess.Popen(command(killed), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 240
    while not finished_steps(killed) and victim.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    victim.send_signal(signal.SIGKILL)
    victim_output = victim.communicate()[0].decode()
    assert victim.returncode == -signal.SIGKILL, victim_output
    killed_at = max(finished_steps(killed), default=0)
    assert 0 < killed_at < STEPS, (killed_at, victim_output)
    resumed = subprocess.run(command(killed), env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    return straight, killed, killed_at, resumed.stdout + resumed.stderr, env


def test_resume_after_sigkill_is_bit_exact(runs):
    straight, killed, killed_at, log, _ = runs
    assert f"resumed from step {killed_at}" in log, log
    expected = jax.tree.leaves(nnx.state(load_model_from_run(straight), nnx.Param))
    got = jax.tree.leaves(nnx.state(load_model_from_run(killed), nnx.Param))
    assert len(expected) == len(got)
    for a, b in zip(got, expected):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # the resumed run logged the steps after the checkpoint with the same losses as the straight run
    straight_log = {r["step"]: r["loss"] for r in read_jsonl(straight / "metrics.jsonl")}
    killed_log = {r["step"]: r["loss"] for r in read_jsonl(killed / "metrics.jsonl")}
    for step in range(killed_at + 10, STEPS + 1, 10):
        assert killed_log[step] == straight_log[step], step


def test_tiny_model_learns_on_synthetic_data(runs):
    straight = runs[0]
    records = read_jsonl(straight / "metrics.jsonl")
    assert [r["step"] for r in records] == list(range(10, STEPS + 1, 10))
    # mean loss on held-out synthetic batches (another data seed): initial vs trained parameters
    config = load_config(TINY, ["data.seed=123"])
    program = TrainProgram(config, make_mesh((1, 1, 1), devices=jax.devices()[:1]), compiler_options=FAST_COMPILE)
    evaluate = jax.jit(lambda params, batch: program._loss_sums(params, batch, None)[1])
    iterator = make_iterator(config.data)
    batches = [program.put_batch(next(iterator)) for _ in range(6)]

    def held_out(params):
        terms = [evaluate(params, batch) for batch in batches]
        return float(sum(t.loss for t in terms) / sum(t.count for t in terms))

    initial = held_out(program.init(config.seed).params)
    trained = held_out(nnx.state(load_model_from_run(straight), nnx.Param))
    assert trained < initial - 0.5, (initial, trained)
    for key in ("nll", "robust", "grad_norm", "lr", "samples_per_second", "mfu"):
        assert all(np.isfinite(r[key]) for r in records), key
    # TensorBoard events: valid TFRecord framing (checksums) with our scalar tags
    (event_file,) = (straight / "tensorboard").iterdir()
    records = read_records(event_file)
    assert len(records) == 1 + STEPS // 10
    assert b"train/loss" in records[-1] and b"brain.Event:2" in records[0]


def test_keeps_last_checkpoints_and_skips_a_corrupt_latest(runs, tmp_path):
    straight = runs[0]
    assert finished_steps(straight) == [STEPS - EVERY, STEPS]  # tiny.yaml keeps the last 2
    assert is_run_directory(straight) and not is_run_directory(tmp_path)
    config = load_config(straight / "config.yaml")
    program = TrainProgram(config, make_mesh((1, 1, 1), devices=jax.devices()[:1]))
    previous = load_model_from_run(straight / "checkpoints" / str(STEPS - EVERY))

    # corrupt the latest checkpoint's arrays, and leave a half-written newer one behind
    for file in (straight / "checkpoints" / str(STEPS) / "params").rglob("*"):
        if file.is_file() and file.stat().st_size > 0 and "metadata" not in file.name:
            file.write_bytes(b"\0" * 7)
    (straight / "checkpoints" / f"{STEPS + EVERY}.orbax-checkpoint-tmp-1").mkdir()

    with pytest.warns(UserWarning, match=f"skipping half-written checkpoint .*{STEPS + EVERY}.orbax-checkpoint-tmp-1"):
        checkpoints = RunCheckpoints(straight, keep_last=2)
    with pytest.warns(UserWarning, match=f"step {STEPS}"):
        restored = checkpoints.restore_latest(
            program.abstract_state.params, program.abstract_state.opt_state,
            program.state_sharding.params, program.state_sharding.opt_state,
        )  # fmt: skip
    checkpoints.close()
    assert restored.step == STEPS - EVERY
    assert restored.data_state is not None and restored.config["steps"] == STEPS
    with pytest.warns(UserWarning, match="skipping"):
        model = load_model_from_run(straight)
    for a, b in zip(jax.tree.leaves(nnx.state(model, nnx.Param)), jax.tree.leaves(nnx.state(previous, nnx.Param))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_init_from_reference_checkpoint_takes_its_weights_and_architecture(runs, tmp_path):
    env = runs[-1]
    tiny = load_config(TINY).model
    reference = reference_config(
        patch_size=8, embed_dim=tiny.embed_dim, num_layers=tiny.num_layers, num_heads=tiny.num_heads,
        mlp_hidden_dim=tiny.mlp_hidden_dim, k_components=tiny.k_components,
    )  # fmt: skip
    directory = save_reference(make_reference(reference, seed=7), reference, tmp_path / "reference")
    # the config asks for another width: fine-tuning takes the checkpoint's architecture instead
    arguments = command(tmp_path / "run", "--init-from", str(directory), overrides=("model.embed_dim=16",), steps=1)
    result = subprocess.run(arguments, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    model = load_model_from_run(tmp_path / "run")
    assert model.config.embed_dim == tiny.embed_dim
    run_config = load_config(tmp_path / "run" / "config.yaml")
    assert run_config.model.embed_dim == tiny.embed_dim
    # the reference's config has no max_context; forecasting from the run keeps to the context it trained on
    assert model.config.max_context == run_config.data.context_length == 64
    from toto_jax.checkpoint import load

    # one AdamW step moves each weight by at most about the first learning rate
    config = load_config(TINY)
    first_rate = float(schedule_from_config(config.optimizer)(0))
    expected = jax.tree.leaves(nnx.state(load(directory), nnx.Param))
    moved = 0.0
    for a, b in zip(jax.tree.leaves(nnx.state(model, nnx.Param)), expected):
        change = np.abs(np.asarray(a) - np.asarray(b))
        assert change.max() <= 1.01 * first_rate * (1 + config.optimizer.weight_decay * np.abs(np.asarray(b)).max())
        moved = max(moved, float(change.max()))
    assert moved > 0.5 * first_rate


def test_config_overrides_and_errors(tmp_path):
    config = load_config(TINY, ["optimizer.learning_rate=5e-4", "mesh.shape=[2,2,2]", "data.sources.0.weight=2"])
    assert config.optimizer.learning_rate == 5e-4 and config.mesh.shape == [2, 2, 2]
    assert config.data.sources[0].weight == 2
    with pytest.raises(ConfigError, match=r"optimizer\.learnin_rate"):
        load_config(TINY, ["optimizer.learnin_rate=1"])
    with pytest.raises(ConfigError, match="key=value"):
        load_config(TINY, ["steps"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: {patch_size: 8}\ndata: {patch_size: 16, context_length: 64}\n")
    with pytest.raises(ConfigError, match="patch_size"):
        load_config(bad)
    result = subprocess.run(
        [sys.executable, "-m", "toto_jax.cli", "train", "--config", str(TINY), "--workdir", str(tmp_path / "w"),
         "nosuchsection.x=1"],
        env=environment(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2 and "nosuchsection" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("path", sorted((ROOT / "experiments" / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_experiment_config_loads(path):
    """Every shipped recipe parses and validates (an unknown key or a bad schedule fails here, not hours
    into a run); each staged recipe's stages share its first stage's architecture, so they can continue each
    other."""
    config = load_config(path)
    config.validate()
    for first in ("pretrain_small", "pretrain_toto2_small_v2"):
        if path.name.startswith(first + ".") or path.name.startswith(first + "_stage"):
            assert config.model == load_config(ROOT / "experiments" / "configs" / f"{first}.yaml").model
            schedule = config.optimizer
            assert schedule.warmup_steps + schedule.stable_steps + schedule.decay_steps == config.steps
