"""Reading an orbax array tree (``StandardCheckpointHandler`` layout) into given shapes and shardings.

Stored shapes are checked, one metadata read after another, before any array is read. Orbax reads all
the arrays (and all their metadata) of a tree concurrently in an event loop that it closes as soon as
one read fails, without waiting for the others: those then complete into a closed loop, and Python
prints an "Event loop is closed" or "Encountered error while reading array index" traceback for each,
long after the error itself was raised. A config that does not match the arrays (other shapes), or an
array store whose index or metadata is damaged, is found here instead, as one clean error.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jax

from .. import storage


def _shapes(tree: Any) -> dict[str, tuple]:
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {
        jax.tree_util.keystr(path, simple=True, separator="."): tuple(leaf.shape)
        for path, leaf in leaves
        if getattr(leaf, "shape", None) is not None
    }


def stored_shapes(directory: Path) -> dict[str, tuple] | None:
    """{array name: global shape} of the tree in ``directory``, read sequentially from its OCDBT store
    (orbax's default layout); None for another layout. Raises ValueError when the store is unreadable."""
    if not (directory / "manifest.ocdbt").is_file():
        return None
    import tensorstore as ts

    # TensorStore reads gs:// and s3:// URLs itself
    base = f"{directory}/" if storage.is_remote(directory) else {"driver": "file", "path": f"{directory}/"}
    store = ts.KvStore.open({"driver": "ocdbt", "base": base}).result()
    shapes = {}
    for key in store.list().result():
        name, _, leaf = key.decode().rpartition("/")
        if leaf in (".zarray", "zarr.json"):  # zarr v2 / v3 array metadata
            shape = json.loads(store.read(key).result().value).get("shape")
            if shape is not None:  # (a zarr v3 group has none)
                shapes[name] = tuple(shape)
    return shapes


def shape_mismatches(stored: dict[str, tuple], targets: Any) -> list[str]:
    """'key: stored S, expected T' for each array present in both whose shapes differ.

    Missing or extra arrays are left to orbax, which reports a tree-structure mismatch before reading.
    """
    expected = _shapes(targets)
    return [
        f"{key}: stored {stored[key]}, expected {shape}"
        for key, shape in expected.items()
        if key in stored and stored[key] != shape
    ]


def check_stored_shapes(directory: str | Path, targets: Any) -> None:
    """Raise ValueError, without reading any array, when the array store in ``directory`` cannot be read
    or a stored shape differs from its target's (a tree of arrays or ``jax.ShapeDtypeStruct``)."""
    stored = stored_shapes(_absolute(directory))
    mismatched = shape_mismatches(stored, targets) if stored is not None else []
    if mismatched:
        shown = "; ".join(mismatched[:3]) + (f"; and {len(mismatched) - 3} more" if len(mismatched) > 3 else "")
        raise ValueError(f"{len(mismatched)} array(s) stored with other shapes than expected: {shown}")


def restore_arrays(directory: str | Path, targets: Any) -> Any:
    """Restore the tree in ``directory`` as ``targets`` (a tree of ``jax.ShapeDtypeStruct``), after
    ``check_stored_shapes``."""
    import orbax.checkpoint as ocp

    directory = _absolute(directory)  # orbax needs absolute paths
    check_stored_shapes(directory, targets)
    with ocp.Checkpointer(ocp.StandardCheckpointHandler()) as checkpointer:
        return checkpointer.restore(directory, ocp.args.StandardRestore(targets))


def _absolute(directory: str | Path):
    path = storage.as_path(directory)
    return path if storage.is_remote(directory) else path.absolute()
