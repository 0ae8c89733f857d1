"""Autoregressive forecasting: the whole decode of a batch runs as one compiled program.

Layout of one compiled call (``_generate``): every series lives in a fixed-size buffer
``[batch, variate, context_bucket + steps * patch]`` holding the (left-padded) context at ``[0, c)``
followed by room for the generated patches. ``c`` is a traced scalar, so contexts that fall into the
same bucket share the compiled program; the context is right-padded to its bucket, which is exact
because time attention is causal and the scaler only looks at valid points (the global statistics are
limited to the first ``c`` steps, like the reference's ``scaling_prefix_length``).

Cached decode: the context is encoded once into a fixed-size KV cache, the cache (and the first
predictive distribution) is broadcast to the sample paths, and ``lax.scan`` then feeds one patch per
step. Each step re-runs the (cheap, elementwise) scaler over the buffer, masked as not-yet-valid beyond
what has been generated; causal statistics at a position only see earlier points, so this equals the
reference's scaler over the growing series. Only the last patch goes through unembedding and the head.

Uncached decode (``use_kv_cache=False``) reproduces the reference's no-cache semantics: every step
re-encodes the whole buffer (again one ``lax.scan``); future slots cannot influence earlier positions.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from .model import KVCache, Toto, validate_inputs
from .model.distribution import AffineTransformed
from .model.rope import xpos_key_recentre
from .preprocessing import check_clip_limit, clip_context_outliers, standardize_context
from .sampling import check_sampling

DEFAULT_MEMORY_BUDGET = 4 << 30  # bytes of working memory one compiled call may use


class ForecastError(ValueError):
    """Input that cannot be forecast, with a message naming the offending series."""


@dataclasses.dataclass(frozen=True)
class Forecast:
    """Forecast arrays in data space: ``mean`` [batch, variate, horizon]; ``samples`` adds a trailing sample
    axis (None for the deterministic mean path)."""

    mean: np.ndarray
    samples: np.ndarray | None = None

    def quantile(self, q):
        """Sample quantile(s) with linear interpolation (as ``torch.quantile``); a sequence of ``q`` adds a
        leading axis."""
        if self.samples is None:
            raise ValueError("quantiles need sample paths: forecast with num_samples set")
        q_array = np.asarray(q, np.float64)
        if np.any((q_array < 0) | (q_array > 1)):
            raise ValueError(f"quantile levels must lie in [0, 1], got {q}")
        return np.quantile(self.samples, q_array, axis=-1).astype(self.samples.dtype)

    @property
    def median(self):
        return self.quantile(0.5)

    @property
    def std(self):
        if self.samples is None:
            raise ValueError("a standard deviation needs sample paths: forecast with num_samples set")
        return self.samples.std(axis=-1, ddof=1)


# ---- buckets: a handful of shapes per model, so a stream of varied requests reuses compiled programs ------
def bucket_count(n: int) -> int:
    """Powers of two up to 8, then multiples of 8 (at most 1.25x waste beyond 8)."""
    if n <= 8:
        return 1 << max(0, math.ceil(math.log2(max(n, 1))))
    return -(-n // 8) * 8


def bucket_variates(n: int) -> int:
    # Variate counts are usually fixed within a stream; keep small ones exact (no wasted compute).
    return n if n <= 16 else -(-n // 16) * 16


def bucket_batch(n: int) -> int:
    return 1 << max(0, math.ceil(math.log2(max(n, 1))))


# ---- input preparation (numpy, concrete) -----------------------------------------------------------
def _as_float_array(value, what: str) -> np.ndarray:
    array = np.asarray(value)
    if array.dtype == object or not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise ForecastError(f"{what} must be numeric, got dtype {array.dtype}")
    return array.astype(np.float32)


def _split_rows(series, mask, name: str) -> list[np.ndarray] | None:
    """A per-series list for ``mask`` matching the list/array layout of ``series``."""
    if mask is None:
        return None
    if isinstance(mask, (list, tuple)):
        return [np.asarray(m) for m in mask]
    array = np.asarray(mask)
    if array.ndim == 2 and len(series) == 1:
        return [array]
    if array.ndim != 3:
        raise ForecastError(f"{name} must have the series' shape, got shape {array.shape}")
    return list(array)


def prepare_context(config, series, padding_mask=None, id_mask=None):
    """Series in any accepted form -> (values, padding_mask, id_mask), each [batch, variate, time]
    left-padded to a whole number of patches, cut to the most recent ``config.max_context`` steps."""
    if isinstance(series, (list, tuple)):
        rows = [_as_float_array(s, f"series {i}") for i, s in enumerate(series)]
        if not rows:
            raise ForecastError("no series given")
    else:
        array = _as_float_array(series, "series")
        if array.ndim == 2:  # one series; the result keeps a batch axis of 1, as the reference's
            array = array[None]
        if array.ndim != 3:
            raise ForecastError(
                f"series must have shape [variate, time] or [batch, variate, time], got shape {array.shape}"
            )
        rows = list(array)
    masks = _split_rows(rows, padding_mask, "padding_mask")
    ids = _split_rows(rows, id_mask, "id_mask")
    for i, row in enumerate(rows):
        if row.ndim != 2:
            raise ForecastError(f"series {i} must have shape [variate, time], got shape {row.shape}")
        if row.shape[0] != rows[0].shape[0]:
            raise ForecastError(
                f"series {i} has {row.shape[0]} variates but series 0 has {rows[0].shape[0]}; "
                "forecast series with different variate counts in separate calls"
            )
        if row.shape[1] == 0:
            raise ForecastError(f"series {i} has no time steps")
        for name, given in (("padding_mask", masks), ("id_mask", ids)):
            if given is not None and (len(given) != len(rows) or given[i].shape != row.shape):
                shape = given[i].shape if len(given) == len(rows) else f"{len(given)} rows"
                raise ForecastError(f"{name} for series {i} has shape {shape}, expected {row.shape}")

    patch = config.patch_size
    longest = min(max(r.shape[1] for r in rows), config.max_context)
    padded_length = -(-longest // patch) * patch
    batch, variates = len(rows), rows[0].shape[0]
    values = np.zeros((batch, variates, padded_length), np.float32)
    valid = np.zeros(values.shape, bool)
    groups = np.zeros(values.shape, np.int32)
    for i, row in enumerate(rows):
        row_mask = ~np.isnan(row)
        if masks is not None:
            row_mask &= masks[i].astype(bool)
        row_ids = np.zeros(row.shape, np.int32) if ids is None else ids[i].astype(np.int32)
        keep = min(row.shape[1], config.max_context)
        row, row_mask, row_ids = row[:, -keep:], row_mask[:, -keep:], row_ids[:, -keep:]
        empty = np.flatnonzero(~row_mask.any(axis=1))
        if empty.size:
            raise ForecastError(
                f"series {i}: variate(s) {empty.tolist()} have no observed values (all NaN or masked)"
            )
        if not np.all(np.isfinite(row[row_mask])):
            raise ForecastError(f"series {i} contains infinite values")
        values[i, :, -keep:] = np.where(row_mask, row, 0.0)
        valid[i, :, -keep:] = row_mask
        # Left padding repeats the leftmost id, as the reference's ``pad_id_mask``.
        groups[i] = row_ids[:, :1]
        groups[i, :, -keep:] = row_ids
    try:
        validate_inputs(config, values, valid, groups)
    except ValueError as error:
        raise ForecastError(str(error)) from None
    return values, valid, groups


def _layout_buffers(values, valid, groups, context_bucket: int, horizon_steps: int, patch: int):
    """Right-pad contexts to ``context_bucket`` and append room for the generated patches.

    Generated steps keep the last context id (the reference's ``dummy_id_mask``); their validity is set
    inside the compiled decode as patches are produced.
    """
    batch, variates, length = values.shape
    total = context_bucket + horizon_steps * patch
    buffer = np.zeros((batch, variates, total), np.float32)
    mask = np.zeros(buffer.shape, bool)
    ids = np.repeat(groups[:, :, -1:], total, axis=-1)
    buffer[..., :length] = values
    mask[..., :length] = valid
    ids[..., :length] = groups
    return buffer, mask, ids


def _pad_axis(array, size: int, axis: int, fill):
    extra = size - array.shape[axis]
    if extra <= 0:
        return array
    widths = [(0, 0)] * array.ndim
    widths[axis] = (0, extra)
    return np.pad(array, widths, constant_values=fill)


def _pad_variates(buffer, mask, ids, variates: int):
    """Extra variates are empty and get ids of their own, so variate attention never mixes them in."""
    real = buffer.shape[1]
    if variates == real:
        return buffer, mask, ids
    fresh = ids.max() + 1 + np.arange(variates - real, dtype=np.int32)
    extra_ids = np.broadcast_to(fresh[None, :, None], (ids.shape[0], variates - real, ids.shape[2]))
    return (
        _pad_axis(buffer, variates, 1, 0.0),
        _pad_axis(mask, variates, 1, False),
        np.concatenate([ids, extra_ids], axis=1),
    )


# ---- the compiled decode ------------------------------------------------------------------------
def replace_extreme_values(x):
    """NaN, infinities and |x| >= max/2 become 0, as the reference does after every generated patch."""
    limit = jnp.finfo(x.dtype).max / 2
    return jnp.where(jnp.isnan(x) | jnp.isinf(x) | (jnp.abs(x) >= limit), 0.0, x)


def _patch_of(array, start, patch: int):
    """The patch of a per-step array starting at ``start``; global statistics ([..., 1]) pass through."""
    if array.shape[-1] == 1:
        return array
    return jax.lax.dynamic_slice_in_dim(array, start, patch, axis=-1)


def _recentre_context_keys(cache: KVCache, real_tokens, call_tokens: int, head_dim: int) -> KVCache:
    """Give cached keys the xPos centre the reference's context call (of ``real_tokens``) would have used.

    xPos divides keys by ``base ** ((position - centre) / 512)`` with the centre taken from the positions
    processed in that call. The context was encoded right-padded to ``call_tokens``; the reference encodes
    exactly ``real_tokens``, so the stored keys are off by the constant factor
    ``base ** ((centre_real - centre_call) / 512)`` per feature. Within one call the centre cancels in q.k,
    so only keys kept for later decode steps need this.
    """
    centre_real = jnp.floor((real_tokens - 1).astype(jnp.float32) / 2.0)
    centre_call = float(math.floor((call_tokens - 1) / 2))
    factor = xpos_key_recentre(centre_call, centre_real, head_dim)
    keys = tuple(None if k is None else (k * factor).astype(k.dtype) for k in cache.keys)
    return dataclasses.replace(cache, keys=keys)


def _repeat_rows(tree, times: int):
    return jax.tree.map(lambda a: jnp.repeat(a, times, axis=0), tree)


def _repeat_cache(cache: KVCache, times: int) -> KVCache:
    # Cache arrays are [repeats, layers, batch, ...]: sample paths are laid out batch-major.
    rep = lambda a: None if a is None else jnp.repeat(a, times, axis=2)  # noqa: E731
    return KVCache(tuple(rep(k) for k in cache.keys), tuple(rep(v) for v in cache.values), cache.length)


@functools.partial(
    jax.jit, static_argnums=(0,), static_argnames=("context_bucket", "steps", "num_samples", "use_kv_cache", "sampling")
)
def _generate(graphdef, state, buffer, context_mask, ids, context_length, key, first_series, *, context_bucket,
              steps, num_samples, use_kv_cache, sampling="independent"):  # fmt: skip
    """Predicted patches [batch * paths, variate, steps * patch] (paths = num_samples or 1, batch-major).

    Path p of the series at position ``first_series + i`` of the whole request draws from its own key
    (``key``, step, series, path), so the draws do not depend on how the request was split into chunks.
    """
    model: Toto = nnx.merge(graphdef, state)
    patch = model.config.patch_size
    paths = num_samples or 1
    positions = jnp.arange(buffer.shape[-1])

    def valid_mask(mask, generated_patches):
        # Context validity as given; generated steps become valid as they are produced.
        return jnp.where(positions < context_length, mask, positions < context_length + generated_patches * patch)

    rows = buffer.shape[0] * paths
    row_ids = (first_series * paths + jnp.arange(rows)).astype(jnp.uint32)  # batch-major: series, then path

    def predict(distribution, loc, scale, step):
        data = AffineTransformed(distribution, loc, scale)
        if num_samples is None:
            return replace_extreme_values(data.mean)
        keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(jax.random.fold_in(key, step), row_ids)
        if sampling == "independent":
            value = jax.vmap(lambda row, k: row.sample(k))(data, keys)
        else:  # comonotone: one level per path, variate and patch
            levels = jax.vmap(lambda k: jax.random.uniform(k, data.loc.shape[1:-1] + (1,)))(keys)
            value = data.quantile(levels)
        return replace_extreme_values(value)

    def write(buffer, values, step):
        return jax.lax.dynamic_update_slice_in_dim(buffer, values, context_length + step * patch, axis=2)

    context_patches = context_length // patch
    if use_kv_cache:
        mask0 = valid_mask(context_mask, 0)
        scaled = model.scale(buffer, mask0, prefix_length=context_length)
        cache = model.init_cache(buffer.shape[0], buffer.shape[1], context_bucket // patch + steps)
        hidden, cache = model.encode(scaled.scaled[..., :context_bucket], ids[..., :context_bucket], cache)
        labels = model.num_prepended_tokens
        cache = _recentre_context_keys(
            cache, context_patches + labels, context_bucket // patch + labels, model.config.head_dim
        )
        cache = dataclasses.replace(cache, length=(context_patches + labels).astype(jnp.int32))
        distribution = model.distribution(jax.lax.dynamic_slice_in_dim(hidden, context_patches - 1, 1, axis=2))
        start = context_length - patch
        loc, scale = _patch_of(scaled.loc, start, patch), _patch_of(scaled.scale, start, patch)
        # Encode once, then broadcast everything the paths share.
        distribution, loc, scale = _repeat_rows((distribution, loc, scale), paths)
        buffer, context_mask, ids = _repeat_rows((buffer, context_mask, ids), paths)
        cache = _repeat_cache(cache, paths)
        buffer = write(buffer, predict(distribution, loc, scale, 0), 0)

        def step(carry, index):
            buffer, cache = carry
            start = context_length + (index - 1) * patch  # the patch generated last
            scaled = model.scale(buffer, valid_mask(context_mask, index), prefix_length=context_length)
            hidden, cache = model.encode(
                jax.lax.dynamic_slice_in_dim(scaled.scaled, start, patch, axis=2),
                jax.lax.dynamic_slice_in_dim(ids, start, patch, axis=2),
                cache,
                prepend_labels=False,
            )
            values = predict(
                model.distribution(hidden),
                _patch_of(scaled.loc, start, patch),
                _patch_of(scaled.scale, start, patch),
                index,
            )
            return (write(buffer, values, index), cache), None

        (buffer, _), _ = jax.lax.scan(step, (buffer, cache), jnp.arange(1, steps))
    else:
        buffer, context_mask, ids = _repeat_rows((buffer, context_mask, ids), paths)
        encoded_length = buffer.shape[-1] - patch  # the last generated patch is never fed back

        def step(buffer, index):
            scaled = model.scale(buffer, valid_mask(context_mask, index), prefix_length=context_length)
            hidden, _ = model.encode(scaled.scaled[..., :encoded_length], ids[..., :encoded_length])
            last = context_patches + index - 1
            start = last * patch
            values = predict(
                model.distribution(jax.lax.dynamic_slice_in_dim(hidden, last, 1, axis=2)),
                _patch_of(scaled.loc, start, patch),
                _patch_of(scaled.scale, start, patch),
                index,
            )
            return write(buffer, values, index), None

        buffer, _ = jax.lax.scan(step, buffer, jnp.arange(steps))
    return jax.lax.dynamic_slice_in_dim(buffer, context_length, steps * patch, axis=2)


def compiled_program_count() -> int:
    """How many programs the decode has compiled in this process (one per shape bucket and mode)."""
    return _generate._cache_size()


def estimate_bytes_per_series(config, variates: int, context_tokens: int, steps: int, paths: int,
                              use_kv_cache: bool) -> int:  # fmt: skip
    """A rough upper estimate of the working memory one series needs inside ``_generate``."""
    tokens = context_tokens + steps + 1
    width = 8 * config.embed_dim + 3 * config.mlp_hidden_dim
    activations = 4 * variates * tokens * (width + 2 * config.num_heads * tokens)
    cache = 2 * 4 * config.num_layers * variates * tokens * config.embed_dim
    head = 4 * variates * config.patch_size * (config.embed_dim + 6 * config.num_mixture_components)
    if use_kv_cache:
        decode = paths * (cache + 4 * variates * (width + 2 * config.num_heads * tokens) + head)
        return int(activations + cache + decode)
    return int(paths * (activations + head))


def forecast(
    model: Toto,
    series,
    horizon: int,
    num_samples: int | None = None,
    padding_mask=None,
    id_mask=None,
    seed: int = 0,
    *,
    use_kv_cache: bool = True,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    progress: bool | None = None,
    bucket: bool = True,
    standardize: bool = False,
    clip_outliers: float | None = None,
    sampling: str = "independent",
) -> Forecast:
    """Forecast ``horizon`` steps after each series.

    series: [variate, time], [batch, variate, time], or a list of [variate, time] arrays (lengths may
    differ: shorter ones are left-padded). NaN marks a missing value. ``padding_mask`` (True = observed)
    and ``id_mask`` (variates with equal id attend to each other) follow the same layout.
    ``num_samples=None`` gives the deterministic mean path (the reference's ``generate_mean``); otherwise
    ``num_samples`` sample paths per series. Batches beyond ``memory_budget`` bytes are split into chunks
    (with a progress bar when ``progress`` is true, or by default when there is more than one chunk).

    ``standardize=True`` forecasts each variate in units of its context: mean removed and divided by its
    standard deviation (in float64), forecasts mapped back. Toto's causal scaler floors the variance by
    adding 0.1 (``sqrt(var + 0.1)``), so a series whose standard deviation is far below ~0.3 in its own
    units (error rates, fractions) looks nearly flat to the model and its forecast depends on the units;
    standardizing makes forecasts equivariant to shift and scale. Off by default: the reference
    forecasts raw values.

    ``clip_outliers=k`` first clips each variate's context to [q01 - k r, q99 + k r], r = q99 - q01 its
    central range (``toto_jax.preprocessing``). One glitch thousands of deviations high (a counter reset,
    a logging burst) otherwise inflates the causal scaler's running variance for the rest of the context,
    the normal behaviour then looks flat, and the forecast collapses to the running mean. Off by default
    (reference parity); 10 in the CLI and evaluation tools.

    ``sampling`` decides how a sample path draws each decoded patch (``toto_jax.sampling``):
    ``"independent"`` draws every step on its own (the reference, the default); ``"comonotone"`` draws one
    quantile level per path, variate and patch, so fed-back patches are smooth curves and long paths
    drift less (the CLI and evaluation default).
    """
    config = model.config
    if isinstance(horizon, bool) or not isinstance(horizon, (int, np.integer)) or horizon <= 0:
        raise ForecastError(f"horizon must be a positive integer, got {horizon!r}")
    if num_samples is not None and (
        isinstance(num_samples, bool) or not isinstance(num_samples, (int, np.integer)) or num_samples <= 0
    ):
        raise ForecastError(f"num_samples must be a positive integer or None, got {num_samples!r}")
    num_samples = None if num_samples is None else int(num_samples)
    try:
        check_sampling(sampling)
    except ValueError as error:
        raise ForecastError(str(error)) from None
    if clip_outliers is not None:
        try:
            check_clip_limit(clip_outliers)
        except ValueError as error:
            raise ForecastError(f"{error} (or None: no clipping)") from None
    if config.stride != config.patch_size:
        raise ForecastError(
            f"forecasting needs stride == patch_size (got stride {config.stride}, patch_size {config.patch_size})"
        )
    values, valid, groups = prepare_context(config, series, padding_mask, id_mask)
    if clip_outliers is not None:
        values = clip_context_outliers(values, valid, clip_outliers)
    if standardize:
        values, shift, unit = standardize_context(values, valid)
    batch, variates, context = values.shape
    patch = config.patch_size
    steps = -(-int(horizon) // patch)
    context_bucket = bucket_count(context // patch) * patch if bucket else context
    steps_bucket = bucket_count(steps) if bucket else steps
    padded_variates = bucket_variates(variates) if bucket else variates
    buffer, mask, ids = _layout_buffers(values, valid, groups, context_bucket, steps_bucket, patch)
    buffer, mask, ids = _pad_variates(buffer, mask, ids, padded_variates)

    paths = 1 if num_samples is None else int(num_samples)
    per_series = estimate_bytes_per_series(
        config, padded_variates, context_bucket // patch, steps_bucket, paths, use_kv_cache
    )
    chunk = max(1, min(batch, int(memory_budget // max(per_series, 1))))
    if bucket:
        chunk = 1 << int(math.floor(math.log2(chunk)))  # chunks of one bucketed size share one program
    chunk_bucket = bucket_batch(chunk) if bucket else chunk
    starts = range(0, batch, chunk)
    if progress is None:
        progress = len(starts) > 1
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc="forecast", unit="chunk")

    graphdef, state = nnx.split(model)
    key = jax.random.key(seed)
    context_length = jnp.int32(context)
    outputs = []
    for start in starts:
        stop = min(start + chunk, batch)
        rows = [a[start:stop] for a in (buffer, mask, ids)]
        size = chunk_bucket if bucket else stop - start
        # Padding rows are empty series; their outputs are dropped.
        rows = [_pad_axis(a, size, 0, fill) for a, fill in zip(rows, (0.0, False, 0))]
        predicted = _generate(
            graphdef, state, *(jnp.asarray(a) for a in rows), context_length, key, jnp.int32(start),
            context_bucket=context_bucket, steps=steps_bucket, num_samples=num_samples, use_kv_cache=use_kv_cache,
            sampling=sampling,
        )  # fmt: skip
        predicted = np.asarray(predicted).reshape(size, paths, padded_variates, -1)
        outputs.append(predicted[: stop - start, :, :variates, :horizon])
    paths_array = np.concatenate(outputs, axis=0)  # [batch, paths, variate, horizon]
    if standardize:
        paths_array = (paths_array * unit[:, None] + shift[:, None]).astype(np.float32)
    if num_samples is None:
        result = Forecast(mean=paths_array[:, 0])
    else:
        samples = np.moveaxis(paths_array, 1, -1)
        result = Forecast(mean=samples.mean(axis=-1), samples=samples)
    return result


__all__ = ["Forecast", "ForecastError", "compiled_program_count", "forecast"]

