"""Bad-data policy (docs/data.md): skipped with a counted warning, or a clear error."""

import logging

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from toto_jax.data import (
    ArraySource,
    DataConfig,
    DataError,
    ParquetSource,
    SourceConfig,
    make_iterator,
)
from toto_jax.data.quality import BadDataLog, clean_target


def test_clean_target_policy(caplog):
    log = BadDataLog("unit")
    with caplog.at_level(logging.WARNING, logger="toto_jax.data"):
        assert clean_target(np.array([]), log) is None
        assert clean_target(None, log) is None
        assert clean_target(np.full(10, np.nan), log) is None
        assert clean_target(np.array(["a", "b"], dtype=object), log) is None
        assert clean_target(np.zeros((2, 2, 2)), log) is None
        assert clean_target([[1.0, 2.0], [3.0]], log) is None
    assert dict(log.counts) == {
        "empty": 2,
        "all_missing": 1,
        "non_numeric": 1,
        "bad_shape": 1,
        "ragged_variates": 1,
    }
    # One warning per new reason, each naming the source.
    assert len(caplog.records) == 5
    assert all("'unit'" in record.getMessage() for record in caplog.records)

    repaired = clean_target(np.array([1.0, np.inf, -np.inf, 1e40, 2.0]), log)
    np.testing.assert_array_equal(repaired, [[1.0, np.nan, np.nan, np.nan, 2.0]])
    assert repaired.dtype == np.float32
    assert log.counts["inf_values"] == 3  # 1e40 overflows float32 to inf
    np.testing.assert_array_equal(clean_target(np.array(["1.5", "2"]), log), [[1.5, 2.0]])
    np.testing.assert_array_equal(clean_target(np.array([1, 2], dtype=np.int64), log), [[1.0, 2.0]])
    kept = clean_target(np.array([[1.0, 2.0], [np.nan, np.nan]]), log)
    np.testing.assert_array_equal(kept, [[1.0, 2.0]])
    assert log.counts["all_missing_variate"] == 1


def test_warnings_are_rate_limited_by_powers_of_ten(caplog):
    log = BadDataLog("many")
    with caplog.at_level(logging.WARNING, logger="toto_jax.data"):
        for _ in range(150):
            log.record("empty")
    assert log.counts["empty"] == 150
    assert len(caplog.records) == 3  # at counts 1, 10 and 100


def good_table(num_rows: int, offset: int = 0) -> pa.Table:
    return pa.table({"target": pa.array([[float(offset + i)] * 30 for i in range(num_rows)], pa.list_(pa.float32()))})


def test_corrupt_parquet_file_skipped_or_raises(tmp_path, caplog):
    pq.write_table(good_table(5), tmp_path / "good.parquet")
    pq.write_table(good_table(5), tmp_path / "corrupt.parquet")
    data = (tmp_path / "corrupt.parquet").read_bytes()
    (tmp_path / "corrupt.parquet").write_bytes(data[: len(data) // 2])  # truncated: footer gone
    (tmp_path / "notes.parquet").write_bytes(b"this is not parquet")
    with caplog.at_level(logging.WARNING, logger="toto_jax.data"):
        source = ParquetSource(tmp_path)
    assert len(source) == 5
    assert sorted(p.rsplit("/", 1)[1] for p in source.skipped_files) == ["corrupt.parquet", "notes.parquet"]
    assert source.bad_data.counts["bad_file"] == 2
    assert "corrupt.parquet" in caplog.text
    with pytest.raises(DataError, match="corrupt.parquet: unreadable"):
        ParquetSource(tmp_path, on_bad_file="raise")


def test_all_files_bad_is_an_error(tmp_path):
    (tmp_path / "a.parquet").write_bytes(b"garbage")
    with pytest.raises(DataError, match="no usable rows"):
        ParquetSource(tmp_path)
    with pytest.raises(DataError, match="does not exist"):
        ParquetSource(tmp_path / "missing")


def test_wrong_layout_and_dtypes_are_bad_files(tmp_path):
    pq.write_table(pa.table({"values": [[1.0, 2.0]]}), tmp_path / "no_target.parquet")
    pq.write_table(pa.table({"target": [1.0, 2.0]}), tmp_path / "scalar_target.parquet")
    pq.write_table(pa.table({"target": [["a", "b"]]}), tmp_path / "string_target.parquet")
    pq.write_table(good_table(2), tmp_path / "ok.parquet")
    source = ParquetSource(tmp_path)
    assert len(source) == 2 and len(source.skipped_files) == 3
    for name, message in [
        ("no_target", "no 'target' column"),
        ("scalar_target", "must be list<number>"),
        ("string_target", "values must be numeric"),
    ]:
        for other in tmp_path.glob("*.parquet"):
            if other.stem not in (name, "ok"):
                other.rename(other.with_suffix(".off"))
        with pytest.raises(DataError, match=message):
            ParquetSource(tmp_path, on_bad_file="raise")
        for other in tmp_path.glob("*.off"):
            other.rename(other.with_suffix(".parquet"))


def test_bad_rows_in_parquet_are_skipped_and_counted(tmp_path):
    target = pa.array(
        [[1.0] * 30, [], None, [None] * 30, [float("inf")] + [2.0] * 29, [3.0] * 30],
        pa.list_(pa.float64()),
    )
    pq.write_table(pa.table({"target": target}), tmp_path / "rows.parquet")
    source = ParquetSource(tmp_path)
    assert [source[i] is None for i in range(6)] == [False, True, True, True, False, False]
    assert source.bad_data.counts == {"empty": 2, "all_missing": 1, "inf_values": 1}
    assert np.isnan(source[4]["target"][0, 0])


def mixed_quality_series():
    good = [np.full(50, 10.0 + i) for i in range(12)]
    bad = [np.array([]), np.full(50, np.nan), np.array(["x"] * 50, dtype=object), np.full((2, 2, 2), 1.0)]
    return good + bad


def test_pipeline_skips_bad_series_and_never_emits_them():
    config = DataConfig(
        context_length=16,
        patch_size=8,
        num_variates=3,
        batch_size=2,
        shard_index=0,
        shard_count=1,
        num_epochs=1,
        include_provenance=True,
    )
    batches = list(make_iterator(config, [ArraySource(mixed_quality_series())]))
    seen = np.concatenate([b["series_index"].ravel() for b in batches])
    assert sorted(seen[seen >= 0].tolist()) == list(range(12))
    values = np.concatenate([b["series"][b["padding_mask"]] for b in batches])
    assert np.isfinite(values).all() and values.min() >= 10


@pytest.mark.timeout(180)
def test_bad_data_in_worker_processes_does_not_crash(tmp_path):
    pq.write_table(
        pa.table({"target": pa.array([[1.0] * 40, [], None, [float("nan")] * 40, [2.0] * 40] * 4, pa.list_(pa.float64()))}),
        tmp_path / "rows.parquet",
        row_group_size=3,
    )
    (tmp_path / "corrupt.parquet").write_bytes(b"PAR1 broken")
    config = DataConfig(
        sources=[SourceConfig(type="parquet", path=str(tmp_path))],
        context_length=16,
        patch_size=8,
        num_variates=2,
        batch_size=2,
        shard_index=0,
        shard_count=1,
        num_workers=2,
        include_provenance=True,
    )
    iterator = make_iterator(config)
    batches = [next(iterator) for _ in range(6)]
    iterator.close()
    values = np.concatenate([b["series"][b["padding_mask"]] for b in batches])
    assert set(np.unique(values)) <= {1.0, 2.0}
    assert all(b["padding_mask"].any() for b in batches)


def test_corrupt_row_group_found_at_read_time_skips_its_rows(tmp_path):
    rng = np.random.default_rng(0)
    table = pa.table({"target": pa.array([rng.random(500).tolist() for _ in range(8)], pa.list_(pa.float64()))})
    path = tmp_path / "a.parquet"
    pq.write_table(table, path, row_group_size=4)
    page_offset = pq.ParquetFile(path).metadata.row_group(1).column(0).data_page_offset
    data = bytearray(path.read_bytes())
    data[page_offset + 40 : page_offset + 400] = b"\xff" * 360  # footer intact, pages garbled
    path.write_bytes(bytes(data))
    source = ParquetSource(tmp_path)  # the footer still reads fine
    assert [source[i] is None for i in range(8)] == [False] * 4 + [True] * 4
    assert source.bad_data.counts["unreadable_row_group"] == 4
