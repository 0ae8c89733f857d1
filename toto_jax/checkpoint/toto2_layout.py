"""Toto 2.0 (toto-2) tensor names: no prefix; attention's fused ``in_proj`` holds [q | k | v] rows (heads
outer), the SwiGLU's fused ``fc1`` holds [up | gate] rows; each layer stores its residual taus."""

from __future__ import annotations

from ..models.toto2.config import Toto2Config
from .rules import IDENTITY, LINEAR, Layout, Rule, concat, path


def _qkv_sizes(c: Toto2Config) -> tuple[int, int]:
    q = c.num_heads * c.head_dim
    return q, q + c.kv_heads * c.head_dim


def _in_proj_to_jax(w, c: Toto2Config):
    q_end, k_end = _qkv_sizes(c)
    k = w.T  # [d, q | k | v]
    return (
        k[:, :q_end].reshape(c.d_model, c.num_heads, c.head_dim),
        k[:, q_end:k_end].reshape(c.d_model, c.kv_heads, c.head_dim),
        k[:, k_end:].reshape(c.d_model, c.kv_heads, c.value_dim),
    )


def _in_proj_to_torch(arrays, c: Toto2Config):
    return concat([a.reshape(c.d_model, -1) for a in arrays], 1).T


def _in_proj_bias_to_jax(b, c: Toto2Config):
    q_end, k_end = _qkv_sizes(c)
    return (
        b[:q_end].reshape(c.num_heads, c.head_dim),
        b[q_end:k_end].reshape(c.kv_heads, c.head_dim),
        b[k_end:].reshape(c.kv_heads, c.value_dim),
    )


def _in_proj_bias_to_torch(arrays, c: Toto2Config):
    return concat([a.reshape(-1) for a in arrays], 0)


def _split_fc1(w, c: Toto2Config):  # (2 * ff, d): rows [up | gate]
    k = w.T
    return k[:, : c.ff_dim], k[:, c.ff_dim :]


def _split_fc1_bias(b, c: Toto2Config):
    return b[: c.ff_dim], b[c.ff_dim :]


_QKV = ("attention.q_proj", "attention.k_proj", "attention.v_proj")


def _layer_rules(c: Toto2Config) -> list[Rule]:
    rules = [
        Rule("attn_tau", ("attention_tau",), *IDENTITY),
        Rule("mlp_tau", ("mlp_tau",), *IDENTITY),
        Rule("attn.in_proj.weight", tuple(f"{p}.kernel" for p in _QKV), _in_proj_to_jax, _in_proj_to_torch),
        Rule("attn.out_proj.weight", ("attention.out_proj.kernel",), *LINEAR),
        Rule("ffn.fc1.weight", ("ffn.w_up.kernel", "ffn.w_gate.kernel"), _split_fc1,
             lambda a, c: concat([a[0], a[1]], 1).T),  # fmt: skip
        Rule("ffn.fc2.weight", ("ffn.w_out.kernel",), *LINEAR),
    ]
    if c.attn_bias:
        rules += [
            Rule("attn.in_proj.bias", tuple(f"{p}.bias" for p in _QKV), _in_proj_bias_to_jax, _in_proj_bias_to_torch),
            Rule("attn.out_proj.bias", ("attention.out_proj.bias",), *IDENTITY),
        ]
    if c.mlp_bias:
        rules += [
            Rule("ffn.fc1.bias", ("ffn.w_up.bias", "ffn.w_gate.bias"), _split_fc1_bias,
                 lambda a, c: concat([a[0], a[1]], 0)),  # fmt: skip
            Rule("ffn.fc2.bias", ("ffn.w_out.bias",), *IDENTITY),
        ]
    if c.qk_norm and c.qk_norm_weight:
        rules += [Rule(f"attn.{n}_norm.weight", (f"attention.{n}_norm.scale",), *IDENTITY) for n in "qk"]
    if c.per_dim_scale:
        rules.append(Rule("attn._pds.per_dim_scale", ("attention.per_dim_scale.per_dim_scale",), *IDENTITY))
    if c.norm_include_weight:
        rules += [Rule(f"norm{n}.weight", (f"norm{n}.scale",), *IDENTITY) for n in (1, 2)]
    return rules


def _global_rules(c: Toto2Config) -> list[Rule]:
    rules = [
        Rule(f"{torch_module}.{name}.{kind}", (f"{module}.{name}.{target}",), *fns)
        for torch_module, module in (("patch_proj", "patch_proj"), ("output_head.param_projection.proj", "output_head"))
        for name in ("linear1", "linear2", "skip_proj")
        for kind, target, fns in (("weight", "kernel", LINEAR), ("bias", "bias", IDENTITY))
    ]
    if c.norm_include_weight:
        rules.append(Rule("transformer.out_norm.weight", ("transformer.out_norm.scale",), *IDENTITY))
    return rules


def _rules(config: Toto2Config) -> dict[str, tuple[Rule, int | None]]:
    table: dict[str, tuple[Rule, int | None]] = {rule.torch_suffix: (rule, None) for rule in _global_rules(config)}
    layer_rules = _layer_rules(config)
    for layer in range(config.num_layers):
        for rule in layer_rules:
            table[f"transformer.layers.{layer}.{rule.torch_suffix}"] = (rule, layer)
    return table


def _layer_path(config: Toto2Config, layer: int, target: str) -> tuple[tuple, int]:
    group, position = divmod(layer, config.layer_group_size)
    return ("transformer", "groups", "layers", position, *path(target)), group


TOTO2_LAYOUT = Layout(prefix="", rules=_rules, layer_path=_layer_path)
