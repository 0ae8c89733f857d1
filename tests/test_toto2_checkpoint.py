"""Toto 2.0 checkpoints: published toto-2 layouts (single file and shards), their errors, export back to
toto-2 bit for bit, native checkpoints (with the residual-tau buffers), conversion and sharded placement.

Parity tolerance: 5e-5 relative (``reference.relative_error``), float32. Writes only to tmp dirs.
"""

from __future__ import annotations

import dataclasses
import json
import warnings

import jax
import numpy as np
import pytest
import safetensors.numpy
from flax import nnx
from reference import make_reference as make_toto1_reference
from reference import reference_config as toto1_config
from reference import relative_error
from reference import save_reference as save_toto1_reference
from reference2 import config_dict, make_reference, reference_forward, save_reference
from toto2 import Toto2Model, Toto2ModelConfig

import toto_jax
from toto_jax.checkpoint import checkpoint_kind
from toto_jax.cli import main as cli_main
from toto_jax.models.toto2 import Toto2, Toto2Config
from toto_jax.models.toto2.transformer import residual_taus

TOLERANCE = 5e-5
# Grouped-query heads, biases, per-dimension scales and norm weights: every kind of tensor the layout maps.
CONFIG = config_dict(num_groups=2, attn_bias=True, mlp_bias=True, per_dim_scale=True, norm_include_weight=True)


@pytest.fixture(scope="module")
def reference_checkpoint(tmp_path_factory):
    reference = make_reference(CONFIG, seed=5)
    return reference, save_reference(reference, CONFIG, tmp_path_factory.mktemp("toto2_reference"))


@pytest.fixture(scope="module")
def loaded(reference_checkpoint):
    return toto_jax.load(reference_checkpoint[1])


def _inputs(batch=2, variates=3, time=32, seed=0):
    rng = np.random.default_rng(seed)
    series = (5.0 + rng.standard_normal((batch, variates, time))).astype(np.float32)
    mask = np.ones(series.shape, bool)
    mask[0, 1, :5] = False
    series_ids = np.array([[0, 0, 1], [0, 1, 2]], np.int32)
    return series, mask, series_ids


def _file_tensors(directory) -> dict[str, np.ndarray]:
    return safetensors.numpy.load_file(str(directory / "model.safetensors"))


def _write(directory, tensors: dict[str, np.ndarray], config: dict):
    directory.mkdir()
    safetensors.numpy.save_file(tensors, str(directory / "model.safetensors"))
    (directory / "config.json").write_text(json.dumps(config))
    return directory


def _write_shards(directory, tensors: dict[str, np.ndarray], config: dict):
    """Hugging Face's sharded layout: the tensors split over two files, named by an index's weight_map."""
    directory.mkdir()
    keys = sorted(tensors)
    shards = {"model-00001-of-00002.safetensors": keys[::2], "model-00002-of-00002.safetensors": keys[1::2]}
    for name, shard_keys in shards.items():
        safetensors.numpy.save_file({k: tensors[k] for k in shard_keys}, str(directory / name))
    weight_map = {key: name for name, shard_keys in shards.items() for key in shard_keys}
    index = {"metadata": {"total_size": sum(t.nbytes for t in tensors.values())}, "weight_map": weight_map}
    (directory / "model.safetensors.index.json").write_text(json.dumps(index))
    (directory / "config.json").write_text(json.dumps(config))
    return directory


def _flat_state(model) -> dict[tuple, nnx.Variable]:
    return dict(nnx.to_flat_state(nnx.state(model)))


def _assert_same_state(actual, expected):
    """Same variables (kind, e.g. Param or Buffer), same shapes, same bits."""
    flat_actual, flat_expected = _flat_state(actual), _flat_state(expected)
    assert flat_actual.keys() == flat_expected.keys()
    for path, variable in flat_expected.items():
        assert type(flat_actual[path]) is type(variable), path
        assert np.array_equal(np.asarray(flat_actual[path][...]), np.asarray(variable[...])), path


# ---- reading published checkpoints ----------------------------------------------------------------------
def test_single_file_checkpoint_loads_with_reference_forward(reference_checkpoint, loaded):
    reference, _ = reference_checkpoint
    assert isinstance(loaded, Toto2) and loaded.config == Toto2Config.from_dict(CONFIG)
    series, mask, series_ids = _inputs()
    quantiles, loc, scale = reference_forward(reference, series, mask, series_ids)
    actual = nnx.jit(lambda m, s, k, i: m(s, k, i))(loaded, series, mask, series_ids)
    assert relative_error(actual.quantiles, quantiles) <= TOLERANCE
    assert relative_error(actual.loc, loc) <= TOLERANCE
    assert relative_error(actual.scale, scale) <= TOLERANCE


def test_sharded_checkpoint_loads_like_single_file(reference_checkpoint, loaded, tmp_path):
    _, source = reference_checkpoint
    sharded = _write_shards(tmp_path / "sharded", _file_tensors(source), CONFIG)
    assert not (sharded / "model.safetensors").exists() and checkpoint_kind(sharded) == "torch"
    _assert_same_state(toto_jax.load(sharded), loaded)


def test_shard_listed_in_index_but_absent_is_named(reference_checkpoint, tmp_path):
    _, source = reference_checkpoint
    sharded = _write_shards(tmp_path / "sharded", _file_tensors(source), CONFIG)
    (sharded / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(toto_jax.CheckpointError, match=r"missing from .*\['model-00002-of-00002.safetensors'\]"):
        toto_jax.load(sharded)


def test_missing_extra_and_misshaped_tensors_are_all_listed(reference_checkpoint, tmp_path):
    _, source = reference_checkpoint
    tensors = _file_tensors(source)
    del tensors["transformer.layers.3.mlp_tau"]
    tensors["transformer.layers.0.attn.extra.weight"] = np.zeros(3, np.float32)
    tensors["transformer.layers.1.attn.in_proj.weight"] = np.zeros((48, 32), np.float32)  # MHA rows, not GQA
    with pytest.raises(toto_jax.CheckpointError) as error:
        toto_jax.load(_write(tmp_path / "damaged", tensors, CONFIG))
    message = str(error.value)
    assert "missing tensors: transformer.layers.3.mlp_tau\n" in message
    assert "unexpected tensors: transformer.layers.0.attn.extra.weight\n" in message
    # q: 4 heads x 8, k and v: 2 groups x 8 each.
    assert "transformer.layers.1.attn.in_proj.weight: expected (64, 32), got (48, 32)" in message


def test_unknown_config_keys_are_named_with_the_config_path(reference_checkpoint, tmp_path):
    _, source = reference_checkpoint
    config = {**CONFIG, "num_experts": 4, "moe_top_k": 2, "architectures": ["Toto2Model"]}  # hub keys are fine
    edited = _write(tmp_path / "edited", _file_tensors(source), config)
    with pytest.raises(toto_jax.CheckpointError) as error:
        toto_jax.load(edited)
    assert str(error.value).startswith(f"{edited / 'config.json'}: unknown Toto 2.0 config key(s) ")
    assert "['moe_top_k', 'num_experts']" in str(error.value)


# ---- export to toto-2 ----------------------------------------------------------------------------------
def test_export_is_bit_identical_and_loads_in_reference_with_equal_forward(reference_checkpoint, loaded, tmp_path):
    reference, source = reference_checkpoint
    # This project's config keys (dtype, max_context) stay out of the exported config.json.
    in_bfloat16 = toto_jax.load(source, dtype="bfloat16")
    exported_dir = toto_jax.export_torch(in_bfloat16, tmp_path / "exported")
    exported_config = json.loads((exported_dir / "config.json").read_text())
    assert exported_config.keys() <= {f.name for f in dataclasses.fields(Toto2ModelConfig)}
    assert Toto2Config.from_dict(exported_config) == loaded.config
    exported = _file_tensors(exported_dir)
    original = {k: v.numpy() for k, v in reference.state_dict().items()}
    assert exported.keys() == original.keys()
    assert sum(k.endswith(("attn_tau", "mlp_tau")) for k in exported) == 2 * CONFIG["num_layers"]
    for key, tensor in original.items():
        assert exported[key].dtype == tensor.dtype and exported[key].shape == tensor.shape, key
        assert exported[key].tobytes() == tensor.tobytes(), key

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reloaded = Toto2Model.from_pretrained(str(exported_dir))  # strict: every tensor present, none extra
    assert reloaded.config == reference.config
    series, mask, series_ids = _inputs()
    for actual, expected in zip(
        reference_forward(reloaded, series, mask, series_ids), reference_forward(reference, series, mask, series_ids)
    ):
        assert np.array_equal(actual, expected)


# ---- native checkpoints and conversion ----------------------------------------------------------------
def test_native_round_trip_is_bit_identical_including_taus(loaded, tmp_path):
    toto_jax.save(loaded, tmp_path / "native")
    marker = json.loads((tmp_path / "native" / "toto_jax_checkpoint.json").read_text())
    assert marker["family"] == "toto2"
    native = toto_jax.load(tmp_path / "native")
    assert isinstance(native, Toto2) and native.config == loaded.config
    _assert_same_state(native, loaded)
    # The reference's taus were perturbed: restored from the file, not recomputed by the model's rule.
    layers = native.transformer.groups.layers
    taus = np.array([[layer.attention_tau[...], layer.mlp_tau[...]] for layer in layers])  # [position, 2, group]
    default_taus = residual_taus(native.config).reshape(-1, CONFIG["layer_group_size"], 2).transpose(1, 2, 0)
    assert taus.shape == default_taus.shape and not np.allclose(taus, default_taus)


def test_native_checkpoint_without_family_is_toto1_and_unknown_family_is_named(tmp_path):
    config = toto1_config(num_layers=2)
    toto1 = toto_jax.load(save_toto1_reference(make_toto1_reference(config, seed=1), config, tmp_path / "ref"))
    toto_jax.save(toto1, tmp_path / "before_families")
    marker_path = tmp_path / "before_families" / "toto_jax_checkpoint.json"
    marker = json.loads(marker_path.read_text())
    assert marker.pop("family") == "toto1"
    marker_path.write_text(json.dumps(marker))  # as written before Toto 2.0
    restored = toto_jax.load(tmp_path / "before_families")
    assert isinstance(restored, toto_jax.Toto) and restored.config == toto1.config
    _assert_same_state(restored, toto1)

    marker_path.write_text(json.dumps({**marker, "family": "toto3"}))
    with pytest.raises(toto_jax.CheckpointError, match=r"unknown model family 'toto3'; .*\['toto1', 'toto2'\]"):
        toto_jax.load(tmp_path / "before_families")


def test_cli_converts_toto2_both_ways_bit_identically(reference_checkpoint, tmp_path, capsys):
    _, source = reference_checkpoint
    assert cli_main(["convert", str(source), str(tmp_path / "native")]) == 0
    to_native = capsys.readouterr().out
    assert checkpoint_kind(tmp_path / "native") == "native"
    assert cli_main(["convert", str(tmp_path / "native"), str(tmp_path / "torch")]) == 0
    to_torch = capsys.readouterr().out
    assert "-> torch checkpoint" in to_torch and "transformer.layers.03" in to_torch
    original, converted = _file_tensors(source), _file_tensors(tmp_path / "torch")
    assert converted.keys() == original.keys()
    assert all(converted[k].tobytes() == original[k].tobytes() for k in original)
    # Checksums are taken on the reference layout: the same whichever way the model went.
    assert to_native.splitlines()[1:] == to_torch.splitlines()[1:]


# ---- placement on a mesh --------------------------------------------------------------------------------
def test_loads_onto_mesh_by_logical_axes(reference_checkpoint, loaded, tmp_path):
    from toto_jax.sharding import make_mesh

    assert len(jax.devices()) == 8  # conftest's virtual devices
    mesh = make_mesh((2, 2, 2))
    _, source = reference_checkpoint
    toto_jax.save(loaded, tmp_path / "native")
    for location in (source, tmp_path / "native"):
        sharded = toto_jax.load(location, mesh=mesh)
        _assert_same_state(sharded, loaded)
        attention = sharded.transformer.groups.layers[0].attention
        k_kernel = attention.k_proj.kernel[...]  # [layers, embed, kv_heads, head_dim]
        assert k_kernel.sharding.spec == jax.sharding.PartitionSpec(None, "fsdp", "tensor", None)
        assert {tuple(s.data.shape) for s in k_kernel.addressable_shards} == {(2, 16, 1, 8)}
        q_kernel = attention.q_proj.kernel[...]
        assert q_kernel.sharding.spec == jax.sharding.PartitionSpec(None, "fsdp", "tensor", None)
