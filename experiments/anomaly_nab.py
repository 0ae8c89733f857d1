"""NAB experiments for toto_jax.detect (results in experiments/anomaly_nab.md).

The surprise of every NAB file is computed once per (model, its files' contents, ForecastOptions, stride) by the
same pass ``toto_jax.detect`` runs, and cached under out/nab_cache/ (git-ignored), so choices of the score
mapping (``DetectOptions``) re-run no model. The tuning rule: the DetectOptions grid point with the best
standard-profile score on the even-numbered files (sorted paths: 0, 2, 4, ...); the odd-numbered half is held
out. The grid is searched by coordinates in stages (``STAGES``), each from the best point of the one before
(ties go to the point that changes fewest options): the surprise ratio and the extremes, then the level shifts,
then the drifts, then the season of the seasonal shifts, starting without shifts, drifts or seasons (the drift
grid holds 0.5-1.5 again since a glitch is history as a gap, experiments/anomaly_nab.md); the stages repeat
until a round changes nothing.

    python experiments/anomaly_nab.py [--nab ../shared/data/nab] [--context N] [--stride N] [--tune]
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import itertools
import time
from pathlib import Path

import numpy as np

import toto_jax
from toto_jax import checkpoint
from toto_jax.detection import DetectOptions
from toto_jax.detection.adaptive import adaptive_scores, drifts, extremes, level_shifts, season_steps, seasonal_shifts
from toto_jax.detection.score import surprise
from toto_jax.eval import nab
from toto_jax.forecasting.options import ForecastOptions

VERSION = 6  # of the surprise pass; bump when it changes
CACHE = Path(__file__).resolve().parents[1] / "out" / "nab_cache"
STAGES = (
    dict(history=[300, 500, 700, 1000, 1500], min_reference=[0.5, 1.0, 2.0], extreme_surprise=[None, 2.0, 3.0, 4.0]),
    dict(level_span=[None, 4, 8, 12, 16, 24, 32, 64], level_margin=[0.05, 0.075, 0.1, 0.15, 0.2]),
    dict(drift_allowance=[None, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0]),
    dict(season=[None, "1D", "7D"]),
)


def model_digest(model_name) -> str:
    """The contents of the model's files (where ``toto_jax.load`` finds them), so that a model retrained under
    the same name is not read from the cache."""
    located = checkpoint.locate(model_name)
    files = sorted(p for p in located.rglob("*") if p.is_file()) if located.is_dir() else [located]
    digest = hashlib.sha1()
    for path in files:
        digest.update(path.name.encode())
        with path.open("rb") as file:
            digest.update(hashlib.file_digest(file, "sha1").digest())
    return digest.hexdigest()


def cached_surprise(model_name, corpus, options: ForecastOptions, stride):
    """(surprise, normal score) of every file, by relative path, and the seconds the pass took (None: cached)."""
    key = hashlib.sha1(repr((VERSION, model_name, model_digest(model_name), options, stride)).encode()).hexdigest()[:12]
    path = CACHE / f"{key}.npz"
    if path.exists():
        stored = np.load(path)
        return tuple({f: stored[f"{kind}:{f}"] for f in corpus.files} for kind in ("surprise", "normal")), None
    model = toto_jax.load(model_name)
    rows = [corpus.values[f][None] for f in corpus.files]
    began = time.perf_counter()
    surprises, normal_scores = surprise(model, rows, [~np.isnan(r) for r in rows], options, stride, 64)
    seconds = time.perf_counter() - began
    out = {f"surprise:{f}": r[0] for f, r in zip(corpus.files, surprises)}
    out.update({f"normal:{f}": r[0] for f, r in zip(corpus.files, normal_scores)})
    CACHE.mkdir(parents=True, exist_ok=True)
    np.savez(path, **out)
    return cached_surprise(model_name, corpus, options, stride)[0], seconds


def scores_from(corpus, raw, options: DetectOptions, patch=64):
    """What toto_jax.detect returns for each (univariate) NAB file, from its cached (surprise, normal score)."""
    surprises, normal_scores = raw
    out = {}
    for f in corpus.files:
        values = corpus.values[f]
        valid = ~np.isnan(values)
        scored = valid & (np.arange(len(values)) >= patch)
        s = np.where(scored, surprises[f], 0.0)
        season = season_steps(corpus.labels[f].timestamps, options.season)
        shift = level_shifts(values, valid, options) | drifts(normal_scores[f], scored, options)
        shift |= seasonal_shifts(values, valid, season, options)
        out[f] = adaptive_scores(s, scored, extremes(values, valid, s, options), shift, options)
    return out


def subset(corpus, keep):
    files = [f for i, f in enumerate(corpus.files) if keep(i)]
    return dataclasses.replace(corpus, values={f: corpus.values[f] for f in files},
                               labels={f: corpus.labels[f] for f in files})  # fmt: skip


def report(corpus, scores, label):
    results = {p: nab.score_corpus(corpus, scores, p) for p in nab.PROFILES}
    print(f"{label:50s}", " ".join(f"{r.score:6.2f}" for r in results.values()), flush=True)
    return results


def per_category(corpus, scores, threshold):
    """Standard-profile raw score per category at the corpus threshold, beside its windows (the most a
    category can add is its window count)."""
    rows = {}
    result = nab.score_corpus(corpus, scores, "standard", threshold)
    for f, value in result.per_file.items():
        category = f.split("/")[0]
        total, windows = rows.get(category, (0.0, 0))
        rows[category] = (total + value, windows + len(corpus.labels[f].windows))
    for category, (total, windows) in sorted(rows.items()):
        print(f"  {category:24s} raw {total:7.2f} of {windows} windows")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--nab", default="../shared/data/nab")
    parser.add_argument("--model", default="default")
    parser.add_argument("--context", type=int, default=None)
    parser.add_argument("--stride", type=int, default=None)
    parser.add_argument("--tune", action="store_true", help="the DetectOptions grid (STAGES), chosen on the even half")
    args = parser.parse_args()
    corpus = nab.read_corpus(args.nab)
    raw, seconds = cached_surprise(args.model, corpus, ForecastOptions(context_length=args.context), args.stride)
    if seconds:
        points = sum(len(v) for v in corpus.values.values())
        print(f"surprise of {points} points in {seconds:.1f}s, compilation included ({points / seconds:.0f} points/s)")
    tune, held_out = subset(corpus, lambda i: i % 2 == 0), subset(corpus, lambda i: i % 2 == 1)
    options = DetectOptions()
    if args.tune:
        options, previous, round_number = options.replace(level_span=None, drift_allowance=None, season=None), None, 1
        while options != previous:
            previous = options
            for stage in STAGES:
                found = []
                for values in itertools.product(*stage.values()):
                    candidate = options.replace(**dict(zip(stage, values)))
                    score = nab.score_corpus(tune, scores_from(corpus, raw, candidate), "standard").score
                    changed = sum(value != getattr(options, name) for name, value in zip(stage, values))
                    found.append((score, changed, values))
                found.sort(key=lambda item: (-item[0], item[1]))
                for score, _, values in found[:5]:
                    print(f"round {round_number} tune half {score:6.2f}  {dict(zip(stage, values))}", flush=True)
                options = options.replace(**dict(zip(stage, found[0][2])))
            round_number += 1
    print(f"{'':50s} {'std':>6s} {'lowFP':>6s} {'lowFN':>6s}   {options}")
    scores = scores_from(corpus, raw, options)
    report(tune, scores, "tuning half (even files)")
    report(held_out, scores, "held-out half (odd files)")
    results = report(corpus, scores, "all 58 files")
    per_category(corpus, scores, results["standard"].threshold)


if __name__ == "__main__":
    main()
