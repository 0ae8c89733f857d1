"""Forecasting with a quantile model (Toto 2.0): the shared inputs and options' preprocessing, one compiled
single-pass or block-decoding program per shape (``toto_jax.models.toto2.forecast``), split over series to
stay within the memory budget, and quantiles mapped back to data space."""

from __future__ import annotations

import numpy as np

from ..models.toto2.config import QUANTILE_LEVELS
from ..models.toto2.forecast import QuantileSpec, compiled_forecast
from . import decode
from .covariates import known_future, target_index
from .inputs import ForecastError
from .weights import Weights, placed_weights, signature

# The mean of the distribution whose quantile function is linear between the knots 0.1 ... 0.9 and flat
# beyond them: 0.1 of mass at each outer knot, plus the trapezoid rule in between.
MEAN_WEIGHTS = np.array([0.15] + [0.1] * 7 + [0.15])

_PROGRAMS: dict = {}


def _program(weights: Weights, spec: QuantileSpec, arguments: tuple, placement):
    key = (weights.key, spec, signature(arguments), placement.key)
    return placement.compiled(_PROGRAMS, key, compiled_forecast, weights.graphdef, spec, weights.params, *arguments)


def forecast_quantile_model(model, prepared, horizon: int, options, placement, future_exogenous_variables):
    from .api import Forecast

    config = model.config
    patch = config.patch_size
    if config.num_output_patches != 1:
        raise ForecastError(f"forecasting needs num_output_patches == 1 (the model has {config.num_output_patches})")
    values, valid = prepared.values, prepared.valid
    batch, variates, context = values.shape
    patches = -(-prepared.generated // patch)
    block = patches
    if options.decode_block_size is not None:
        if options.decode_block_size % patch:
            raise ForecastError(f"ForecastOptions.decode_block_size ({options.decode_block_size}) must be a multiple "
                                f"of the patch size ({patch})")  # fmt: skip
        block = min(options.decode_block_size // patch, patches)
    spec = QuantileSpec(patches, block, float(options.value_cap or 0.0), options.scaler_fallback_min_obs)
    steps = spec.blocks * block * patch
    future = np.zeros((batch, variates, steps), np.float32)
    future_mask = np.zeros(future.shape, bool)
    is_target = np.ones((batch, variates), bool)
    targets = variates
    if future_exogenous_variables is not None:
        known = known_future(future_exogenous_variables, prepared, horizon)
        targets = known.targets
        future[:, targets:], future_mask[:, targets:] = known.place(steps, prepared.trailing)
        is_target[:, targets:] = False
    series_ids = prepared.ids[:, :, -1]

    weights = placed_weights(model, placement)
    arrays = (values, valid, future, future_mask, series_ids, is_target)
    chunk = placement.row_multiple(batch)
    while True:
        shapes = tuple(placement.abstract((chunk,) + a.shape[1:], a.dtype) for a in arrays)
        program = _program(weights, spec, shapes, placement)
        needed = decode.working_bytes(program, weights)
        if needed <= options.memory_budget:
            break
        if chunk <= placement.count:
            raise ForecastError(
                f"one series needs {needed / 2**30:.2f} GiB of working memory ({variates} variates, {context} context "
                f"steps, {steps} steps to forecast), beyond the memory budget of {options.memory_budget / 2**30:.2f} "
                "GiB: raise ForecastOptions.memory_budget, shorten context_length or the horizon"
            )
        chunk = placement.row_multiple(-(-chunk // 2))
    out = np.empty((len(QUANTILE_LEVELS), batch, variates, steps), np.float32)
    for start in range(0, batch, chunk):
        stop = min(start + chunk, batch)
        rows = [a[start:stop] for a in arrays]
        if stop - start < chunk:  # the last chunk reuses the program: pad with copies of its last series
            rows = [np.concatenate([r, np.repeat(r[-1:], chunk - len(r), axis=0)]) for r in rows]
        out[:, start:stop] = np.asarray(program(weights.params, *placement.put(rows)))[:, : stop - start]

    window = prepared.trailing[:, None, None] + np.arange(horizon)
    out = np.take_along_axis(out, np.broadcast_to(window, out.shape[:3] + (horizon,)), axis=-1)
    quantiles = np.moveaxis(out, 0, -1)[:, :targets]  # [batch, target variate, horizon, level]
    quantiles = (quantiles * prepared.unit[:, :targets, :, None] + prepared.shift[:, :targets, :, None])
    quantiles = quantiles.astype(prepared.rows.dtype)
    quantiles = np.where(prepared.nonnegative[:, :targets, :, None], np.maximum(quantiles, 0), quantiles)
    index = target_index(prepared.rows.index, targets)
    return Forecast(mean=(quantiles @ MEAN_WEIGHTS).astype(quantiles.dtype), index=index, quantiles=quantiles,
                    quantile_levels=QUANTILE_LEVELS)  # fmt: skip
