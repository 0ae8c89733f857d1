"""Object storage (gs:// and s3://) wherever toto-jax takes a path, against real servers on loopback
(tests/storage_servers.py): checkpoints saved, exported and loaded, data converted into buckets; errors that
name the path, before any work, when a bucket is missing, its endpoint does not answer or there are no
credentials; half-written checkpoints named and skipped."""

from __future__ import annotations

import contextlib
import re
import socket
import time
from pathlib import Path

import jax
import numpy as np
import pyarrow.parquet as pq
import pytest
from flax import nnx
from tiny_models import assert_same_parameters, tiny_toto1

import toto_jax
from toto_jax import storage
from toto_jax.checkpoint import CheckpointError, checkpoint_kind
from toto_jax.cli import main as cli_main
from toto_jax.data.convert import convert_csv_directory

SCHEMES = ["gs", "s3"]
NAB = Path(__file__).parents[1] / "toto_jax" / "assets"
TINY = Path(__file__).parents[1] / "experiments" / "configs" / "tiny.yaml"


@pytest.fixture(scope="module")
def model():
    return tiny_toto1()


@pytest.mark.parametrize("scheme", SCHEMES)
def test_files_cross_a_bucket_byte_for_byte(object_stores, tmp_path, scheme):
    """Uploads and downloads keep every byte, whatever line-ending bytes a (binary) file ends in."""
    endings = {"cr": b"\r", "lf": b"\n", "crlf": b"\r\n", "lfcr": b"\n\r", "none": b"", "empty": None}
    files = {name: b"" if ending is None else bytes(range(256)) + ending for name, ending in endings.items()}
    for name, content in files.items():
        (tmp_path / name).write_bytes(content)
    destination = storage.as_path(f"{object_stores.new_bucket(scheme)}/files")
    storage.upload_directory(tmp_path, destination)
    with storage.local_copy(destination) as local:
        assert {p.name: p.read_bytes() for p in local.iterdir()} == files


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


def test_convert_reads_and_writes_buckets(object_stores, model, capsys):
    torch, native = f"{object_stores.new_bucket('gs')}/torch", f"{object_stores.new_bucket('s3')}/native"
    toto_jax.export_torch(model, torch)
    assert cli_main(["convert", torch, native]) == 0
    assert f"converted torch checkpoint {torch} -> native checkpoint {native}" in capsys.readouterr().out
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


@pytest.mark.parametrize("place", ["local", "gs"])
def test_half_written_checkpoint_is_skipped_with_a_warning_naming_it(object_stores, model, tmp_path, place):
    """A run killed mid-save leaves a step without its completion: locally orbax's temporary directory, on
    gs:// (written in place) the step without the commit_success.txt orbax writes last. Restores and loads
    take the previous step and name the one they skip."""
    from toto_jax.train.checkpointing import RunCheckpoints

    workdir = str(tmp_path / "run") if place == "local" else f"{object_stores.new_bucket('gs')}/run"
    params, opt_state = nnx.state(model, nnx.Param), {"count": np.zeros((), np.int32)}
    run = RunCheckpoints(workdir, async_save=False)
    run.save(1, params, opt_state, np.zeros(2, np.uint32), {}, {"model": model.config.to_dict()})
    doubled = jax.tree.map(lambda x: 2 * x, params)
    run.save(2, doubled, opt_state, np.zeros(2, np.uint32), {}, {"model": model.config.to_dict()})
    run.close()
    if place == "local":
        half_written = Path(workdir) / "checkpoints" / "2.orbax-checkpoint-tmp-1"
        (Path(workdir) / "checkpoints" / "2").rename(half_written)
    else:
        half_written = f"{workdir}/checkpoints/2"
        storage.as_path(f"{half_written}/commit_success.txt").unlink()

    with pytest.warns(UserWarning, match=f"skipping half-written checkpoint {half_written}: its save did not finish"):
        assert_same_parameters(toto_jax.load(workdir), model)
    with pytest.warns(UserWarning, match=f"skipping half-written checkpoint {half_written}"):
        run = RunCheckpoints(workdir, async_save=False)
    assert run.restore_latest(params, opt_state).step == 1
    run.close()
    if place == "local":  # orbax deletes it in a background thread the next run starts (on gs:// not always)
        deadline = time.monotonic() + 60
        while Path(half_written).exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not Path(half_written).exists()


def closed_port_url() -> str:
    """An http URL on loopback where nothing listens (connections are refused)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}"


def forget_clients() -> None:
    """Drop the cached gcsfs / s3fs instances: new ones read the endpoints and credentials again."""
    import gcsfs
    import s3fs

    gcsfs.GCSFileSystem.clear_instance_cache()
    s3fs.S3FileSystem.clear_instance_cache()


def assert_refused_quickly(path: str, reason: str, capsys) -> None:
    """``toto_jax.load`` and ``toto-jax train --workdir`` both stop at once, naming ``path`` and ``reason``."""
    start = time.monotonic()
    with pytest.raises(storage.StorageError, match=f"{path}: {reason}"):
        toto_jax.load(path)
    capsys.readouterr()
    assert cli_main(["train", "--config", str(TINY), "--workdir", path, "--steps", "2"]) == 2
    assert re.search(f"{path}: {reason}", capsys.readouterr().err)
    assert time.monotonic() - start < 10  # the clients' own retries take half a minute or more


@pytest.mark.parametrize("scheme", SCHEMES)
def test_unreachable_endpoint_fails_at_once_naming_the_path(object_stores, monkeypatch, request, capsys, scheme):
    closed = closed_port_url()
    for variable in ["STORAGE_EMULATOR_HOST", "TENSORSTORE_GCS_HTTP_URL"] if scheme == "gs" else ["AWS_ENDPOINT_URL"]:
        monkeypatch.setenv(variable, closed)
    forget_clients()
    request.addfinalizer(forget_clients)
    path = f"{scheme}://some-bucket/run"
    assert_refused_quickly(path, f"cannot reach bucket {scheme}://some-bucket: .* endpoint {closed} does not answer "
                                 r"\(ConnectionRefusedError", capsys)  # fmt: skip


@pytest.mark.parametrize("scheme", SCHEMES)
def test_missing_credentials_fail_at_once_naming_the_path(object_stores, monkeypatch, request, tmp_path, capsys,
                                                         scheme):
    bucket = object_stores.new_bucket(scheme)  # it exists: only the credentials are missing
    if scheme == "gs":
        monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
        monkeypatch.delenv("GOOGLE_AUTH_TOKEN_FOR_TESTING")
        monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path))  # no gcloud application-default credentials
        monkeypatch.setenv("NO_GCE_CHECK", "true")  # not a Compute Engine VM: no metadata-server credentials
        refusing = object_stores.private_gcs()  # the emulator otherwise accepts anonymous requests
        reason = f"cannot access bucket {bucket} .*401.*no Google credentials were found"
    else:
        for variable in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
            monkeypatch.delenv(variable, raising=False)
        for variable in ("AWS_SHARED_CREDENTIALS_FILE", "AWS_CONFIG_FILE"):
            monkeypatch.setenv(variable, str(tmp_path / "none"))
        monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # not an EC2 instance
        refusing = contextlib.nullcontext()
        reason = rf"cannot access bucket {bucket} \(NoCredentialsError: Unable to locate credentials"
    forget_clients()
    request.addfinalizer(forget_clients)
    with refusing:
        assert_refused_quickly(f"{bucket}/run", reason, capsys)
