"""Checkpoints on the Hugging Face Hub (``hf://OWNER/NAME[@REVISION]``), downloaded by huggingface_hub from a
Hub on loopback (tests/hub_server.py) into a temporary cache: the config and weights (one file or every shard)
and nothing else, once; the cache alone when offline; errors that name the model, revision or file."""

from __future__ import annotations

import json
import socket
import time

import numpy as np
import pandas as pd
import pytest
import safetensors.numpy
from hub_server import commit_of, running_hub
from tiny_models import assert_same_parameters, tiny_toto1

import toto_jax
from toto_jax.checkpoint import CheckpointError, checkpoint_kind
from toto_jax.cli import main as cli_main


@pytest.fixture(scope="module")
def model():
    return tiny_toto1()


@pytest.fixture(scope="module")
def repositories(tmp_path_factory, model):
    """Published directories: 'plain' (config + model.safetensors + a README not to download), 'sharded'
    (the same weights in two shards and their index), 'no-weights' (a config alone)."""
    root = tmp_path_factory.mktemp("hub")
    plain = toto_jax.export_torch(model, root / "plain")
    (plain / "README.md").write_text("a model card\n")
    tensors = safetensors.numpy.load_file(plain / "model.safetensors")
    sharded = root / "sharded"
    sharded.mkdir()
    (sharded / "config.json").write_bytes((plain / "config.json").read_bytes())
    weight_map = {}
    for shard, keys in enumerate(np.array_split(sorted(tensors), 2), start=1):
        name = f"model-0000{shard}-of-00002.safetensors"
        safetensors.numpy.save_file({key: tensors[key] for key in keys}, sharded / name)
        weight_map.update(dict.fromkeys(keys, name))
    (sharded / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    no_weights = root / "no-weights"
    no_weights.mkdir()
    (no_weights / "config.json").write_bytes((plain / "config.json").read_bytes())
    return {"plain": plain, "sharded": sharded, "no-weights": no_weights}


@pytest.fixture
def hub(repositories, tmp_path):
    """The Hub on loopback with the three repositories under 'Datadog/', and an empty cache."""
    from huggingface_hub import constants

    with running_hub() as hub, pytest.MonkeyPatch.context() as patch:
        for name, directory in repositories.items():
            hub.add(f"Datadog/{name}", directory)
        patch.setenv("HF_ENDPOINT", hub.url)
        patch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
        yield hub


def test_a_hub_model_downloads_once_without_extra_files_and_exports_bit_identically(hub, model, repositories, tmp_path):
    loaded = toto_jax.load("hf://Datadog/plain")
    assert_same_parameters(loaded, model)
    assert sorted(hub.downloads) == ["Datadog/plain/config.json", "Datadog/plain/model.safetensors"]
    exported = toto_jax.export_torch(loaded, tmp_path / "exported")
    for file in ("config.json", "model.safetensors"):
        assert (exported / file).read_bytes() == (repositories["plain"] / file).read_bytes(), file
    assert_same_parameters(toto_jax.load(f"hf://Datadog/plain@{commit_of('Datadog/plain')}"), model)
    assert len(hub.downloads) == 2  # the second load, at the same commit, reads the cache


def test_a_sharded_hub_model_downloads_its_index_and_every_shard(hub, model):
    assert_same_parameters(toto_jax.load("hf://Datadog/sharded"), model)
    assert sorted(hub.downloads) == [
        "Datadog/sharded/config.json",
        "Datadog/sharded/model-00001-of-00002.safetensors",
        "Datadog/sharded/model-00002-of-00002.safetensors",
        "Datadog/sharded/model.safetensors.index.json",
    ]


def test_offline_the_cache_serves_what_was_downloaded(hub, model, monkeypatch):
    from huggingface_hub import constants

    toto_jax.load("hf://Datadog/sharded")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert_same_parameters(toto_jax.load("hf://Datadog/sharded"), model)
    with pytest.raises(CheckpointError, match=r"hf://Datadog/plain: HF_HUB_OFFLINE is set and config\.json is not in "
                       r"the Hub cache \(.*cache\)\. .* or load it from a local path"):  # fmt: skip
        toto_jax.load("hf://Datadog/plain")


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_silent_hub_fails_within_the_probe_timeout(tmp_path, monkeypatch):
    """A Hub that accepts the connection and never answers (a firewall that drops, a hung proxy) is given up on
    after one request's PROBE_TIMEOUT_S, not after retries per file, with the same error."""
    from huggingface_hub import constants

    from toto_jax.checkpoint.hub import PROBE_TIMEOUT_S

    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)  # the kernel completes the handshake; nothing ever reads or answers
        endpoint = f"http://127.0.0.1:{server.getsockname()[1]}"
        monkeypatch.setenv("HF_ENDPOINT", endpoint)
        monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
        began = time.perf_counter()
        with pytest.raises(CheckpointError, match=rf"the Hugging Face Hub \({endpoint}\) cannot be reached \(.*Timeout"):
            toto_jax.load("hf://Datadog/plain")
        assert PROBE_TIMEOUT_S <= time.perf_counter() - began < 5


def test_an_unreachable_hub_fails_fast_with_what_to_do(tmp_path, monkeypatch, capfd):
    """No Hub answers (a closed port on loopback, as without a network) and nothing is cached: the load fails
    in under 5 s (not after huggingface_hub's ~25 s of retries) with one error that names the endpoint,
    HF_HUB_OFFLINE, the cache and local paths; through the CLI that error is the only line printed."""
    from huggingface_hub import constants

    endpoint = f"http://127.0.0.1:{_closed_port()}"
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    began = time.perf_counter()
    with pytest.raises(CheckpointError) as error:
        toto_jax.load("hf://Datadog/plain")
    assert time.perf_counter() - began < 5
    message = str(error.value)
    for part in (f"the Hugging Face Hub ({endpoint}) cannot be reached", "HF_HUB_OFFLINE=1", str(tmp_path / "cache"),
                 "load it from a local path"):  # fmt: skip
        assert part in message, part
    source = tmp_path / "in.csv"
    pd.DataFrame({"timestamp": pd.date_range("2024-01-01", periods=32, freq="h"), "load": np.arange(32.0)}).to_csv(
        source, index=False)  # fmt: skip
    capfd.readouterr()
    began = time.perf_counter()
    code = cli_main(["forecast", "--checkpoint", "hf://Datadog/plain", "--input", str(source), "--horizon", "4",
                     "--output", str(tmp_path / "out.csv")])  # fmt: skip
    assert code == 2 and time.perf_counter() - began < 5
    printed = capfd.readouterr()
    assert printed.out == "" and printed.err.count("\n") == 1 and "HF_HUB_OFFLINE=1" in printed.err
    assert not (tmp_path / "out.csv").exists()


def test_an_unreachable_hub_falls_back_to_the_cache_with_a_warning(hub, model, monkeypatch):
    toto_jax.load("hf://Datadog/plain")
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
    with pytest.warns(UserWarning, match=r"hf://Datadog/plain: the Hugging Face Hub cannot be reached .*; using the "
                      r"copy in the cache"):  # fmt: skip
        assert_same_parameters(toto_jax.load("hf://Datadog/plain"), model)


@pytest.mark.parametrize(
    "name, message",
    [
        ("hf://Datadog/absent", r"hf://Datadog/absent: the Hugging Face Hub has no model Datadog/absent \(or it is "),
        ("hf://Datadog/plain@v9", r"hf://Datadog/plain@v9: the Hub model Datadog/plain has no revision 'v9'"),
        ("hf://Datadog/no-weights", r"hf://Datadog/no-weights is not a checkpoint: the Hub model Datadog/no-weights "
         r"has no model\.safetensors \(or model\.safetensors\.index\.json\)"),
        ("hf://Toto-Open-Base-1.0", r"hf://Toto-Open-Base-1.0: a Hugging Face Hub checkpoint is named hf://OWNER/NAME"),
        ("Datadog/plain", r"checkpoint not found: Datadog/plain \(a model on the Hugging Face Hub is named "
         r"hf://Datadog/plain\)"),
    ],
)  # fmt: skip
def test_hub_errors_name_the_model(hub, name, message):
    with pytest.raises(CheckpointError, match=message):
        toto_jax.load(name)


def test_convert_reads_a_hub_model(hub, model, tmp_path, capsys):
    assert cli_main(["convert", "hf://Datadog/plain", str(tmp_path / "native")]) == 0
    assert "converted torch checkpoint hf://Datadog/plain -> native checkpoint" in capsys.readouterr().out
    assert checkpoint_kind(tmp_path / "native") == "native"
    assert_same_parameters(toto_jax.load(tmp_path / "native"), model)


@pytest.mark.parametrize("write", ["save", "export_torch"])
def test_writing_to_a_hub_name_is_refused_and_writes_nothing(model, tmp_path, monkeypatch, write):
    monkeypatch.chdir(tmp_path)  # where pathlib would have made hf://Datadog/mine a local hf:/Datadog/mine
    with pytest.raises(ValueError, match=r"hf://Datadog/mine names a model on the Hugging Face Hub, which "):
        getattr(toto_jax, write)(model, "hf://Datadog/mine")
    assert not any(tmp_path.iterdir())
