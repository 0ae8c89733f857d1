"""Sources: Parquet/Arrow layout with lazy row-group reads, CSV directories, conversion.

Reads the real NAB and cloud-monitoring CSVs under ../shared/data (read-only);
writes only to pytest's tmp_path.
"""

import argparse
import pathlib
import pickle

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from toto_jax.data import (
    CsvSource,
    DataConfig,
    ParquetSource,
    SourceConfig,
    cli,
    make_iterator,
)
from toto_jax.data.convert import convert_csv_directory

SHARED_DATA = pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "data"
NAB = SHARED_DATA / "nab" / "data"
CLOUD = SHARED_DATA / "cloud-monitoring" / "data"


def write_univariate(path, series, rows_per_group):
    table = pa.table(
        {
            "item_id": [f"s{i}" for i in range(len(series))],
            "start": pa.array([np.datetime64("2024-01-01T00:00", "ns")] * len(series), pa.timestamp("ns")),
            "freq": ["1min"] * len(series),
            "target": pa.array([s.tolist() for s in series], pa.list_(pa.float32())),
        }
    )
    pq.write_table(table, path, row_group_size=rows_per_group)


def test_parquet_univariate_rows_and_lazy_row_group_reads(tmp_path):
    series = [np.arange(10 + i, dtype=np.float32) * (i + 1) for i in range(25)]
    write_univariate(tmp_path / "a.parquet", series[:15], rows_per_group=4)
    write_univariate(tmp_path / "b.parquet", series[15:], rows_per_group=4)
    source = ParquetSource(tmp_path, cache_row_groups=2)
    assert len(source) == 25
    assert source.locate(14) == (0, 3, 2) and source.locate(15) == (1, 0, 0)
    record = source[17]
    np.testing.assert_array_equal(record["target"], series[17][None])
    assert record["series_index"] == 17
    assert source.row_group_reads == 1  # only the row group holding row 17 was read
    source[16], source[18]  # same row group: served from the cache
    assert source.row_group_reads == 1
    for index in range(25):
        np.testing.assert_array_equal(source[index]["target"], series[index][None])
    assert len(source._cache) <= 2  # bounded memory whatever the corpus size
    # Pickled copies (what grain sends to workers) carry no cache and read the same.
    copy = pickle.loads(pickle.dumps(source))
    assert copy.row_group_reads == 0 and len(copy._cache) == 0
    np.testing.assert_array_equal(copy[3]["target"], series[3][None])


def test_parquet_multivariate_with_nulls_and_unequal_variates(tmp_path):
    target = pa.array(
        [[[1.0, 2.0, None], [4.0, 5.0, 6.0]], [[7.0], [8.0, 9.0]], [[1.0, 1.0], None]],
        pa.list_(pa.list_(pa.float64())),
    )
    pq.write_table(pa.table({"target": target}), tmp_path / "m.parquet")
    source = ParquetSource(tmp_path / "m.parquet")
    np.testing.assert_array_equal(source[0]["target"], [[1, 2, np.nan], [4, 5, 6]])
    # Variates share the start timestamp: the shorter one is NaN-padded at the end.
    np.testing.assert_array_equal(source[1]["target"], [[7, np.nan], [8, 9]])
    # A null variate carries no data: dropped (counted), the rest kept.
    np.testing.assert_array_equal(source[2]["target"], [[1, 1]])
    assert source.bad_data.counts["all_missing_variate"] == 1


def test_arrow_ipc_file_and_stream(tmp_path):
    table = pa.table({"target": pa.array([[1.0, 2.0], [3.0, 4.0, 5.0]], pa.list_(pa.float32()))})
    with pa.ipc.new_file(str(tmp_path / "x.arrow"), table.schema) as writer:
        writer.write_table(table)
    with pa.ipc.new_stream(str(tmp_path / "y.arrow"), table.schema) as writer:
        writer.write_table(table)
    source = ParquetSource(tmp_path)
    assert len(source) == 4
    np.testing.assert_array_equal(source[1]["target"], [[3, 4, 5]])
    np.testing.assert_array_equal(source[3]["target"], [[3, 4, 5]])


@pytest.mark.shared_data
def test_nab_csv_directory():
    """Reads the real NAB corpus (58 CSV files with timestamp,value)."""
    source = CsvSource(NAB)
    assert len(source) == 58
    path = next(p for p in source.files if p.endswith("ec2_cpu_utilization_24ae8d.csv"))
    record = source[source.files.index(path)]
    rows = sum(1 for _ in open(path)) - 1
    assert record["target"].shape == (1, rows)
    assert record["target"][0, 0] == pytest.approx(0.132)


@pytest.mark.shared_data
def test_cloud_monitoring_csv_directory_drops_labels():
    """Reads the real cloud-monitoring corpus (TimeStamp,Value,Label + metadata JSON)."""
    source = CsvSource(CLOUD)
    assert len(source) == len(list(CLOUD.rglob("*.csv")))
    record = source[0]
    assert record["target"].shape[0] == 1  # Label is not a variate
    assert np.isfinite(record["target"]).all()


def test_multivariate_csv(tmp_path):
    (tmp_path / "ett.csv").write_text("date,HUFL,OT,label\n2016-07-01 00:00:00,1,2,0\n2016-07-01 01:00:00,3,x,1\n")
    source = CsvSource(tmp_path)
    np.testing.assert_array_equal(source[0]["target"], [[1, 3], [2, np.nan]])
    assert source.bad_data.counts["non_numeric_cells"] == 1


@pytest.mark.shared_data
def test_convert_cli_round_trip_matches_csv(tmp_path):
    """Converts the real cloud-monitoring CSVs; Parquet rows equal the CSV series."""
    parser = argparse.ArgumentParser()
    cli.add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["data", "convert", str(CLOUD), str(tmp_path / "out"), "--rows-per-group", "8"])
    assert args.func(args) == 0
    written = pq.ParquetFile(tmp_path / "out" / "part-00000.parquet")
    assert written.metadata.num_row_groups > 1
    meta = written.read(columns=["item_id", "start", "freq"]).to_pandas()
    assert meta["item_id"].iloc[0].count("/") == 1 and meta["freq"].notna().all()
    csv, parquet = CsvSource(CLOUD), ParquetSource(tmp_path / "out")
    assert len(csv) == len(parquet)
    for index in range(len(csv)):
        np.testing.assert_array_equal(csv[index]["target"], parquet[index]["target"])


def test_convert_reports_missing_input(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    cli.add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["data", "convert", str(tmp_path / "nope"), str(tmp_path / "out")])
    assert args.func(args) == 2
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.shared_data
def test_pipeline_over_converted_nab(tmp_path):
    """Trains-ready batches from the real NAB corpus via the Parquet layout."""
    convert_csv_directory(NAB, tmp_path / "nab")
    cfg = DataConfig(
        sources=[SourceConfig(type="parquet", path=str(tmp_path / "nab"))],
        context_length=64,
        patch_size=16,
        num_variates=4,
        batch_size=4,
        shard_index=0,
        shard_count=1,
        include_provenance=True,
    )
    batch = next(make_iterator(cfg))
    assert batch["series"].shape == (4, 4, 80)
    assert batch["padding_mask"].all()  # NAB series are long and gap-free
    assert np.all(batch["id_mask"][:, :, 0] == np.arange(4))  # univariate: one id per slot
