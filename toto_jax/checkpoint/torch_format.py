"""The reference's checkpoint layout (``model.safetensors`` + ``config.json``), read and written with numpy.

Weights map through a table of key patterns plus transforms (one row per tensor kind). Each row knows
both directions, so loading and exporting share one definition and round trips are bit exact.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import jax
import numpy as np
from flax import nnx

from ..config import ConfigError, TotoConfig
from ..models.toto1.toto import Toto
from ..models.toto1.transformer import layer_locations
from .files import CheckpointError, atomic_directory
from .placement import abstract_model, flat_shardings

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
PREFIX = "model."
IGNORED_KEYS = re.compile(r"(^|\.)rotary_emb\.freqs$")
# xFormers' fused SwiGLU names the same tensors differently; loading accepts both, export writes plain.
FUSED_SWIGLU_ALIASES = {"mlp.0.w12.": "mlp.0.", "mlp.0.w3.": "mlp.2."}


def _concat(parts, axis):
    return np.concatenate(parts, axis) if isinstance(parts[0], np.ndarray) else jax.numpy.concatenate(parts, axis)


# ---- transforms: torch tensor(s) <-> parameter arrays ----------------------------------------------
def _linear_to_jax(w):  # torch (out, in) -> kernel (in, out)
    return w.T


def _linear_to_torch(k):
    return k.T


@dataclass(frozen=True)
class Rule:
    """``torch`` suffix pattern -> parameter paths (relative to the module), with both transforms."""

    torch_suffix: str
    targets: tuple[str, ...]
    to_jax: Callable  # (tensor, config) -> tuple of arrays, one per target
    to_torch: Callable  # (arrays tuple, config) -> tensor


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


def _plain(to_jax, to_torch):
    return (lambda t, c: (to_jax(t),)), (lambda a, c: to_torch(a[0]))


_IDENTITY = _plain(lambda t: t, lambda a: a)
_LINEAR = _plain(_linear_to_jax, _linear_to_torch)

LAYER_RULES: tuple[Rule, ...] = (
    Rule("norm1.scale", ("norm1.scale",), *_IDENTITY),
    Rule("norm2.scale", ("norm2.scale",), *_IDENTITY),
    Rule("attention.wQKV.weight", ("attention.wQKV.kernel",), _qkv_kernel_to_jax, _qkv_kernel_to_torch),
    Rule("attention.wQKV.bias", ("attention.wQKV.bias",), _qkv_bias_to_jax, _qkv_bias_to_torch),
    Rule("attention.wO.weight", ("attention.wO.kernel",), *_LINEAR),
    Rule("attention.wO.bias", ("attention.wO.bias",), *_IDENTITY),
    Rule(
        "mlp.0.weight",
        ("mlp.w_gate.kernel", "mlp.w_up.kernel"),
        _split_gate,
        lambda a, c: _concat([a[0], a[1]], 1).T,
    ),
    Rule("mlp.0.bias", ("mlp.w_gate.bias", "mlp.w_up.bias"), _split_gate_bias, lambda a, c: _concat([a[0], a[1]], 0)),
    Rule("mlp.2.weight", ("mlp.w_out.kernel",), *_LINEAR),
    Rule("mlp.2.bias", ("mlp.w_out.bias",), *_IDENTITY),
)

GLOBAL_RULES: tuple[Rule, ...] = (
    Rule("patch_embed.projection.weight", ("patch_embed.projection.kernel",), *_LINEAR),
    Rule("patch_embed.projection.bias", ("patch_embed.projection.bias",), *_IDENTITY),
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
        for kind, target, fns in (("weight", "kernel", _LINEAR), ("bias", "bias", _IDENTITY))
    ),
    Rule("target_variate_label", ("variate_labels.target_variate_label",), *_IDENTITY),
    Rule("exogenous_variate_label", ("variate_labels.exogenous_variate_label",), *_IDENTITY),
)
_LAYER_KEY = re.compile(r"^transformer\.layers\.(\d+)\.(.+)$")


def _path(dotted: str) -> tuple:
    return tuple(int(p) if p.isdigit() else p for p in dotted.split("."))


def _layer_path(config: TotoConfig, layer: int, target: str) -> tuple[tuple, int]:
    stage, repeat, position = layer_locations(config)[layer]
    return ("transformer", "stages", stage, "layers", position, *_path(target)), repeat


def _canonical(key: str) -> str:
    key = key[len(PREFIX) :] if key.startswith(PREFIX) else key
    for fused, plain in FUSED_SWIGLU_ALIASES.items():
        key = key.replace(fused, plain)
    return key


def _rules_by_key(config: TotoConfig) -> dict[str, tuple[Rule, int | None]]:
    """Every torch key (without prefix) this config has, with its rule and layer index."""
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


# ---- state <-> torch tensors -------------------------------------------------------------------------
def state_to_torch_tensors(config: TotoConfig, state: nnx.State) -> dict[str, np.ndarray]:
    """Parameter state -> {torch key: array} in the reference's layout (unfused SwiGLU names)."""
    flat = {tuple(path): var for path, var in nnx.to_flat_state(state)}

    def get(path: tuple, repeat: int | None):
        value = flat[path]
        value = value[...] if isinstance(value, nnx.Variable) else value
        return value if repeat is None else value[repeat]

    tensors = {}
    for key, (rule, layer) in _rules_by_key(config).items():
        if layer is None:
            arrays = tuple(get(_path(t), None) for t in rule.targets)
        else:
            arrays = []
            for target in rule.targets:
                path, repeat = _layer_path(config, layer, target)
                arrays.append(get(path, repeat))
        tensors[PREFIX + key] = rule.to_torch(tuple(arrays), config)
    return tensors


def expected_torch_shapes(config: TotoConfig) -> dict[str, tuple[int, ...]]:
    abstract = abstract_model(config)
    state = nnx.state(abstract, nnx.Param)
    shapes = jax.eval_shape(lambda s: state_to_torch_tensors(config, s), state)
    return {k: tuple(v.shape) for k, v in shapes.items()}


def torch_tensors_to_state(
    config: TotoConfig, tensors: dict[str, np.ndarray], abstract_state: nnx.State
) -> dict[tuple, np.ndarray]:
    """{torch key: array} -> {parameter path: numpy array}; raises listing every problem at once."""
    table = _rules_by_key(config)
    expected_shapes = expected_torch_shapes(config)
    canonical: dict[str, str] = {}
    unexpected, duplicated = [], []
    for key in tensors:
        if IGNORED_KEYS.search(key):
            continue
        name = _canonical(key)
        if name not in table:
            unexpected.append(key)
        elif name in canonical:
            duplicated.append(f"{canonical[name]} / {key}")
        else:
            canonical[name] = key
    missing = [PREFIX + name for name in table if name not in canonical]
    misshaped = [
        f"{canonical[name]}: expected {expected_shapes[PREFIX + name]}, got {tuple(tensors[canonical[name]].shape)}"
        for name in table
        if name in canonical and tuple(tensors[canonical[name]].shape) != expected_shapes[PREFIX + name]
    ]
    problems = []
    if missing:
        problems.append("missing tensors: " + ", ".join(missing))
    if unexpected:
        problems.append("unexpected tensors: " + ", ".join(unexpected))
    if duplicated:
        problems.append("tensors given under both plain and fused names: " + ", ".join(duplicated))
    if misshaped:
        problems.append("wrong shapes: " + "; ".join(misshaped))
    if problems:
        raise CheckpointError("checkpoint does not match the config:\n  " + "\n  ".join(problems))

    flat_abstract = {tuple(path): var for path, var in nnx.to_flat_state(abstract_state)}
    out: dict[tuple, np.ndarray] = {}
    for name, (rule, layer) in table.items():
        arrays = rule.to_jax(np.asarray(tensors[canonical[name]], dtype=np.float32), config)
        for target, array in zip(rule.targets, arrays):
            if layer is None:
                out[_path(target)] = np.ascontiguousarray(array)
                continue
            path, repeat = _layer_path(config, layer, target)
            if path not in out:
                out[path] = np.zeros(flat_abstract[path].shape, np.float32)
            out[path][repeat] = array
    return out


# ---- directory level ------------------------------------------------------------------------------------
def is_torch_checkpoint(path: str | Path) -> bool:
    path = Path(path)
    return (path / WEIGHTS_FILE).is_file() or path.suffix == ".safetensors"


def read_torch_checkpoint(path: str | Path) -> tuple[TotoConfig, dict[str, np.ndarray]]:
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    path = Path(path)
    directory = path.parent if path.suffix == ".safetensors" else path
    weights = path if path.suffix == ".safetensors" else path / WEIGHTS_FILE
    if not weights.is_file():
        raise CheckpointError(f"no {WEIGHTS_FILE} in {directory}")
    config_path = directory / CONFIG_FILE
    if not config_path.is_file():
        raise CheckpointError(f"missing {CONFIG_FILE} beside {weights} (the model's shape is read from it)")
    try:
        with open(config_path) as f:
            raw_config = json.load(f)
    except json.JSONDecodeError as error:
        raise CheckpointError(f"{config_path} is not valid JSON: {error}") from None
    try:
        tensors = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(f"cannot read {weights} (truncated or not a safetensors file): {error}") from None
    try:
        config = TotoConfig.from_reference_dict(raw_config)
    except (ConfigError, TypeError) as error:
        raise CheckpointError(f"{config_path}: {error}") from None
    if PREFIX + "target_variate_label" in tensors and not config.variate_labels:
        config = config.replace(variate_labels=True)
    return config, tensors


def load_torch_checkpoint(path: str | Path, *, dtype: str | None = None, mesh=None, rules=None) -> Toto:
    """Build a ``Toto`` from a reference checkpoint directory (or its ``.safetensors`` file)."""
    config, tensors = read_torch_checkpoint(path)
    if dtype is not None:
        config = config.replace(dtype=dtype)
    return model_from_tensors(config, tensors, mesh=mesh, rules=rules)


def model_from_tensors(config: TotoConfig, tensors: dict[str, np.ndarray], *, mesh=None, rules=None) -> Toto:
    """Parameters from torch-layout tensors, each placed directly into its sharding (one shard per device)."""
    graphdef, abstract_state = nnx.split(abstract_model(config))
    arrays = torch_tensors_to_state(config, tensors, abstract_state)
    shardings = flat_shardings(abstract_state, mesh, rules)

    def place(path, var):
        array = arrays[tuple(path)]
        value = jax.make_array_from_callback(array.shape, shardings[tuple(path)], lambda index: array[index])
        return var.replace(value)

    flat = nnx.to_flat_state(abstract_state)
    state = nnx.from_flat_state([(path, place(path, var)) for path, var in flat])
    return nnx.merge(graphdef, state)


def torch_tensors(model: Toto) -> dict[str, np.ndarray]:
    """The model's parameters as {torch key: float32 numpy array} in the reference's layout."""
    # Fetched to host first: the layout transforms then run in numpy, not as many small device programs.
    state = jax.tree.map(lambda x: np.asarray(jax.device_get(x)), nnx.state(model, nnx.Param))
    tensors = state_to_torch_tensors(model.config, state)
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in tensors.items()}


def export_torch(model: Toto, directory: str | Path, *, overwrite: bool = False) -> Path:
    """Write ``model.safetensors`` + ``config.json`` that the reference's ``Toto.load_from_checkpoint`` reads.

    Written with numpy (no torch needed) into a staging directory renamed into place when complete.
    """
    from safetensors.numpy import save_file

    directory = Path(directory)
    tensors = torch_tensors(model)
    with atomic_directory(directory, overwrite=overwrite) as staging:
        save_file(tensors, str(staging / WEIGHTS_FILE), metadata={"format": "pt"})
        (staging / CONFIG_FILE).write_text(json.dumps(model.config.to_reference_dict(), indent=2) + "\n")
    return directory
