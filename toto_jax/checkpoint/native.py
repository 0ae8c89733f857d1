"""The native checkpoint layout: an orbax array tree plus the config beside it.

    DIR/config.json               the model config's to_dict() (TotoConfig or Toto2Config)
    DIR/state/                    orbax StandardCheckpointer tree of the whole model state, float32
                                  (parameters, and Toto 2.0's residual-tau buffers)
    DIR/toto_jax_checkpoint.json  completeness marker, written last: format name, version, model family
                                  ("toto1" / "toto2"), parameter count

Markers written before Toto 2.0 existed have no family: they are Toto 1.0 checkpoints.

The whole directory is staged in a hidden sibling and renamed into place (``files.atomic_directory``); on
an object store it is uploaded with the marker last.
"""

from __future__ import annotations

import json
from pathlib import Path

import jax
import numpy as np
from flax import nnx

from ..config import ConfigError, TotoConfig
from ..models.toto2.config import Toto2Config
from .arrays import restore_arrays
from .. import storage
from .files import CheckpointError, atomic_directory
from .placement import abstract_model, flat_shardings

CONFIG_FILE = "config.json"
STATE_DIR = "state"
MARKER_FILE = "toto_jax_checkpoint.json"
FORMAT_NAME = "toto-jax"
FORMAT_VERSION = 1
CONFIG_CLASSES = {"toto1": TotoConfig, "toto2": Toto2Config}  # by family


def _checkpointer():
    import orbax.checkpoint as ocp

    return ocp.Checkpointer(ocp.StandardCheckpointHandler())


def is_native_checkpoint(path: str | Path) -> bool:
    """True for a directory in the native layout, complete or not (``load_native`` says what is missing)."""
    path = storage.as_path(path)
    return path.is_dir() and ((path / MARKER_FILE).is_file() or (path / STATE_DIR).is_dir())


def save_native(model, directory: str | Path, *, overwrite: bool = False) -> Path:
    import orbax.checkpoint as ocp

    directory = storage.as_path(directory)
    state = nnx.to_pure_dict(nnx.state(model))
    parameters = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(state))
    with atomic_directory(directory, overwrite=overwrite, last=MARKER_FILE) as staging:
        with _checkpointer() as checkpointer:  # synchronous: the arrays are on disk when it returns
            checkpointer.save((staging / STATE_DIR).absolute(), args=ocp.args.StandardSave(state))
        (staging / CONFIG_FILE).write_text(json.dumps(model.config.to_dict(), indent=2) + "\n")
        marker = {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "family": model.config.family,
            "parameters": parameters,
        }
        (staging / MARKER_FILE).write_text(json.dumps(marker, indent=2) + "\n")
    return directory


def read_native_config(path: str | Path) -> TotoConfig | Toto2Config:
    path = Path(path)
    marker_path = path / MARKER_FILE
    if not marker_path.is_file():
        raise CheckpointError(
            f"{path} is an incomplete native checkpoint: no {MARKER_FILE} (the save did not finish)"
        )
    try:
        marker = json.loads(marker_path.read_text())
    except json.JSONDecodeError as error:
        raise CheckpointError(f"{marker_path} is not valid JSON: {error}") from None
    if marker.get("format") != FORMAT_NAME or marker.get("version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{marker_path}: unsupported checkpoint format {marker.get('format')!r} version "
            f"{marker.get('version')!r}; this toto-jax reads {FORMAT_NAME!r} version {FORMAT_VERSION}"
        )
    family = marker.get("family", "toto1")
    if family not in CONFIG_CLASSES:
        raise CheckpointError(
            f"{marker_path}: unknown model family {family!r}; this toto-jax reads {sorted(CONFIG_CLASSES)}"
        )
    config_path = path / CONFIG_FILE
    if not config_path.is_file():
        raise CheckpointError(f"native checkpoint {path} is missing its {CONFIG_FILE} (the model's shape)")
    if not (path / STATE_DIR).is_dir():
        raise CheckpointError(f"native checkpoint {path} is missing its {STATE_DIR}/ directory (the arrays)")
    try:
        return CONFIG_CLASSES[family].from_dict(json.loads(config_path.read_text()))
    except json.JSONDecodeError as error:
        raise CheckpointError(f"{config_path} is not valid JSON: {error}") from None
    except (ConfigError, TypeError) as error:
        raise CheckpointError(f"{config_path}: {error}") from None


def load_native(path: str | Path, *, dtype: str | None = None, mesh=None, rules=None):
    """Restore a native checkpoint (``Toto`` or ``Toto2``, by the marker's family); every array is read
    straight into its sharding (``mesh`` + ``rules``)."""
    path = Path(path)
    config = read_native_config(path)
    if dtype is not None:
        config = config.replace(dtype=dtype)
    graphdef, abstract_state = nnx.split(abstract_model(config))
    shardings = flat_shardings(abstract_state, mesh, rules)
    targets = nnx.to_pure_dict(
        nnx.from_flat_state(
            [
                (key, jax.ShapeDtypeStruct(var.shape, var.dtype, sharding=shardings[tuple(key)]))
                for key, var in nnx.to_flat_state(abstract_state)
            ]
        )
    )
    try:
        restored = restore_arrays(path / STATE_DIR, targets)  # shapes checked before any array is read
    except (ValueError, KeyError, FileNotFoundError) as error:
        detail = str(error).splitlines()[0][:400] if str(error) else type(error).__name__
        raise CheckpointError(
            f"cannot restore the arrays in {path / STATE_DIR} (damaged, or shapes differ from "
            f"{path / CONFIG_FILE}): {detail}"
        ) from None
    nnx.replace_by_pure_dict(abstract_state, restored)
    return nnx.merge(graphdef, abstract_state)
