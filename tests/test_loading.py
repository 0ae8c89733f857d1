"""Reading reference checkpoints: fused SwiGLU names, clear errors, config strings, the 151M preset."""

from __future__ import annotations

import json

import numpy as np
import pytest
import safetensors.torch
import torch
from reference import (
    make_reference,
    reference_config,
    reference_forward,
    relative_error,
    save_reference,
)

import toto_jax
from toto_jax.config import ConfigError, TotoConfig
from toto_jax.models.toto1.transformer import layer_kinds, stage_layout


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    config = reference_config(num_layers=2)
    reference = make_reference(config, seed=3)
    directory = save_reference(reference, config, tmp_path_factory.mktemp("ref"))
    return reference, config, directory


def _rewrite(directory, tmp_path, edit_tensors=None, edit_config=None):
    tensors = safetensors.torch.load_file(str(directory / "model.safetensors"))
    config = json.loads((directory / "config.json").read_text())
    if edit_tensors:
        edit_tensors(tensors)
    if edit_config:
        edit_config(config)
    out = tmp_path / "edited"
    out.mkdir()
    safetensors.torch.save_file(tensors, str(out / "model.safetensors"))
    (out / "config.json").write_text(json.dumps(config))
    return out


def test_fused_swiglu_names_load_identically(saved, tmp_path):
    reference, _, directory = saved

    def fuse(tensors):
        for key in [k for k in tensors if ".mlp.0." in k or ".mlp.2." in k]:
            tensors[key.replace(".mlp.0.", ".mlp.0.w12.").replace(".mlp.2.", ".mlp.0.w3.")] = tensors.pop(key)

    fused = _rewrite(directory, tmp_path, edit_tensors=fuse)
    keys = safetensors.torch.load_file(str(fused / "model.safetensors")).keys()
    assert any(".mlp.0.w12.weight" in k for k in keys) and any(".mlp.0.w3.bias" in k for k in keys)
    rng = np.random.default_rng(0)
    series = rng.standard_normal((1, 2, 32)).astype(np.float32)
    mask, ids = np.ones(series.shape, bool), np.zeros(series.shape, np.int32)
    expected = reference_forward(reference, series, mask, ids).distribution.mean.numpy()
    actual = toto_jax.load(fused)(series, mask, ids).distribution.mean
    assert relative_error(actual, expected) <= 1e-4


def test_rotary_frequency_buffer_is_ignored(saved, tmp_path):
    _, _, directory = saved
    extra = _rewrite(
        directory, tmp_path, edit_tensors=lambda t: t.__setitem__("model.transformer.rotary_emb.freqs", torch.ones(4))
    )
    toto_jax.load(extra)  # no error


def test_missing_extra_and_misshaped_tensors_are_all_listed(saved, tmp_path):
    _, _, directory = saved

    def damage(tensors):
        del tensors["model.transformer.layers.1.attention.wO.weight"]
        tensors["model.transformer.layers.0.extra.weight"] = torch.zeros(3)
        tensors["model.unembed.bias"] = torch.zeros(7)

    with pytest.raises(toto_jax.CheckpointError) as error:
        toto_jax.load(_rewrite(directory, tmp_path, edit_tensors=damage))
    message = str(error.value)
    assert "missing tensors: model.transformer.layers.1.attention.wO.weight" in message
    assert "unexpected tensors: model.transformer.layers.0.extra.weight" in message
    assert "model.unembed.bias: expected (256,), got (7,)" in message


def test_unknown_scaler_class_is_named(saved, tmp_path):
    _, _, directory = saved
    edited = _rewrite(directory, tmp_path, edit_config=lambda c: c.update(scaler_cls="<class 'model.scaler.Nope'>"))
    with pytest.raises(toto_jax.CheckpointError, match=r"unknown scaler_cls \"<class 'model.scaler.Nope'>\""):
        toto_jax.load(edited)


def test_unknown_config_key_is_named(saved, tmp_path):
    _, _, directory = saved
    edited = _rewrite(directory, tmp_path, edit_config=lambda c: c.update(num_experts=4))
    with pytest.raises(toto_jax.CheckpointError, match=r"unknown config key\(s\) \['num_experts'\]"):
        toto_jax.load(edited)


def test_missing_config_json_is_named(saved, tmp_path):
    _, _, directory = saved
    (tmp_path / "model.safetensors").write_bytes((directory / "model.safetensors").read_bytes())
    with pytest.raises(toto_jax.CheckpointError, match="missing config.json"):
        toto_jax.load(tmp_path)


def test_missing_directory_is_named(tmp_path):
    with pytest.raises(toto_jax.CheckpointError, match="checkpoint not found"):
        toto_jax.load(tmp_path / "nowhere")


def test_reference_config_strings_round_trip():
    config = reference_config(k_components=24)
    ours = TotoConfig.from_dict(config)
    assert ours.scaler == "causal_patch_std_mean" and ours.distribution == "mixture_student_t"
    assert ours.k_components == 24
    again = TotoConfig.from_reference_dict(ours.to_reference_dict())
    assert again == ours
    assert TotoConfig.from_dict(ours.to_dict()) == ours
    with pytest.raises(ConfigError, match="unknown output_distribution_classes"):
        TotoConfig.from_dict({**config, "output_distribution_classes": ["<class 'model.distribution.Gauss'>"]})
    with pytest.raises(ConfigError, match="must be divisible by num_heads"):
        TotoConfig(embed_dim=30, num_heads=4)


def test_layer_pattern_and_scan_layout():
    base = TotoConfig()
    assert layer_kinds(base) == ["variate"] + ["time"] * 11
    assert [(s.pattern, s.repeats) for s in stage_layout(base)] == [(("variate",), 1), (("time",), 11)]
    alternating = TotoConfig(num_layers=6, spacewise_every_n_layers=3, spacewise_first=False)
    assert layer_kinds(alternating) == ["time", "time", "variate"] * 2
    assert [(s.pattern, s.repeats) for s in stage_layout(alternating)] == [(("time", "time", "variate"), 2)]
    assert stage_layout(TotoConfig(spacewise_every_n_layers=-1))[0] == (("time",), 12)


def test_toto_open_base_preset_parameter_count_equals_reference():
    from flax import nnx

    config = toto_jax.preset("toto-open-base-1.0")
    reference = make_reference(
        reference_config(
            patch_size=64, embed_dim=768, num_layers=12, num_heads=12, mlp_hidden_dim=3072,
            spacewise_every_n_layers=12, k_components=24,
        )  # fmt: skip
    )
    expected = sum(p.numel() for p in reference.parameters())
    abstract = nnx.eval_shape(lambda: toto_jax.Toto(config, rngs=nnx.Rngs(0)))
    assert toto_jax.count_parameters(abstract) == expected
    assert 150e6 < expected < 152e6
