"""Forecast latency of toto-jax against the PyTorch reference, same device, same (random) weights.

    python benchmarks/forecast.py [--repeats 3] [--reference-repeats 2] [--samples 64]
    JAX_PLATFORMS=cuda python benchmarks/forecast.py ...   # both sides on the first GPU

Shape: Toto-Open-Base-1.0 (151M parameters), 7 variates, context 512, horizon 96, (a) the mean path,
(b) ``--samples`` sample paths, (c) the same with comonotone sampling (the reference has only
independent draws, so (c) is compared with its (b)), (d) the mean path of the model loaded with
``dtype="bfloat16"`` (against the reference's float32 mean path, with the largest difference from (a)).
A random reference model is saved as a checkpoint and each side runs in its own subprocess (so peak memory
is per side) on the same checkpoint: the reference through ``TotoForecaster.forecast`` with its KV cache and
all samples in one batch (its fastest setting), this project through ``toto_jax.forecast`` with
``ForecastOptions.reference()``. JAX_PLATFORMS (default cpu) picks the device of both sides: on a GPU the
reference runs on CUDA with torch's "high" (TF32) float32 matmuls, as JAX multiplies float32 there by
default. Prints the load average before and after (a ratio measured above the core count is not a result),
warm median times, compile time (first call minus the warm median), peak resident memory (and on a GPU
peak device memory) and the reference / toto-jax ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import machine_load  # benchmarks/, this script's own directory
from devices import on_gpu, reference_device

VARIATES, CONTEXT, HORIZON = 7, 512, 96


def make_checkpoint(directory: Path, seed: int = 0) -> None:
    import safetensors.torch
    import torch
    from toto.model.toto import Toto as ReferenceToto

    from toto_jax.config import TOTO_OPEN_BASE_1_0

    config = TOTO_OPEN_BASE_1_0.to_reference_dict()
    torch.manual_seed(seed)
    model = ReferenceToto(**config)
    safetensors.torch.save_file(model.state_dict(), str(directory / "model.safetensors"))
    (directory / "config.json").write_text(json.dumps(config))


def inputs(seed: int = 0):
    import numpy as np

    rng = np.random.default_rng(seed)
    t = np.arange(CONTEXT)
    level = rng.uniform(-10, 10, (1, VARIATES, 1))
    return (level + 3 * np.sin(2 * np.pi * t / 48) + rng.normal(0, 0.5, (1, VARIATES, CONTEXT))).astype(np.float32)


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux reports KiB


def timed(call, repeats: int) -> dict:
    """First call and warm median; ``call`` returns only once the device has finished."""
    start = time.perf_counter()
    call()
    first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    warm = statistics.median(times)
    return {"first_s": first, "warm_s": warm, "compile_s": max(first - warm, 0.0)}


def run_jax(checkpoint: Path, samples: int, repeats: int) -> dict:
    import jax
    import numpy as np

    import toto_jax

    model = toto_jax.load(checkpoint)
    series = inputs()
    base = peak_rss_mib()
    out = {}
    modes = (("mean", None, "independent"), ("samples", samples, "independent"), ("comonotone", samples, "comonotone"))
    for mode, num_samples, sampling in modes:
        result = {}
        # The reference's semantics (no preprocessing), so both sides do the same work.
        options = toto_jax.ForecastOptions.reference(sampling=sampling)

        def call():
            result["forecast"] = toto_jax.forecast(model, series, HORIZON, num_samples=num_samples, seed=0,
                                                   options=options)  # fmt: skip

        out[mode] = timed(call, repeats)
        assert np.all(np.isfinite(result["forecast"].mean))
        if mode == "mean":
            mean = result["forecast"].mean
    out["peak_rss_mib"] = peak_rss_mib()
    out["rss_before_mib"] = base
    if on_gpu():
        out["device_peak_mib"] = jax.devices()[0].memory_stats()["peak_bytes_in_use"] / 2**20
    # bfloat16 compute (load(dtype=)): decoding stores its weights in bfloat16; last, so the peaks above are float32's
    half = toto_jax.load(checkpoint, dtype="bfloat16")
    options = toto_jax.ForecastOptions.reference()

    def mean_path():
        result["half"] = toto_jax.forecast(half, series, HORIZON, num_samples=None, options=options)

    out["mean_bfloat16"] = timed(mean_path, repeats)
    out["mean_bfloat16"]["relative_difference"] = float(np.max(np.abs(result["half"].mean - mean)) / np.max(np.abs(mean)))
    return out


def run_reference(checkpoint: Path, samples: int, repeats: int) -> dict:
    import warnings

    import safetensors.torch
    import torch
    from toto.data.util.dataset import MaskedTimeseries
    from toto.inference.forecaster import TotoForecaster
    from toto.model.toto import Toto as ReferenceToto

    config = json.loads((checkpoint / "config.json").read_text())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = ReferenceToto(**config)
    model.load_state_dict(safetensors.torch.load_file(str(checkpoint / "model.safetensors")))
    device = reference_device()
    model.eval().to(device)
    forecaster = TotoForecaster(model.model)
    series = torch.tensor(inputs())
    batch = MaskedTimeseries(
        series=series,
        padding_mask=torch.ones_like(series, dtype=torch.bool),
        id_mask=torch.zeros_like(series, dtype=torch.int),
        timestamp_seconds=torch.zeros_like(series, dtype=torch.int64),
        time_interval_seconds=torch.ones(series.shape[:2], dtype=torch.int64),
    ).to(device)
    base = peak_rss_mib()
    out = {}
    for mode, num_samples in (("mean", None), ("samples", samples)):

        def call():
            with torch.inference_mode():
                forecaster.forecast(
                    batch, HORIZON, num_samples=num_samples, samples_per_batch=num_samples or 1, use_kv_cache=True
                )
            if device.type == "cuda":
                torch.cuda.synchronize()

        out[mode] = timed(call, repeats)
    out["peak_rss_mib"] = peak_rss_mib()
    out["rss_before_mib"] = base
    if device.type == "cuda":
        out["device_peak_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3, help="warm repeats of toto-jax")
    parser.add_argument("--reference-repeats", type=int, default=2, help="warm repeats of the reference")
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--side", choices=("jax", "reference"), help=argparse.SUPPRESS)
    parser.add_argument("--checkpoint", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.side == "jax":
        print(json.dumps(run_jax(args.checkpoint, args.samples, args.repeats)))
        return
    if args.side == "reference":
        print(json.dumps(run_reference(args.checkpoint, args.samples, args.reference_repeats)))
        return

    load_before = machine_load.load_average()
    with tempfile.TemporaryDirectory() as directory:
        checkpoint = Path(directory)
        make_checkpoint(checkpoint)
        results = {}
        for side in ("reference", "jax"):
            command = [sys.executable, __file__, "--side", side, "--checkpoint", str(checkpoint),
                       "--samples", str(args.samples), "--repeats", str(args.repeats),
                       "--reference-repeats", str(args.reference_repeats)]  # fmt: skip
            env = dict(os.environ, JAX_PLATFORMS=os.environ.get("JAX_PLATFORMS", "cpu"))
            completed = subprocess.run(command, capture_output=True, text=True, env=env)
            if completed.returncode:
                sys.exit(f"{side} side failed:\n{completed.stderr}")
            results[side] = json.loads(completed.stdout.strip().splitlines()[-1])

    device = "GPU (JAX_PLATFORMS=" + os.environ["JAX_PLATFORMS"] + ")" if on_gpu() else f"CPU ({os.cpu_count()} cores)"
    print(f"Toto-Open-Base-1.0 shape (random weights), {VARIATES} variates, context {CONTEXT}, horizon {HORIZON}, "
          f"{device}")  # fmt: skip
    print(f"{'mode':<16}{'reference s':>12}{'toto-jax s':>12}{'jax compile s':>15}{'speed-up':>10}")
    # The reference has only independent draws; comonotone sampling is compared with them.
    labels = (("mean", "mean", "mean path"), ("samples", "samples", f"{args.samples} samples"),
              ("samples", "comonotone", f"{args.samples} comonotone"))  # fmt: skip
    for reference_mode, mode, label in labels:
        reference, jax_side = results["reference"][reference_mode], results["jax"][mode]
        ratio = reference["warm_s"] / jax_side["warm_s"]
        print(f"{label:<16}{reference['warm_s']:>12.3f}{jax_side['warm_s']:>12.3f}{jax_side['compile_s']:>15.2f}"
              f"{ratio:>9.1f}x")  # fmt: skip
    half, reference = results["jax"]["mean_bfloat16"], results["reference"]["mean"]
    print(f"{'mean, bfloat16':<16}{reference['warm_s']:>12.3f}{half['warm_s']:>12.3f}{half['compile_s']:>15.2f}"
          f"{reference['warm_s'] / half['warm_s']:>9.1f}x  (toto-jax load(dtype='bfloat16') against the float32 "
          f"reference; max |difference| / max |mean| {half['relative_difference']:.1e})")  # fmt: skip
    for side in ("reference", "jax"):
        r = results[side]
        device_peak = f", peak device memory {r['device_peak_mib']:.0f} MiB" if "device_peak_mib" in r else ""
        print(f"peak RSS {side:<10}{r['peak_rss_mib']:>8.0f} MiB "
              f"(after loading the model: {r['rss_before_mib']:.0f} MiB){device_peak}")
    machine_load.report(load_before)


if __name__ == "__main__":
    main()
