"""Forecasting against the PyTorch reference's ``TotoForecaster`` (toto-ts 0.2.0), random weights, float32.

Reference models are saved as checkpoints and read with ``toto_jax.load``. Mean paths must match to
1e-4 relative (``reference.relative_error``); sample paths are compared statistically (different RNGs).
Compiles dominate the run time, so the inputs of the tests share shape buckets where they can.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from reference import make_reference, reference_config, relative_error, save_reference
from toto.data.util.dataset import MaskedTimeseries
from toto.inference.forecaster import TotoForecaster

import toto_jax
from toto_jax.forecasting import Forecast, ForecastError, ForecastOptions, forecast
from toto_jax.forecasting.decode import compiled_program_count
from toto_jax.forecasting.preprocessing import clip_context_outliers

TOLERANCE = 1e-4
BFLOAT16_TOLERANCE = 1e-2  # bfloat16 compute against float32: 5e-4 to 4e-3 measured on the CONFIGS models
REFERENCE = ForecastOptions.reference()  # every parity test forecasts with the reference's semantics

CONFIGS = {
    "mixture3_causal_patch": (dict(), False),
    "patch16_time_first_k8_labels": (
        dict(patch_size=16, embed_dim=48, num_heads=6, num_layers=3, spacewise_every_n_layers=3,
             spacewise_first=False, k_components=8),
        True,
    ),
    "std_mean_student_t_time_only_labels": (
        dict(patch_size=4, num_heads=2, num_layers=2, spacewise_every_n_layers=-1, k_components=None,
             scaler="std_mean"),
        True,
    ),
    "causal_std_mean_labels": (dict(scaler="causal_std_mean", num_layers=2), True),
}  # fmt: skip


def make_inputs(patch, batch=2, variates=3, seed=0, level=50.0):
    """A context of 5 patches + 3 steps (so it is left-padded), one variate with extra left padding, id groups,
    levels and scales that differ per variate."""
    rng = np.random.default_rng(seed)
    time = 5 * patch + 3
    t = np.arange(time)
    series = (
        np.sin(t / 5)[None, None] * rng.uniform(1, 10, (batch, variates, 1))
        + rng.normal(0, 0.3, (batch, variates, time))
        + rng.uniform(-level, level, (batch, variates, 1))
    ).astype(np.float32)
    padding_mask = np.ones(series.shape, bool)
    padding_mask[0, 1, : patch + 5] = False
    series[~padding_mask] = 0.0
    id_mask = np.zeros(series.shape, np.int32)
    id_mask[:, 2] = 1
    return series, padding_mask, id_mask


def reference_forecast(reference, series, padding_mask, id_mask, horizon, num_samples=None, use_kv_cache=True,
                       future_exogenous=None):  # fmt: skip
    batch, variates, time = series.shape
    inputs = MaskedTimeseries(
        series=torch.tensor(series),
        padding_mask=torch.tensor(padding_mask),
        id_mask=torch.tensor(id_mask),
        timestamp_seconds=torch.zeros(batch, variates, time, dtype=torch.int64),
        time_interval_seconds=torch.ones(batch, variates, dtype=torch.int64),
        num_exogenous_variables=0 if future_exogenous is None else future_exogenous.shape[1],
    )
    with torch.no_grad():
        return TotoForecaster(reference.model).forecast(
            inputs, horizon, num_samples=num_samples, samples_per_batch=num_samples or 1, use_kv_cache=use_kv_cache,
            future_exogenous_variables=None if future_exogenous is None else torch.tensor(future_exogenous),
        )


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    out = {}
    for index, (name, (overrides, labels)) in enumerate(CONFIGS.items()):
        config = reference_config(**overrides)
        reference = make_reference(config, seed=10 + index, variate_labels=labels)
        directory = save_reference(reference, config, tmp_path_factory.mktemp(name))
        model = toto_jax.load(directory)
        assert model.config.variate_labels == labels
        out[name] = (reference, model, directory)
    return out


MEAN_CONFIGS = ["mixture3_causal_patch", "patch16_time_first_k8_labels", "std_mean_student_t_time_only_labels"]
LABELLED_CONFIGS = ["patch16_time_first_k8_labels", "std_mean_student_t_time_only_labels", "causal_std_mean_labels"]


@pytest.mark.parametrize("name", MEAN_CONFIGS)
def test_mean_path_matches_reference_kv_cache(pairs, name):
    """Cached mean path vs the reference's ``forecast(num_samples=None)`` (its default, cached decode) over
    horizons of 1, 2 and 5 patches, the last not a multiple of the patch size. The context (5 patches + 3
    steps) is left-padded to 6 patches and right-padded to the 8-patch bucket inside, so the xPos
    re-centring of the cached keys is exercised too."""
    reference, model, _ = pairs[name]
    patch = model.config.patch_size
    series, padding_mask, id_mask = make_inputs(patch)
    for horizon in (patch, 2 * patch, 5 * patch - 3):
        expected = reference_forecast(reference, series, padding_mask, id_mask, horizon).mean.numpy()
        actual = forecast(model, series, horizon, num_samples=None, padding_mask=padding_mask, id_mask=id_mask,
                          options=REFERENCE)
        assert actual.samples is None
        assert actual.mean.shape == expected.shape == (2, 3, horizon)
        assert relative_error(actual.mean, expected) <= TOLERANCE, (name, horizon)


def test_long_decode_runs_in_segments_and_matches_reference(pairs, capsys):
    """A horizon of 21 patches decodes as one 17-patch scan plus one 16-patch segment (a progress bar
    follows the segments) and still equals the reference's cached mean path."""
    from toto_jax.forecasting import plan

    reference, model, _ = pairs["mixture3_causal_patch"]
    patch = model.config.patch_size
    series, padding_mask, id_mask = make_inputs(patch, batch=1)
    horizon = 21 * patch - 5
    shapes = plan.decode_shapes(6 * patch, 3, 21, patch, bucket=True)
    assert shapes.segments == 1 and shapes.first_steps == plan.SEGMENT_STEPS + 1
    expected = reference_forecast(reference, series, padding_mask, id_mask, horizon).mean.numpy()
    actual = forecast(model, series, horizon, num_samples=None, padding_mask=padding_mask, id_mask=id_mask,
                      options=REFERENCE)
    assert relative_error(actual.mean, expected) <= TOLERANCE
    assert "forecast" in capsys.readouterr().err  # tqdm writes to stderr


def test_mean_path_matches_reference_without_cache(pairs):
    """``use_kv_cache=False`` re-encodes the whole series every step, like the reference's no-cache decode.

    The two reference modes differ (xPos centres on the positions of each call, see ``model/rope.py``);
    each of ours must match its own counterpart, and the assertion on the reference itself shows the test
    tells the modes apart at this tolerance.
    """
    reference, model, _ = pairs["causal_std_mean_labels"]
    patch = model.config.patch_size
    series, padding_mask, id_mask = make_inputs(patch, level=0.0)
    horizon = 5 * patch - 3
    results = {}
    for use_kv_cache in (True, False):
        expected = reference_forecast(
            reference, series, padding_mask, id_mask, horizon, use_kv_cache=use_kv_cache
        ).mean.numpy()
        actual = forecast(model, series, horizon, num_samples=None, padding_mask=padding_mask, id_mask=id_mask,
                          options=REFERENCE.replace(use_kv_cache=use_kv_cache))
        assert relative_error(actual.mean, expected) <= TOLERANCE, use_kv_cache
        results[use_kv_cache] = (actual.mean, expected)
    mode_gap = np.abs(results[True][1] - results[False][1]).max()
    for actual, expected in results.values():
        assert np.abs(actual - expected).max() < 0.1 * mode_gap



# ---- known future covariates ---------------------------------------------------------------------
def future_covariates(series, count: int, horizon: int, seed=5):
    """Known futures of the last ``count`` variates that continue their context's level and scale."""
    rng = np.random.default_rng(seed)
    tail = series[:, -count:, -8:]
    return (tail.mean(-1, keepdims=True) + tail.std(-1, keepdims=True) * rng.normal(size=tail.shape[:2] + (horizon,))
            ).astype(np.float32)  # fmt: skip


@pytest.mark.parametrize("name", LABELLED_CONFIGS)
def test_covariates_match_reference(pairs, name):
    """Mean path with known future covariates vs the reference's ``forecast(..., future_exogenous_variables)``:
    variate labels mark the last variates as exogenous, their known values replace the predicted ones after
    every patch; cached decode, and the uncached one for the last config. Two covariates or one, a horizon
    that is not a multiple of the patch size. Changing the covariates changes the targets' forecast where
    variate attention carries it (not in the time-only config), so the comparison covers their effect; the
    result holds the target variates only."""
    reference, model, _ = pairs[name]
    patch = model.config.patch_size
    series, padding_mask, id_mask = make_inputs(patch)
    horizon = 2 * patch - 3
    for count in (2,) if name == "patch16_time_first_k8_labels" else (1,):  # each count compiles its own decode
        known = future_covariates(series, count, horizon)
        for use_kv_cache in (True, False) if name == "causal_std_mean_labels" else (True,):
            expected = reference_forecast(reference, series, padding_mask, id_mask, horizon, future_exogenous=known,
                                          use_kv_cache=use_kv_cache).mean.numpy()  # fmt: skip
            np.testing.assert_array_equal(expected[:, -count:], known)  # the reference keeps them as given
            actual = forecast(model, series, horizon, num_samples=None, padding_mask=padding_mask, id_mask=id_mask,
                              options=REFERENCE.replace(use_kv_cache=use_kv_cache), future_exogenous_variables=known)
            assert actual.mean.shape == (2, 3 - count, horizon)
            assert relative_error(actual.mean, expected[:, :-count]) <= TOLERANCE, (name, count, use_kv_cache)
    # The covariates' effect, with every variate in one id group (make_inputs puts the last one alone).
    base, shifted = (forecast(model, series, horizon, num_samples=None, padding_mask=padding_mask, options=REFERENCE,
                              future_exogenous_variables=future).mean for future in (known, known + 5 * known.std()))
    if model.config.spacewise_every_n_layers > 0:
        assert relative_error(shifted, base) > 1e-3
    else:  # time attention only: nothing carries one variate's values to another
        np.testing.assert_array_equal(shifted, base)


def test_sample_paths_keep_the_known_covariates(pairs):
    """Every sample path feeds back the known covariate values, never draws of its own, with the default
    options (comonotone draws, standardised in float64, so equal to float32 rounding); the targets' paths
    still vary. (Independent draws: ``test_decode_is_partitioned_over_devices_with_the_same_paths``.)"""
    sampling = "comonotone"
    from toto_jax.forecasting.api import _Decoder, _prepare
    from toto_jax.forecasting.covariates import known_future

    _, model, _ = pairs["causal_std_mean_labels"]
    patch = model.config.patch_size
    series, _, _ = make_inputs(patch)
    horizon = 3 * patch
    known = future_covariates(series, 1, horizon)
    options = ForecastOptions(sampling=sampling)
    prepared, *_, placement = _prepare(model, series, horizon, 16, None, None, options, None, None)
    paths = _Decoder(model, prepared, 16, options, placement, known_future(known, prepared, horizon)).run(seed=0)
    fed_back = paths[:, :, 2, :horizon] * prepared.unit[:, None, 2] + prepared.shift[:, None, 2]
    np.testing.assert_allclose(fed_back, np.broadcast_to(known[:, None, 0], fed_back.shape), rtol=1e-5, atol=1e-5)
    result = forecast(model, series, horizon, 16, options=options, future_exogenous_variables=known)
    assert result.samples.shape == (2, 2, horizon, 16)
    assert result.samples.std(axis=-1).min() > 0


def test_covariate_errors_name_the_problem(pairs):
    """A model without variate labels, covariates that do not cover the horizon or hold NaN: named errors."""
    series, _, _ = make_inputs(8)
    _, unlabelled, _ = pairs["mixture3_causal_patch"]
    with pytest.raises(ForecastError, match=r"no variate labels, so it cannot tell the 1 covariate\(s\) \(variates 2"):
        forecast(unlabelled, series, 8, num_samples=None, future_exogenous_variables=np.zeros((1, 8)))
    _, model, _ = pairs["causal_std_mean_labels"]
    with pytest.raises(ForecastError, match=r"cover 6 steps, shorter than the horizon \(8\)"):
        forecast(model, series, 8, num_samples=None, future_exogenous_variables=np.zeros((1, 6)))
    bad = np.zeros((2, 2, 8))
    bad[1, 0, 3] = np.nan
    with pytest.raises(ForecastError, match=r"series 1, covariate 0 \(variate 1\): future value at step 3 is not finite"):
        forecast(model, series, 8, num_samples=None, future_exogenous_variables=bad)


def test_decode_is_partitioned_over_devices_with_the_same_paths(pairs):
    """``ForecastOptions(devices=8)`` on the 8 virtual CPU devices: encode, prefill and the decode scan are
    partitioned 8 ways (rows of series x paths split over a ``data`` mesh, the KV cache with them, weights
    replicated), and every sample path equals the one-device run's (draws are keyed by series and path).
    Independent draws with a known covariate: every path feeds its known values back."""
    from toto_jax.forecasting.api import _Decoder, _prepare
    from toto_jax.forecasting.covariates import known_future
    from toto_jax.forecasting.placement import forecast_placement

    _, model, _ = pairs["causal_std_mean_labels"]
    patch = model.config.patch_size
    series, padding_mask, id_mask = make_inputs(patch, batch=3)
    horizon = 2 * patch
    known = future_covariates(series, 1, horizon)
    options = REFERENCE.replace(devices=8)
    prepared, *_, placement = _prepare(model, series, horizon, 4, padding_mask, id_mask, options, None, None)
    decoder = _Decoder(model, prepared, 4, options, placement, known_future(known, prepared, horizon))
    for program in (decoder.encode, decoder.prefill, *decoder.advances.values()):
        assert "num_partitions=8" in program.as_text()
    buffer_sharding = decoder.prefill.input_shardings[0][2]
    assert buffer_sharding.spec == jax.sharding.PartitionSpec(("data", "fsdp")) and len(buffer_sharding.device_set) == 8
    split = decoder.run(seed=3)
    np.testing.assert_array_equal(split[:, :, 2, :horizon], np.broadcast_to(known[:, None, 0], (3, 4, horizon)))
    assert split[:, :, :2, :horizon].std(axis=1).min() > 0
    single = _Decoder(model, prepared, 4, REFERENCE, forecast_placement(None), known_future(known, prepared, horizon))
    assert relative_error(split, single.run(seed=3)) <= TOLERANCE


def test_forecast_on_a_mesh_splits_the_weights_over_the_tensor_axis(pairs):
    """``forecast(..., mesh=)`` on a data 2 x tensor 4 mesh of the 8 virtual CPU devices: encode, prefill and
    the decode scan are partitioned 8 ways, the fused QKV kernel holds a quarter of the heads per device, the
    KV cache is split by rows and heads, and the sample paths (independent draws, a known covariate, 3 series
    padded to the data axis) equal the one-device run's to float32 rounding of the split sums (TOLERANCE).
    The inputs are the test above's, so the one-device programs are shared."""
    from toto_jax.forecasting.decode import _PROGRAMS
    from toto_jax.sharding import make_mesh

    _, model, _ = pairs["causal_std_mean_labels"]
    patch = model.config.patch_size
    series, padding_mask, id_mask = make_inputs(patch, batch=3)
    horizon = 2 * patch
    arguments = dict(padding_mask=padding_mask, id_mask=id_mask, seed=3, options=REFERENCE,
                     future_exogenous_variables=future_covariates(series, 1, horizon))  # fmt: skip
    mesh = make_mesh((2, 1, 4), devices=jax.devices())
    split = forecast(model, series, horizon, 4, **arguments, mesh=mesh)
    programs = {key[0]: program for key, program in _PROGRAMS.items() if key[-1][0] == mesh}
    assert programs.keys() == {"encode", "prefill", "advance"}
    for program in programs.values():
        assert "num_partitions=8" in program.as_text()
    # Decoding takes one weight array per layer: [embed, qkv, heads, head_dim] (the model's has [layers, ...] first).
    kernel_shape = model.transformer.stages[0].layers[0].attention.wQKV.kernel.shape[1:]
    shardings = jax.tree_util.tree_leaves_with_path(programs["encode"].input_shardings[0][0])
    qkv = next(sharding for path, sharding in shardings if "['wQKV']['kernel']" in jax.tree_util.keystr(path))
    assert qkv.shard_shape(kernel_shape)[2] == model.config.num_heads // 4
    # 2D kernels are stored [out, in] for decoding (Dense.store_out_first): w_gate's mlp axis, now first, is split.
    gate = next(sharding for path, sharding in shardings if "['w_gate']['kernel']" in jax.tree_util.keystr(path))
    hidden, embed = model.config.mlp_hidden_dim, model.config.embed_dim
    assert gate.shard_shape((hidden, embed)) == (hidden // 4, embed)
    # [repeats, layers, rows, variate, tokens, heads, head_dim] of the first stage with time-wise layers
    cache = next(keys for keys in programs["encode"].out_info.cache.keys if keys is not None)
    assert cache.sharding.shard_shape(cache.shape)[2::3] == (cache.shape[2] // 2, model.config.num_heads // 4)
    one = forecast(model, series, horizon, 4, **arguments)
    assert relative_error(split.samples, one.samples) <= TOLERANCE

# ---- sample paths -------------------------------------------------------------------------------
NUM_PATHS = 2000


def sampling_inputs(patch):
    """One series, two variates, a context of exactly 5 patches (an odd number of tokens, see below)."""
    rng = np.random.default_rng(3)
    t = np.arange(5 * patch)
    return (3 * np.sin(t / 4)[None, None] + rng.normal(0, 0.5, (1, 2, t.size))).astype(np.float32)


def quantile_z_scores(actual, expected, levels=(0.1, 0.5, 0.9)):
    """z-scores of the differences of sample quantiles of two independent path sets [..., path] (equal
    counts): the standard error is sqrt(2 q (1 - q) / n) / f(x_q), the density f estimated from the
    pooled paths as 0.1 / (x_{q+0.05} - x_{q-0.05}). Shape [level, ...]."""
    levels = np.asarray(levels)
    pooled = np.concatenate([actual, expected], axis=-1)
    width = (np.quantile(pooled, levels + 0.05, axis=-1) - np.quantile(pooled, levels - 0.05, axis=-1)) / 0.1
    sigma = np.sqrt(2 * levels * (1 - levels) / actual.shape[-1]).reshape((-1,) + (1,) * (actual.ndim - 1)) * width
    return (np.quantile(actual, levels, axis=-1) - np.quantile(expected, levels, axis=-1)) / sigma


@pytest.fixture(scope="module")
def cached_samples(pairs):
    _, model, _ = pairs["mixture3_causal_patch"]
    patch = model.config.patch_size
    return forecast(model, sampling_inputs(patch), 3 * patch, num_samples=NUM_PATHS, seed=7, options=REFERENCE)


def test_sample_paths_with_and_without_cache_share_draws(pairs, cached_samples):
    """Cached and uncached decodes with the same seed use the same random draws at every step.

    With 5 context tokens (odd) the first decoded token sits at position 5, whose xPos centre
    floor(5/2) = 2 equals the context call's floor(4/2): the cached keys carry exactly the scaling an
    uncached call gives them, so the first two patches agree to float rounding (<= 1e-4). From the third
    patch on, the centres differ (the xPos quirk shared with the reference) and paths drift apart by
    ~1e-3 relative; a draw that sits at a mixture-component boundary may then pick the other component,
    so a handful of the 256,000 third-patch values differ by more (measured: 8). A different seed gives
    entirely different paths.
    """
    _, model, _ = pairs["mixture3_causal_patch"]
    patch = model.config.patch_size
    series = sampling_inputs(patch)
    uncached = forecast(model, series, 3 * patch, num_samples=NUM_PATHS, seed=7,
                        options=REFERENCE.replace(use_kv_cache=False))
    cached = cached_samples
    assert cached.samples.shape == uncached.samples.shape == (1, 2, 3 * patch, NUM_PATHS)
    assert relative_error(cached.samples[:, :, : 2 * patch], uncached.samples[:, :, : 2 * patch]) <= TOLERANCE
    floor = 1e-2 * np.abs(uncached.samples).max()
    drift = np.abs(cached.samples - uncached.samples) / np.maximum(np.abs(uncached.samples), floor)
    assert np.median(drift[:, :, 2 * patch :]) <= 1e-3 and np.mean(drift > 1e-2) < 1e-4
    assert np.allclose(cached.mean, cached.samples.mean(-1))
    other_seed = forecast(model, series, 3 * patch, num_samples=NUM_PATHS, seed=8, options=REFERENCE)
    assert relative_error(other_seed.samples[:, :, :patch], cached.samples[:, :, :patch]) > 0.5


def test_sample_quantiles_match_reference(pairs, cached_samples):
    """Quantiles 0.1/0.5/0.9 of 2000 paths each (different RNGs) agree with the reference's.

    The standard error of the difference of two independent sample q-quantiles is
    sqrt(2 q (1 - q) / n) / f(x_q); the density f is estimated from the pooled paths as
    0.1 / (x_{q+0.05} - x_{q-0.05}). Over 2 x 3 x 24 comparisons every |z| must stay below 5 and the mean
    |z| near its null value sqrt(2/pi) ~ 0.8 (bound 1.1): scaling our paths by 1.1 gives a mean |z| ~ 1.4
    and fails, so a wrong scale, location or mixture weighting is caught.
    """
    reference, model, _ = pairs["mixture3_causal_patch"]
    patch = model.config.patch_size
    series = sampling_inputs(patch)
    torch.manual_seed(0)
    expected = reference_forecast(
        reference, series, np.ones(series.shape, bool), np.zeros(series.shape, np.int32), 3 * patch,
        num_samples=NUM_PATHS,
    ).samples.numpy()  # fmt: skip
    actual = cached_samples
    z = quantile_z_scores(actual.samples, expected)
    assert np.abs(z).max() < 5.0
    assert np.abs(z).mean() < 1.1
    assert np.allclose(actual.median, actual.quantile(0.5))


def test_comonotone_sampling_draws_one_level_per_patch_with_the_same_marginals(pairs, cached_samples):
    """``sampling="comonotone"``: within each decoded patch every step orders the paths the same way (one
    quantile level per path and patch), while independent draws do not; the first patch's per-step
    quantiles (same conditional distribution) agree with independent sampling's, which matches the reference."""
    _, model, _ = pairs["mixture3_causal_patch"]
    patch = model.config.patch_size
    series = sampling_inputs(patch)
    comonotone = forecast(model, series, 3 * patch, num_samples=NUM_PATHS, seed=7,
                          options=REFERENCE.replace(sampling="comonotone"))
    assert comonotone.samples.shape == cached_samples.samples.shape
    assert np.isfinite(comonotone.samples).all()
    def rank_correlation_with_first_step(block):  # block [variate, step, path] -> [variate, step]
        ranks = np.argsort(np.argsort(block, axis=-1), axis=-1) - (block.shape[-1] - 1) / 2
        return (ranks * ranks[:, :1]).sum(-1) / (ranks[:, :1] ** 2).sum(-1)

    # The first patch: all paths share one conditional distribution per step, so they keep one order
    # (up to near-ties of close levels). Later patches: each path takes a level of its own distributions
    # (paths differ in history), so the order across paths is only mostly kept.
    for start, bound in ((0, 0.999), (patch, 0.8), (2 * patch, 0.8)):
        block = comonotone.samples[0, :, start : start + patch]
        assert rank_correlation_with_first_step(block).min() > bound, start
        block = cached_samples.samples[0, :, start : start + patch]
        assert np.abs(rank_correlation_with_first_step(block)[:, 1:]).max() < 0.2, start
    z = quantile_z_scores(comonotone.samples[..., :patch, :], cached_samples.samples[..., :patch, :])
    assert np.abs(z).max() < 5.0 and np.abs(z).mean() < 1.1
    again = forecast(model, series, 3 * patch, num_samples=NUM_PATHS, seed=7,
                     options=REFERENCE.replace(sampling="comonotone"))
    np.testing.assert_array_equal(again.samples, comonotone.samples)
    with pytest.raises(ValueError, match="sampling must be one of 'independent', 'comonotone', got 'smooth'"):
        REFERENCE.replace(sampling="smooth")


# ---- shape buckets, chunking, list input ------------------------------------------------------
def test_varied_requests_reuse_one_compiled_program(pairs):
    """Requests with different context lengths (6-8 patches), horizons (9-16 steps) and list input of
    unequal lengths all land in one shape bucket: after the first, nothing compiles. Each
    result still equals the reference's forecast of that exact request (buckets pad exactly)."""
    reference, model, _ = pairs["mixture3_causal_patch"]
    patch = model.config.patch_size
    series, padding_mask, id_mask = make_inputs(patch)
    long_series, _, _ = make_inputs(patch, seed=1)
    long_series = np.concatenate([long_series, long_series[..., : 2 * patch - 3]], axis=-1)  # 7 patches + 2
    forecast(model, series, 2 * patch, num_samples=None, options=REFERENCE)
    compiled = compiled_program_count()

    # A batch of 2 with longer contexts and a shorter horizon.
    result = forecast(model, long_series, patch + 1, num_samples=None, options=REFERENCE)
    ones, zeros = np.ones(long_series.shape, bool), np.zeros(long_series.shape, np.int32)
    expected = reference_forecast(reference, long_series, ones, zeros, patch + 1).mean.numpy()
    assert relative_error(result.mean, expected) <= TOLERANCE

    # A list of unequal lengths is left-padded like an explicit padding mask.
    ragged = [series[0], long_series[1]]
    stacked = np.zeros((2, 3, long_series.shape[-1]), np.float32)
    mask = np.zeros(stacked.shape, bool)
    stacked[0, :, -series.shape[-1]:], mask[0, :, -series.shape[-1]:] = series[0], True
    stacked[1], mask[1] = long_series[1], True
    expected = reference_forecast(reference, stacked, mask, np.zeros(stacked.shape, np.int32), 2 * patch).mean.numpy()
    ragged_mean = forecast(model, ragged, 2 * patch, num_samples=None, options=REFERENCE).mean
    assert relative_error(ragged_mean, expected) <= TOLERANCE
    assert compiled_program_count() == compiled

    # One unbatched series [variate, time] (batch bucket 1, a program of its own): the result keeps a
    # batch axis of 1, as the reference's, and equals that row of the batched forecast.
    single = forecast(model, series[1], 2 * patch, num_samples=None, options=REFERENCE)
    assert single.mean.shape == (1, 3, 2 * patch)
    batched = forecast(model, series, 2 * patch, num_samples=None, options=REFERENCE)
    np.testing.assert_allclose(single.mean[0], batched.mean[1], rtol=1e-5)


def test_forecasts_follow_weights_updated_in_place(pairs):
    """Forecasting keeps each model's weights split and placed between calls (with one array per layer); after
    ``nnx.update`` gives the model other weights, the next forecast uses them, without recompiling."""
    from flax import nnx

    _, _, directory = pairs["mixture3_causal_patch"]
    model = toto_jax.load(directory)
    series, _, _ = make_inputs(model.config.patch_size)
    horizon = 2 * model.config.patch_size
    before = forecast(model, series, horizon, num_samples=None, options=REFERENCE).mean
    np.testing.assert_array_equal(forecast(model, series, horizon, num_samples=None, options=REFERENCE).mean, before)
    compiled = compiled_program_count()
    scaled = jax.tree.map(lambda a: a * 1.01, nnx.state(model, nnx.Param))
    fresh = toto_jax.load(directory)  # never forecast with the old weights
    nnx.update(fresh, scaled)
    expected = forecast(fresh, series, horizon, num_samples=None, options=REFERENCE).mean
    assert not np.allclose(expected, before)
    nnx.update(model, scaled)
    np.testing.assert_array_equal(forecast(model, series, horizon, num_samples=None, options=REFERENCE).mean, expected)
    assert compiled_program_count() == compiled


def test_bfloat16_models_decode_on_bfloat16_weights(pairs):
    """A model loaded with ``dtype="bfloat16"`` casts its float32 weights to bfloat16 at every matmul; the weights
    its forecasts decode on are stored cast (about half the bytes; the head stays float32), and its mean path
    stays within BFLOAT16_TOLERANCE of the float32 model's."""
    from toto_jax.forecasting.placement import forecast_placement
    from toto_jax.forecasting.weights import placed_weights

    _, model, directory = pairs["mixture3_causal_patch"]
    half = toto_jax.load(directory, dtype="bfloat16")
    placement = forecast_placement(None)
    full_weights, half_weights = placed_weights(model, placement), placed_weights(half, placement)
    assert half_weights.params["unembed"]["kernel"].dtype == jnp.bfloat16
    assert half_weights.params["output_distribution"]["loc_proj"]["kernel"].dtype == jnp.float32
    assert half_weights.device_bytes < 0.6 * full_weights.device_bytes
    assert model.unembed.kernel.dtype == half.unembed.kernel.dtype == jnp.float32  # the models keep theirs
    series, padding_mask, id_mask = make_inputs(model.config.patch_size)
    arguments = dict(num_samples=None, padding_mask=padding_mask, id_mask=id_mask, options=REFERENCE)
    full = forecast(model, series, 2 * model.config.patch_size, **arguments).mean
    assert relative_error(forecast(half, series, 2 * model.config.patch_size, **arguments).mean, full) <= BFLOAT16_TOLERANCE


def test_every_program_takes_all_weights_so_working_bytes_are_its_own(pairs):
    """A decode program that uses only some of the weights (prefill: the output head, not the layers) still takes
    them all as arguments, so its arguments less the weights are its own inputs, and ``working_bytes`` is at
    least what it writes (it went negative when XLA dropped the unused weights from the program)."""
    from toto_jax.forecasting import api, decode

    _, model, _ = pairs["mixture3_causal_patch"]
    series, _, _ = make_inputs(model.config.patch_size, batch=2)
    prepared, _, samples, options, placement = api._prepare(model, series, 24, None, None, None, REFERENCE,
                                                            None, None)  # fmt: skip
    decoder = api._Decoder(model, prepared, samples, options, placement)
    for program in (decoder.encode, decoder.prefill, *decoder.advances.values()):
        stats = program.memory_analysis()
        assert stats.argument_size_in_bytes > decoder.weights.device_bytes
        written = stats.output_size_in_bytes - stats.alias_size_in_bytes
        assert decode.working_bytes(program, decoder.weights) >= written


def test_large_batches_are_split_by_memory_budget(pairs, capsys):
    """The budget bounds XLA's own buffer assignment of every compiled call: a budget that holds two series
    splits a batch of five into calls of at most two (the last one padded), shows a progress bar and gives
    the same forecasts as one call; a budget that holds two sample paths splits the paths of each series
    too, with the same draws (each path draws from keys of its series' position and its own index); a
    budget below one path of one series is refused with what to change."""
    from toto_jax.forecasting.api import memory_plan

    _, model, _ = pairs["mixture3_causal_patch"]
    patch = model.config.patch_size
    first, _, _ = make_inputs(patch, seed=2)
    second, _, _ = make_inputs(patch, seed=3)
    batch = np.concatenate([first, second, first[:1]])
    whole_plan = memory_plan(model, batch, 2 * patch, num_samples=None, options=REFERENCE)
    assert (whole_plan.series_per_call, whole_plan.calls) == (5, 1)
    budget = memory_plan(model, batch[:2], 2 * patch, num_samples=None, options=REFERENCE).working_bytes
    limited = REFERENCE.replace(memory_budget=budget)
    chunked_plan = memory_plan(model, batch, 2 * patch, num_samples=None, options=limited)
    assert chunked_plan.series_per_call <= 2 and chunked_plan.calls >= 3 and chunked_plan.working_bytes <= budget
    chunked = forecast(model, batch, 2 * patch, num_samples=None, options=limited)
    assert "forecast" in capsys.readouterr().err  # tqdm writes to stderr
    whole = forecast(model, batch, 2 * patch, num_samples=None, options=REFERENCE.replace(progress=False))
    np.testing.assert_allclose(chunked.mean, whole.mean, rtol=1e-5)

    # comonotone draws: a level per path and patch, so a path's draws must follow it into its chunk
    limited = REFERENCE.replace(sampling="comonotone", progress=False)
    budget = memory_plan(model, batch[:1], 2 * patch, num_samples=2, options=limited).working_bytes
    limited = limited.replace(memory_budget=budget)
    path_plan = memory_plan(model, batch, 2 * patch, num_samples=6, options=limited)
    assert path_plan.paths_per_call <= 2 and path_plan.calls >= 15 and path_plan.working_bytes <= budget
    chunked = forecast(model, batch, 2 * patch, num_samples=6, seed=4, options=limited)
    whole = forecast(model, batch, 2 * patch, num_samples=6, seed=4, options=limited.replace(memory_budget=1 << 34))
    np.testing.assert_allclose(chunked.samples, whole.samples, rtol=1e-4, atol=1e-4)
    # the last series repeats the first one's input at another position: different draws
    assert np.abs(whole.samples[4] - whole.samples[0]).max() > 1e-2
    with pytest.raises(ForecastError, match=r"one sample path of one series needs .* GiB .* raise ForecastOptions.memory_budget"):
        forecast(model, batch[:1], 2 * patch, num_samples=None, options=REFERENCE.replace(memory_budget=1000))


# ---- input errors -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "case, message",
    [
        ("all_nan", "series 1: variate(s) [2] have no observed values"),
        ("masked_out", "series 0: variate(s) [0] have no observed values"),
        ("horizon", "horizon must be a positive integer, got 0"),
        ("rank", "series must have shape [variate, time] or [batch, variate, time], got shape (1, 2, 3, 16)"),
        ("mask_shape", "padding_mask for series 0 has shape (3, 15), expected (3, 16)"),
        ("non_numeric", "series must be numeric, got dtype <U1"),
        ("variates", "series 1 has 2 variates but series 0 has 3"),
        ("stride", "forecasting needs stride == patch_size (got stride 4, patch_size 8)"),
    ],
)
def test_bad_input_names_the_problem(pairs, case, message):
    """Bad input raises ForecastError (a ValueError) naming the series and the problem, before compiling."""
    _, model, _ = pairs["mixture3_causal_patch"]
    series = np.ones((2, 3, 16), np.float32)
    kwargs = dict(horizon=8)
    if case == "all_nan":
        series[1, 2] = np.nan
    elif case == "masked_out":
        mask = np.ones(series.shape, bool)
        mask[0, 0] = False
        kwargs["padding_mask"] = mask
    elif case == "horizon":
        kwargs["horizon"] = 0
    elif case == "rank":
        series = np.ones((1, 2, 3, 16), np.float32)
    elif case == "mask_shape":
        kwargs["padding_mask"] = np.ones((2, 3, 15), bool)
    elif case == "non_numeric":
        series = np.full((3, 16), "x")
    elif case == "variates":
        series = [np.ones((3, 16)), np.ones((2, 16))]
    elif case == "stride":
        from flax import nnx

        model = toto_jax.Toto(model.config.replace(stride=4), rngs=nnx.Rngs(0))
    with pytest.raises(ForecastError) as error:
        forecast(model, series, **kwargs)
    assert message in str(error.value)


def test_quantiles_need_samples():
    mean_only = Forecast(mean=np.zeros((1, 1, 4), np.float32))
    with pytest.raises(ValueError, match="quantiles need sample paths"):
        mean_only.median


def test_contexts_longer_than_max_context_keep_the_most_recent_part(pairs):
    """Input preparation (no compile): with ``max_context`` 36, a 100-step context becomes its last 36
    steps, left-padded to 40 (5 patches of 8) with padding mask False and the leftmost id repeated."""
    from toto_jax.forecasting.inputs import prepare_context, read_rows

    _, model, _ = pairs["mixture3_causal_patch"]
    config = model.config.replace(max_context=36)
    series = np.arange(300, dtype=np.float32).reshape(1, 3, 100)
    id_mask = np.zeros(series.shape, np.int32)
    id_mask[:, 2] = 4
    context = prepare_context(config, read_rows(series, 8, 8), REFERENCE, id_mask=id_mask)
    values, valid, ids = context.values, context.valid, context.ids
    assert values.shape == (1, 3, 40)
    np.testing.assert_array_equal(values[..., 4:], series[..., -36:])
    assert not valid[..., :4].any() and valid[..., 4:].all()
    assert (values[..., :4] == 0).all() and (ids[:, 2] == 4).all() and (ids[:, :2] == 0).all()


def test_standardize_makes_forecasts_equivariant_to_units(pairs):
    """Toto's causal scaler floors the variance (sqrt(var + 0.1)), so raw forecasts of a series and of the
    same series in other units differ; with ``normalize="standardize"`` they are the same forecast, mapped back
    (same seed, same draws), also with missing values, large offsets and a constant variate."""
    _, model, _ = pairs["mixture3_causal_patch"]
    series, padding_mask, id_mask = make_inputs(model.config.patch_size, level=5.0)
    series[1, 0, 7] = np.nan
    series[1, 1] = 3.0  # constant: unit scale, shifted only
    offset, factor = np.float32(100.0), np.float32(1e-2)  # exactly representable shapes in float32
    kwargs = dict(padding_mask=padding_mask, id_mask=id_mask, num_samples=4, seed=3)
    standardize = REFERENCE.replace(normalize="standardize")
    base = forecast(model, series, 12, options=standardize, **kwargs)
    rescaled = forecast(model, series * factor + offset, 12, options=standardize, **kwargs)
    mapped_back = (rescaled.samples - offset) / factor
    varying = np.ones(series.shape[:2], bool)
    varying[1, 1] = False
    np.testing.assert_allclose(mapped_back[varying], base.samples[varying], rtol=0,
                               atol=2e-3 * np.abs(base.samples).max())  # fmt: skip
    # a constant variate has no scale to follow: it is forecast in unit steps around its value
    assert np.isfinite(base.samples).all() and abs(np.median(base.samples[1, 1]) - 3.0) < 3.0
    # without standardizing, the units change the forecast (the variance floor)
    raw_small = forecast(model, series * factor, 12, options=REFERENCE, **kwargs).samples / factor
    raw = forecast(model, series, 12, options=REFERENCE, **kwargs).samples
    assert np.abs(raw_small - raw).max() > 0.1 * np.abs(raw).max()
    # the mean path is standardized the same way
    mean_base = forecast(model, series, 12, num_samples=None, padding_mask=padding_mask, id_mask=id_mask,
                         options=standardize).mean
    mean_rescaled = forecast(model, series * factor, 12, num_samples=None, padding_mask=padding_mask, id_mask=id_mask,
                             options=standardize).mean  # fmt: skip
    np.testing.assert_allclose((mean_rescaled / factor)[varying], mean_base[varying], rtol=0,
                               atol=1e-3 * np.abs(mean_base).max())  # fmt: skip


def test_clip_outliers_forecasts_the_clipped_context(pairs):
    """``ForecastOptions.clip_outliers=k`` is exactly a forecast of the context clipped beyond k central ranges; one
    glitch 1e5 central ranges high otherwise inflates the causal scale and changes the forecast."""
    _, model, _ = pairs["mixture3_causal_patch"]
    series, padding_mask, id_mask = make_inputs(model.config.patch_size, level=5.0)
    spiked = series.copy()
    spiked[0, 0, 20] += 1e5 * np.ptp(np.nan_to_num(series[0, 0]))
    kwargs = dict(padding_mask=padding_mask, id_mask=id_mask, num_samples=4, seed=3)
    clipped = forecast(model, spiked, 12, options=REFERENCE.replace(clip_outliers=10.0), **kwargs)
    by_hand = clip_context_outliers(spiked, padding_mask.astype(bool) & ~np.isnan(spiked), 10.0)
    assert by_hand[0, 0, 20] < spiked[0, 0, 20] / 100 and (by_hand[1] == np.nan_to_num(spiked[1])).all()
    np.testing.assert_array_equal(clipped.samples, forecast(model, by_hand, 12, options=REFERENCE, **kwargs).samples)
    raw = forecast(model, spiked, 12, options=REFERENCE, **kwargs)
    assert np.abs(raw.samples[0, 0] - clipped.samples[0, 0]).max() > 0.1 * np.abs(clipped.samples[0, 0]).max()
    np.testing.assert_array_equal(raw.samples[1], clipped.samples[1])  # an untouched series: same forecast
    for bad in (0, -3.0, float("nan"), "100", True):
        with pytest.raises(ValueError, match="ForecastOptions.clip_outliers must be a positive number or None"):
            REFERENCE.replace(clip_outliers=bad)
