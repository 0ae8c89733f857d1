"""Throughput of the pretraining data pipeline (samples/s).

    python benchmarks/data.py [--batches 20] [--workers 0 2] [--context-length 512] ...

Measures the synthetic source and a Parquet corpus (written to a temporary
directory: long univariate and multivariate random-walk series with daily
seasonality, 64 rows per row group) with each worker count. The first batch,
which includes worker start-up, is not timed. On a shared machine wall-clock
rates vary with load; the CPU time per sample of the 0-worker runs does not,
and a pipeline with N workers on N free cores delivers about N times its
per-core rate.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from toto_jax.data import DataConfig, SourceConfig, make_iterator  # noqa: E402


def write_parquet_corpus(directory: pathlib.Path, num_series: int, seed: int = 0) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(num_series):
        length = int(rng.integers(256, 8192))
        variates = 1 if rng.random() < 0.7 else int(rng.integers(2, 6))
        t = np.arange(length)
        walk = np.cumsum(rng.standard_normal((variates, length)), axis=1)
        season = np.sin(2 * np.pi * t / 288 + rng.uniform(0, 6.3, (variates, 1)))
        rows.append((walk + 5 * season).astype(np.float32))
    per_file = 500
    for number, first in enumerate(range(0, num_series, per_file)):
        chunk = rows[first : first + per_file]
        target = pa.array([[v.tolist() for v in row] for row in chunk], pa.list_(pa.list_(pa.float32())))
        pq.write_table(pa.table({"target": target}), directory / f"part-{number:05d}.parquet", row_group_size=64)


def measure(config: DataConfig, batches: int) -> dict[str, float]:
    """Wall-clock samples/s and ms/batch, this process's CPU time per sample
    (meaningful without workers: it does all the work then), slot fill."""
    iterator = make_iterator(config)
    next(iterator)  # start-up (worker processes, file footers) not timed
    start, cpu_start = time.perf_counter(), time.process_time()
    used = 0.0
    for _ in range(batches):
        batch = next(iterator)
        used += batch["padding_mask"].any(axis=-1).mean()
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    if hasattr(iterator, "close"):
        iterator.close()
    samples = batches * config.batch_size
    return {
        "samples_per_s": samples / elapsed,
        "ms_per_batch": 1000 * elapsed / batches,
        "cpu_ms_per_sample": 1000 * cpu / samples,
        "slot_fill": used / batches,
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--context-length", type=int, default=512)
    parser.add_argument("--patch-size", type=int, default=64)
    parser.add_argument("--variates", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--read-threads", type=int, default=4)
    parser.add_argument("--parquet-series", type=int, default=2000)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        corpus = pathlib.Path(tmp)
        write_parquet_corpus(corpus, args.parquet_series)
        sources = {
            "synthetic": SourceConfig(type="synthetic"),
            "parquet": SourceConfig(type="parquet", path=str(corpus)),
        }
        print(
            f"context_length={args.context_length} patch_size={args.patch_size} V={args.variates} "
            f"batch_size={args.batch_size} read_threads={args.read_threads}"
        )
        for name, source in sources.items():
            for workers in args.workers:
                config = DataConfig(
                    sources=[source],
                    context_length=args.context_length,
                    patch_size=args.patch_size,
                    num_variates=args.variates,
                    batch_size=args.batch_size,
                    num_workers=workers,
                    read_threads=args.read_threads,
                    shard_index=0,
                    shard_count=1,
                )
                result = measure(config, args.batches)
                cpu = (
                    f", {result['cpu_ms_per_sample']:.2f} CPU ms/sample = "
                    f"{1000 / result['cpu_ms_per_sample']:.0f} samples/s per core"
                    if workers == 0
                    else ""
                )
                print(
                    f"{name:9s} workers={workers}: {result['samples_per_s']:8.1f} samples/s "
                    f"({result['ms_per_batch']:7.1f} ms/batch, {100 * result['slot_fill']:5.1f}% "
                    f"variate slots filled{cpu})"
                )


if __name__ == "__main__":
    main()
