"""Detection as a dataset job (``toto_jax.detect_dataset``, ``toto-jax detect --output DIR/``): the forecast jobs'
machinery with another task. A long Parquet dataset with a glitch, scored into parts that equal ``toto_jax.detect``
series by series; a wide CSV; a forecast job's directory refused. A tiny Toto 1.0 (tests/tiny_models.py)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow.dataset as pds
import pytest

import toto_jax
from toto_jax.cli import main as cli_main


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from tiny_models import tiny_toto1

    path = tmp_path_factory.mktemp("model") / "tiny"
    toto_jax.save(tiny_toto1(), path)
    return path


def _frame(series: int = 5, length: int = 160) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    parts = []
    for i in range(series):
        values = 100 + 10 * np.sin(np.arange(length) / 6) + rng.normal(0, 1, length)
        if i == 2:
            values[120] = 400.0  # a glitch
        parts.append(pd.DataFrame({"unique_id": f"db-{i}", "ds": pd.date_range("2026-03-01", periods=length, freq="min"),
                                   "y": values}))  # fmt: skip
    return pd.concat(parts, ignore_index=True)


def test_scores_of_a_dataset_equal_detect_series_by_series(checkpoint, tmp_path):
    frame = _frame()
    frame.to_parquet(tmp_path / "metrics.parquet", row_group_size=320)  # 3 row groups: 2 shards
    model = toto_jax.load(checkpoint)
    summary = toto_jax.detect_dataset(model, tmp_path / "metrics.parquet", tmp_path / "scores", min_length=16,
                                      rows_per_shard=640, series_per_batch=2, progress=False)  # fmt: skip
    assert summary.complete and summary.series == 5 and summary.shards == 2
    assert "complete; 5 series scored" in summary.describe()
    scored = pds.dataset(tmp_path / "scores").to_table().to_pandas().sort_values(["unique_id", "ds"], ignore_index=True)
    assert list(scored.columns) == ["unique_id", "ds", "y", "surprise", "score", "anomaly_score", "anomaly"]
    pd.testing.assert_series_equal(scored["y"], frame["y"], check_names=False)
    assert (scored["ds"].to_numpy() == frame["ds"].to_numpy()).all()
    for name, group in frame.groupby("unique_id"):
        expected = toto_jax.detect(model, group["y"].to_numpy()[None])
        mine = scored[scored.unique_id == name]
        np.testing.assert_allclose(mine["anomaly_score"], expected.combined, rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(mine["surprise"], expected.surprise[0], rtol=1e-6, atol=1e-9)
    glitch = scored[(scored.unique_id == "db-2")].iloc[120]
    assert glitch["anomaly"] and glitch["anomaly_score"] == scored["anomaly_score"].max()


def test_cli_dataset_job_wide_files_and_a_forecast_directory_refused(checkpoint, tmp_path, capsys):
    (tmp_path / "in").mkdir()
    stamps = pd.date_range("2026-03-01", periods=128, freq="min")
    rng = np.random.default_rng(1)
    pd.DataFrame({"timestamp": stamps, "cpu": rng.normal(50, 2, 128), "mem": rng.normal(8, 0.1, 128)}).to_csv(
        tmp_path / "in" / "host.csv", index=False)  # fmt: skip
    common = ["--checkpoint", str(checkpoint), "--input", str(tmp_path / "in"), "--min-length", "16"]
    assert cli_main(["detect", *common, "--output", f"{tmp_path}/scores/"]) == 0
    assert "complete; 2 series scored" in capsys.readouterr().out
    scored = pds.dataset(tmp_path / "scores").to_table().to_pandas()
    assert sorted(scored.unique_id.unique()) == ["host/cpu", "host/mem"] and len(scored) == 256
    assert scored["score"].between(0, 1).all() and scored["anomaly_score"].between(0, 1).all()
    assert cli_main(["forecast", *common, "--horizon", "8", "--output", f"{tmp_path}/scores/"]) == 2
    assert "holds another job (" in capsys.readouterr().err
