"""How many sample paths a default Toto 1.0 forecast draws: CRPS and time against the sample count.

    python experiments/default_samples.py [--series 8] [--horizon 96] [--counts 16,32,64,128,256] [--windows 2]

The bundled model forecasts the last ``--windows`` windows of ``--horizon`` steps of the first ``--series``
held-out series (``toto_jax.eval.heldout``, the bundled demo series first; 2048-step contexts) with the
default ``ForecastOptions()``, all series in one call. For each count: the CRPS of the sample paths against
the truth, in units of the context's mean absolute step change, averaged over windows (mean over seeds 0-2),
the spread of that CRPS over the seeds (the sampling noise a user sees between runs), and the warm median
time of one call. Reads ../shared/data.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import numpy as np

import toto_jax
from toto_jax.eval import harness
from toto_jax.eval.heldout import HELDOUT
from toto_jax.eval.metrics import crps_from_samples

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--series", type=int, default=8)
    parser.add_argument("--horizon", type=int, default=96)
    parser.add_argument("--windows", type=int, default=2)
    parser.add_argument("--context", type=int, default=2048)
    parser.add_argument("--counts", default="16,32,64,128,256")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--data", type=Path, default=DATA)
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.2f} ({os.cpu_count()} cores)")
    series = harness.read_series([str(args.data / p) for p in HELDOUT[: args.series]])
    contexts, targets = [], []
    for item in series:
        for w in range(args.windows, 0, -1):
            end = len(item.values) - w * args.horizon
            contexts.append(item.values[max(0, end - args.context) : end][None].astype(np.float64))
            targets.append(item.values[end : end + args.horizon])
    # CRPS in units of each context's mean absolute step change: comparable across series of any scale.
    scales = [max(float(np.nanmean(np.abs(np.diff(c[0])))), 1e-9) for c in contexts]
    model = toto_jax.load("default")
    options = toto_jax.ForecastOptions(progress=False)
    print(f"{len(contexts)} windows ({len(series)} series x {args.windows}), horizon {args.horizon}")
    print("samples  CRPS (mean of 3 seeds)  CRPS spread over seeds  warm seconds per call")
    for count in (int(c) for c in args.counts.split(",")):
        scores = []
        for seed in range(3):
            fc = toto_jax.forecast(model, contexts, args.horizon, count, seed=seed, options=options)
            crps = [np.nanmean(crps_from_samples(t, fc.samples[i, 0])) / scale
                    for i, (t, scale) in enumerate(zip(targets, scales))]  # fmt: skip
            scores.append(float(np.mean(crps)))
        times = []
        for _ in range(args.repeats):
            began = time.perf_counter()
            toto_jax.forecast(model, contexts, args.horizon, count, seed=9, options=options)
            times.append(time.perf_counter() - began)
        print(f"{count:7d}  {np.mean(scores):.4f}  {np.ptp(scores):.4f}  {statistics.median(times):.2f}")
    print(f"load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
