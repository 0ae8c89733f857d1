"""The references' checkpoint layout (``config.json`` + ``model.safetensors``, or shards listed in
``model.safetensors.index.json``), read and written with numpy, for both model families.

Each family's tensor names are a table of rules (``toto1_layout``, ``toto2_layout``); the family is told
from the config.json keys.
"""

from __future__ import annotations

import json
from pathlib import Path

import jax
import numpy as np
from flax import nnx

from ..config import ConfigError, TotoConfig
from ..models import is_toto2
from ..models.toto2.config import Toto2Config, is_toto2_config
from .. import storage
from .files import CheckpointError, atomic_directory
from .placement import abstract_model, flat_shardings
from .rules import Layout, path
from .toto1_layout import TOTO1_LAYOUT
from .toto2_layout import TOTO2_LAYOUT

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"


def layout_for(config) -> Layout:
    return TOTO2_LAYOUT if is_toto2(config) else TOTO1_LAYOUT


# ---- state <-> torch tensors -------------------------------------------------------------------------
def state_to_torch_tensors(config, state: nnx.State) -> dict[str, np.ndarray]:
    """Model state -> {torch key: array} in the reference's layout (Toto 1.0: unfused SwiGLU names)."""
    layout = layout_for(config)
    flat = {tuple(p): var for p, var in nnx.to_flat_state(state)}

    def get(location: tuple, repeat: int | None):
        value = flat[location]
        value = value[...] if isinstance(value, nnx.Variable) else value
        return value if repeat is None else value[repeat]

    tensors = {}
    for key, (rule, layer) in layout.rules(config).items():
        if layer is None:
            arrays = tuple(get(path(t), None) for t in rule.targets)
        else:
            arrays = [get(*layout.layer_path(config, layer, target)) for target in rule.targets]
        tensors[layout.prefix + key] = rule.to_torch(tuple(arrays), config)
    return tensors


def expected_torch_shapes(config) -> dict[str, tuple[int, ...]]:
    state = nnx.state(abstract_model(config))
    shapes = jax.eval_shape(lambda s: state_to_torch_tensors(config, s), state)
    return {k: tuple(v.shape) for k, v in shapes.items()}


def torch_tensors_to_state(config, tensors: dict[str, np.ndarray], abstract_state: nnx.State) -> dict[tuple, np.ndarray]:
    """{torch key: array} -> {state path: numpy array}; raises listing every problem at once."""
    layout = layout_for(config)
    prefix = layout.prefix
    table = layout.rules(config)
    expected_shapes = expected_torch_shapes(config)
    canonical: dict[str, str] = {}
    unexpected, duplicated = [], []
    for key in tensors:
        if layout.ignored.search(key):
            continue
        name = layout.canonical(key[len(prefix) :] if key.startswith(prefix) else key)
        if name not in table:
            unexpected.append(key)
        elif name in canonical:
            duplicated.append(f"{canonical[name]} / {key}")
        else:
            canonical[name] = key
    missing = [prefix + name for name in table if name not in canonical]
    misshaped = [
        f"{canonical[name]}: expected {expected_shapes[prefix + name]}, got {tuple(tensors[canonical[name]].shape)}"
        for name in table
        if name in canonical and tuple(tensors[canonical[name]].shape) != expected_shapes[prefix + name]
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

    flat_abstract = {tuple(p): var for p, var in nnx.to_flat_state(abstract_state)}
    out: dict[tuple, np.ndarray] = {}
    for name, (rule, layer) in table.items():
        arrays = rule.to_jax(np.asarray(tensors[canonical[name]], dtype=np.float32), config)
        for target, array in zip(rule.targets, arrays):
            if layer is None:
                out[path(target)] = np.require(array, requirements="C")  # keeps 0-d arrays 0-d
                continue
            location, repeat = layout.layer_path(config, layer, target)
            if location not in out:
                out[location] = np.zeros(flat_abstract[location].shape, np.float32)
            out[location][repeat] = array
    return out


# ---- directory level ------------------------------------------------------------------------------------
def is_torch_checkpoint(location: str | Path) -> bool:
    location = storage.as_path(location)
    return (location / WEIGHTS_FILE).is_file() or (location / INDEX_FILE).is_file() or location.suffix == ".safetensors"


def config_from_reference_dict(values: dict):
    """A Toto 1.0 or Toto 2.0 config from the reference's config.json, the family told by its keys."""
    if is_toto2_config(values):
        return Toto2Config.from_dict(values)
    return TotoConfig.from_reference_dict(values)


def index_shards(index_path: Path) -> list[str]:
    """The shard files a ``model.safetensors.index.json`` lists, sorted."""
    try:
        return sorted(set(json.loads(index_path.read_text())["weight_map"].values()))
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as error:
        raise CheckpointError(f"{index_path} is not a safetensors index (needs a weight_map): {error}") from None


def _weight_files(directory: Path, weights: Path | None) -> list[Path]:
    """The safetensors file(s) to read: one file, or the shards a ``model.safetensors.index.json`` lists."""
    if weights is not None:
        return [weights]
    index_path = directory / INDEX_FILE
    if (directory / WEIGHTS_FILE).is_file() or not index_path.is_file():
        return [directory / WEIGHTS_FILE]
    shards = index_shards(index_path)
    absent = [shard for shard in shards if not (directory / shard).is_file()]
    if absent:
        raise CheckpointError(f"{index_path} lists shard(s) missing from {directory}: {absent}")
    return [directory / shard for shard in shards]


def read_torch_checkpoint(location: str | Path):
    """(config, {torch key: array}) from a checkpoint directory or its ``.safetensors`` file."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    location = Path(location)
    single = location.suffix == ".safetensors"
    directory = location.parent if single else location
    files = _weight_files(directory, location if single else None)
    if not files[0].is_file():
        raise CheckpointError(f"no {WEIGHTS_FILE} (or {INDEX_FILE}) in {directory}")
    config_path = directory / CONFIG_FILE
    if not config_path.is_file():
        raise CheckpointError(f"missing {CONFIG_FILE} beside {files[0]} (the model's shape is read from it)")
    try:
        with open(config_path) as f:
            raw_config = json.load(f)
    except json.JSONDecodeError as error:
        raise CheckpointError(f"{config_path} is not valid JSON: {error}") from None
    tensors: dict[str, np.ndarray] = {}
    for weights in files:
        try:
            tensors.update(load_file(str(weights)))
        except (SafetensorError, OSError, ValueError) as error:
            raise CheckpointError(f"cannot read {weights} (truncated or not a safetensors file): {error}") from None
    try:
        config = config_from_reference_dict(raw_config)
    except (ConfigError, TypeError) as error:
        raise CheckpointError(f"{config_path}: {error}") from None
    if not is_toto2(config) and TOTO1_LAYOUT.prefix + "target_variate_label" in tensors and not config.variate_labels:
        config = config.replace(variate_labels=True)
    return config, tensors


def load_torch_checkpoint(location: str | Path, *, dtype: str | None = None, mesh=None, rules=None):
    """Build a model (Toto 1.0 or 2.0) from a reference checkpoint directory (or its ``.safetensors`` file)."""
    config, tensors = read_torch_checkpoint(location)
    if dtype is not None:
        config = config.replace(dtype=dtype)
    return model_from_tensors(config, tensors, mesh=mesh, rules=rules)


def model_from_tensors(config, tensors: dict[str, np.ndarray], *, mesh=None, rules=None):
    """State from torch-layout tensors, each array placed directly into its sharding (one shard per device)."""
    graphdef, abstract_state = nnx.split(abstract_model(config))
    arrays = torch_tensors_to_state(config, tensors, abstract_state)
    shardings = flat_shardings(abstract_state, mesh, rules)

    def place(location, var):
        array = arrays[tuple(location)]
        value = jax.make_array_from_callback(array.shape, shardings[tuple(location)], lambda index: array[index])
        return var.replace(value)

    flat = nnx.to_flat_state(abstract_state)
    state = nnx.from_flat_state([(location, place(location, var)) for location, var in flat])
    return nnx.merge(graphdef, state)


def torch_tensors(model) -> dict[str, np.ndarray]:
    """The model's state as {torch key: float32 numpy array} in its reference's layout."""
    # Fetched to host first: the layout transforms then run in numpy, not as many small device programs.
    state = jax.tree.map(lambda x: np.asarray(jax.device_get(x)), nnx.state(model))
    tensors = state_to_torch_tensors(model.config, state)
    # np.require, not np.ascontiguousarray, which turns Toto 2.0's 0-d taus into shape (1,).
    return {k: np.require(v, np.float32, "C") for k, v in tensors.items()}


def export_torch(model, directory: str | Path, *, overwrite: bool = False) -> Path:
    """Write ``model.safetensors`` + ``config.json`` that the model's reference reads (toto-ts's
    ``Toto.load_from_checkpoint`` or toto-2's ``Toto2Model.from_pretrained``).

    Written with numpy (no torch needed) into a staging directory renamed into place when complete.
    """
    from safetensors.numpy import save_file

    directory = storage.as_path(directory)
    tensors = torch_tensors(model)
    with atomic_directory(directory, overwrite=overwrite, last=WEIGHTS_FILE) as staging:
        save_file(tensors, str(staging / WEIGHTS_FILE), metadata={"format": "pt"})
        (staging / CONFIG_FILE).write_text(json.dumps(model.config.to_reference_dict(), indent=2) + "\n")
    return directory
