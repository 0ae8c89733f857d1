"""The compiled decode: a prefill, then one step function scanned over the patches to generate.

Every series lives in a fixed-size buffer ``[rows, variate, context_bucket + steps * patch]`` holding the
(left-padded) context at ``[0, c)`` followed by room for the generated patches. ``c`` is traced, so
contexts of one bucket share a program; right-padding the context to its bucket is exact because time
attention is causal and the scaler only looks at valid points (its global statistics are limited to the
first ``c`` steps, like the reference's ``scaling_prefix_length``). Known future values of covariates are
written into the buffer up front and flagged in ``known``: a generated patch keeps them (the reference's
injection after each patch), and causal attention and the causal scaler never look ahead of the patch
being generated.

- ``encode_context`` (with the KV cache) encodes each series' context once into a fixed-size cache and
  the first predictive distribution; ``prefill`` broadcasts them and the buffer to a chunk of sample
  paths and produces the first patch (without the cache, the reference's no-cache semantics, it
  broadcasts the buffer and runs ``decode_step``). Chunks of paths share one encoding.
- ``advance`` scans ``decode_step`` over a segment of patches; long decodes run several segments, so a
  progress bar can follow them. ``decode_step`` re-runs the (cheap, elementwise) scaler over the buffer,
  masked as not-yet-valid beyond what has been generated, so causal statistics equal the reference's
  over the growing series; with the cache it encodes only the patch generated last, without it the whole
  buffer. Only the last patch goes through unembedding and the head.

Programs are compiled ahead of time per shape and kept in ``_PROGRAMS``, so the planner can read each
one's memory use (``working_bytes``) before running it. They take the model's weights as
``weights.placed_weights`` keeps them (Toto 1.0's with one weight array per layer).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from ..models.toto1 import KVCache, Toto
from ..models.toto1.distribution import AffineTransformed
from .sampling import draw
from .weights import Weights, signature


@dataclasses.dataclass(frozen=True)
class DecodeSpec:
    """What a compiled decode is specialised on, besides array shapes."""

    context_bucket: int
    paths: int  # sample paths per series in one call (1 for the mean path)
    sampling: str | None  # None: the mean path
    use_kv_cache: bool
    num_exogenous: int = 0  # the last variates are covariates (variate labels tell the model so)


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class DecodeState:
    """The carry of the decode: rows are series x paths, series-major."""

    buffer: jax.Array  # [rows, variate, time] model-space values: context, then generated patches
    context_mask: jax.Array  # [rows, variate, time] validity of the context steps
    ids: jax.Array  # [rows, variate, time] variate groups
    low: jax.Array | None  # [rows, variate, 1] bounds for decoded values (None: no cap)
    high: jax.Array | None
    known: jax.Array | None  # [rows, variate, time] generated steps whose values are given (None: none are)
    row_keys: jax.Array  # [rows] uint32: which random stream each row draws from
    key: jax.Array  # the forecast's seed key
    context_length: jax.Array  # int32 scalar
    step: jax.Array  # int32 scalar: the next patch to generate
    cache: KVCache | None


def replace_extreme_values(x):
    """NaN, infinities and |x| >= max/2 become 0, as the reference does after every generated patch."""
    limit = jnp.finfo(x.dtype).max / 2
    return jnp.where(jnp.isnan(x) | jnp.isinf(x) | (jnp.abs(x) >= limit), 0.0, x)


def _patch_of(array, start, patch: int):
    """The patch of a per-step array starting at ``start``; global statistics ([..., 1]) pass through."""
    if array.shape[-1] == 1:
        return array
    return jax.lax.dynamic_slice_in_dim(array, start, patch, axis=-1)


def _repeat_rows(tree, times: int):
    return jax.tree.map(lambda a: jnp.repeat(a, times, axis=0), tree)


def _predict(spec: DecodeSpec, state: DecodeState, distribution, loc, scale):
    """The values of the next patch in data (model-input) space: the mean or one draw per row."""
    data = AffineTransformed(distribution, loc, scale)
    if spec.sampling is None:
        values = data.mean
    else:
        step_key = jax.random.fold_in(state.key, state.step)
        keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(step_key, state.row_keys)
        values = draw(data, keys, spec.sampling)
    values = replace_extreme_values(values)
    if state.low is not None:
        values = jnp.clip(values, state.low, state.high)
    return values


def _write(state: DecodeState, values, patch: int) -> DecodeState:
    start = state.context_length + state.step * patch
    if state.known is not None:  # known future covariates stay as given (written into the buffer up front)
        given = jax.lax.dynamic_slice_in_dim(state.buffer, start, patch, axis=2)
        values = jnp.where(jax.lax.dynamic_slice_in_dim(state.known, start, patch, axis=2), given, values)
    buffer = jax.lax.dynamic_update_slice_in_dim(state.buffer, values.astype(state.buffer.dtype), start, axis=2)
    return dataclasses.replace(state, buffer=buffer, step=state.step + 1)


def _scaled(model: Toto, state: DecodeState):
    """The scaler over the buffer: context validity as given, generated steps valid once written."""
    patch = model.config.patch_size
    positions = jnp.arange(state.buffer.shape[-1])
    generated = state.context_length + state.step * patch
    valid = jnp.where(positions < state.context_length, state.context_mask, positions < generated)
    return model.scale(state.buffer, valid, prefix_length=state.context_length)


def decode_step(model: Toto, spec: DecodeSpec, state: DecodeState) -> DecodeState:
    """Generate patch ``state.step`` from everything before it."""
    patch = model.config.patch_size
    start = state.context_length + (state.step - 1) * patch  # the last patch the model has seen
    scaled = _scaled(model, state)
    if state.cache is not None:
        hidden, cache = model.encode(
            jax.lax.dynamic_slice_in_dim(scaled.scaled, start, patch, axis=2),
            jax.lax.dynamic_slice_in_dim(state.ids, start, patch, axis=2),
            state.cache,
            prepend_labels=False,
        )
        state = dataclasses.replace(state, cache=cache)
    else:
        encoded = state.buffer.shape[-1] - patch  # the last generated patch is never fed back
        hidden, _ = model.encode(scaled.scaled[..., :encoded], state.ids[..., :encoded],
                                 num_exogenous_variables=spec.num_exogenous)  # fmt: skip
        hidden = jax.lax.dynamic_slice_in_dim(hidden, start // patch, 1, axis=2)
    values = _predict(spec, state, model.distribution(hidden), _patch_of(scaled.loc, start, patch),
                      _patch_of(scaled.scale, start, patch))  # fmt: skip
    return _write(state, values, patch)


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class EncodedContext:
    """What encoding the contexts of a chunk of series gives every sample path of them."""

    cache: KVCache
    distribution: object  # StudentTMixture of the first patch to generate (scaled space)
    loc: jax.Array
    scale: jax.Array


def encode_context(graphdef, spec: DecodeSpec, params, buffer, context_mask, ids, context_length) -> EncodedContext:
    """Encode each series' context once into its KV cache (rows are series)."""
    model: Toto = nnx.merge(graphdef, params)
    patch = model.config.patch_size
    state = DecodeState(buffer, context_mask, ids, None, None, None, None, None, context_length, jnp.int32(0), None)
    context_patches = context_length // patch
    scaled = _scaled(model, state)
    cache = model.init_cache(buffer.shape[0], buffer.shape[1], buffer.shape[-1] // patch)
    hidden, cache = model.encode(scaled.scaled[..., : spec.context_bucket], ids[..., : spec.context_bucket], cache,
                                 num_exogenous_variables=spec.num_exogenous)  # fmt: skip
    labels = model.num_prepended_tokens
    cache = cache.recentre_keys(context_patches + labels, spec.context_bucket // patch + labels, model.config.head_dim)
    cache = cache.with_length(context_patches + labels)
    distribution = model.distribution(jax.lax.dynamic_slice_in_dim(hidden, context_patches - 1, 1, axis=2))
    start = context_length - patch
    return EncodedContext(cache, distribution, _patch_of(scaled.loc, start, patch), _patch_of(scaled.scale, start, patch))


def prefill(graphdef, spec: DecodeSpec, params, encoded: EncodedContext | None, buffer, context_mask, ids, low, high,
            known, row_keys, key, context_length) -> DecodeState:  # fmt: skip
    """Rows of the inputs are series; rows of the result are series x ``spec.paths``, with patch 0 written.
    With the KV cache, ``encoded`` (``encode_context``'s, shared by every chunk of paths) is broadcast to the
    paths; without it, patch 0 is an ordinary ``decode_step``."""
    model: Toto = nnx.merge(graphdef, params)
    shared = _repeat_rows((buffer, context_mask, ids, low, high, known), spec.paths)
    if encoded is None:
        return decode_step(model, spec, DecodeState(*shared, row_keys, key, context_length, jnp.int32(0), None))
    distribution, loc, scale = _repeat_rows((encoded.distribution, encoded.loc, encoded.scale), spec.paths)
    state = DecodeState(*shared, row_keys, key, context_length, jnp.int32(0), encoded.cache.repeat(spec.paths))
    return _write(state, _predict(spec, state, distribution, loc, scale), model.config.patch_size)


def advance(graphdef, spec: DecodeSpec, steps: int, params, state: DecodeState) -> DecodeState:
    model: Toto = nnx.merge(graphdef, params)
    state, _ = jax.lax.scan(lambda s, _: (decode_step(model, spec, s), None), state, None, length=steps)
    return state


# keep_unused: every weight stays an argument of every program (a program that leaves some out, as prefill does
# with the layers, would otherwise take fewer argument bytes than the weights, and ``working_bytes`` go negative).
_FUNCTIONS = {
    "encode": jax.jit(encode_context, static_argnums=(0, 1), keep_unused=True),
    "prefill": jax.jit(prefill, static_argnums=(0, 1), keep_unused=True),
    "advance": jax.jit(advance, static_argnums=(0, 1, 2), donate_argnums=(4,), keep_unused=True),
}
_PROGRAMS: dict = {}


def compiled(kind: str, weights: Weights, static: tuple, arguments: tuple, placement):
    """The compiled ``encode``, ``prefill`` or ``advance`` program for these weights (the first argument), static
    values, argument shapes and placement (``placement.Placement``)."""
    cache_key = (kind, weights.key, static, signature(arguments), placement.key)
    return placement.compiled(_PROGRAMS, cache_key, _FUNCTIONS[kind], weights.graphdef, *static, weights.params,
                              *arguments)  # fmt: skip


_MEMORY: dict = {}


def _memory(program):
    """XLA's buffer assignment of a compiled program (asking XLA costs milliseconds, so once per program)."""
    if program not in _MEMORY:
        _MEMORY[program] = program.memory_analysis()
    return _MEMORY[program]


def working_bytes(program, weights: Weights, held: int = 0) -> int:
    """Memory a compiled program needs on one device beyond that device's share of the model's weights (XLA's
    own buffer assignment), plus ``held`` bytes that stay alive beside it."""
    stats = _memory(program)
    return int(stats.temp_size_in_bytes + stats.argument_size_in_bytes - weights.device_bytes
               + stats.output_size_in_bytes - stats.alias_size_in_bytes + held)  # fmt: skip


def output_bytes(program) -> int:
    return int(_memory(program).output_size_in_bytes)


def compiled_program_count() -> int:
    """How many decode programs this process has compiled (one per shape bucket and mode)."""
    return len(_PROGRAMS)

