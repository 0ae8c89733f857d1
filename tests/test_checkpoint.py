"""Native checkpoints and export to the reference's PyTorch layout, both directions checked against toto-ts.

Parity tolerance: 1e-4 relative (``reference.relative_error``), float32. Writes only to tmp dirs.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import jax
import numpy as np
import pytest
import safetensors.numpy
import safetensors.torch
import torch
from flax import nnx
from reference import (
    ReferenceToto,
    make_reference,
    reference_config,
    reference_forward,
    relative_error,
    save_reference,
)

import toto_jax
from toto_jax.checkpoint import checkpoint_kind
from toto_jax.checkpoint.cli import tensor_group_checksums
from toto_jax.cli import main as cli_main
from toto_jax.config import TotoConfig

TOLERANCE = 1e-4


def _inputs(batch=2, variates=3, time=32, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(time)
    series = (10.0 + 3.0 * np.sin(2 * np.pi * t / 8)[None, None] + rng.standard_normal((batch, variates, time)))
    series = series.astype(np.float32) * np.float32(50.0)
    padding_mask = np.ones(series.shape, bool)
    padding_mask[0, 0, :5] = False
    series[~padding_mask] = 0.0
    id_mask = np.zeros(series.shape, np.int32)
    id_mask[-1, -1] = 1
    return series, padding_mask, id_mask


def _jax_model(config: TotoConfig, seed: int) -> toto_jax.Toto:
    """A model initialised in JAX, with norm scales moved away from 1 so that they are exercised."""
    model = toto_jax.Toto(config, rngs=nnx.Rngs(seed))
    key = jax.random.key(seed + 1)
    for path, variable in nnx.to_flat_state(nnx.state(model, nnx.Param)):
        if path[-2] in ("norm1", "norm2"):
            key, sub = jax.random.split(key)
            variable[...] = 1.0 + 0.2 * jax.random.normal(sub, variable.shape)
    return model


def _assert_same_arrays(a: toto_jax.Toto, b: toto_jax.Toto):
    flat_a = dict(nnx.to_flat_state(nnx.state(a)))
    flat_b = dict(nnx.to_flat_state(nnx.state(b)))
    assert flat_a.keys() == flat_b.keys()
    for path in flat_a:
        assert np.array_equal(np.asarray(flat_a[path][...]), np.asarray(flat_b[path][...])), path


@functools.partial(nnx.jit, static_argnames="num_exogenous")
def _forward(model, series, padding_mask, id_mask, num_exogenous=0):
    # One compiled program (shared by models of one config) instead of many eagerly compiled ops.
    return model(series, padding_mask, id_mask, num_exogenous_variables=num_exogenous)


def _assert_forward_equal(model: toto_jax.Toto, reference, num_exogenous=0):
    series, padding_mask, id_mask = _inputs()
    expected = reference_forward(reference, series, padding_mask, id_mask, num_exogenous=num_exogenous)
    actual = _forward(model, series, padding_mask, id_mask, num_exogenous=num_exogenous)
    assert relative_error(actual.loc, expected.loc.numpy()) <= TOLERANCE
    assert relative_error(actual.scale, expected.scale.numpy()) <= TOLERANCE
    assert relative_error(actual.distribution.mean, expected.distribution.mean.numpy()) <= TOLERANCE
    target = torch.as_tensor(np.asarray(series) / 50.0 - 10.0)
    expected_log_prob = expected.distribution.log_prob(target).numpy()
    assert relative_error(actual.distribution.log_prob(np.asarray(target)), expected_log_prob) <= TOLERANCE


def _torch_bytes(directory) -> dict[str, tuple[str, tuple, bytes]]:
    tensors = safetensors.numpy.load_file(str(directory / "model.safetensors"))
    return {k: (str(v.dtype), v.shape, v.tobytes()) for k, v in tensors.items()}


# ---- torch -> native -> torch ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def reference_checkpoint(tmp_path_factory):
    """A reference model with variate labels enabled (so the exogenous parameters are part of the round trip)."""
    config = reference_config()
    reference = make_reference(config, seed=11, variate_labels=True)
    return reference, save_reference(reference, config, tmp_path_factory.mktemp("reference"))


def test_torch_native_torch_round_trip_is_bit_identical(reference_checkpoint, tmp_path):
    reference, source = reference_checkpoint
    model = toto_jax.load(source)
    toto_jax.save(model, tmp_path / "native")
    assert checkpoint_kind(tmp_path / "native") == "native"
    native = toto_jax.load(tmp_path / "native")
    assert native.config == model.config and native.config.variate_labels
    _assert_same_arrays(native, model)
    toto_jax.export_torch(native, tmp_path / "torch")
    original, exported = _torch_bytes(source), _torch_bytes(tmp_path / "torch")
    assert exported.keys() == original.keys()
    assert "model.exogenous_variate_label" in exported and "model.target_variate_label" in exported
    for key in original:
        assert exported[key] == original[key], key
    assert TotoConfig.from_dict(json.loads((tmp_path / "torch" / "config.json").read_text())) == model.config.replace(
        variate_labels=False
    )  # the reference's config.json has no flag: the label tensors themselves switch labels on


def test_cli_converts_both_ways_and_prints_checksums(reference_checkpoint, tmp_path, capsys):
    _, source = reference_checkpoint
    assert cli_main(["convert", str(source), str(tmp_path / "native")]) == 0
    to_native = capsys.readouterr().out
    assert checkpoint_kind(tmp_path / "native") == "native"
    assert cli_main(["convert", str(tmp_path / "native"), str(tmp_path / "torch"), "--to", "torch"]) == 0
    to_torch = capsys.readouterr().out
    assert _torch_bytes(tmp_path / "torch") == _torch_bytes(source)

    model = toto_jax.load(source)
    checksums = tensor_group_checksums(model)
    total = toto_jax.count_parameters(model)
    assert set(checksums) == {
        "patch_embed", "unembed", "output_distribution", "variate_labels",
        *(f"transformer.layers.{i:02d}" for i in range(model.config.num_layers)),
    }  # fmt: skip
    assert sum(count for count, _ in checksums.values()) == total
    for output in (to_native, to_torch):  # the same checksums whichever way the tensors went
        assert output.splitlines()[-1].split()[:2] == ["total", f"{total:,}"]
        for group, (count, digest) in checksums.items():
            assert any(line.split()[:3] == [group, f"{count:,}", digest] for line in output.splitlines()), group
    assert "converted torch checkpoint" in to_native and "-> native checkpoint" in to_native


def test_checksums_tell_different_weights_apart(reference_checkpoint):
    _, source = reference_checkpoint
    model = toto_jax.load(source)
    before = tensor_group_checksums(model)
    kernel = model.unembed.kernel
    kernel[...] = kernel[...].at[0, 0, 0].add(1e-3)
    after = tensor_group_checksums(model)
    assert [g for g in before if before[g] != after[g]] == ["unembed"]


# ---- JAX -> reference -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def jax_exported(tmp_path_factory):
    config = TotoConfig.from_reference_dict(reference_config()).replace(dropout=0.0)
    model = _jax_model(config, seed=5)
    directory = toto_jax.export_torch(model, tmp_path_factory.mktemp("exported") / "torch")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = ReferenceToto.load_from_checkpoint(str(directory)).eval()
    return model, reference, directory


def test_jax_model_exported_loads_in_reference_with_equal_forward(jax_exported):
    model, reference, directory = jax_exported
    config = json.loads((directory / "config.json").read_text())
    assert config["scaler_cls"] == "<class 'model.scaler.CausalPatchStdMeanScaler'>"
    assert config["output_distribution_classes"] == ["<class 'model.distribution.MixtureOfStudentTsOutput'>"]
    keys = safetensors.numpy.load_file(str(directory / "model.safetensors")).keys()
    assert "model.transformer.layers.0.mlp.0.weight" in keys and not any("w12" in k for k in keys)
    # load_from_checkpoint loads strictly: every reference parameter came from the file, none was left at init.
    assert set(keys) == set(reference.state_dict())
    _assert_forward_equal(model, reference)


def test_jax_model_exported_gives_reference_mean_forecast(jax_exported):
    from toto.data.util.dataset import MaskedTimeseries
    from toto.inference.forecaster import TotoForecaster

    from toto_jax.forecasting import ForecastOptions, forecast

    model, reference, _ = jax_exported
    series, padding_mask, id_mask = _inputs(batch=1)
    horizon = 2 * model.config.patch_size
    inputs = MaskedTimeseries(
        series=torch.as_tensor(series),
        padding_mask=torch.as_tensor(padding_mask),
        id_mask=torch.as_tensor(id_mask),
        timestamp_seconds=torch.zeros(series.shape, dtype=torch.int64),
        time_interval_seconds=torch.ones(series.shape[:2], dtype=torch.int64),
    )
    with torch.no_grad():
        expected = TotoForecaster(reference.model).forecast(inputs, horizon, num_samples=None, use_kv_cache=True)
    actual = forecast(model, series, horizon, num_samples=None, padding_mask=padding_mask, id_mask=id_mask,
                      options=ForecastOptions.reference())
    assert actual.mean.shape == tuple(expected.mean.shape)
    assert relative_error(actual.mean, expected.mean.numpy()) <= TOLERANCE


def test_exogenous_variate_labels_survive_both_directions(reference_checkpoint, tmp_path):
    # reference -> JAX: label tensors are read, and switch labels on.
    reference, source = reference_checkpoint
    _assert_forward_equal(toto_jax.load(source), reference, num_exogenous=1)

    # JAX -> reference: the reference keeps labels only after enable_variate_labels, then loads strictly.
    config = TotoConfig.from_reference_dict(reference_config()).replace(dropout=0.0, variate_labels=True)
    model = _jax_model(config, seed=9)
    toto_jax.export_torch(model, tmp_path / "torch")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loaded = ReferenceToto(**json.loads((tmp_path / "torch" / "config.json").read_text()))
    loaded.model.enable_variate_labels()
    loaded.load_state_dict(safetensors.torch.load_file(str(tmp_path / "torch" / "model.safetensors")), strict=True)
    _assert_forward_equal(model, loaded.eval(), num_exogenous=1)


# ---- meshes -----------------------------------------------------------------------------------------
def _shard_shapes(array) -> set[tuple]:
    return {tuple(shard.data.shape) for shard in array.addressable_shards}


def test_native_checkpoint_moves_between_meshes(reference_checkpoint, tmp_path):
    from toto_jax.sharding import DEFAULT_RULES, make_mesh

    assert len(jax.devices()) == 8
    _, source = reference_checkpoint
    single = toto_jax.load(source)  # one device
    toto_jax.save(single, tmp_path / "single")

    mesh_a = make_mesh((2, 2, 2))
    on_a = toto_jax.load(tmp_path / "single", mesh=mesh_a)
    _assert_same_arrays(on_a, single)
    kernel = on_a.transformer.stages[0].layers[0].mlp.w_up.kernel[...]  # [layers, embed, mlp]
    assert kernel.sharding.spec == jax.sharding.PartitionSpec(None, "fsdp", "tensor")
    assert _shard_shapes(kernel) == {(2, 16, 24)}  # each device holds a quarter, never the whole array

    # Saved from the sharded model, restored with another mesh shape and other rules.
    toto_jax.save(on_a, tmp_path / "sharded")
    mesh_b = make_mesh((1, 2, 4))
    rules_b = tuple((name, "tensor" if name == "embed" else axes) for name, axes in DEFAULT_RULES)
    on_b = toto_jax.load(tmp_path / "sharded", mesh=mesh_b, rules=rules_b)
    _assert_same_arrays(on_b, single)
    kernel = on_b.transformer.stages[0].layers[0].mlp.w_up.kernel[...]
    assert kernel.sharding.mesh.shape == {"data": 1, "fsdp": 2, "tensor": 4}
    assert kernel.sharding.spec == jax.sharding.PartitionSpec(None, "tensor", None)
    assert _shard_shapes(kernel) == {(2, 8, 48)}

    # 4 heads cannot be split over 8 devices: named before anything is read.
    with pytest.raises(toto_jax.CheckpointError, match=r"cannot evenly split .*attention\.wQKV\.kernel"):
        toto_jax.load(tmp_path / "sharded", mesh=make_mesh((1, 1, 8)))


def test_torch_checkpoint_loads_onto_mesh(reference_checkpoint):
    from toto_jax.sharding import make_mesh

    _, source = reference_checkpoint
    single = toto_jax.load(source)
    sharded = toto_jax.load(source, mesh=make_mesh((1, 4, 2)))
    _assert_same_arrays(sharded, single)
    label = sharded.variate_labels.exogenous_variate_label[...]  # ("embed",) -> fsdp
    assert _shard_shapes(label) == {(8,)}


# ---- errors and atomic writes -------------------------------------------------------------------------
def test_convert_refuses_non_empty_destination_without_overwrite(reference_checkpoint, tmp_path, capsys):
    _, source = reference_checkpoint
    destination = tmp_path / "busy"
    destination.mkdir()
    (destination / "notes.txt").write_text("keep me")
    assert cli_main(["convert", str(source), str(destination)]) == 2
    error = capsys.readouterr().err
    assert "is not empty" in error and "--overwrite" in error and "Traceback" not in error
    assert [p.name for p in destination.iterdir()] == ["notes.txt"]
    with pytest.raises(toto_jax.CheckpointError, match="is not empty"):
        toto_jax.save(toto_jax.load(source), destination)

    assert cli_main(["convert", str(source), str(destination), "--overwrite"]) == 0
    assert checkpoint_kind(destination) == "native" and not (destination / "notes.txt").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["busy"]  # no staging or retired directories left behind


def test_truncated_safetensors_is_named_and_leaves_no_destination(reference_checkpoint, tmp_path, capsys):
    _, source = reference_checkpoint
    broken = tmp_path / "broken"
    broken.mkdir()
    data = (source / "model.safetensors").read_bytes()
    (broken / "model.safetensors").write_bytes(data[: len(data) // 2])
    (broken / "config.json").write_text((source / "config.json").read_text())
    with pytest.raises(toto_jax.CheckpointError, match="truncated or not a safetensors file"):
        toto_jax.load(broken)
    assert cli_main(["convert", str(broken), str(tmp_path / "out")]) == 2
    assert "truncated or not a safetensors file" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken"]


def test_native_checkpoint_missing_config_or_marker_is_not_valid(reference_checkpoint, tmp_path):
    _, source = reference_checkpoint
    model = toto_jax.load(source)
    toto_jax.save(model, tmp_path / "no_config")
    (tmp_path / "no_config" / "config.json").unlink()
    with pytest.raises(toto_jax.CheckpointError, match="missing its config.json"):
        toto_jax.load(tmp_path / "no_config")

    toto_jax.save(model, tmp_path / "no_marker")
    (tmp_path / "no_marker" / "toto_jax_checkpoint.json").unlink()
    with pytest.raises(toto_jax.CheckpointError, match="incomplete native checkpoint"):
        toto_jax.load(tmp_path / "no_marker")

    toto_jax.save(model, tmp_path / "other_shape")
    config = json.loads((tmp_path / "other_shape" / "config.json").read_text())
    (tmp_path / "other_shape" / "config.json").write_text(json.dumps({**config, "mlp_hidden_dim": 64}))
    with pytest.raises(toto_jax.CheckpointError, match="cannot restore the arrays .* stored with other shapes"):
        toto_jax.load(tmp_path / "other_shape")

    toto_jax.save(model, tmp_path / "damaged")
    for data_file in (tmp_path / "damaged" / "state").glob("**/d/*"):
        data_file.write_bytes(data_file.read_bytes()[:10])
    with pytest.raises(toto_jax.CheckpointError, match=r"cannot restore the arrays .*\(damaged"):
        toto_jax.load(tmp_path / "damaged")


@pytest.mark.parametrize("writer", ["save", "export_torch"])
def test_failed_write_leaves_destination_untouched(reference_checkpoint, tmp_path, monkeypatch, writer):
    _, source = reference_checkpoint
    model = toto_jax.load(source)
    write = getattr(toto_jax, writer)
    write(model, tmp_path / "existing")
    before = {p.relative_to(tmp_path): p.read_bytes() for p in (tmp_path / "existing").rglob("*") if p.is_file()}

    if writer == "save":  # fails after orbax wrote the arrays, before the config and the marker
        def fail(self):
            raise OSError("disk full")

        monkeypatch.setattr(TotoConfig, "to_dict", fail)
    else:  # fails half way through the tensors
        def fail(tensors, filename, metadata=None):
            Path(filename).write_bytes(b"partial")
            raise OSError("disk full")

        monkeypatch.setattr(safetensors.numpy, "save_file", fail)
    for destination in (tmp_path / "new", tmp_path / "existing"):
        with pytest.raises(OSError, match="disk full"):
            write(model, destination, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["existing"]
    after = {p.relative_to(tmp_path): p.read_bytes() for p in (tmp_path / "existing").rglob("*") if p.is_file()}
    assert after == before


def test_load_rejects_unknown_directory(tmp_path):
    (tmp_path / "readme.txt").write_text("not a model")
    with pytest.raises(toto_jax.CheckpointError, match="is not a checkpoint"):
        toto_jax.load(tmp_path)


def test_training_run_directory_loads_and_converts(reference_checkpoint, tmp_path, capsys):
    from toto_jax.train.checkpointing import RunCheckpoints

    _, source = reference_checkpoint
    model = toto_jax.load(source)
    run = RunCheckpoints(tmp_path / "run", async_save=False)
    run.save(
        7, nnx.state(model, nnx.Param), {"count": np.zeros((), np.int32)}, np.zeros(2, np.uint32), {},
        {"model": model.config.to_dict()},
    )  # fmt: skip
    run.close()
    assert checkpoint_kind(tmp_path / "run") == "run"
    _assert_same_arrays(toto_jax.load(tmp_path / "run"), model)

    assert cli_main(["convert", str(tmp_path / "run"), str(tmp_path / "torch")]) == 2
    assert "--to {native,torch} is required" in capsys.readouterr().err
    assert cli_main(["convert", str(tmp_path / "run"), str(tmp_path / "torch"), "--to", "torch"]) == 0
    assert _torch_bytes(tmp_path / "torch") == _torch_bytes(source)


# Broken checkpoints read in a fresh process: orbax reads a tree's arrays concurrently and closes its event loop
# at the first failure, leaving the other reads to print "Event loop is closed" / "Encountered error while
# reading array index" tracebacks later (in pytest: warnings attached to whichever test runs then). Loading
# checks shapes and readability before orbax reads, so a broken checkpoint gives its error and nothing else.
_BROKEN_CHECKPOINTS = textwrap.dedent(
    """
    import gc, json, sys, time, warnings
    from pathlib import Path
    import numpy as np
    from flax import nnx
    import toto_jax
    from toto_jax.train.checkpointing import RunCheckpoints

    source, tmp = Path(sys.argv[1]), Path(sys.argv[2])
    model = toto_jax.load(source)
    for attempt in range(4):  # each leaked tracebacks about 3 times in 4 before the checks
        other = toto_jax.save(model, tmp / f"other_shape{attempt}")
        config = json.loads((other / "config.json").read_text())
        (other / "config.json").write_text(json.dumps({**config, "mlp_hidden_dim": 64}))
        damaged = toto_jax.save(model, tmp / f"damaged{attempt}")
        for data_file in (damaged / "state").glob("**/d/*"):
            data_file.write_bytes(data_file.read_bytes()[:10])
        for broken in (other, damaged):
            try:
                toto_jax.load(broken)
            except toto_jax.CheckpointError:
                pass
            else:
                raise AssertionError(f"{broken} loaded")

    params, opt_state = nnx.state(model, nnx.Param), {"count": np.zeros((), np.int32)}
    run = RunCheckpoints(tmp / "run", async_save=False)
    for step in (1, 2):
        run.save(step, params, opt_state, np.zeros(2, np.uint32), {}, {"model": model.config.to_dict()})
    run.close()
    for file in (tmp / "run" / "checkpoints" / "2" / "params").rglob("*"):
        if file.is_file() and "metadata" not in file.name:
            file.write_bytes(bytes(7))
    run = RunCheckpoints(tmp / "run")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert run.restore_latest(params, opt_state).step == 1
    run.close()
    assert any("skipping unreadable checkpoint step 2" in str(w.message) for w in caught), caught
    gc.collect()
    time.sleep(0.5)  # reads orbax left running would now finish in TensorStore's threads
    gc.collect()
    print("checked")
    """
)


def test_broken_checkpoints_fail_without_stray_tracebacks(reference_checkpoint, tmp_path):
    _, source = reference_checkpoint
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    result = subprocess.run(
        [sys.executable, "-c", _BROKEN_CHECKPOINTS, str(source), str(tmp_path)],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0 and "checked" in result.stdout, result.stdout + result.stderr[-5000:]
    for stray in ("Traceback", "Exception ignored", "Event loop is closed", "never awaited"):
        assert stray not in result.stderr, result.stderr[-5000:]
