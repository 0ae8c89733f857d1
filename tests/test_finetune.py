"""``toto-jax finetune``: fine-tuning a checkpoint on a user's table, with covariates, validation, the best
model kept, early stopping and bit-exact resume; and the CLI round trip into ``toto-jax forecast``.

A tiny reference-format checkpoint (random weights, patch 8) keeps each run to seconds; the table is
synthetic: the target follows its covariate three steps later, so a model that reads the covariate can
learn it.
"""

from __future__ import annotations

import json

import jax
import numpy as np
import pandas as pd
import pytest
from flax import nnx
from reference import make_reference, reference_config, save_reference

import toto_jax
from toto_jax.cli import main
from toto_jax.forecasting.tabular import parse_table
from toto_jax.train.checkpointing import read_run_config
from toto_jax.train.finetune import finetune, table_series
from toto_jax.train.validation import validation_windows

FAST = ["optimizer.learning_rate=3e-3", "optimizer.min_learning_rate=1e-4", "optimizer.warmup_steps=5",
        "optimizer.stable_steps=100", "optimizer.decay_steps=0", "data.batch_size=8", "validation.every=5",
        "validation.held_out=48", "checkpoint.every=5", "checkpoint.async_save=false", "logging.progress_bar=false",
        "logging.tensorboard=false", "logging.peak_flops_per_device=1e12"]  # fmt: skip


def make_table(length=400, ids=("a", "b")) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    parts = []
    for index, name in enumerate(ids):
        t = np.arange(length)
        load = np.sin(2 * np.pi * t / 24 + index) + 0.3 * rng.normal(size=length)
        y = 5 + 2 * np.roll(load, 3) + 0.1 * rng.normal(size=length)
        stamps = pd.date_range("2025-01-01", periods=length, freq="h")
        parts.append(pd.DataFrame({"unique_id": name, "ds": stamps, "y": y, "load": load}))
    return pd.concat(parts, ignore_index=True)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    config = reference_config(num_layers=2, spacewise_every_n_layers=2)
    return save_reference(make_reference(config, seed=3), config, tmp_path_factory.mktemp("base"))


def params_of(model):
    return jax.tree.leaves(nnx.state(model, nnx.Param))


def test_validation_windows_score_only_the_held_out_steps():
    """Windows end at each series' last step and step back a context at a time while they reach the held-out
    region; only held-out steps are scored, and a window reaching before the start is left-padded."""
    series = [np.arange(100, dtype=float)[None].repeat(2, 0), np.arange(30, dtype=float)[None].repeat(2, 0)]
    windows = validation_windows(series, held_out=20, context_length=16, patch_size=8, max_windows=10)
    # series 0: windows ending at 100 and 84 (84 > 80); series 1: ending at 30 and 14 (14 > 10)
    assert windows["series"].shape == (4, 2, 24)
    ends = sorted(int(w[0, -1]) + 1 for w in windows["series"])
    assert ends == [14, 30, 84, 100]
    for row in range(4):
        values, scored, observed = (windows[k][row, 0] for k in ("series", "scored", "padding_mask"))
        total = 100 if values[-1] > 40 else 30
        np.testing.assert_array_equal(scored, observed & (values >= total - 20))
    assert not windows["padding_mask"][:, :, 0].all()  # the window ending at 14 is padded
    assert validation_windows(series, 20, 16, 8, max_windows=2)["series"].shape[0] == 2


def test_finetune_learns_keeps_the_best_model_and_resumes_bit_exactly(checkpoint, tmp_path):
    """Validation loss falls; the best model is kept in WORKDIR/best (what toto_jax.load(WORKDIR) returns, equal
    to that step's checkpoint, forecasting from the context the run trained on), with variate labels added for
    the covariate; a run stopped at step 10 and resumed to 20 ends bit-identical to an uninterrupted one, with the
    same validation records."""
    table = parse_table(make_table(), covariates=["load"])
    whole, _ = finetune(table, checkpoint, tmp_path / "whole", FAST + ["steps=20"])
    records = [json.loads(line) for line in (tmp_path / "whole" / "validation.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [5, 10, 15, 20]
    assert min(r["loss"] for r in records[1:]) < records[0]["loss"] - 0.05
    best_step = min(records, key=lambda r: r["loss"])["step"]

    best = toto_jax.load(tmp_path / "whole")
    assert best.config.variate_labels and best.variate_labels is not None
    at_best = toto_jax.load(tmp_path / "whole" / "checkpoints" / str(best_step))
    trained_context = read_run_config(tmp_path / "whole")["data"]["context_length"]
    assert best.config.max_context == at_best.config.max_context == trained_context
    assert trained_context < toto_jax.load(checkpoint).config.max_context
    for a, b in zip(params_of(best), params_of(at_best), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))

    finetune(table, checkpoint, tmp_path / "split", FAST + ["steps=10"])
    resumed, _ = finetune(table, checkpoint, tmp_path / "split", FAST + ["steps=20"])
    for a, b in zip(jax.tree.leaves(whole.params), jax.tree.leaves(resumed.params), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert (tmp_path / "split" / "validation.jsonl").read_text() == (tmp_path / "whole" / "validation.jsonl").read_text()


def test_early_stopping_ends_the_run_and_stays_ended(checkpoint, tmp_path):
    """A learning rate too small to change a float32 weight: the second pass does not improve, patience 1
    stops the run there (its checkpoint saved), and running the command again does not train further."""
    table = parse_table(make_table(), covariates=["load"])
    frozen = FAST + ["optimizer.learning_rate=1e-12", "optimizer.min_learning_rate=0", "validation.patience=1",
                     "steps=60"]  # fmt: skip
    state, validation = finetune(table, checkpoint, tmp_path, frozen)
    assert int(state.step) == 10 and validation.stopped and validation.best_step == 5
    again, _ = finetune(table, checkpoint, tmp_path, frozen)
    assert int(again.step) == 10


def test_cli_round_trip_and_named_errors(checkpoint, tmp_path, capsys):
    """toto-jax finetune on a long CSV with a covariate, then toto-jax forecast --checkpoint WORKDIR with the
    covariate's future values: a forecast of y per series, covariates not forecast, equal to the API's. Bad
    input is named: a missing covariate column, future covariates missing a step, covariates for a
    checkpoint without variate labels; nothing is written."""
    frame = make_table()
    frame.to_csv(tmp_path / "metrics.csv", index=False)
    workdir = tmp_path / "run"
    arguments = ["finetune", "--input", str(tmp_path / "metrics.csv"), "--workdir", str(workdir), "--checkpoint",
                 str(checkpoint), "--covariates", "load", "--steps", "5", *FAST]  # fmt: skip
    assert main(arguments) == 0
    assert f"forecast with: toto-jax forecast --checkpoint {workdir}" in capsys.readouterr().out

    future = pd.DataFrame({"unique_id": np.repeat(["a", "b"], 16),
                           "ds": np.tile(pd.date_range("2025-01-17 16:00", periods=16, freq="h"), 2),
                           "load": np.linspace(-1, 1, 32)})  # fmt: skip
    future.to_csv(tmp_path / "future.csv", index=False)
    output = tmp_path / "forecast.csv"
    assert main(["forecast", "--input", str(tmp_path / "metrics.csv"), "--checkpoint", str(workdir), "--covariates",
                 "load", "--future-covariates", str(tmp_path / "future.csv"), "--horizon", "16", "--output",
                 str(output)]) == 0  # fmt: skip
    result = pd.read_csv(output)
    assert list(result.columns) == ["unique_id", "ds", "mean", "median", "q0.1", "q0.5", "q0.9"] and len(result) == 32
    assert np.isfinite(result["mean"]).all()
    # The same forecast through the API: covariates led one patch, as the CLI does.
    model = toto_jax.load(workdir)
    table = parse_table(frame, covariates=["load"])
    from toto_jax.forecasting.cli import with_future_covariates

    series, known = with_future_covariates(model, table, future["load"].to_numpy().reshape(2, 1, 16))
    expected = toto_jax.forecast(model, series, 16, future_exogenous_variables=known)
    np.testing.assert_allclose(result["mean"].to_numpy(), expected.mean.reshape(-1), rtol=1e-6)
    np.testing.assert_allclose(result["q0.9"].to_numpy(), expected.quantile(0.9).reshape(-1), rtol=1e-6)

    assert main(arguments[:-len(FAST)] + ["--covariates", "lod"]) == 2
    assert "covariate column(s) ['lod'] are not in the table" in capsys.readouterr().err
    short = future[future["ds"] < "2025-01-18 06:00"]
    short.to_csv(tmp_path / "short.csv", index=False)
    assert main(["forecast", "--input", str(tmp_path / "metrics.csv"), "--checkpoint", str(workdir), "--covariates",
                 "load", "--future-covariates", str(tmp_path / "short.csv"), "--horizon", "16", "--output",
                 str(tmp_path / "other.csv")]) == 2  # fmt: skip
    assert "series 'a': no row for 2025-01-18 06:00:00" in capsys.readouterr().err
    assert main(["forecast", "--input", str(tmp_path / "metrics.csv"), "--checkpoint", str(checkpoint), "--covariates",
                 "load", "--future-covariates", str(tmp_path / "future.csv"), "--horizon", "16", "--output",
                 str(tmp_path / "other.csv")]) == 2  # fmt: skip
    assert "--covariates ['load']: this Toto 1.0 checkpoint has no variate labels" in capsys.readouterr().err
    assert not (tmp_path / "other.csv").exists()


def test_a_short_finetune_scales_the_schedule_so_its_rate_reaches_the_peak(checkpoint, tmp_path, caplog):
    """``--steps 20`` against the preset's 1000 + 200 + 200-step schedule: the phases are scaled to the run
    (14 + 3 + 3), the learning rate the trainer follows reaches the preset's 4e-5 peak and decays to its
    1e-5 floor, and one log line says so. A phase set explicitly is kept as given (no scaling, no line):
    its 1000-step warmup never leaves the floor's neighbourhood in 20 steps."""
    import logging

    from toto_jax.train.finetune import prepare
    from toto_jax.train.optimizer import schedule_from_config

    table = parse_table(make_table(), [])
    model = toto_jax.load(checkpoint)
    with caplog.at_level(logging.INFO, logger="toto_jax.train.finetune"):
        run = prepare(table, model, tmp_path / "short", ["steps=20"])
    optimizer = run.config.optimizer
    assert (optimizer.warmup_steps, optimizer.stable_steps, optimizer.decay_steps) == (14, 3, 3)
    rates = np.array([float(schedule_from_config(optimizer)(step)) for step in range(20)])
    assert rates.max() == pytest.approx(4e-5) and rates[-1] == pytest.approx(1e-5, rel=1e-3)
    assert rates[0] < 1.5e-5 and (np.diff(rates[:14]) > 0).all()
    (line,) = [r.getMessage() for r in caplog.records if "schedule" in r.getMessage()]
    assert line == ("steps=20 is shorter than the preset's 1400-step schedule: scaled to 14 warmup + 3 stable + 3 "
                    "decay steps (set optimizer.warmup_steps etc. to choose)")  # fmt: skip
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="toto_jax.train.finetune"):
        kept = prepare(table, model, tmp_path / "kept", ["steps=20", "optimizer.warmup_steps=1000"]).config.optimizer
    assert (kept.warmup_steps, kept.stable_steps, kept.decay_steps) == (1000, 200, 200) and not caplog.records
    assert max(float(schedule_from_config(kept)(step)) for step in range(20)) < 1.1e-5
    full = prepare(table, model, tmp_path / "full", []).config.optimizer
    assert (full.warmup_steps, full.stable_steps, full.decay_steps) == (1000, 200, 200)


def test_table_series_lead_covariates_by_one_patch():
    """Covariates become the last variates, led one patch; the last patch holds the last value."""
    table = parse_table(make_table(length=40, ids=("a",)), covariates=["load"])
    (series,) = table_series(table, 8)
    load = table.values[0][1]
    np.testing.assert_array_equal(series[1, :32], load[8:])
    np.testing.assert_array_equal(series[1, 32:], np.full(8, load[-1]))
    np.testing.assert_array_equal(series[0], table.values[0][0])
