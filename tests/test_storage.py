"""Object storage (gs:// and s3://) wherever toto-jax takes a path, against real servers on loopback
(tests/storage_servers.py): checkpoints saved, exported and loaded, data converted into buckets, and
errors that name the path when a bucket is missing or half a checkpoint is there."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from flax import nnx

import toto_jax
from toto_jax import storage
from toto_jax.checkpoint import CheckpointError, checkpoint_kind
from toto_jax.cli import main as cli_main
from toto_jax.config import TotoConfig
from toto_jax.data.convert import convert_csv_directory

SCHEMES = ["gs", "s3"]
NAB = Path(__file__).parents[1] / "toto_jax" / "assets"


@pytest.fixture(scope="module")
def model():
    config = TotoConfig(
        patch_size=8, stride=8, embed_dim=16, num_heads=2, num_layers=2, mlp_hidden_dim=32,
        spacewise_every_n_layers=2, k_components=2,
    )  # fmt: skip
    return toto_jax.Toto(config, rngs=nnx.Rngs(0))


def assert_same_parameters(a, b):
    flat_a, flat_b = dict(nnx.to_flat_state(nnx.state(a))), dict(nnx.to_flat_state(nnx.state(b)))
    assert flat_a.keys() == flat_b.keys()
    for key in flat_a:
        np.testing.assert_array_equal(np.asarray(flat_a[key][...]), np.asarray(flat_b[key][...]), err_msg=str(key))


@pytest.mark.parametrize("scheme", SCHEMES)
def test_save_export_and_load_round_trip_in_a_bucket(object_stores, model, scheme):
    bucket = object_stores.new_bucket(scheme)
    native, torch = f"{bucket}/models/native", f"{bucket}/models/torch"
    toto_jax.save(model, native)
    toto_jax.export_torch(model, torch)
    assert checkpoint_kind(native) == "native" and checkpoint_kind(torch) == "torch"
    assert_same_parameters(toto_jax.load(native), model)
    assert_same_parameters(toto_jax.load(torch), model)
    assert_same_parameters(toto_jax.load(f"{torch}/model.safetensors"), model)
    with pytest.raises(CheckpointError, match="not empty"):
        toto_jax.save(model, native)
    toto_jax.save(model, native, overwrite=True)
    assert_same_parameters(toto_jax.load(native), model)


def test_native_checkpoint_without_its_marker_is_named_incomplete(object_stores, model):
    """An upload cut short leaves everything but the marker, which goes up last."""
    bucket = object_stores.new_bucket("gs")
    toto_jax.save(model, f"{bucket}/m")
    storage.as_path(f"{bucket}/m/toto_jax_checkpoint.json").unlink()
    with pytest.raises(CheckpointError, match=f"{bucket}/m is an incomplete native checkpoint"):
        toto_jax.load(f"{bucket}/m")


@pytest.mark.parametrize("scheme", SCHEMES)
def test_missing_bucket_is_named(object_stores, model, scheme):
    missing = f"{scheme}://no-such-bucket-toto/run"
    with pytest.raises(storage.StorageError, match=f"{missing}: bucket {scheme}://no-such-bucket-toto does not exist"):
        toto_jax.load(missing)
    with pytest.raises(storage.StorageError, match="does not exist"):
        toto_jax.save(model, missing)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_data_convert_writes_parquet_into_a_bucket(object_stores, tmp_path, scheme):
    bucket = object_stores.new_bucket(scheme)
    local = convert_csv_directory(NAB, tmp_path / "local", rows_per_group=8)
    assert cli_main(["data", "convert", str(NAB), f"{bucket}/nab", "--rows-per-group", "8"]) == 0
    (remote_file,) = storage.as_path(f"{bucket}/nab").iterdir()
    with storage.as_path(str(remote_file)).open("rb") as stream:
        remote_table = pq.read_table(stream)
    assert remote_table.equals(pq.read_table(local["files"][0]))


def test_data_convert_into_a_missing_bucket_fails_before_reading(object_stores, capsys):
    assert cli_main(["data", "convert", str(NAB), "s3://no-such-bucket-toto/nab"]) == 2
    assert "s3://no-such-bucket-toto/nab: bucket s3://no-such-bucket-toto does not exist" in capsys.readouterr().err


def test_local_paths_stay_pathlib(tmp_path):
    assert type(storage.as_path(tmp_path)) is type(tmp_path) and not storage.is_remote(tmp_path)
    assert storage.is_remote("gs://b/x") and storage.is_remote("s3://b/x")


@pytest.mark.parametrize("scheme", SCHEMES)
def test_parquet_and_csv_sources_stream_from_a_bucket(object_stores, tmp_path, scheme):
    """Training sources read from buckets: Parquet row group by row group (ranged reads), CSV files whole;
    records equal the local sources'. A missing path inside an existing bucket is named."""
    from toto_jax.data.sources import CsvSource, ParquetSource

    bucket = object_stores.new_bucket(scheme)
    assert cli_main(["data", "convert", str(NAB), f"{bucket}/nab", "--rows-per-group", "1"]) == 0
    local = ParquetSource(convert_csv_directory(NAB, tmp_path / "local", rows_per_group=1)["files"])
    remote = ParquetSource(f"{bucket}/nab")
    assert len(remote) == len(local) > 0
    for index in range(len(local)):
        np.testing.assert_array_equal(remote[index]["target"], local[index]["target"])
    assert remote.row_group_reads == len(local)

    storage.as_path(f"{bucket}/csv/sample.csv").write_bytes((NAB / "sample_nab_cpu.csv").read_bytes())
    remote_csv, local_csv = CsvSource(f"{bucket}/csv"), CsvSource(NAB)
    np.testing.assert_array_equal(remote_csv[0]["target"], local_csv[0]["target"])
    with pytest.raises(Exception, match=f"data path does not exist: {bucket}/nothing"):
        ParquetSource(f"{bucket}/nothing")
