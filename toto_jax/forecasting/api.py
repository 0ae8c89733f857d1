"""``forecast`` and ``Forecast``: inputs -> options' preprocessing -> planned compiled decode -> data space."""

from __future__ import annotations

import dataclasses
import warnings

import jax
import jax.numpy as jnp
import numpy as np

from ..models import is_toto2
from ..models.toto1 import Toto, validate_inputs
from . import decode, plan
from .covariates import KnownFuture, known_future, target_index
from .inputs import ForecastError, TimeIndex, prepare_context, read_rows
from .options import DEFAULT_NUM_SAMPLES, ForecastOptions
from .placement import Placement, forecast_placement
from .preprocessing import clip_context_outliers, nonnegative_variates, normalize_context, value_bounds
from .weights import placed_weights

# A horizon this many times the context or longer gets a warning: autoregressive paths that far out
# mostly follow the model's own output.
LONG_HORIZON_RATIO = 4


@dataclasses.dataclass(frozen=True)
class Forecast:
    """Forecast arrays in data space: ``mean`` [batch, variate, horizon]; ``samples`` adds a trailing sample
    axis (None for the deterministic mean path). Float64 when the input was float64, integer or pandas.
    ``index`` holds the time axis of pandas inputs (one per series), for ``to_dataframe``.

    A quantile model (Toto 2.0) fills ``quantiles`` [batch, variate, horizon, level] at ``quantile_levels``
    instead of samples; its ``mean`` is that of the distribution whose quantile function runs linearly
    between the knots and stays flat beyond the outer ones (weights 0.15, 0.1 x 7, 0.15 on the nine knots).
    """

    mean: np.ndarray
    samples: np.ndarray | None = None
    index: list[TimeIndex] | None = None
    quantiles: np.ndarray | None = None
    quantile_levels: tuple[float, ...] | None = None

    def quantile(self, q):
        """Quantile(s) of the forecast; a sequence of ``q`` adds a leading axis. From sample paths: linear
        interpolation between order statistics (as ``torch.quantile``). From a quantile model: exact at its
        knots, linear (so monotone) in between, and only within the outer knots."""
        q_array = np.asarray(q, np.float64)
        if np.any((q_array < 0) | (q_array > 1)) or np.isnan(q_array).any():
            raise ValueError(f"quantile levels must lie in [0, 1], got {q}")
        if self.quantiles is not None:
            return _interpolate_knots(self.quantiles, np.asarray(self.quantile_levels), q_array)
        if self.samples is None:
            raise ValueError("quantiles need sample paths: forecast with num_samples set")
        return np.quantile(self.samples, q_array, axis=-1).astype(self.samples.dtype)

    @property
    def median(self):
        return self.quantile(0.5)

    @property
    def std(self):
        if self.quantiles is not None:
            raise ValueError("a quantile forecast has no standard deviation; use quantile(q)")
        if self.samples is None:
            raise ValueError("a standard deviation needs sample paths: forecast with num_samples set")
        return self.samples.std(axis=-1, ddof=1)

    def to_dataframe(self, statistic="mean", series: int = 0):
        """One series' forecast as a DataFrame in the input's orientation: rows are the steps after the
        input's time index (continuing its frequency), columns its variates. ``statistic``: ``"mean"``,
        ``"median"``, ``"std"`` or a quantile level."""
        import pandas as pd

        if self.index is None:
            raise ValueError("to_dataframe needs a pandas input (a DataFrame or Series with a time index)")
        if not 0 <= series < len(self.index):
            raise ValueError(f"series must lie in [0, {len(self.index)}), got {series}")
        if isinstance(statistic, str):
            if statistic not in ("mean", "median", "std"):
                raise ValueError(f"statistic must be 'mean', 'median', 'std' or a quantile level, got {statistic!r}")
            values = getattr(self, statistic)[series]
        else:
            values = self.quantile(statistic)[series]
        index = self.index[series]
        return pd.DataFrame(values.T, index=index.future, columns=index.variates)


def _interpolate_knots(quantiles, levels, q):
    low, high = levels[0], levels[-1]
    if np.any((q < low - 1e-12) | (q > high + 1e-12)):
        raise ValueError(f"this quantile forecast covers levels {low:g} to {high:g}, got {q.tolist()}")
    flat = np.atleast_1d(q)
    out = []
    for level in flat:
        exact = np.flatnonzero(np.isclose(levels, level, rtol=0, atol=1e-12))
        if exact.size:
            out.append(quantiles[..., exact[0]])
            continue
        i = int(np.searchsorted(levels, level)) - 1
        weight = (level - levels[i]) / (levels[i + 1] - levels[i])
        out.append(((1 - weight) * quantiles[..., i] + weight * quantiles[..., i + 1]).astype(quantiles.dtype))
    return np.stack(out) if np.ndim(q) else out[0]


def _sample_count(value, toto2: bool) -> int | None:
    """``num_samples`` as the decode takes it: "auto" is DEFAULT_NUM_SAMPLES paths for Toto 1.0 and the
    quantile head for Toto 2.0; None is Toto 1.0's mean path (and Toto 2.0's quantiles)."""
    if isinstance(value, str) and value == "auto":
        return None if toto2 else DEFAULT_NUM_SAMPLES
    if isinstance(value, str):
        raise ForecastError(f"num_samples must be a positive integer, None or 'auto', got {value!r}")
    count = _check_count("num_samples", value, allow_none=True)
    if toto2 and count is not None:
        raise ForecastError(
            "Toto 2.0 forecasts quantiles in one pass and draws no sample paths: leave num_samples unset (or None) "
            "and read Forecast.quantile(q)"
        )
    return count


def _check_count(name: str, value, allow_none: bool) -> int | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ForecastError(f"{name} must be a positive integer{' or None' * allow_none}, got {value!r}")
    return int(value)


@dataclasses.dataclass(frozen=True)
class MemoryPlan:
    """How a forecast is split into compiled calls to stay within ``ForecastOptions.memory_budget``."""

    series_per_call: int
    paths_per_call: int
    calls: int
    working_bytes: int  # of the largest compiled program (XLA's buffer assignment), weights excluded


@dataclasses.dataclass
class _Prepared:
    values: np.ndarray  # float32 [batch, variate, time], model-input space
    valid: np.ndarray
    ids: np.ndarray
    low: np.ndarray | None  # [batch, variate, 1] model-input space bounds of decoded values (None: unbounded)
    high: np.ndarray | None
    nonnegative: np.ndarray  # bool [batch, variate, 1]: forecasts kept >= 0 (ForecastOptions.infer_nonnegative)
    shift: np.ndarray  # float64 [batch, variate, 1]: data = model-input * unit + shift
    unit: np.ndarray
    trailing: np.ndarray
    generated: int  # steps to generate: the horizon plus the longest trailing gap
    rows: object


def _prepare(model, series, horizon, num_samples, padding_mask, id_mask, options, mesh, rules) -> tuple:
    if options is None:
        options = ForecastOptions()
    if not isinstance(options, ForecastOptions):
        raise ForecastError(f"options must be a ForecastOptions, got {type(options).__name__}")
    config = model.config
    horizon = _check_count("horizon", horizon, allow_none=False)
    num_samples = _sample_count(num_samples, is_toto2(config))
    if not is_toto2(config) and config.stride != config.patch_size:
        raise ForecastError(
            f"forecasting needs stride == patch_size (got stride {config.stride}, patch_size {config.patch_size})"
        )
    rows = read_rows(series, horizon, config.patch_size)
    context = prepare_context(config, rows, options, padding_mask, id_mask)
    values, valid = context.values, context.valid
    nonnegative = nonnegative_variates(values, valid) & options.infer_nonnegative
    if options.clip_outliers is not None:
        values = clip_context_outliers(values, valid, options.clip_outliers)
    values, shift, unit = normalize_context(values, valid, options.normalize)
    _check_float32_range(values, valid, options)
    low = high = None
    if options.value_cap is not None:
        low, high = (np.clip(b, -3e38, 3e38) for b in value_bounds(values, valid, options.value_cap))
    if nonnegative.any():  # decoded patches of those variates stay >= 0 before they are fed back
        zero = np.clip(-shift / unit, -3e38, 3e38)
        low = np.where(nonnegative, zero if low is None else np.maximum(low, zero), -3e38 if low is None else low)
        high = np.full(low.shape, 3e38) if high is None else high
    if is_toto2(config):
        changing = np.flatnonzero((context.ids != context.ids[..., -1:]).any(axis=(1, 2)))
        if changing.size:
            raise ForecastError(f"series {int(changing[0])}: Toto 2.0 takes one id per variate, but id_mask changes over time")
    else:
        try:
            validate_inputs(config, values, valid, context.ids)
        except ValueError as error:
            raise ForecastError(str(error)) from None
    generated = horizon + int(context.trailing.max())  # gaps at the end are forecast, then dropped
    prepared = _Prepared(values.astype(np.float32), valid, context.ids, low, high, nonnegative, shift, unit,
                         context.trailing, generated, rows)  # fmt: skip
    return prepared, horizon, num_samples, options, forecast_placement(options.devices, mesh, rules)


def forecast(model, series, horizon: int, num_samples: int | str | None = "auto", padding_mask=None, id_mask=None,
             seed: int = 0, *, options: ForecastOptions | None = None, future_exogenous_variables=None,
             mesh=None, rules=None) -> Forecast:  # fmt: skip
    """Forecast ``horizon`` steps after each series.

    series: [variate, time], [batch, variate, time], a list of [variate, time] arrays (lengths may differ:
    shorter ones are left-padded), a pandas DataFrame (rows = time steps, columns = variates) or Series,
    or a list of them. NaN marks a missing value. ``padding_mask`` (True = observed) and ``id_mask``
    (variates with equal id attend to each other) follow the series' layout.
    ``num_samples`` (Toto 1.0): sample paths per series, each drawing from its own key (seed, step, series
    position, path), so results do not depend on how the request is split into calls. The default, "auto",
    draws ``DEFAULT_NUM_SAMPLES`` (64) paths, so a forecast carries its uncertainty (``median``,
    ``quantile(q)``); ``num_samples=None`` gives the deterministic mean path alone (the reference's
    ``generate_mean``; one path instead of 64).
    ``options`` (default ``ForecastOptions()``, the safe defaults) decides the preprocessing, sampling
    mode and memory budget; ``ForecastOptions.reference()`` reproduces the reference implementation.

    Toto 2.0 models (``model.config.family == "toto2"``) forecast the nine quantiles 0.1 ... 0.9 in one
    pass (or in blocks, ``ForecastOptions.decode_block_size``): ``num_samples`` stays "auto" (or None) and the
    result has ``quantiles``.

    ``future_exogenous_variables`` ([n_exog, horizon] or [batch, n_exog, horizon]) are the known future
    values of the series' last ``n_exog`` variates (covariates: they are not forecast, and the result holds
    only the other variates). A Toto 1.0 model needs variate labels for them (``config.variate_labels``, as
    fine-tuning with covariates gives); every decoded patch keeps the known values, in every sample path.

    ``mesh`` places the forecast explicitly: a ``jax.sharding.Mesh`` of this process's devices with the axes
    of ``rules`` (default ``toto_jax.sharding.DEFAULT_RULES``, axes ``data``, ``fsdp``, ``tensor``: build it
    with ``toto_jax.sharding.make_mesh``). Rows (series x sample paths, padded to a multiple) split over the
    axes ``batch`` maps to; each parameter splits as its logical axes map (heads and MLP units over
    ``tensor``: tensor parallelism for a model too large for one device), and the KV cache follows the heads.
    Results equal the one-device run's to float32 rounding of the sums split over ``tensor``. Without
    ``mesh``, ``ForecastOptions.devices`` picks a data mesh; giving both is an error. (An argument, not an
    option: like ``toto_jax.load(mesh=)`` it places the model, and ``ForecastOptions`` stays a plain value.)
    """
    prepared, horizon, num_samples, options, placement = _prepare(model, series, horizon, num_samples, padding_mask,
                                                                   id_mask, options, mesh, rules)  # fmt: skip
    if is_toto2(model):
        from .quantile import forecast_quantile_model

        return forecast_quantile_model(model, prepared, horizon, options, placement, future_exogenous_variables)
    known = None
    if future_exogenous_variables is not None:
        known = known_future(future_exogenous_variables, prepared, horizon)
        if not model.config.variate_labels:
            raise ForecastError(
                f"this Toto 1.0 model has no variate labels, so it cannot tell the {known.count} covariate(s) "
                f"(variates {known.targets} and up) from the targets: fine-tune it with covariates (toto-jax finetune "
                "--covariates), or forecast every variate without future_exogenous_variables"
            )
    observed = int(prepared.valid.any(axis=1).sum(axis=-1).max())
    if prepared.generated >= LONG_HORIZON_RATIO * observed:
        warnings.warn(
            f"the horizon ({prepared.generated} steps) is {prepared.generated / observed:.1f}x the longest context "
            f"({observed} observed steps): forecasts that far out mostly follow the model's own output; "
            f"the value cap (ForecastOptions.value_cap={options.value_cap}) bounds them",
            stacklevel=2,
        )
    decoder = _Decoder(model, prepared, num_samples, options, placement, known)
    paths = decoder.run(seed)
    # [batch, paths, variate, steps] -> each series' horizon after its own trailing gap, back in data space
    window = prepared.trailing[:, None, None, None] + np.arange(horizon)
    paths = np.take_along_axis(paths, np.broadcast_to(window, paths.shape[:3] + (horizon,)), axis=-1)
    paths = (paths * prepared.unit[:, None] + prepared.shift[:, None]).astype(prepared.rows.dtype)
    paths = np.where(prepared.nonnegative[:, None], np.maximum(paths, 0), paths)  # float32 rounding of the bound
    targets = prepared.values.shape[1] if known is None else known.targets
    paths, index = paths[:, :, :targets], target_index(prepared.rows.index, targets)
    if num_samples is None:
        return Forecast(mean=paths[:, 0], index=index)
    samples = np.moveaxis(paths, 1, -1)
    return Forecast(mean=samples.mean(axis=-1), samples=samples, index=index)


def memory_plan(model: Toto, series, horizon: int, num_samples: int | str | None = "auto", padding_mask=None,
                id_mask=None, *, options: ForecastOptions | None = None, mesh=None, rules=None) -> MemoryPlan:  # fmt: skip
    """How ``forecast`` with these arguments splits its work (it compiles the programs, runs nothing)."""
    prepared, _, num_samples, options, placement = _prepare(model, series, horizon, num_samples, padding_mask,
                                                            id_mask, options, mesh, rules)  # fmt: skip
    return _Decoder(model, prepared, num_samples, options, placement).memory_plan


def _check_float32_range(values, valid, options: ForecastOptions) -> None:
    too_large = valid & (np.abs(values) > np.finfo(np.float32).max / 2)
    if too_large.any():
        series, variate, step = (int(x[0]) for x in np.nonzero(too_large))
        raise ForecastError(
            f"series {series}, variate {variate}: value {values[series, variate, step]:.3g} at step {step} is "
            f"beyond the float32 range the model computes in"
            + (" (normalize='none'; 'standardize' or 'center' removes the offset in float64 first)"
               if options.normalize == "none" else "")  # fmt: skip
        )


def _layout(prepared: _Prepared, known: KnownFuture | None, shapes: plan.Shapes, patch: int):
    """Right-pad contexts to their bucket, append room for the generated patches, pad the variates, and
    write known future covariates where their patches will be generated (with their mask; None without).

    Generated steps keep the last context id (the reference's ``dummy_id_mask``). Extra variates are empty
    and get ids of their own, so variate attention never mixes them in."""
    values, ids = prepared.values, prepared.ids
    batch, variates, length = values.shape
    total = shapes.context_bucket + shapes.steps * patch
    buffer = np.zeros((batch, shapes.variates, total), np.float32)
    mask = np.zeros(buffer.shape, bool)
    group = np.empty(buffer.shape, np.int32)
    group[:, :variates] = ids[:, :, -1:]
    group[:, variates:] = ids.max() + 1 + np.arange(shapes.variates - variates, dtype=np.int32)[:, None]
    buffer[:, :variates, :length] = values
    mask[:, :variates, :length] = prepared.valid
    group[:, :variates, :length] = ids
    given = None
    if known is not None:
        given = np.zeros(buffer.shape, bool)
        covariates = slice(known.targets, variates)
        buffer[:, covariates, length:], given[:, covariates, length:] = known.place(total - length, prepared.trailing)
    return buffer, mask, group, given


def _pad_rows(array, size: int):
    extra = size - array.shape[0]
    return array if extra <= 0 else np.concatenate([array, np.repeat(array[-1:], extra, axis=0)])


class _Decoder:
    """The planned compiled calls of one forecast: chunks of series x sample paths within the budget."""

    def __init__(self, model: Toto, prepared: _Prepared, num_samples: int | None, options: ForecastOptions,
                 placement: Placement, known: KnownFuture | None = None):  # fmt: skip
        config = model.config
        self.patch = patch = config.patch_size
        self.batch, self.variates, self.context = batch, variates, context = prepared.values.shape
        self.shapes = shapes = plan.decode_shapes(context, variates, -(-prepared.generated // patch), patch,
                                                  options.bucket)  # fmt: skip
        self.buffer, self.mask, self.group, self.known = _layout(prepared, known, shapes, patch)
        self.num_exogenous = 0 if known is None else known.count
        self.low = self.high = None
        if prepared.low is not None:
            pad = ((0, 0), (0, shapes.variates - variates), (0, 0))
            self.low, self.high = (np.pad(b, pad).astype(np.float32) for b in (prepared.low, prepared.high))
        self.total_paths = num_samples or 1
        self.sampling = None if num_samples is None else options.sampling
        self.options = options
        self.placement = placement
        self.weights = weights = placed_weights(model, placement)
        self.context_length = placement.put(jnp.int32(context), rows=False)
        self.key = placement.put(jax.random.key(0), rows=False)

        chunks = plan.first_chunks(config, shapes, batch, self.total_paths, options.use_kv_cache,
                                   options.memory_budget * placement.count, options.bucket)  # fmt: skip
        while True:
            self._compile(chunks)
            # The encoded contexts stay alive while their chunks of paths decode.
            held = 0 if self.encode is None else decode.output_bytes(self.encode)
            needed = max([decode.working_bytes(self.prefill, weights)]
                         + [decode.working_bytes(p, weights, held) for p in self.advances.values()]
                         + ([] if self.encode is None else [decode.working_bytes(self.encode, weights)]))
            if needed <= options.memory_budget:
                break
            fewer = plan.smaller(chunks)
            if fewer is None:
                raise ForecastError(
                    f"one sample path of one series needs {needed / 2**30:.2f} GiB of working memory ({variates} "
                    f"variates, {context} context steps, {prepared.generated} steps to generate), beyond the memory "
                    f"budget of {options.memory_budget / 2**30:.2f} GiB: raise ForecastOptions.memory_budget, "
                    "shorten context_length or the horizon, or forecast fewer variates per call"
                )
            chunks = fewer
        self.chunks = chunks
        self.calls = [(s, p) for s in range(0, batch, chunks.series) for p in range(0, self.total_paths, chunks.paths)]
        self.memory_plan = MemoryPlan(chunks.series, chunks.paths, len(self.calls), needed)

    def _compile(self, chunks: plan.Chunks) -> None:
        shapes = self.shapes
        series = plan.bucket_count(chunks.series) if self.options.bucket else chunks.series
        self.series_size = series = self.placement.row_multiple(series)
        abstract = self.placement.abstract
        self.spec = spec = decode.DecodeSpec(shapes.context_bucket, chunks.paths, self.sampling,
                                             self.options.use_kv_cache, self.num_exogenous)  # fmt: skip
        rows = tuple(abstract((series,) + self.buffer.shape[1:], a.dtype) for a in (self.buffer, self.mask, self.group))
        encoded = self.encode = None
        if self.options.use_kv_cache:
            self.encode = decode.compiled("encode", self.weights, (spec,), (*rows, self.context_length), self.placement)
            encoded = self.encode.out_info
        bounds = None if self.low is None else abstract((series, shapes.variates, 1), np.float32)
        known = None if self.known is None else abstract((series,) + self.known.shape[1:], bool)
        arguments = (encoded, *rows, bounds, bounds, known, abstract((series * chunks.paths,), np.uint32),
                     self.key, self.context_length)  # fmt: skip
        self.prefill = decode.compiled("prefill", self.weights, (spec,), arguments, self.placement)
        state = self.prefill.out_info
        self.advances = {
            steps: decode.compiled("advance", self.weights, (spec, steps), (state,), self.placement)
            for steps in {shapes.first_steps - 1, plan.SEGMENT_STEPS if shapes.segments else 0} - {0}
        }

    def run(self, seed: int) -> np.ndarray:
        """Sample paths (or the mean path) [batch, paths, variate, steps * patch] in model-input space."""
        shapes, chunks, options = self.shapes, self.chunks, self.options
        key = self.placement.put(jax.random.key(seed), rows=False)
        units = len(self.calls) * (1 + shapes.segments)
        bar = None
        if options.progress if options.progress is not None else units > 1:
            from tqdm.auto import tqdm

            bar = tqdm(total=units, desc="forecast", unit="segment")
        out = np.empty((self.batch, self.total_paths, self.variates, shapes.steps * self.patch), np.float32)
        encoded, encoded_series = None, None
        put, params = self.placement.put, self.weights.params
        for first_series, first_path in self.calls:
            stop = min(first_series + chunks.series, self.batch)
            rows = [put(_pad_rows(a[first_series:stop], self.series_size)) for a in (self.buffer, self.mask, self.group)]
            extras = [None if b is None else put(_pad_rows(b[first_series:stop], self.series_size))
                      for b in (self.low, self.high, self.known)]  # fmt: skip
            if self.encode is not None and encoded_series != first_series:  # once per chunk of series
                encoded, encoded_series = self.encode(params, *rows, self.context_length), first_series
            # Row (series s, path p) draws from stream s * num_samples + p, whatever the chunking.
            streams = (first_series + np.arange(self.series_size))[:, None] * self.total_paths + first_path
            row_keys = put((streams + np.arange(chunks.paths)[None]).reshape(-1).astype(np.uint32))
            state = self.prefill(params, encoded, *rows, *extras, row_keys, key, self.context_length)
            if shapes.first_steps > 1:
                state = self.advances[shapes.first_steps - 1](params, state)
            for _ in range(shapes.segments):
                if bar is not None:
                    bar.update()
                state = self.advances[plan.SEGMENT_STEPS](params, state)
            if bar is not None:
                bar.update()
            generated = np.asarray(state.buffer)[:, : self.variates, self.context : self.context + shapes.steps * self.patch]
            generated = generated.reshape(self.series_size, chunks.paths, self.variates, -1)
            path_stop = min(first_path + chunks.paths, self.total_paths)
            out[first_series:stop, first_path:path_stop] = generated[: stop - first_series, : path_stop - first_path]
        if bar is not None:
            bar.close()
        return out


__all__ = ["Forecast", "ForecastError", "MemoryPlan", "forecast", "memory_plan"]
