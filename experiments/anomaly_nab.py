"""NAB experiments for toto_jax.detect (experiments/anomaly_nab.md): the raw surprise of every NAB file is
computed once per (model, ForecastOptions, stride) and cached under out/nab_cache/, so choices of the score
mapping (DetectOptions) re-run no model.

    python experiments/anomaly_nab.py [--nab ../shared/data/nab] [--context 2048] [--stride N] [--sweep]
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import time
from pathlib import Path

import numpy as np

import toto_jax
from toto_jax.detection import DetectOptions
from toto_jax.detection.adaptive import adaptive_scores
from toto_jax.detection.score import surprise
from toto_jax.eval import nab
from toto_jax.forecasting.options import ForecastOptions

VERSION = 2  # of the surprise pass; bump when it changes
CACHE = Path(__file__).resolve().parents[1] / "out" / "nab_cache"


def cached_surprise(model_name, corpus, options: ForecastOptions, stride):
    key = hashlib.sha1(repr((VERSION, model_name, options, stride)).encode()).hexdigest()[:12]
    path = CACHE / f"{key}.npz"
    if path.exists():
        return dict(np.load(path)), None
    model = toto_jax.load(model_name)
    began = time.perf_counter()
    rows = [corpus.values[f][None] for f in corpus.files]
    result = surprise(model, rows, [~np.isnan(r) for r in rows], options, stride, 64)
    seconds = time.perf_counter() - began
    out = {f: r[0] for f, r in zip(corpus.files, result)}
    CACHE.mkdir(parents=True, exist_ok=True)
    np.savez(path, **out)
    return out, seconds


def evaluate(corpus, raw, options: DetectOptions, patch=64):
    scores = {f: adaptive_scores(raw[f], options, first_scored=patch) for f in corpus.files}
    return {p: nab.score_corpus(corpus, scores, p) for p in nab.PROFILES}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--nab", default="../shared/data/nab")
    parser.add_argument("--model", default="default")
    parser.add_argument("--context", type=int, default=None)
    parser.add_argument("--stride", type=int, default=None)
    parser.add_argument("--sweep", action="store_true")
    args = parser.parse_args()
    corpus = nab.read_corpus(args.nab)
    options = ForecastOptions(context_length=args.context)
    raw, seconds = cached_surprise(args.model, corpus, options, args.stride)
    if seconds:
        points = sum(len(v) for v in corpus.values.values())
        print(f"surprise of {points} points in {seconds:.1f}s ({points / seconds:.0f} points/s, cold)")
    if not args.sweep:
        results = evaluate(corpus, raw, DetectOptions())
        print(nab.format_scoreboard(results))
        return
    for average, history, spread in itertools.product([1, 3, 5, 10], [500, 2000, 8000], [0.25, 0.5, 1.0]):
        r = evaluate(corpus, raw, DetectOptions(average=average, history=history, min_spread=spread))
        print(average, history, spread, " ".join(f"{r[p].score:6.2f}" for p in nab.PROFILES), flush=True)


if __name__ == "__main__":
    main()
