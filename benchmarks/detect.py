"""Anomaly-detection throughput of ``toto_jax.detect``: scored points per second (nothing to compare against:
neither reference ships a detector).

    python benchmarks/detect.py [--model default|toto-open-base-1.0] [--series 16] [--length 16384] [--repeats 3]
    JAX_PLATFORMS=cuda python benchmarks/detect.py ...   # every local GPU, as detect uses them

``--model default`` is the bundled small model (6.9M parameters); ``toto-open-base-1.0`` is the published
151M shape with random weights (the same compute). Series are daily sine waves with noise, one variate each,
scored with the default ``DetectOptions`` and ``ForecastOptions`` (context 2048, stride 1024: every point is
predicted twice). Prints the load average before and after, the first call (compilation included) and the
warm median of the whole ``detect`` call (windowing, the jitted surprise pass, the adaptive score) as points/s.
"""

from __future__ import annotations

import argparse
import statistics
import time

import machine_load  # benchmarks/, this script's own directory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="default", help="'default' (bundled) or 'toto-open-base-1.0' (random)")
    parser.add_argument("--series", type=int, default=16)
    parser.add_argument("--length", type=int, default=16384)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    before = machine_load.load_average()

    import jax
    import numpy as np
    from flax import nnx

    import toto_jax
    from toto_jax.models import build_model

    if args.model == "default":
        model = toto_jax.load("default")
    else:
        model = build_model(toto_jax.preset(args.model), rngs=nnx.Rngs(0))
    rng = np.random.default_rng(0)
    t = np.arange(args.length)
    series = 50 + 10 * np.sin(2 * np.pi * t / 288) + rng.normal(0, 1, (args.series, 1, args.length))
    points = series.size

    began = time.perf_counter()
    toto_jax.detect(model, series)
    first = time.perf_counter() - began
    times = []
    for _ in range(args.repeats):
        began = time.perf_counter()
        toto_jax.detect(model, series)
        times.append(time.perf_counter() - began)
    warm = statistics.median(times)
    print(f"{args.model}: {args.series} series x {args.length} steps on {jax.devices()[0].platform} "
          f"({len(jax.local_devices())} device(s))")
    print(f"first call {first:.2f} s (compilation included); warm median {warm:.3f} s = {points / warm:,.0f} points/s")
    machine_load.report(before)


if __name__ == "__main__":
    main()
