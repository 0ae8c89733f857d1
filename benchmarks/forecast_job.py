"""Dataset forecast jobs at fleet scale: peak memory and series/s of ``toto-jax forecast --output DIR/`` against
the number of series, and against the reference's ``TotoForecaster`` over the same series in batches.

    python benchmarks/forecast_job.py [--sizes 4000,40000,200000] [--skip-reference]

Data: long Parquet (``unique_id, ds, y``; 1M-row row groups, as pyarrow writes them), series of 512 5-minute
steps (random walks at levels from 1 to 1e6), generated into a temporary directory. Model: the bundled default
(``toto1-small``), horizon 96.

1. **Scale.** One job per size, each in its own process (``toto_jax.forecasting.job.forecast_dataset``, default
   options, mean path): wall time, series/s of the job (reading, checking, forecasting and writing included) and
   the process's peak resident memory. Memory should not grow with the number of series.
2. **Against the reference**, mean path and ``--samples`` paths, on the first ``--reference-series`` series:
   each side at its best batch size among ``--batches``. toto-jax runs the whole job (Parquet in, Parquet out)
   with ``ForecastOptions.reference()`` (the reference's semantics, so both do the same model work); the
   reference gets the series already in memory as tensors and only forecasts (``TotoForecaster.forecast``
   with its KV cache, all sample paths of a series in one batch): that favours the reference. Both sides are
   warm (toto-jax runs the same job once before, so its programs are compiled; the scale runs include compiling).

Prints the load average before and after: a ratio measured above the core count is not a result.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import machine_load  # benchmarks/, this script's own directory

LENGTH, HORIZON, CHUNK = 512, 96, 2000


def make_dataset(path: Path, series: int) -> None:
    import numpy as np
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    stamps = pd.date_range("2026-01-01", periods=LENGTH, freq="5min").to_numpy()
    writer = None
    for first in range(0, series, CHUNK):
        count = min(CHUNK, series - first)
        rng = np.random.default_rng(first)
        level = 10.0 ** rng.uniform(0, 6, (count, 1))
        values = level * (1 + 0.01 * np.cumsum(rng.normal(0, 1, (count, LENGTH)), axis=1))
        ids = np.repeat(np.array([f"host-{i:07d}" for i in range(first, first + count)]), LENGTH)
        table = pa.table({"unique_id": ids, "ds": np.tile(stamps, count), "y": values.reshape(-1)})
        if writer is None:
            writer = pq.ParquetWriter(path, table.schema)
        writer.write_table(table, row_group_size=1 << 20)
    writer.close()


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux reports KiB


def run_job(source: str, output: str, samples: int | None, reference_options: bool, series_per_batch: int,
            limit: int | None) -> dict:  # fmt: skip
    import toto_jax
    from toto_jax.forecasting.job import forecast_dataset

    if limit is not None:  # the first ``limit`` series, as their own file
        import pyarrow.parquet as pq

        table = pq.read_table(source)
        limited = str(Path(output).parent / "limited.parquet")
        pq.write_table(table.slice(0, limit * LENGTH), limited)
        source = limited
    options = toto_jax.ForecastOptions.reference() if reference_options else toto_jax.ForecastOptions()
    model = toto_jax.load("default")
    if limit is not None:  # a short job: compile first (once per shape, in a real job amortised over hours)
        forecast_dataset(model, source, output.rstrip("/") + "-warm-up/", HORIZON, samples, options=options,
                         series_per_batch=series_per_batch, progress=False)  # fmt: skip
    began = time.perf_counter()
    summary = forecast_dataset(model, source, output, HORIZON, samples, options=options,
                               series_per_batch=series_per_batch, progress=False)  # fmt: skip
    seconds = time.perf_counter() - began
    assert summary.complete and not summary.skipped, summary
    return {"series": summary.series, "seconds": seconds, "series_per_s": summary.series / seconds,
            "peak_rss_mib": peak_rss_mib()}  # fmt: skip


def run_reference(source: str, samples: int | None, batch: int, limit: int) -> dict:
    import warnings

    import numpy as np
    import pyarrow.parquet as pq
    import torch
    from toto.data.util.dataset import MaskedTimeseries
    from toto.inference.forecaster import TotoForecaster
    from toto.model.toto import Toto as ReferenceToto

    import toto_jax

    with tempfile.TemporaryDirectory() as directory:
        toto_jax.export_torch(toto_jax.load("default"), directory)
        config = json.loads((Path(directory) / "config.json").read_text())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = ReferenceToto(**config)
        import safetensors.torch

        model.load_state_dict(safetensors.torch.load_file(str(Path(directory) / "model.safetensors")))
    model.eval()
    forecaster = TotoForecaster(model.model)
    values = pq.read_table(source, columns=["y"]).slice(0, limit * LENGTH).column(0).to_numpy()
    series = torch.tensor(values.reshape(limit, 1, LENGTH), dtype=torch.float32)
    began = time.perf_counter()
    for first in range(0, limit, batch):
        chunk = series[first : first + batch]
        inputs = MaskedTimeseries(
            series=chunk, padding_mask=torch.ones_like(chunk, dtype=torch.bool),
            id_mask=torch.zeros_like(chunk, dtype=torch.int),
            timestamp_seconds=torch.zeros_like(chunk, dtype=torch.int64),
            time_interval_seconds=torch.full(chunk.shape[:2], 300, dtype=torch.int64),
        )  # fmt: skip
        with torch.inference_mode():
            result = forecaster.forecast(inputs, HORIZON, num_samples=samples, samples_per_batch=samples or 1,
                                         use_kv_cache=True)  # fmt: skip
        assert np.isfinite(result.mean.numpy()).all()
    seconds = time.perf_counter() - began
    return {"series": limit, "seconds": seconds, "series_per_s": limit / seconds, "peak_rss_mib": peak_rss_mib()}


def subprocess_json(*arguments: str) -> dict:
    command = [sys.executable, __file__, *arguments]
    completed = subprocess.run(command, capture_output=True, text=True, env=dict(os.environ, JAX_PLATFORMS="cpu"))
    if completed.returncode:
        sys.exit(f"{' '.join(arguments)} failed:\n{completed.stderr[-3000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="4000,40000,200000", help="numbers of series of the scale runs")
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--reference-series", type=int, default=1024, help="series of the comparison (mean path)")
    parser.add_argument("--reference-sample-series", type=int, default=128, help="series of the comparison (samples)")
    parser.add_argument("--batches", default="64,256,1024", help="batch sizes tried on each side (series per call)")
    parser.add_argument("--skip-reference", action="store_true")
    parser.add_argument("--side", help=argparse.SUPPRESS)
    parser.add_argument("--source", help=argparse.SUPPRESS)
    parser.add_argument("--output", help=argparse.SUPPRESS)
    parser.add_argument("--job-samples", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, default=1024, help=argparse.SUPPRESS)
    parser.add_argument("--limit", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--reference-options", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side == "job":
        print(json.dumps(run_job(args.source, args.output, args.job_samples, args.reference_options, args.batch,
                                 args.limit)))  # fmt: skip
        return
    if args.side == "reference":
        print(json.dumps(run_reference(args.source, args.job_samples, args.batch, args.limit)))
        return

    load_before = machine_load.load_average()
    sizes = [int(s) for s in args.sizes.split(",")]
    batches = [int(b) for b in args.batches.split(",")]
    print(f"bundled model (toto1-small), series of {LENGTH} steps, horizon {HORIZON}, CPU ({os.cpu_count()} cores); "
          f"load average {load_before:.2f}")  # fmt: skip
    with tempfile.TemporaryDirectory() as directory:
        root = Path(directory)
        print(f"{'series':>8}{'wall s':>9}{'series/s':>10}{'peak RSS MiB':>14}   (job, default options, mean path)")
        for size in sizes:
            source = root / f"series-{size}.parquet"
            make_dataset(source, size)
            result = subprocess_json("--side", "job", "--source", str(source), "--output", str(root / f"out-{size}/"))
            print(f"{size:>8}{result['seconds']:>9.1f}{result['series_per_s']:>10.0f}{result['peak_rss_mib']:>14.0f}",
                  flush=True)  # fmt: skip
        if not args.skip_reference:
            source = root / f"series-{sizes[0]}.parquet"
            print(f"\nagainst the reference (each side's best batch of {batches}; toto-jax: the whole job with "
                  "ForecastOptions.reference(); reference: forecasts of in-memory tensors)")  # fmt: skip
            print(f"{'mode':<12}{'series':>8}{'reference series/s':>20}{'toto-jax series/s':>19}{'speed-up':>10}")
            for label, samples, limit in (("mean path", None, args.reference_series),
                                          (f"{args.samples} samples", args.samples, args.reference_sample_series)):  # fmt: skip
                extra = [] if samples is None else ["--job-samples", str(samples)]
                best = {"reference": (0.0, None), "jax": (0.0, None)}
                for batch in batches:
                    if batch > limit:
                        continue
                    reference = subprocess_json("--side", "reference", "--source", str(source), "--batch", str(batch),
                                                "--limit", str(limit), *extra)  # fmt: skip
                    jax_side = subprocess_json("--side", "job", "--source", str(source), "--batch", str(batch),
                                               "--output", str(root / f"cmp-{label}-{batch}/"), "--limit", str(limit),
                                               "--reference-options", *extra)  # fmt: skip
                    for side, result in (("reference", reference), ("jax", jax_side)):
                        if result["series_per_s"] > best[side][0]:
                            best[side] = (result["series_per_s"], batch)
                (ref, ref_batch), (ours, our_batch) = best["reference"], best["jax"]
                print(f"{label:<12}{limit:>8}{ref:>13.1f} (b{ref_batch:<4}){ours:>12.1f} (b{our_batch:<4}){ours / ref:>9.1f}x",
                      flush=True)  # fmt: skip
    machine_load.report(load_before)


if __name__ == "__main__":
    main()
