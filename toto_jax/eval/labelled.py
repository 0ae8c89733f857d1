"""Evaluation of anomaly scores against a user's own incidents: series with a 0/1 label per step.

Reports, over all steps of all series pooled (one threshold for all, as in production):

- ``auc_pr``: area under the precision-recall curve (average precision: sum over thresholds of the recall
  gained times the precision there); a random score gets the share of labelled steps;
- ``best_f1``: the best pointwise F1 over thresholds, and the threshold;
- ``best_point_adjusted_f1``: the same after point adjustment (Xu et al., 2018), where one flagged step in a
  labelled segment counts the whole segment as found. Widely reported, and known to flatter: with long
  segments even random scores reach a high point-adjusted F1 (Kim et al., AAAI 2022), so read it beside the
  other two, never alone.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

POINT_ADJUSTED_CAVEAT = (
    "point-adjusted F1 counts a whole labelled segment as found when one step in it is flagged; it flatters "
    "(random scores score well on long segments): read it beside AUC-PR and F1"
)


@dataclasses.dataclass(frozen=True)
class LabelledResult:
    auc_pr: float
    best_f1: float
    best_f1_threshold: float
    best_point_adjusted_f1: float
    best_point_adjusted_threshold: float
    steps: int
    labelled: int
    segments: int


def _segments(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(start, end) exclusive of each run of 1s."""
    padded = np.concatenate([[0], labels.astype(np.int8), [0]])
    change = np.flatnonzero(np.diff(padded))
    return change[::2], change[1::2]


def _f1(tp, fp, fn):
    denominator = 2 * tp + fp + fn
    return np.where(denominator > 0, 2 * tp / np.maximum(denominator, 1), 0.0)


def evaluate_labelled(scores: list[np.ndarray], labels: list[np.ndarray]) -> LabelledResult:
    """``scores`` and 0/1 ``labels``, one [time] array each per series (NaN scores are an error)."""
    if len(scores) != len(labels) or not scores:
        raise ValueError(f"need one label array per score array, got {len(scores)} and {len(labels)}")
    starts_all, lengths, maxima, normal = [], [], [], []
    for i, (score, label) in enumerate(zip(scores, labels)):
        score, label = np.asarray(score, np.float64), np.asarray(label)
        if score.shape != label.shape:
            raise ValueError(f"series {i}: {score.shape} scores but {label.shape} labels")
        if np.isnan(score).any():
            raise ValueError(f"series {i}: NaN scores at steps {np.flatnonzero(np.isnan(score))[:5].tolist()}")
        if not np.isin(label, (0, 1)).all():
            raise ValueError(f"series {i}: labels must be 0 or 1, got {sorted(set(np.unique(label)) - {0, 1})[:5]}")
        starts, ends = _segments(label == 1)
        starts_all.append(starts)
        lengths.append(ends - starts)
        maxima.append(np.array([score[a:b].max() for a, b in zip(starts, ends)]))
        normal.append(score[label == 0])
    all_scores = np.concatenate([np.asarray(s, np.float64) for s in scores])
    all_labels = np.concatenate([np.asarray(l) == 1 for l in labels])  # noqa: E741
    positives = int(all_labels.sum())
    if positives == 0:
        raise ValueError("no labelled steps (label 1) in any series: nothing to evaluate against")
    # Pointwise curve at every distinct threshold (detections: score >= threshold).
    order = np.argsort(-all_scores, kind="stable")
    ranked, hits = all_scores[order], all_labels[order]
    last = np.flatnonzero(np.append(ranked[1:] != ranked[:-1], True))
    tp = np.cumsum(hits)[last].astype(np.float64)
    fp = (last + 1) - tp
    precision, recall = tp / (tp + fp), tp / positives
    auc_pr = float(np.sum(np.diff(np.concatenate([[0.0], recall])) * precision))
    f1 = _f1(tp, fp, positives - tp)
    best = int(np.argmax(f1))
    # Point-adjusted: a segment counts whole once its highest score is detected.
    lengths, maxima = np.concatenate(lengths), np.concatenate(maxima)
    normal = np.sort(np.concatenate(normal))
    thresholds = ranked[last]
    by_max = np.argsort(-maxima, kind="stable")
    found = np.searchsorted(-maxima[by_max], -thresholds, side="right")  # segments with max >= threshold
    adjusted_tp = np.concatenate([[0], np.cumsum(lengths[by_max])])[found].astype(np.float64)
    adjusted_fp = (normal.size - np.searchsorted(normal, thresholds, side="left")).astype(np.float64)
    adjusted = _f1(adjusted_tp, adjusted_fp, positives - adjusted_tp)
    best_adjusted = int(np.argmax(adjusted))
    return LabelledResult(
        auc_pr, float(f1[best]), float(thresholds[best]), float(adjusted[best_adjusted]),
        float(thresholds[best_adjusted]), int(all_scores.size), positives, int(lengths.size),
    )  # fmt: skip


def read_labelled(path, label_column: str = "label"):
    """A wide CSV/Parquet table (timestamp column, value columns, a 0/1 ``label_column``) -> (values
    [variate, time], labels [time], timestamps)."""
    from ..forecasting import tabular

    frame = tabular.read_table(path)
    if label_column not in frame.columns:
        raise ValueError(f"{path}: no label column {label_column!r} (its columns: {[str(c) for c in frame.columns]})")
    labels = frame[label_column]
    if labels.isna().any() or not labels.isin([0, 1, True, False]).all():
        bad = labels[labels.isna() | ~labels.isin([0, 1, True, False])]
        raise ValueError(f"{path}: column {label_column!r} must hold 0/1, got {bad.iloc[0]!r} at row {bad.index[0]}")
    table = tabular.parse_table(frame.drop(columns=[label_column]))
    if table.layout != "wide":
        raise ValueError(f"{path}: a labelled table is wide (timestamp, values..., {label_column})")
    return table.values[0], labels.to_numpy().astype(np.int8), table.timestamps[0]


def table_paths(entries) -> list[Path]:
    """CSV/Parquet files named, or found (recursively) in directories named."""
    paths = []
    for entry in map(Path, entries):
        if not entry.exists():
            raise FileNotFoundError(f"no such file or directory: {entry}")
        found = sorted(p for p in entry.rglob("*") if p.is_file()) if entry.is_dir() else [entry]
        paths += [p for p in found if p.suffix.lower() in (".csv", ".parquet")]
    if not paths:
        raise FileNotFoundError(f"no .csv or .parquet tables in {[str(e) for e in entries]}")
    return paths


def evaluate_files(model, paths, label_column: str = "label", options=None, forecast_options=None):
    """Detect on every labelled file (its combined score) and evaluate; returns (LabelledResult, scores)."""
    from ..detection.api import detect

    series, labels = [], []
    for path in paths:
        values, label, _ = read_labelled(path, label_column)
        series.append(values)
        labels.append(label)
    variates = {s.shape[0] for s in series}
    scores = []
    if len(variates) == 1:
        scores = detect(model, series, options=options, forecast_options=forecast_options).combined
    else:  # files with different variate counts are scored one by one
        scores = [detect(model, [s], options=options, forecast_options=forecast_options).combined[0] for s in series]
    return evaluate_labelled(scores, labels), {Path(p).name: s for p, s in zip(paths, scores)}
