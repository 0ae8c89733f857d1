"""The small Toto 2.0 trained here (issue 19) against the shipped small Toto 1.0: validation set first, then
the held-out series.

    python experiments/toto2_vs_toto1.py validation toto1 [--checkpoint toto1-small]
    python experiments/toto2_vs_toto1.py validation toto2 --checkpoint RUN_OR_CHECKPOINT [--blocks none,128]
    python experiments/toto2_vs_toto1.py heldout toto1
    python experiments/toto2_vs_toto1.py heldout toto2 --checkpoint RUN_OR_CHECKPOINT --blocks STEPS|none

Each call scores one model's variants and seasonal naive, keeps their records in OUTPUT/STAGE_MODEL.csv and
prints the table of every record of that stage so far (the models run apart, one at a time, on this 2-core
machine).

Series (read from ../shared/data, not part of the repository):
- validation: experiments/decoding_validation.py's set, which no training run and no reported evaluation
  uses (ETTh1/ETTh2 train splits; 24 fresh synthetic series, generator seed 2026);
- held-out: the 19 NAB / cloud-monitoring series of toto_jax/eval/heldout.py, which neither model saw.

GIFT-Eval terms short / medium / long, metrics as ratios to seasonal naive (geometric means over series).
Toto 1.0 forecasts with ``ForecastOptions()`` and 100 comonotone sample paths, as `toto-jax eval` does.
Toto 2.0 forecasts its nine quantiles with ``ForecastOptions()`` from the float16 export that would ship
(``python -m toto_jax.eval.ship RUN DIR``, whose ``max_context`` is the context the run trained on); on the
validation set both in one pass (toto-2's default) and in blocks as long as its longest training span,
and only the better of the two, chosen there, runs on the held-out series.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # decoding_validation, beside this file

import pandas as pd  # noqa: E402

from toto_jax.eval import baselines, harness  # noqa: E402
from toto_jax.eval.heldout import heldout_files  # noqa: E402
from toto_jax.forecasting.options import ForecastOptions  # noqa: E402

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def forecasters(family: str, checkpoint: str, blocks: list[int | None], num_samples: int) -> dict:
    import toto_jax

    model = toto_jax.load(checkpoint)
    out = {"seasonal_naive": baselines.SeasonalNaive()}
    if family == "toto1":
        out["toto1-small"] = harness.TotoForecaster(model, num_samples=num_samples)
        return out
    for block in blocks:
        name = "toto2-small" + ("" if block is None else f"-block{block}")
        out[name] = harness.TotoForecaster(model, options=ForecastOptions(decode_block_size=block))
    return out


def _blocks(text: str) -> list[int | None]:
    return [None if part == "none" else int(part) for part in text.split(",")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("stage", choices=("validation", "heldout"))
    parser.add_argument("family", choices=("toto1", "toto2"))
    parser.add_argument("--checkpoint", help="default: the bundled model of the family")
    parser.add_argument("--blocks", type=_blocks, default=[None, 128],
                        help="Toto 2.0 decode block sizes in steps, 'none' = one pass (default none,128)")  # fmt: skip
    parser.add_argument("--terms", default="short,medium,long")
    parser.add_argument("--num-samples", type=int, default=100)
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--output", type=Path, default=Path("runs/toto2_vs_toto1"))
    args = parser.parse_args()

    if args.stage == "validation":
        from decoding_validation import validation_series

        series = validation_series()
    else:
        series = harness.read_series(heldout_files(args.data))
    checkpoint = args.checkpoint or f"{args.family}-small"
    models = forecasters(args.family, checkpoint, args.blocks, args.num_samples)
    result = harness.evaluate(models, series, args.terms.split(","), progress=True)
    print(pd.Series(result.seconds, name="seconds forecasting").round(1).to_string())
    args.output.mkdir(parents=True, exist_ok=True)
    result.records.to_csv(args.output / f"{args.stage}_{args.family}.csv", index=False)
    records = pd.concat([pd.read_csv(p) for p in sorted(args.output.glob(f"{args.stage}_toto*.csv"))])
    records = records.drop_duplicates(["term", "forecaster", "series"])  # seasonal naive is in every file
    print(harness.format_table(harness.summarize(records)))


if __name__ == "__main__":
    main()
