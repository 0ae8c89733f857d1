"""Validation during training: a held-out loss on the most recent steps of each series, the best model
kept, and early stopping.

The validation windows end at each series' last step and score only the steps of its held-out region
(their contexts reach back into the training region, as a forecast would). Every ``every`` steps the
loss (the training objective, over the scored points) is logged to ``validation.jsonl``; an improvement
writes the model to ``WORKDIR/best`` (a native checkpoint, what ``toto_jax.load(WORKDIR)`` then returns),
and ``patience`` passes without one stop the run. A resumed run re-reads the records up to its
checkpoint's step, so best loss and patience continue where they were.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

BEST_DIRECTORY = "best"
RECORDS = "validation.jsonl"


def validation_windows(series: list[np.ndarray], held_out: int, context_length: int, patch_size: int,
                       max_windows: int) -> dict[str, np.ndarray]:  # fmt: skip
    """Windows [n, variate, context + patch] ending at each series' end, then one context earlier, ... while
    they still reach the last ``held_out`` steps (at most ``max_windows``, the most recent first); a
    window reaching before a series' start is left-padded. ``scored`` marks the held-out steps."""
    length = context_length + patch_size
    windows = []
    for values in series:
        time = values.shape[-1]
        end = time
        while end > time - held_out:
            windows.append((values, end, time - held_out))
            end -= context_length
    windows = sorted(windows, key=lambda w: w[0].shape[-1] - w[1])[:max_windows]
    variates = series[0].shape[0]
    out = {
        "series": np.zeros((len(windows), variates, length), np.float32),
        "padding_mask": np.zeros((len(windows), variates, length), bool),
        "id_mask": np.zeros((len(windows), variates, length), np.int32),
        "scored": np.zeros((len(windows), variates, length), bool),
    }
    for row, (values, end, first_scored) in enumerate(windows):
        start = max(end - length, 0)
        piece = values[:, start:end]
        offset = length - piece.shape[-1]
        observed = np.isfinite(piece)
        out["series"][row, :, offset:] = np.where(observed, piece, 0.0)
        out["padding_mask"][row, :, offset:] = observed
        out["scored"][row, :, offset:] = (np.arange(start, end) >= first_scored)[None]
    return out


class Validation:
    """Validation passes of one run: when they are due, their records, the best model, early stopping."""

    def __init__(self, windows: dict[str, np.ndarray], every: int, patience: int | None, workdir):
        self.windows, self.every, self.patience = windows, every, patience
        self.workdir = Path(workdir)
        self.best_loss, self.best_step, self.passes_since_best, self.stopped = math.inf, 0, 0, False

    def restore(self, step: int, is_writer: bool) -> None:
        """Keep the records of passes up to ``step`` (a resumed run's checkpoint) and continue from them."""
        path = self.workdir / RECORDS
        records = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
        records = [r for r in records if r["step"] <= step]
        if is_writer:
            path.write_text("".join(json.dumps(r) + "\n" for r in records))
        for record in records:
            self._count(record)

    def due(self, done: int, total: int) -> bool:
        return done % self.every == 0 or done == total

    def record(self, step: int, loss: float, save_best, is_writer: bool) -> bool:
        """Log one pass, keep the model if it is the best so far (``save_best(directory)``); True to stop."""
        if not math.isfinite(loss):
            raise FloatingPointError(f"validation loss at step {step} is {loss}: training diverged")
        record = {"step": step, "loss": loss, "best": loss < self.best_loss}
        if record["best"]:
            save_best(self.workdir / BEST_DIRECTORY)
        record["stop"] = not record["best"] and self.patience is not None and self.passes_since_best + 1 >= self.patience
        self._count(record)
        if is_writer:
            with open(self.workdir / RECORDS, "a") as file:
                file.write(json.dumps(record) + "\n")
        log.info("step %d: validation loss %.5f (best %.5f at step %d)", step, loss, self.best_loss, self.best_step)
        return self.stopped

    def _count(self, record: dict) -> None:
        if record["best"]:
            self.best_loss, self.best_step, self.passes_since_best = record["loss"], record["step"], 0
        else:
            self.passes_since_best += 1
        self.stopped = record["stop"]
