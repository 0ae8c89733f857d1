"""Labelled anomaly evaluation (toto_jax.eval.labelled) against brute-force definitions, and its CLI."""

import numpy as np
import pandas as pd
import pytest

from toto_jax.cli import main
from toto_jax.eval.labelled import evaluate_labelled


def brute_force(scores, labels):
    scores, labels = np.concatenate(scores), np.concatenate(labels).astype(bool)
    starts = [i for i in range(len(labels)) if labels[i] and (i == 0 or not labels[i - 1])]
    segments = []
    for a in starts:
        b = a
        while b < len(labels) and labels[b]:
            b += 1
        segments.append((a, b))
    best = (0.0, 0.0)
    ap, previous_recall = 0.0, 0.0
    for t in sorted(set(scores), reverse=True):
        flagged = scores >= t
        tp, fp, fn = (flagged & labels).sum(), (flagged & ~labels).sum(), (~flagged & labels).sum()
        ap += (tp / labels.sum() - previous_recall) * tp / flagged.sum()
        previous_recall = tp / labels.sum()
        adjusted = flagged.copy()
        for a, b in segments:
            if flagged[a:b].any():
                adjusted[a:b] = True
        atp, afp, afn = (adjusted & labels).sum(), (adjusted & ~labels).sum(), (~adjusted & labels).sum()
        best = (max(best[0], 2 * tp / (2 * tp + fp + fn)), max(best[1], 2 * atp / (2 * atp + afp + afn)))
    return ap, best


def test_metrics_match_their_definitions():
    """AUC-PR (average precision), best F1 and best point-adjusted F1 equal a brute-force sweep over every
    threshold, with ties and segments at both ends of a series."""
    rng = np.random.default_rng(0)
    scores = [np.round(rng.random(300), 2), np.round(rng.random(200), 2)]
    labels = [np.zeros(300, int), np.zeros(200, int)]
    labels[0][:5], labels[0][100:140], labels[1][190:] = 1, 1, 1
    scores[0][120] = scores[1][195] = 0.995
    result = evaluate_labelled(scores, labels)
    ap, (f1, adjusted) = brute_force(scores, labels)
    assert result.auc_pr == pytest.approx(ap)
    assert result.best_f1 == pytest.approx(f1)
    assert result.best_point_adjusted_f1 == pytest.approx(adjusted)
    assert result.best_point_adjusted_f1 > result.best_f1  # it flatters
    assert (result.segments, result.labelled) == (3, 55)
    with pytest.raises(ValueError, match="series 1: labels must be 0 or 1"):
        evaluate_labelled(scores, [labels[0], labels[1] * 2])
    with pytest.raises(ValueError, match="no labelled steps"):
        evaluate_labelled(scores, [np.zeros(300), np.zeros(200)])


def test_cli_reports_the_three_metrics(tmp_path, capsys):
    """``toto-jax eval --anomaly labelled`` on a wide table with a label column; a missing label column is named."""
    rng = np.random.default_rng(0)
    t = np.arange(800)
    values = 10 + 3 * np.sin(2 * np.pi * t / 96) + 0.3 * rng.standard_normal(800)
    values[600:605] += 30
    label = ((t >= 598) & (t < 610)).astype(int)
    frame = pd.DataFrame({"timestamp": pd.date_range("2024-01-01", periods=800, freq="min"), "cpu": values,
                          "label": label})  # fmt: skip
    frame.to_csv(tmp_path / "incidents.csv", index=False)
    assert main(["eval", "--anomaly", "labelled", str(tmp_path / "incidents.csv"), "--context-length", "256",
                 "--output-dir", str(tmp_path / "out")]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "AUC-PR" in out and "best F1" in out and "point-adjusted" in out and "flatters" in out
    assert (tmp_path / "out" / "labelled.json").exists()
    assert main(["eval", "--anomaly", "labelled", str(tmp_path / "incidents.csv"), "--label-column", "incident",
                 "--output-dir", str(tmp_path / "out")]) == 2  # fmt: skip
    assert "no label column 'incident'" in capsys.readouterr().err
