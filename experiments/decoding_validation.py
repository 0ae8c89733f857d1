"""Compare decoding variants on a validation set that no training run and no evaluation table uses.

Validation series (read from ../shared/data, not part of the repository):
- ETTh1 / ETTh2 *train splits* (first 12 months, 8640 hourly steps, 7 variates each): the LSF protocol
  tests only on the last 4 months, and ETT is never trained on;
- fresh synthetic series from `toto_jax.data.synthetic` (seed 2026; training used seeds 0-2), half of
  them strictly periodic, at a 5-minute frequency.

    python experiments/decoding_validation.py --variants independent,comonotone

Each variant is ``ForecastOptions()`` (the defaults of the API and every tool) with that sampling mode. The
table in experiments/pretrain_small.md predates ``ForecastOptions``: it was made with the evaluation
defaults of the time, close to ``ForecastOptions(gaps="mask", value_cap=None, sampling=variant)``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from toto_jax.eval import baselines, harness
from toto_jax.forecasting.options import ForecastOptions

ETT = "../shared/data/ett/ETT-small"
ETT_TRAIN_STEPS = 12 * 30 * 24


def validation_series(synthetic_count: int = 24, length: int = 6000) -> list[harness.Series]:
    from toto_jax.data.synthetic import synthetic_group

    series = []
    for name in ("ETTh1", "ETTh2"):
        frame = pd.read_csv(f"{ETT}/{name}.csv")
        for column in frame.columns[1:]:
            values = frame[column].to_numpy(np.float64)[:ETT_TRAIN_STEPS]
            series.append(harness.Series(f"{name}-train:{column}", values, "h"))
    rng = np.random.default_rng(2026)
    for index in range(synthetic_count):
        kind, group = synthetic_group(rng, length, 1, periodic_fraction=0.5)
        series.append(harness.Series(f"synthetic-{index}:{kind}", group[0].astype(np.float64), "5min"))
    return series


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--variants", default="independent,comonotone", help="sampling modes, comma-separated")
    parser.add_argument("--terms", default="medium,long")
    parser.add_argument("--num-samples", type=int, default=100)
    parser.add_argument("--output", default="runs/decoding_validation.csv")
    args = parser.parse_args()

    import toto_jax

    model = toto_jax.load("default")
    forecasters = {"seasonal_naive": baselines.SeasonalNaive()}
    for variant in args.variants.split(","):
        options = ForecastOptions(sampling=variant)  # an unknown mode is refused by name
        forecasters[variant] = harness.TotoForecaster(model, num_samples=args.num_samples, options=options)
    result = harness.evaluate(forecasters, validation_series(), args.terms.split(","), progress=True)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    result.records.to_csv(args.output, index=False)
    print(harness.format_table(harness.summarize(result.records)))


if __name__ == "__main__":
    main()
