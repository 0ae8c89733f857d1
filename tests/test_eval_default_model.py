"""The small models bundled with the package (toto_jax/assets/toto1_small and toto2_small, "default" the
better of them), loading by name, and the float16 export that writes them."""

import json

import numpy as np
import pandas as pd
import pytest
from flax import nnx

import toto_jax
from toto_jax import checkpoint
from toto_jax.checkpoint import DEFAULT_MODEL_DIRECTORY as DEFAULT_MODEL_DIR
from toto_jax.checkpoint.files import CheckpointError
from toto_jax.config import TotoConfig
from toto_jax.eval import ship
from toto_jax.forecasting import forecast
from toto_jax.models.toto1 import Toto


@pytest.mark.parametrize("name", sorted(checkpoint.BUNDLED_MODELS))
def test_bundled_models_are_small_and_in_reference_layout(name):
    from safetensors.numpy import load_file

    directory = checkpoint.BUNDLED_MODELS[name]
    weights = directory / "model.safetensors"
    assert weights.stat().st_size <= 20 * 2**20
    config = json.loads((directory / "config.json").read_text())
    if name == "toto1-small":
        assert config["scaler_cls"] == "<class 'model.scaler.CausalPatchStdMeanScaler'>"  # the reference's form
    else:
        assert config["layer_group_size"] == 4 and "scaler_cls" not in config  # toto-2's form
    assert {t.dtype for t in load_file(str(weights)).values()} == {np.dtype(np.float16)}


def test_bundled_models_load_by_name_and_a_local_directory_of_that_name_wins(tmp_path, monkeypatch):
    toto1, toto2 = toto_jax.load("toto1-small"), toto_jax.load("toto2-small")
    assert (toto1.config.family, toto2.config.family) == ("toto1", "toto2")
    assert (toto1.config.max_context, toto2.config.max_context) == (2048, 2048)  # the contexts they trained on
    assert toto_jax.load("default").config.family == checkpoint.DEFAULT_MODEL_NAME.split("-")[0]
    tiny = TotoConfig(patch_size=8, stride=8, embed_dim=16, num_layers=1, num_heads=2, mlp_hidden_dim=32,
                      dropout=0.0, spacewise_every_n_layers=1, k_components=2)  # fmt: skip
    toto_jax.export_torch(Toto(tiny, rngs=nnx.Rngs(0)), tmp_path / "toto2-small")
    monkeypatch.chdir(tmp_path)
    assert toto_jax.load("toto2-small").config.embed_dim == 16
    monkeypatch.setitem(checkpoint.BUNDLED_MODELS, "toto1-small", tmp_path / "absent")
    with pytest.raises(CheckpointError, match=r"bundled model 'toto1-small' is missing .*absent"):
        toto_jax.load("toto1-small")


def test_bundled_model_forecasts_the_sample_series():
    model = toto_jax.load("default")
    assert model.config.patch_size == 64
    # the context it was trained for, and what ForecastOptions(context_length=None) gives every tool
    assert model.config.max_context == 2048
    sample = pd.read_csv(DEFAULT_MODEL_DIR.parent / "sample_nab_cpu.csv")["cpu_utilization"].to_numpy(np.float32)
    result = forecast(model, sample[None, -1024:], 96, num_samples=16)
    assert result.samples.shape == (1, 1, 96, 16)
    median = result.median[0, 0]
    assert np.isfinite(median).all()
    # CPU utilisation in percent: a trained model stays in the series' range
    assert sample.min() - 10 < median.min() and median.max() < sample.max() + 10


def test_ship_writes_float16_reference_layout(tmp_path):
    config = TotoConfig(patch_size=8, stride=8, embed_dim=32, num_layers=2, num_heads=4, mlp_hidden_dim=64,
                        dropout=0.0, spacewise_every_n_layers=2, k_components=3)  # fmt: skip
    model = Toto(config, rngs=nnx.Rngs(1))
    source = toto_jax.export_torch(model, tmp_path / "float32")
    report = ship.ship(source, tmp_path / "shipped")
    assert report["bytes"] < (source / "model.safetensors").stat().st_size * 0.55
    assert report["max_relative_rounding"] < 1e-3
    shipped = toto_jax.load(tmp_path / "shipped")
    series = np.random.default_rng(0).normal(size=(1, 2, 64)).astype(np.float32)
    expected, actual = model(series), shipped(series)
    np.testing.assert_allclose(np.asarray(actual.distribution.mean), np.asarray(expected.distribution.mean),
                               rtol=2e-2, atol=2e-2)  # fmt: skip
