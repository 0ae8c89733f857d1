"""Fine-tuning a Toto 1.0 checkpoint on a user's own table (``toto-jax finetune``).

The table's series (wide: one multivariate series; long: one per ``unique_id``) are split in time: the
last ``validation.held_out`` steps of every series are held out for validation, the rest is the training
data (random windows, the pretraining pipeline's). Covariate columns become the last variates of every
series, led one patch (``forecasting.covariates.lead_covariates``, what ``toto-jax forecast --covariates``
does too), are excluded from the loss and get variate labels (added, randomly initialised, when the
checkpoint has none). The preset follows the reference's fine-tuning config: learning rate 4e-5 (1e-5 at
the ends of the warmup-stable-decay schedule), 1000 warmup, 200 stable and 200 decay steps, batch 16,
a context of 8 patches; ``key=value`` overrides change any of it. A run of fewer ``steps`` than the
schedule's 1400 gets the schedule scaled to its length (unless a phase is set explicitly), so its learning
rate still reaches the peak; one log line says so. The run directory resumes like a
training run, keeps its best model by validation loss, and is what ``toto-jax forecast --checkpoint``
and ``toto_jax.load`` read.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Sequence

import numpy as np
from flax import nnx

from ..config import ConfigError
from ..data.sources import ArraySource
from ..forecasting.covariates import lead_series_covariates
from .config import TrainConfig, apply_overrides
from .validation import Validation, validation_windows

log = logging.getLogger(__name__)
CONTEXT_PATCHES = 8
SCHEDULE_PHASES = ("warmup_steps", "stable_steps", "decay_steps")
PRESET = {
    "steps": 1400,
    "optimizer": {"learning_rate": 4e-5, "min_learning_rate": 1e-5, "warmup_steps": 1000, "stable_steps": 200,
                  "decay_steps": 200},  # fmt: skip
    "checkpoint": {"every": 100, "keep_last": 2},
    "logging": {"every": 10},
}


@dataclasses.dataclass
class FinetuneRun:
    config: TrainConfig
    validation: Validation
    train_series: list[np.ndarray]  # [variate, time] float32, the training region


def table_series(table, patch_size: int) -> list[np.ndarray]:
    """The table's series as [variate, time] arrays, covariates last and led one patch."""
    count = len(table.covariates)
    if not count:
        return [np.asarray(values) for values in table.values]
    return [lead_series_covariates(values, count, patch_size)[0] for values in table.values]


def scale_schedule(values: dict, overrides: Sequence[str]) -> str | None:
    """Scale the preset's warmup-stable-decay phases to a shorter run, in place, unless an override sets a phase.

    With the preset's 1000 warmup steps a 20-step run would never leave the warmup (its learning rate near
    the 1e-5 floor); scaled, each phase keeps its share of the run. Returns the line that says so (None
    when nothing changed)."""
    optimizer = values["optimizer"]
    total = sum(optimizer[phase] for phase in SCHEDULE_PHASES)
    named = {override.split("=", 1)[0].strip() for override in overrides}
    if values["steps"] >= total or any(f"optimizer.{phase}" in named for phase in SCHEDULE_PHASES):
        return None
    steps = values["steps"]
    warmup = max(1, round(optimizer["warmup_steps"] * steps / total)) if steps > 1 else 0
    stable = min(round(optimizer["stable_steps"] * steps / total), steps - warmup)
    optimizer.update(warmup_steps=warmup, stable_steps=stable, decay_steps=steps - warmup - stable)
    return (f"steps={steps} is shorter than the preset's {total}-step schedule: scaled to {warmup} warmup + {stable} "
            f"stable + {steps - warmup - stable} decay steps (set optimizer.warmup_steps etc. to choose)")


def add_variate_labels(model, seed: int) -> None:
    """Give ``model`` (randomly initialised) variate labels, in place; its other weights stay as they are."""
    from ..models.toto1.fusion import VariateLabels

    model.config = model.config.replace(variate_labels=True)
    model.variate_labels = nnx.data(VariateLabels(model.config.embed_dim, rngs=nnx.Rngs(seed)))


def prepare(table, model, workdir, overrides: Sequence[str] = ()) -> FinetuneRun:
    """The training config, validation windows and training series of a fine-tuning run; checks the table."""
    from ..models import is_toto2

    if is_toto2(model):
        raise ConfigError("toto-jax finetune fine-tunes Toto 1.0 checkpoints; this one is Toto 2.0")
    patch = model.config.patch_size
    series = table_series(table, patch)
    variates = series[0].shape[0]
    covariates = len(table.covariates)
    values = {
        **PRESET,
        "model": model.config.replace(variate_labels=model.config.variate_labels or bool(table.covariates)).to_dict(),
        "data": {"context_length": CONTEXT_PATCHES * patch, "patch_size": patch, "num_variates": variates,
                 "batch_size": 16, "num_workers": 0, "sources": [{"type": "arrays", "name": "table"}],
                 # a user's table may hold one series: every host reads all of it and keeps its rows of the batch
                 "host_split": "batch"},  # fmt: skip
        "num_exogenous_variables": covariates,
    }
    values = apply_overrides(values, overrides)
    scaled = scale_schedule(values, overrides)
    if scaled is not None:
        log.info(scaled)
    config = TrainConfig.from_dict(values)
    shortest = min(s.shape[-1] for s in series)
    held_out = config.validation.held_out or max(patch, shortest // 10)
    names = table.names if table.layout == "long" else ["the table"]
    for name, values in zip(names, series):
        if values.shape[-1] - held_out < patch + 1:
            raise ConfigError(f"series {name!r} has {values.shape[-1]} steps: too short to hold out the last "
                              f"{held_out} for validation and train on the rest; lower validation.held_out")  # fmt: skip
        empty = np.flatnonzero(np.isnan(values[:, : values.shape[-1] - held_out]).all(axis=-1))
        if empty.size:
            columns = (table.names if table.layout == "wide" else ["y"]) + table.covariates
            raise ConfigError(f"series {name!r}: column {columns[int(empty[0])]!r} has no observed value before the "
                              f"last {held_out} steps (held out for validation)")  # fmt: skip
    windows = validation_windows(series, held_out, config.data.context_length, patch, config.validation.max_windows)
    from .checkpointing import run_path

    validation = Validation(windows, config.validation.every, config.validation.patience, run_path(workdir))
    train_series = [values[:, : values.shape[-1] - held_out].astype(np.float32) for values in series]
    return FinetuneRun(config, validation, train_series)


def finetune(table, init_from: str | Path, workdir, overrides: Sequence[str] = ()):
    """Fine-tune the checkpoint ``init_from`` (published, native, a run directory or "default") on ``table``
    (a ``forecasting.tabular.SeriesTable``); returns the final ``TrainState`` and the ``Validation``."""
    from ..checkpoint import load
    from .trainer import train

    model = load(init_from)
    run = prepare(table, model, workdir, overrides)
    if run.config.num_exogenous_variables and not model.config.variate_labels:
        add_variate_labels(model, run.config.seed)
    state = train(run.config, workdir, init_from=model, source_objects=[ArraySource(run.train_series, "table")],
                  validation=run.validation)  # fmt: skip
    return state, run.validation
