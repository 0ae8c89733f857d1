"""Toto 1.0 (toto-ts) tensor names: ``model.`` prefix, fused QKV ordered (qkv, head_dim, heads), SwiGLU as
``mlp.0`` (gate rows first) / ``mlp.2`` or xFormers' fused ``mlp.0.w12`` / ``mlp.0.w3``."""

from __future__ import annotations

import re

from ..config import TotoConfig
from ..models.toto1.transformer import layer_locations
from .rules import IDENTITY, LINEAR, Layout, Rule, concat, path

# xFormers' fused SwiGLU names the same tensors differently; loading accepts both, export writes plain.
FUSED_SWIGLU_ALIASES = {"mlp.0.w12.": "mlp.0.", "mlp.0.w3.": "mlp.2."}
PREFIX = "model."


def _qkv_kernel_to_jax(w, c: TotoConfig):
    # torch features are ordered (qkv, head_dim, heads); ours (qkv, heads, head_dim)
    k = w.T.reshape(c.embed_dim, 3, c.head_dim, c.num_heads)
    return (k.transpose(0, 1, 3, 2),)


def _qkv_kernel_to_torch(arrays, c: TotoConfig):
    return arrays[0].transpose(0, 1, 3, 2).reshape(c.embed_dim, 3 * c.embed_dim).T


def _qkv_bias_to_jax(b, c: TotoConfig):
    return (b.reshape(3, c.head_dim, c.num_heads).transpose(0, 2, 1),)


def _qkv_bias_to_torch(arrays, c: TotoConfig):
    return arrays[0].transpose(0, 2, 1).reshape(3 * c.embed_dim)


def _split_gate(w, c: TotoConfig):  # (2*mlp, embed): gate rows first
    k = w.T
    return k[:, : c.mlp_hidden_dim], k[:, c.mlp_hidden_dim :]


def _split_gate_bias(b, c: TotoConfig):
    return b[: c.mlp_hidden_dim], b[c.mlp_hidden_dim :]


LAYER_RULES: tuple[Rule, ...] = (
    Rule("norm1.scale", ("norm1.scale",), *IDENTITY),
    Rule("norm2.scale", ("norm2.scale",), *IDENTITY),
    Rule("attention.wQKV.weight", ("attention.wQKV.kernel",), _qkv_kernel_to_jax, _qkv_kernel_to_torch),
    Rule("attention.wQKV.bias", ("attention.wQKV.bias",), _qkv_bias_to_jax, _qkv_bias_to_torch),
    Rule("attention.wO.weight", ("attention.wO.kernel",), *LINEAR),
    Rule("attention.wO.bias", ("attention.wO.bias",), *IDENTITY),
    Rule(
        "mlp.0.weight",
        ("mlp.w_gate.kernel", "mlp.w_up.kernel"),
        _split_gate,
        lambda a, c: concat([a[0], a[1]], 1).T,
    ),
    Rule("mlp.0.bias", ("mlp.w_gate.bias", "mlp.w_up.bias"), _split_gate_bias, lambda a, c: concat([a[0], a[1]], 0)),
    Rule("mlp.2.weight", ("mlp.w_out.kernel",), *LINEAR),
    Rule("mlp.2.bias", ("mlp.w_out.bias",), *IDENTITY),
)

GLOBAL_RULES: tuple[Rule, ...] = (
    Rule("patch_embed.projection.weight", ("patch_embed.projection.kernel",), *LINEAR),
    Rule("patch_embed.projection.bias", ("patch_embed.projection.bias",), *IDENTITY),
    Rule(
        "unembed.weight",
        ("unembed.kernel",),
        lambda w, c: (w.T.reshape(c.embed_dim, c.patch_size, c.embed_dim),),
        lambda a, c: a[0].reshape(c.embed_dim, c.patch_size * c.embed_dim).T,
    ),
    Rule(
        "unembed.bias",
        ("unembed.bias",),
        lambda b, c: (b.reshape(c.patch_size, c.embed_dim),),
        lambda a, c: a[0].reshape(c.patch_size * c.embed_dim),
    ),
    *(
        Rule(f"output_distribution.{name}.{kind}", (f"output_distribution.{name}.{target}",), *fns)
        for name in ("df", "loc_proj", "scale_proj", "mixture_weights")
        for kind, target, fns in (("weight", "kernel", LINEAR), ("bias", "bias", IDENTITY))
    ),
    Rule("target_variate_label", ("variate_labels.target_variate_label",), *IDENTITY),
    Rule("exogenous_variate_label", ("variate_labels.exogenous_variate_label",), *IDENTITY),
)


def _layer_path(config: TotoConfig, layer: int, target: str) -> tuple[tuple, int]:
    stage, repeat, position = layer_locations(config)[layer]
    return ("transformer", "stages", stage, "layers", position, *path(target)), repeat


def _canonical(key: str) -> str:
    for fused, plain_name in FUSED_SWIGLU_ALIASES.items():
        key = key.replace(fused, plain_name)
    return key


def _rules(config: TotoConfig) -> dict[str, tuple[Rule, int | None]]:
    table: dict[str, tuple[Rule, int | None]] = {}
    for rule in GLOBAL_RULES:
        if rule.torch_suffix.startswith("output_distribution.mixture_weights") and (
            config.distribution != "mixture_student_t"
        ):
            continue
        if rule.torch_suffix.endswith("variate_label") and not config.variate_labels:
            continue
        table[rule.torch_suffix] = (rule, None)
    for layer in range(config.num_layers):
        for rule in LAYER_RULES:
            table[f"transformer.layers.{layer}.{rule.torch_suffix}"] = (rule, layer)
    return table


TOTO1_LAYOUT = Layout(
    prefix=PREFIX,
    rules=_rules,
    layer_path=_layer_path,
    canonical=_canonical,
    ignored=re.compile(r"(^|\.)rotary_emb\.freqs$"),
)
