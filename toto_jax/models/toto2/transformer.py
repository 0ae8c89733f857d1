"""Toto 2.0's transformer: layer groups of time and variate layers, pre-norm, tau-rule residuals, a final
RMSNorm. The groups share one pattern, so their parameters are stacked on a ``layers`` axis and run with
``lax.scan`` (compile time independent of depth), or, training a stack of few groups, as a Python loop.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ...sharding import constrain
from .attention import LayerCache, Rotary, TimeAttention, VariateAttention
from .config import Toto2Config
from .unit_scaled import ScaledRMSNorm, SwiGLU, residual_add, residual_split

TIME = "time"
VARIATE = "variate"
# With ``loop_groups`` (the training forward), at most this many layer groups run as a Python loop: a scan
# stacks every group's saved activations into [groups, ...] buffers for the backward pass (zero-filled,
# written and sliced again), which a short stack does not need to bound its compile time (as Toto 1.0's
# stages). Forecasting keeps the scan: without a backward pass the loop's static weight slices, copied
# before every matmul, cost more than they save (a forecast-shaped forward 1.04-1.07x slower).
UNROLLED_GROUPS = 4


class Buffer(nnx.Variable):
    """A non-trainable array stored in checkpoints (the reference's persistent buffers, e.g. residual taus)."""


def group_pattern(config: Toto2Config) -> tuple[str, ...]:
    """Layer kinds inside one layer group (the reference's ``_if_variate_layer``)."""
    v, g = config.num_variate_layers_per_group, config.layer_group_size
    if config.variate_layer_first:
        return tuple(VARIATE if i < v else TIME for i in range(g))
    return tuple(VARIATE if i >= g - v else TIME for i in range(g))


def residual_taus(config: Toto2Config) -> np.ndarray:
    """[num_layers, 2] (attention, mlp) taus of u-muP's transformer residual rule, as float32 like the reference."""
    ratio, mult = config.residual_attn_ratio, config.residual_mult
    alpha_mlp = mult * (2 / (1 + ratio**2)) ** 0.5
    alpha_attn = ratio * alpha_mlp
    depth = 2 * config.num_layers

    def tau(index):
        n_attn, n_mlp = (index + 1) // 2, index // 2
        alpha = alpha_attn if index % 2 == 0 else alpha_mlp
        return alpha / (depth / 2 + n_attn * alpha_attn**2 + n_mlp * alpha_mlp**2) ** 0.5

    return np.array([[tau(2 * i), tau(2 * i + 1)] for i in range(config.num_layers)], np.float32)


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class KVCache:
    """Fixed-size keys/values of the time layers: [groups, time_layers_per_group, batch, variate, max_tokens,
    kv_heads, head_dim]; ``None`` when the model has no time layers."""

    keys: jax.Array | None
    values: jax.Array | None

    @classmethod
    def create(cls, config: Toto2Config, batch: int, variate: int, max_tokens: int, dtype=jnp.float32) -> KVCache:
        time_layers = group_pattern(config).count(TIME)
        if time_layers == 0:
            return cls(None, None)
        groups = config.num_layers // config.layer_group_size
        shape = (groups, time_layers, batch, variate, max_tokens, config.kv_heads)
        return cls(jnp.zeros(shape + (config.head_dim,), dtype), jnp.zeros(shape + (config.value_dim,), dtype))


class Toto2Layer(nnx.Module):
    def __init__(self, kind: str, config: Toto2Config, *, dtype, rngs: nnx.Rngs):
        self.kind = kind
        norm = dict(eps=config.norm_eps, use_scale=config.norm_include_weight)
        self.norm1 = ScaledRMSNorm(config.d_model, **norm)
        self.norm2 = ScaledRMSNorm(config.d_model, **norm)
        attention_cls = TimeAttention if kind == TIME else VariateAttention
        self.attention = attention_cls(config, dtype=dtype, rngs=rngs)
        self.ffn = SwiGLU(config.d_model, config.ff_dim, use_bias=config.mlp_bias, dtype=dtype, rngs=rngs)
        # Residual taus (the checkpoint stores them); the model sets them from the config at init.
        self.attention_tau = Buffer(jnp.ones((), jnp.float32), logical_axes=())
        self.mlp_tau = Buffer(jnp.ones((), jnp.float32), logical_axes=())

    def __call__(self, x, rotary: Rotary, time_mask, variate_mask, cache: LayerCache | None, offset):
        attention_tau, mlp_tau = self.attention_tau[...], self.mlp_tau[...]
        branch, skip = residual_split(x, attention_tau)
        normed = self.norm1(branch)
        if self.kind == TIME:
            attended, cache = self.attention(normed, rotary, time_mask, cache, offset)
        else:
            attended = self.attention(normed, variate_mask)
        x = residual_add(attended.astype(x.dtype), skip, attention_tau)
        branch, skip = residual_split(x, mlp_tau)
        x = residual_add(self.ffn(self.norm2(branch)).astype(x.dtype), skip, mlp_tau)
        return constrain(x, ("batch", "variate", "time", "activation_embed")), cache


class LayerGroup(nnx.Module):
    def __init__(self, config: Toto2Config, *, dtype, rngs: nnx.Rngs):
        self.layers = nnx.List([Toto2Layer(kind, config, dtype=dtype, rngs=rngs) for kind in group_pattern(config)])

    def __call__(self, x, rotary, time_mask, variate_mask, cache, offset):
        keys, values = [], []
        time_index = 0
        for layer in self.layers:
            layer_cache = None
            if layer.kind == TIME and cache is not None:
                layer_cache = LayerCache(cache[0][time_index], cache[1][time_index])
            x, layer_cache = layer(x, rotary, time_mask, variate_mask, layer_cache, offset)
            if layer.kind == TIME:
                time_index += 1
                if layer_cache is not None:
                    keys.append(layer_cache.keys)
                    values.append(layer_cache.values)
        return x, ((jnp.stack(keys), jnp.stack(values)) if keys else None)


class Toto2Transformer(nnx.Module):
    def __init__(self, config: Toto2Config, *, dtype, rngs: nnx.Rngs):
        self.config = config
        groups = config.num_layers // config.layer_group_size

        @nnx.split_rngs(splits=groups)
        @nnx.vmap(in_axes=(0,), out_axes=0, axis_size=groups,
                  transform_metadata={nnx.PARTITION_NAME: "layers", "logical_axes": "layers"})  # fmt: skip
        def create(rngs):
            return LayerGroup(config, dtype=dtype, rngs=rngs)

        self.groups = create(rngs)
        for layer in self.groups.layers:  # nnx.vmap names the stacked axis only on non-scalar variables
            for tau in (layer.attention_tau, layer.mlp_tau):
                tau.set_metadata(logical_axes=("layers",))
        # u-muP's depth rule: optimisers scale the learning rates of the layer stack by num_layers ** -1/2.
        for _, node in nnx.iter_graph(self.groups):
            if isinstance(node, nnx.Param):
                node.set_metadata(mup_depth=config.num_layers)
        self.out_norm = ScaledRMSNorm(config.d_model, eps=config.norm_eps, use_scale=config.norm_include_weight)

    def __call__(self, x, rotary: Rotary, time_mask, variate_mask, cache: KVCache | None = None, offset=0,
                 loop_groups: bool = False):  # fmt: skip
        """x: [batch, variate, tokens, embed]. With a cache, this call's keys are written at ``offset``.
        ``loop_groups``: a pass that will be differentiated (see ``UNROLLED_GROUPS``); not with a cache."""
        x = constrain(x, ("batch", "variate", "time", "activation_embed"))
        graphdef, params = nnx.split(self.groups)
        stage_cache = None if cache is None or cache.keys is None else (cache.keys, cache.values)

        def step(carry, xs):
            group_params, group_cache = xs
            group = nnx.merge(graphdef, group_params)
            return group(carry, rotary, time_mask, variate_mask, group_cache, offset)

        groups = self.config.num_layers // self.config.layer_group_size
        if loop_groups and cache is None and groups <= UNROLLED_GROUPS:
            for group in range(groups):  # ``scan(unroll=True)`` would still stack the saved activations
                x, _ = step(x, (jax.tree.map(lambda a, group=group: a[group], params), None))
        else:
            x, stage_cache = jax.lax.scan(step, x, (params, stage_cache))
        if cache is not None and stage_cache is not None:
            cache = KVCache(*stage_cache)
        return self.out_norm(x), cache
