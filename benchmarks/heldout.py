"""Issue-level figures of the shipped model, printed from the tools a user runs (no logic of its own).

    python benchmarks/heldout.py [--data ../shared/data] [--lsf]

Reads ``../shared/data`` (NAB, cloud monitoring; ETT with ``--lsf``), writes only to a temporary directory:

1. the held-out evaluation: links the 19 held-out series (``toto_jax.eval.heldout``), runs
   ``toto-jax eval`` with its defaults (bundled model, ``ForecastOptions()``, seasonal naive + AutoETS) and
   prints its table and, per horizon, whether the MASE and CRPS ratios to seasonal naive are below 1
   (about 3 minutes);
2. the README's main command: times ``toto-jax forecast`` on the bundled sample series with the
   arguments ``make demo`` uses (CSV + PNG), against its 120-second target (environment already built);
3. with ``--lsf``: the ETTh1/ETTh2 LSF protocol as in experiments/pretrain_small.md (about 5 minutes).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
TOTO_JAX = [sys.executable, "-m", "toto_jax.cli"]
# The arguments of the Makefile's demo target.
DEMO = ["forecast", "--input", str(ROOT / "toto_jax/assets/sample_nab_cpu.csv"), "--horizon", "96"]


def run(command: list[str]) -> None:
    subprocess.run(command, check=True, cwd=ROOT)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--lsf", action="store_true", help="also run the ETTh1/ETTh2 LSF protocol")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as directory:
        work = Path(directory)
        run([sys.executable, "-m", "toto_jax.eval.heldout", "link-heldout", str(args.data), str(work / "heldout")])
        run(TOTO_JAX + ["eval", str(work / "heldout"), "--output-dir", str(work / "eval")])
        summary = pd.read_csv(work / "eval" / "summary.csv")
        toto = summary[summary["forecaster"] == "toto"]
        for row in toto.itertuples():
            below = row.MASE_ratio < 1 and row.CRPS_ratio < 1
            print(f"{row.term}: MASE {row.MASE_ratio:.3f}, CRPS {row.CRPS_ratio:.3f} -> "
                  f"{'both below' if below else 'NOT both below'} seasonal naive")  # fmt: skip

        began = time.perf_counter()
        run(TOTO_JAX + DEMO + ["--output", str(work / "forecast.csv"), "--plot", str(work / "forecast.png")])
        seconds = time.perf_counter() - began
        print(f"README main command (forecast + CSV + PNG): {seconds:.1f} s (target < 120 s: "
              f"{'met' if seconds < 120 else 'MISSED'})")  # fmt: skip

        if args.lsf:
            ett = args.data / "ett" / "ETT-small"
            run(TOTO_JAX + ["eval", str(ett / "ETTh1.csv"), str(ett / "ETTh2.csv"), "--protocol", "lsf",
                            "--num-samples", "32", "--stride", "96", "--output-dir", str(work / "lsf")])  # fmt: skip
            averages = pd.read_csv(work / "lsf" / "lsf.csv").groupby("dataset")[["MAE", "MSE"]].mean()
            print("LSF averages over horizons 96-720:\n" + averages.round(3).to_string())


if __name__ == "__main__":
    main()
