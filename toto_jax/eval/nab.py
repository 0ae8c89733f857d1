"""The Numenta Anomaly Benchmark's scoring, written from the NAB paper (Lavin & Ahmad, 2015) and whitepaper.

A detector gives every row of every data file an anomaly score in [0, 1]; a row is a detection when its score
is >= the threshold. Each labelled anomaly is a window of rows. Per file and profile (weights A_TP, A_FP, A_FN):

- the first ``min(floor(0.15 n), 750)`` rows are probationary and not scored;
- a window scores the best of its detections, A_TP * sigma(p) / sigma(-1) for the earliest one, where p is the
  detection's relative position, -(right - i + 1) / width (-1 at the window's left edge, near 0 at its right);
  a window without detections costs -A_FN;
- every detection outside a window adds A_FP * sigma(p): after a window, p = (i - right) / (width - 1) (so a
  detection just after a window costs little, one a window's width later nearly A_FP, beyond 3 widths A_FP),
  before the first window it costs A_FP;

with sigma(p) = 2 / (1 + exp(5 p)) - 1 for p <= 3 and -1 beyond. A profile's raw score sums the files at one
threshold for the whole corpus: NAB's stored one, or the best found by sweeping every distinct score (the
optimiser). The final score is 100 (raw - null) / (perfect - null): the null detector (one constant score,
thresholds optimised, i.e. every window missed) at 0 and a detector finding every window at its left edge at
100 (A_TP per window).
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np

PROBATIONARY_FRACTION = 0.15
PROBATIONARY_LIMIT = 750  # rows: 0.15 of NAB's 5000-row reference length
NO_DETECTION = 1.1  # the optimiser's first threshold: above every score, nothing detected

# NAB's published scoreboard (standard, reward low FP, reward low FN), printed beside our scores.
SCOREBOARD = (
    ("ARTime", 74.9, 65.1, 80.4),
    ("Numenta HTM", 70.5, 62.6, 75.2),
    ("CAD OSE", 69.9, 67.0, 73.2),
    ("earthgecko Skyline", 58.2, None, None),
    ("KNN CAD", 58.0, None, None),
    ("Relative Entropy", 54.6, None, None),
    ("Random Cut Forest", 51.7, None, None),
    ("Twitter ADVec", 47.1, None, None),
    ("Windowed Gaussian", 39.6, None, None),
)


class NabError(ValueError):
    """A NAB directory, label or result file that cannot be scored, named."""


@dataclasses.dataclass(frozen=True)
class Profile:
    name: str
    tp: float
    fp: float
    fn: float


PROFILES = {
    "standard": Profile("standard", tp=1.0, fp=0.11, fn=1.0),
    "reward_low_FP_rate": Profile("reward_low_FP_rate", tp=1.0, fp=0.22, fn=1.0),
    "reward_low_FN_rate": Profile("reward_low_FN_rate", tp=1.0, fp=0.11, fn=2.0),
}


def scaled_sigmoid(position):
    """NAB's sigma(p): 2 / (1 + exp(5 p)) - 1, and -1 beyond p = 3."""
    position = np.asarray(position, np.float64)
    with np.errstate(over="ignore"):
        value = 2.0 / (1.0 + np.exp(5.0 * np.minimum(position, 50.0))) - 1.0
    return np.where(position > 3.0, -1.0, value)


def probationary_length(rows: int) -> int:
    return int(min(math.floor(PROBATIONARY_FRACTION * rows), PROBATIONARY_LIMIT))


@dataclasses.dataclass(frozen=True)
class FileLabels:
    """One data file: its timestamps and its windows as inclusive row ranges [(first, last), ...]."""

    timestamps: np.ndarray  # datetime64
    windows: tuple[tuple[int, int], ...]

    @property
    def rows(self) -> int:
        return len(self.timestamps)


@dataclasses.dataclass(frozen=True)
class Corpus:
    """NAB's data files (relative path -> values, labels) read from a NAB directory."""

    root: Path
    values: dict[str, np.ndarray]  # float64 [time]
    labels: dict[str, FileLabels]

    @property
    def files(self) -> list[str]:
        return sorted(self.labels)

    @property
    def window_count(self) -> int:
        return sum(len(f.windows) for f in self.labels.values())


def _read_timestamps_values(path: Path) -> tuple[np.ndarray, np.ndarray]:
    import pandas as pd

    frame = pd.read_csv(path)
    if list(frame.columns[:2]) != ["timestamp", "value"]:
        raise NabError(f"{path}: expected columns timestamp,value, got {list(frame.columns)}")
    stamps = pd.to_datetime(frame["timestamp"]).to_numpy("datetime64[us]")
    return stamps, frame["value"].to_numpy(np.float64)


def read_corpus(root) -> Corpus:
    """A NAB directory (``data/``, ``labels/combined_windows.json``): every labelled file's values and windows.
    Window edges must be timestamps of their file (as NAB requires); a missing one is an error naming it."""
    root = Path(root)
    windows_path = root / "labels" / "combined_windows.json"
    if not windows_path.is_file():
        raise NabError(f"{root} is not a NAB directory: {windows_path} is missing")
    windows = json.loads(windows_path.read_text())
    values, labels = {}, {}
    for relative, limits in sorted(windows.items()):
        path = root / "data" / relative
        if not path.is_file():
            raise NabError(f"{windows_path} labels {relative}, but {path} is missing")
        stamps, series = _read_timestamps_values(path)
        rows = []
        for first, last in limits:
            edges = np.array([first, last], dtype="datetime64[us]")
            where = np.searchsorted(stamps, edges)
            for edge, index in zip(edges, where):
                if index >= len(stamps) or stamps[index] != edge:
                    raise NabError(f"{relative}: window edge {edge} is not a timestamp of the file")
            rows.append((int(where[0]), int(where[1])))
        values[relative] = series
        labels[relative] = FileLabels(stamps, tuple(rows))
    return Corpus(root, values, labels)


@dataclasses.dataclass(frozen=True)
class Sweep:
    """The scorable rows of one file (or a corpus) under one profile: each row's anomaly score, the weight it
    adds when detected (A_TP sigma / sigma(-1) in a window, A_FP sigma outside) and its window (-1: none)."""

    scores: np.ndarray
    weights: np.ndarray
    window: np.ndarray
    windows: int  # windows with scorable rows (each costs -A_FN unless detected)
    fn_weight: float


def sweep_file(scores, labels: FileLabels, profile: Profile) -> Sweep:
    scores = np.asarray(scores, np.float64)
    rows = labels.rows
    if scores.shape != (rows,):
        raise NabError(f"{rows} rows in the data file but {scores.shape} anomaly scores")
    index = np.arange(rows)
    weights = np.full(rows, -profile.fp)  # before the first window: a false positive far from any window
    window = np.full(rows, -1)
    max_tp = float(scaled_sigmoid(-1.0))
    for number, (first, last) in enumerate(labels.windows):
        width = last - first + 1
        inside = slice(first, last + 1)
        weights[inside] = scaled_sigmoid(-(last - index[inside] + 1) / width) * profile.tp / max_tp
        window[inside] = number
        end = labels.windows[number + 1][0] if number + 1 < len(labels.windows) else rows
        after = index[last + 1 : end]
        with np.errstate(divide="ignore"):
            position = np.abs(last - after) / np.float64(width - 1)
        weights[last + 1 : end] = scaled_sigmoid(position) * profile.fp
    keep = slice(probationary_length(rows), rows)
    window = window[keep]
    return Sweep(scores[keep], weights[keep], window, len(np.unique(window[window >= 0])), profile.fn)


def concatenate(sweeps: list[Sweep]) -> Sweep:
    """One sweep over several files (window ids kept distinct), for corpus-wide thresholds."""
    windows, offset = [], 0
    for s in sweeps:
        windows.append(np.where(s.window >= 0, s.window + offset, -1))
        offset += int(s.window.max(initial=-1)) + 1
    return Sweep(np.concatenate([s.scores for s in sweeps]), np.concatenate([s.weights for s in sweeps]),
                 np.concatenate(windows), sum(s.windows for s in sweeps), sweeps[0].fn_weight)  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Counts:
    tp: int
    fp: int
    tn: int
    fn: int


def score_at(sweep: Sweep, threshold: float) -> tuple[float, Counts]:
    """Raw score and row counts when rows scoring >= ``threshold`` are detections."""
    detected = sweep.scores >= threshold
    in_window = sweep.window >= 0
    total = float(np.sum(sweep.weights[detected & ~in_window]))
    best = np.full(int(sweep.window.max(initial=-1)) + 1, -sweep.fn_weight)
    hit = detected & in_window
    np.maximum.at(best, sweep.window[hit], sweep.weights[hit])
    present = np.zeros(best.shape, bool)
    present[sweep.window[in_window]] = True
    total += float(best[present].sum())
    counts = Counts(int(hit.sum()), int((detected & ~in_window).sum()), int((~detected & ~in_window).sum()),
                    int((~detected & in_window).sum()))  # fmt: skip
    return total, counts


def threshold_curve(sweep: Sweep) -> tuple[np.ndarray, np.ndarray]:
    """Raw score at every candidate threshold, as NAB's optimiser sweeps them: 1.1 (nothing detected), then
    each distinct score from the highest down (detections: scores >= it). Returns (thresholds, scores)."""
    order = np.argsort(-sweep.scores, kind="stable")
    scores, weights, window = sweep.scores[order], sweep.weights[order], sweep.window[order]
    gain = np.where(window < 0, weights, 0.0)
    fn = sweep.fn_weight
    # A window's contribution rises with the best weight detected so far in it, from -A_FN.
    for number in np.unique(window[window >= 0]):
        rows = np.flatnonzero(window == number)
        best = np.maximum.accumulate(np.maximum(weights[rows], -fn))
        gain[rows] = best - np.concatenate([[-fn], best[:-1]])
    running = -fn * sweep.windows + np.cumsum(gain)
    last_of_level = np.flatnonzero(np.append(scores[1:] != scores[:-1], True))
    thresholds = np.concatenate([[NO_DETECTION], scores[last_of_level]])
    totals = np.concatenate([[-fn * sweep.windows], running[last_of_level]])
    return thresholds, totals


def optimize_threshold(sweep: Sweep) -> tuple[float, float]:
    """(threshold, raw score) maximising the score; ties go to the highest threshold, as NAB's."""
    thresholds, totals = threshold_curve(sweep)
    best = int(np.argmax(totals))
    return float(thresholds[best]), float(totals[best])


@dataclasses.dataclass(frozen=True)
class ProfileResult:
    profile: str
    threshold: float
    raw: float
    null: float
    perfect: float
    counts: Counts
    per_file: dict[str, float]  # raw score of each file at the threshold

    @property
    def score(self) -> float:
        return 100.0 * (self.raw - self.null) / (self.perfect - self.null)


def null_score(corpus: Corpus, profile: Profile) -> float:
    """The null detector's raw score: one constant score everywhere, its threshold optimised."""
    sweeps = [sweep_file(np.full(f.rows, 0.5), f, profile) for f in corpus.labels.values()]
    return optimize_threshold(concatenate(sweeps))[1]


def score_corpus(corpus: Corpus, scores: dict[str, np.ndarray], profile: Profile | str,
                 threshold: float | None = None) -> ProfileResult:  # fmt: skip
    """NAB score of a detector's ``scores`` (relative path -> [rows] in [0, 1]) under ``profile``; the threshold
    is optimised over the corpus when None."""
    profile = PROFILES[profile] if isinstance(profile, str) else profile
    missing = [f for f in corpus.files if f not in scores]
    if missing:
        raise NabError(f"no anomaly scores for {len(missing)} file(s), e.g. {missing[0]}")
    sweeps = {}
    for name in corpus.files:
        try:
            sweeps[name] = sweep_file(scores[name], corpus.labels[name], profile)
        except NabError as error:
            raise NabError(f"{name}: {error}") from None
        if np.isnan(sweeps[name].scores).any():
            raise NabError(f"{name}: NaN anomaly scores")
    if threshold is None:
        threshold, _ = optimize_threshold(concatenate(list(sweeps.values())))
    per_file, counts = {}, []
    for name, sweep in sweeps.items():
        per_file[name], count = score_at(sweep, threshold)
        counts.append(count)
    total = Counts(*(sum(getattr(c, f) for c in counts) for f in ("tp", "fp", "tn", "fn")))
    return ProfileResult(profile.name, threshold, sum(per_file.values()), null_score(corpus, profile),
                         profile.tp * corpus.window_count, total, per_file)  # fmt: skip


def read_results(directory, corpus: Corpus) -> dict[str, np.ndarray]:
    """A NAB results directory of one detector (``results/DETECTOR/CATEGORY/DETECTOR_FILE.csv`` with an
    ``anomaly_score`` column) -> relative data path -> scores."""
    import pandas as pd

    directory = Path(directory)
    detector = directory.name
    scores = {}
    for relative in corpus.files:
        category, name = relative.split("/")
        path = directory / category / f"{detector}_{name}"
        if not path.is_file():
            raise NabError(f"{directory}: no result file {path.name} for {relative}")
        frame = pd.read_csv(path)
        if "anomaly_score" not in frame:
            raise NabError(f"{path}: no anomaly_score column")
        scores[relative] = frame["anomaly_score"].to_numpy(np.float64)
    return scores


def stored_thresholds(root, detector: str) -> dict[str, float]:
    """NAB's optimised thresholds for ``detector`` (``config/thresholds.json``), per profile."""
    table = json.loads((Path(root) / "config" / "thresholds.json").read_text())
    if detector not in table:
        raise NabError(f"{root}/config/thresholds.json has no thresholds for {detector!r}")
    return {profile: entry["threshold"] for profile, entry in table[detector].items()}


def detect_corpus(model, corpus: Corpus, options=None, forecast_options=None) -> dict[str, np.ndarray]:
    """``toto_jax.detect``'s scores of every NAB file (each a univariate series; all in one batched pass)."""
    from ..detection.api import detect

    series = [corpus.values[name][None] for name in corpus.files]
    stamps = [corpus.labels[name].timestamps for name in corpus.files]
    detection = detect(model, series, timestamps=stamps, options=options, forecast_options=forecast_options)
    return dict(zip(corpus.files, detection.combined))


def format_scoreboard(results: dict[str, ProfileResult], name: str = "toto-jax") -> str:
    """Our three profile scores beside NAB's published scoreboard, best standard score first."""
    ours = (name, *(results[p].score for p in PROFILES))
    rows = sorted([ours, *SCOREBOARD], key=lambda row: -row[1])
    cell = lambda v: "" if v is None else f"{v:.1f}"  # noqa: E731
    lines = [f"{'detector':<22}{'standard':>10}{'low FP':>10}{'low FN':>10}"]
    for row in rows:
        marker = " <" if row is ours else ""
        lines.append(f"{row[0]:<22}{cell(row[1]):>10}{cell(row[2]):>10}{cell(row[3]):>10}{marker}")
    return "\n".join(lines)
