"""Pre-norm transformer whose layers alternate time-wise and variate-wise attention.

Layers are grouped into *stages* whose parameters are stacked along a leading ``layers`` axis and run
with ``lax.scan``, so compile time does not grow with depth (stages of a few repeats are unrolled):
- several repeats of the ``spacewise_every_n_layers`` block -> one stage scanning over the blocks;
- a single block (Toto-Open-Base: 1 variate layer + 11 time layers) -> one stage per run of equal layers.

``Transformer.with_unstacked_stages`` gives forecasting a copy whose stages hold one block (and weight arrays)
per repeat: a layer's weights inside a scanned or sliced stack are copied out before every matmul (XLA
CPU), which doubles the cost of weight-bound decode steps.
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from ...config import TotoConfig
from ...layers.linear import Dense
from ...layers.norm import RMSNorm
from ...sharding import constrain
from .attention import LayerCache, TimeAttention, VariateAttention
from .feed_forward import SwiGLU
from .rope import RotaryTables, rotary_tables, xpos_key_recentre

TIME = "time"
VARIATE = "variate"
# Without a KV cache (training, whole-series forward), stages of at most this many repeats run as a Python
# loop: a scanned stage stacks every step's saved activations into [repeats, ...] buffers for the backward
# pass (filled, written and sliced again), which a short stage does not need to bound its compile time.
# Cached decoding on stacked weights keeps the scan: a loop's static weight slices are copied before each
# matmul too, and more slowly than the scan's dynamic ones.
UNROLLED_STAGE_REPEATS = 4


def layer_kinds(config: TotoConfig) -> list[str]:
    """Attention kind of every layer, in order (as the reference's ``_get_layer_types``)."""
    n = config.spacewise_every_n_layers
    if n == -1:
        return [TIME] * config.num_layers
    block = [TIME] * (n - 1)
    block = [VARIATE] + block if config.spacewise_first else block + [VARIATE]
    return block * (config.num_layers // n)


class Stage(NamedTuple):
    pattern: tuple[str, ...]  # layer kinds inside one scanned step
    repeats: int


def stage_layout(config: TotoConfig) -> list[Stage]:
    kinds = layer_kinds(config)
    n = config.spacewise_every_n_layers
    if n == -1:
        return [Stage((TIME,), config.num_layers)]
    if config.num_layers // n > 1:
        return [Stage(tuple(kinds[:n]), config.num_layers // n)]
    return [Stage((kind,), len(list(run))) for kind, run in itertools.groupby(kinds)]


def layer_locations(config: TotoConfig) -> list[tuple[int, int, int]]:
    """(stage, repeat, position in pattern) of each layer in reference order."""
    return [
        (s, r, p)
        for s, stage in enumerate(stage_layout(config))
        for r in range(stage.repeats)
        for p in range(len(stage.pattern))
    ]


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class KVCache:
    """Fixed-size keys/values of the time-wise layers, one array pair per stage (None: no time layers).

    Arrays have shape [repeats, time_layers_in_pattern, batch, variate, max_tokens, heads, head_dim];
    ``length`` counts the tokens already written (the same for every layer).
    """

    keys: tuple[jax.Array | None, ...]
    values: tuple[jax.Array | None, ...]
    length: jax.Array

    @classmethod
    def create(cls, config: TotoConfig, batch: int, variate: int, max_tokens: int, dtype=jnp.float32):
        keys, values = [], []
        for stage in stage_layout(config):
            time_layers = stage.pattern.count(TIME)
            if time_layers == 0:
                keys.append(None)
                values.append(None)
                continue
            shape = (stage.repeats, time_layers, batch, variate, max_tokens, config.num_heads, config.head_dim)
            keys.append(jnp.zeros(shape, dtype))
            values.append(jnp.zeros(shape, dtype))
        return cls(tuple(keys), tuple(values), jnp.zeros((), jnp.int32))

    @property
    def max_tokens(self) -> int:
        return next(k.shape[4] for k in self.keys if k is not None)

    def _map(self, fn) -> KVCache:
        apply = lambda a: None if a is None else fn(a)  # noqa: E731
        return KVCache(tuple(map(apply, self.keys)), tuple(map(apply, self.values)), self.length)

    def with_length(self, length) -> KVCache:
        return dataclasses.replace(self, length=jnp.asarray(length, jnp.int32))

    def repeat(self, times: int) -> KVCache:
        """Each batch row repeated ``times`` times in place (row-major: row 0 ``times`` times, then row 1, ...),
        as sample paths of a series share its encoded context."""
        return self._map(lambda a: jnp.repeat(a, times, axis=2))

    def recentre_keys(self, real_tokens, call_tokens: int, head_dim: int) -> KVCache:
        """Give the cached keys the xPos centre a call over ``real_tokens`` tokens would have used.

        xPos divides keys by ``base ** ((position - centre) / 512)`` with the centre taken from the positions
        processed in that call. A context encoded right-padded to ``call_tokens`` stores keys off by the
        constant factor ``base ** ((centre_real - centre_call) / 512)`` per feature from those the reference
        computes over exactly ``real_tokens``. Within one call the centre cancels in q.k, so only keys kept
        for later calls need this.
        """
        centre_real = jnp.floor((real_tokens - 1).astype(jnp.float32) / 2.0)
        centre_call = float((call_tokens - 1) // 2)
        factor = xpos_key_recentre(centre_call, centre_real, head_dim)
        keys = tuple(None if k is None else (k * factor).astype(k.dtype) for k in self.keys)
        return dataclasses.replace(self, keys=keys)


class LayerContext(NamedTuple):
    rotary: RotaryTables
    variate_ids: jax.Array  # [batch, time, variate]: variates with equal id attend to each other
    offset: jax.Array | int


class TransformerLayer(nnx.Module):
    def __init__(self, kind: str, config: TotoConfig, *, rngs: nnx.Rngs):
        dtype = jnp.dtype(config.dtype)
        self.kind = kind
        self.dropout = config.dropout
        self.norm1 = RMSNorm(config.embed_dim)
        self.norm2 = RMSNorm(config.embed_dim)
        attention_cls = TimeAttention if kind == TIME else VariateAttention
        self.attention = attention_cls(config.embed_dim, config.num_heads, config.dropout, dtype=dtype, rngs=rngs)
        self.mlp = SwiGLU(config.embed_dim, config.mlp_hidden_dim, dtype=dtype, rngs=rngs)

    def __call__(self, x, context: LayerContext, cache: LayerCache | None, dropout_key=None):
        attention_key = mlp_key = None
        if dropout_key is not None:
            attention_key, mlp_key = jax.random.split(dropout_key)
        normed = self.norm1(x)
        if self.kind == TIME:
            attended, cache = self.attention(normed, context.rotary, cache, context.offset, attention_key)
        else:
            attended = self.attention(normed, context.variate_ids, attention_key)
        x = x + attended.astype(x.dtype)
        update = self.mlp(self.norm2(x))
        if mlp_key is not None and self.dropout > 0.0:
            keep = jax.random.bernoulli(mlp_key, 1.0 - self.dropout, update.shape)
            update = jnp.where(keep, update / (1.0 - self.dropout), 0.0)
        x = x + update.astype(x.dtype)
        return constrain(x, ("batch", "variate", "time", "activation_embed")), cache


class Block(nnx.Module):
    """One scanned step: the layers of a stage's pattern."""

    def __init__(self, pattern: tuple[str, ...], config: TotoConfig, *, rngs: nnx.Rngs):
        self.layers = nnx.List([TransformerLayer(kind, config, rngs=rngs) for kind in pattern])

    def __call__(self, x, context: LayerContext, cache, dropout_keys):
        new_keys, new_values = [], []
        time_index = 0
        for position, layer in enumerate(self.layers):
            layer_cache = None
            if layer.kind == TIME and cache is not None:
                layer_cache = LayerCache(cache[0][time_index], cache[1][time_index])
            key = None if dropout_keys is None else dropout_keys[position]
            x, layer_cache = layer(x, context, layer_cache, key)
            if layer.kind == TIME:
                time_index += 1
                if layer_cache is not None:
                    new_keys.append(layer_cache.keys)
                    new_values.append(layer_cache.values)
        new_cache = (jnp.stack(new_keys), jnp.stack(new_values)) if new_keys else None
        return x, new_cache


def _unstacked_blocks(stage: Stage, blocks: Block, config: TotoConfig) -> nnx.List:
    """The ``stage.repeats`` blocks of a stacked stage as separate modules, each with its own weight arrays (and
    logical axes without ``layers``), their 2D kernels stored ``[out, in]`` (``Dense.store_out_first``)."""
    graphdef, template = nnx.split(nnx.eval_shape(lambda: Block(stage.pattern, config, rngs=nnx.Rngs(0))))
    stacked = nnx.to_flat_state(nnx.state(blocks))
    if [path for path, _ in stacked] != [path for path, _ in nnx.to_flat_state(template)]:
        raise ValueError("a stacked stage and its block differ in parameters")
    structure = jax.tree.structure(template)
    unstacked = nnx.List([
        nnx.merge(graphdef, jax.tree.unflatten(structure, [variable[...][repeat] for _, variable in stacked]))
        for repeat in range(stage.repeats)
    ])  # fmt: skip
    for _, module in nnx.iter_graph(unstacked):
        if isinstance(module, Dense) and module.kernel[...].ndim == 2:
            module.store_out_first()
    return unstacked


def _stacked_blocks(stage: Stage, config: TotoConfig, rngs: nnx.Rngs) -> Block:
    @nnx.split_rngs(splits=stage.repeats)
    @nnx.vmap(in_axes=(0,), out_axes=0, axis_size=stage.repeats, transform_metadata={nnx.PARTITION_NAME: "layers", "logical_axes": "layers"})
    def create(rngs):
        return Block(stage.pattern, config, rngs=rngs)

    return create(rngs)


class Transformer(nnx.Module):
    def __init__(self, config: TotoConfig, *, rngs: nnx.Rngs):
        self.config = config
        self.stages = nnx.List([_stacked_blocks(stage, config, rngs) for stage in stage_layout(config)])

    def with_unstacked_stages(self) -> Transformer:
        """A copy (its own weight arrays, sliced once) whose stages are lists of blocks, run as a Python loop."""
        copy = nnx.merge(*nnx.split(self))
        copy.stages = nnx.List([_unstacked_blocks(stage, blocks, self.config)
                                for stage, blocks in zip(stage_layout(self.config), self.stages)])  # fmt: skip
        return copy

    def __call__(self, x, token_ids, cache: KVCache | None = None, dropout_key=None):
        """x: [batch, variate, tokens, embed]; token_ids: [batch, variate, tokens]."""
        config = self.config
        length = x.shape[2]
        offset = 0 if cache is None else cache.length
        ids = jnp.swapaxes(token_ids, 1, 2)  # [batch, tokens, variate]
        context = LayerContext(
            rotary=rotary_tables(offset, length, config.head_dim),
            variate_ids=ids,
            offset=offset,
        )
        x = constrain(x, ("batch", "variate", "time", "activation_embed"))
        new_keys, new_values = [], []
        for index, (stage, blocks) in enumerate(zip(stage_layout(config), self.stages)):
            unstacked = isinstance(blocks, nnx.List)
            graphdef, params = nnx.split(blocks[0] if unstacked else blocks)
            stage_cache = None
            if cache is not None and cache.keys[index] is not None:
                stage_cache = (cache.keys[index], cache.values[index])
            stage_keys = None
            if dropout_key is not None:
                stage_key = jax.random.fold_in(dropout_key, index)
                stage_keys = jax.random.split(stage_key, stage.repeats * len(stage.pattern))
                stage_keys = stage_keys.reshape(stage.repeats, len(stage.pattern), *stage_keys.shape[1:])

            def step(carry, xs, graphdef=graphdef):
                block_params, block_cache, block_keys = xs
                block = nnx.merge(graphdef, block_params)
                return block(carry, context, block_cache, block_keys)

            if config.remat:
                step = jax.checkpoint(step, prevent_cse=False)
            if unstacked or (cache is None and stage.repeats <= UNROLLED_STAGE_REPEATS):
                # A Python loop: ``scan(unroll=True)`` would still stack the saved activations.
                outputs = []
                for repeat in range(stage.repeats):
                    block_params = nnx.state(blocks[repeat]) if unstacked else jax.tree.map(lambda a: a[repeat], params)
                    per_repeat = jax.tree.map(lambda a, repeat=repeat: a[repeat], (stage_cache, stage_keys))
                    x, output = step(x, (block_params, *per_repeat))
                    outputs.append(output)
                stage_cache = jax.tree.map(lambda *a: jnp.stack(a), *outputs)
            else:
                x, stage_cache = jax.lax.scan(step, x, (params, stage_cache, stage_keys))
            new_keys.append(None if stage_cache is None else stage_cache[0])
            new_values.append(None if stage_cache is None else stage_cache[1])
        if cache is not None:
            cache = KVCache(tuple(new_keys), tuple(new_values), cache.length + length)
        return x, cache
