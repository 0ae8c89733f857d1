"""Zero-shot vs fine-tuned vs fine-tuned with covariates, on ETT (issue 18's fev-like table).

Data: ETTh1 and ETTh2 from ``../shared/data/ett/ETT-small`` (CC BY-ND), read unmodified. The target is the
oil temperature ``OT``; the six load columns (HUFL ... LULL) are its covariates, known over the horizon.
The standard ETT-hour split: 12 months train, 4 months validation, 4 months test.

- **zero-shot**: the bundled model (``toto_jax.load("default")``), trained on synthetic + NAB + cloud
  monitoring series, never on ETT; it forecasts OT from OT's history.
- **fine-tuned**: ``toto-jax finetune`` from the bundled model on OT over the train + validation months,
  the validation months held out (``validation.held_out`` = 4 months): validation loss, best model, early
  stopping. Otherwise the preset (the reference's fine-tuning config).
- **fine-tuned + covariates**: the same with the six loads as covariates (variate labels added, loads led
  one patch), forecast with their known future values.

Scoring: forecast origins every 96 hours through the test months, horizon 96, the 512 steps before each
origin as context (what fine-tuning trains on, for every row), 100 sample paths, default
``ForecastOptions``. MASE (seasonal naive, season 24, scaled on each window's context) averaged over the
windows; CRPS from the samples, normalised by the summed |target| over all windows.
The fine-tuned weights are trained on ETT and are not shipped: they stay in ``--workdir``.

    python experiments/covariates_ett.py --workdir runs/covariates_ett [--steps N] [--datasets ETTh1 ETTh2]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

import toto_jax
from toto_jax.eval.metrics import crps_from_samples, mase, normalized_crps, seasonal_error
from toto_jax.forecasting.cli import with_future_covariates
from toto_jax.forecasting.tabular import parse_table
from toto_jax.train.finetune import finetune

ETT = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "ett" / "ETT-small"
TRAIN, VALIDATION, TEST = 12 * 30 * 24, 4 * 30 * 24, 4 * 30 * 24
LOADS = ["HUFL", "HULL", "MUFL", "MULL", "LUFL", "LULL"]
HORIZON, CONTEXT, SAMPLES, SEASON = 96, 512, 100, 24


def read_ett(name: str) -> pd.DataFrame:
    return pd.read_csv(ETT / f"{name}.csv")


def fine_tuned(frame: pd.DataFrame, covariates: list[str], workdir: Path, steps: int | None):
    """Fine-tune (or resume) on the train + validation months; the validation months held out."""
    seen = frame.iloc[: TRAIN + VALIDATION][["date", "OT", *covariates]]
    table = parse_table(seen, covariates=covariates)
    overrides = [f"validation.held_out={VALIDATION}", "logging.progress_bar=false"]
    if steps is not None:
        overrides.append(f"steps={steps}")
    started = time.perf_counter()
    _, validation = finetune(table, "default", workdir, overrides)
    print(f"  {workdir.name}: best validation loss {validation.best_loss:.4f} at step {validation.best_step} "
          f"({time.perf_counter() - started:.0f} s)")  # fmt: skip
    return toto_jax.load(workdir)


def score(model, frame: pd.DataFrame, covariates: list[str]) -> dict:
    """Rolling test windows: MASE and normalised CRPS of OT."""
    origins = np.arange(TRAIN + VALIDATION, TRAIN + VALIDATION + TEST - HORIZON + 1, HORIZON)
    columns = ["date", "OT", *covariates]
    contexts = [frame.iloc[o - CONTEXT : o][columns] for o in origins]
    tables = [parse_table(c, covariates=covariates) for c in contexts]
    series = [t.values[0] for t in tables]
    future = None
    if covariates:
        known = np.stack([frame.iloc[o : o + HORIZON][covariates].to_numpy().T for o in origins])
        led = [with_future_covariates(model, t, k[None]) for t, k in zip(tables, known)]
        series, future = [s[0] for s, _ in led], np.concatenate([f for _, f in led])
    result = toto_jax.forecast(model, series, HORIZON, num_samples=SAMPLES, future_exogenous_variables=future)
    target = np.stack([frame["OT"].to_numpy()[o : o + HORIZON] for o in origins])
    samples = result.samples[:, 0]  # [window, horizon, sample]
    scores = [mase(target[w], result.median[w, 0], seasonal_error(s[0], SEASON)) for w, s in enumerate(series)]
    crps = crps_from_samples(target, samples)
    return {"MASE": float(np.mean(scores)), "CRPS": normalized_crps(target, crps), "windows": len(origins)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", type=Path, required=True, help="fine-tuning run directories (resumable)")
    parser.add_argument("--steps", type=int, default=None, help="fine-tuning steps (default: the preset's 1400)")
    parser.add_argument("--datasets", nargs="+", default=["ETTh1", "ETTh2"])
    args = parser.parse_args()
    rows = {}
    for name in args.datasets:
        frame = read_ett(name)
        print(name)
        models = {
            "zero-shot": (toto_jax.load("default"), []),
            "fine-tuned": (fine_tuned(frame, [], args.workdir / f"{name}_target", args.steps), []),
            "fine-tuned + covariates": (fine_tuned(frame, LOADS, args.workdir / f"{name}_covariates", args.steps),
                                        LOADS),  # fmt: skip
        }
        for row, (model, covariates) in models.items():
            rows[f"{name} {row}"] = score(model, frame, covariates)
            print(f"  {row:<24} MASE {rows[f'{name} {row}']['MASE']:.3f}  CRPS {rows[f'{name} {row}']['CRPS']:.4f}")
    (args.workdir / "results.json").write_text(json.dumps(rows, indent=2))
    print("\n| dataset | model | MASE | CRPS |\n|---|---|---|---|")
    for key, values in rows.items():
        dataset, row = key.split(" ", 1)
        print(f"| {dataset} | {row} | {values['MASE']:.3f} | {values['CRPS']:.4f} |")


if __name__ == "__main__":
    main()
