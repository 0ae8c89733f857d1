"""What the probabilistic default costs: the default forecast before (the mean path) and after (64 sample paths).

    python benchmarks/forecast_default.py [--repeats 5] [--cli-repeats 3] [--horizon 96]

The bundled model (toto1-small) on the bundled demo series (``toto_jax/assets/sample_nab_cpu.csv``), the
``make demo`` forecast, both modes in one run on the same machine:

- API, warm: ``toto_jax.forecast(model, series, horizon, num_samples=None)`` (the mean path, the default
  before issue 32) against ``toto_jax.forecast(model, series, horizon)`` (``num_samples="auto"``: 64 paths),
  median of ``--repeats`` calls after a first (compiling) call, whose extra time is reported as compile time.
- CLI, end to end: ``toto-jax forecast --input ... --horizon H --output ... --plot ...`` with ``--samples 0``
  (the mean path) and without (the default), each a fresh process (start-up, model load, compile, forecast,
  CSV and PNG), median wall time of ``--cli-repeats`` runs.

Prints the load average before and after; a measurement above the core count is not a result.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
import machine_load  # noqa: E402
from forecast import timed  # noqa: E402

SAMPLE = Path(__file__).resolve().parents[1] / "toto_jax" / "assets" / "sample_nab_cpu.csv"


def api_times(horizon: int, repeats: int) -> dict:
    import toto_jax

    model = toto_jax.load("default")
    series = pd.read_csv(SAMPLE)  # read as the CLI reads the file
    options = toto_jax.ForecastOptions(progress=False)
    modes = {"mean path (num_samples=None)": None, "default (64 sample paths)": "auto"}
    return {name: timed(lambda: toto_jax.forecast(model, series, horizon, samples, options=options), repeats)
            for name, samples in modes.items()}  # fmt: skip


def cli_seconds(horizon: int, repeats: int, extra: list[str]) -> float:
    times = []
    with tempfile.TemporaryDirectory() as directory:
        for _ in range(repeats):
            command = [sys.executable, "-m", "toto_jax.cli", "forecast", "--input", str(SAMPLE), "--horizon",
                       str(horizon), "--output", f"{directory}/f.csv", "--plot", f"{directory}/f.png", "--overwrite",
                       *extra]  # fmt: skip
            began = time.perf_counter()
            subprocess.run(command, check=True, capture_output=True)
            times.append(time.perf_counter() - began)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--cli-repeats", type=int, default=3)
    parser.add_argument("--horizon", type=int, default=96)
    args = parser.parse_args()
    before = machine_load.load_average()
    length = len(pd.read_csv(SAMPLE))
    print(f"bundled model, {SAMPLE.name} ({length} steps), horizon {args.horizon}")
    print(f"{'API (warm)':<32} {'warm median':>12} {'compile':>9}")
    for name, result in api_times(args.horizon, args.repeats).items():
        print(f"{name:<32} {result['warm_s']:>11.3f}s {result['compile_s']:>8.1f}s")
    print(f"{'CLI (fresh process, CSV + PNG)':<32} {'median':>12}")
    for name, extra in (("--samples 0 (mean path)", ["--samples", "0"]), ("default (64 sample paths)", [])):
        print(f"{name:<32} {cli_seconds(args.horizon, args.cli_repeats, extra):>11.2f}s")
    machine_load.report(before)


if __name__ == "__main__":
    main()
