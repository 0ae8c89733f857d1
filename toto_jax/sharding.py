"""Logical axis names and their mapping onto a device mesh.

Parameters and activations are annotated with *logical* axis names (``"embed"``, ``"heads"``, ...).
A rules table (set in config) maps each logical name to a mesh axis, so changing the parallelism is a
change of rules, not of model code. Rules follow the MaxText convention: a sequence of
``(logical_name, mesh_axis_or_axes_or_None)``; the first rule whose mesh axes are all still unused wins.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
from typing import Any, Iterable, Sequence

import jax
import numpy as np
from flax import nnx
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

LogicalRules = Sequence[tuple[str, Any]]

MESH_AXES = ("data", "fsdp", "tensor")

DEFAULT_RULES: tuple[tuple[str, Any], ...] = (
    # activations
    ("batch", ("data", "fsdp")),
    ("variate", None),
    ("time", None),
    ("activation_embed", None),
    ("activation_mlp", "tensor"),
    ("activation_heads", "tensor"),
    ("activation_kv_heads", "tensor"),  # Toto 2.0's grouped-query KV cache, split as its ``kv_heads`` weights
    # parameters
    ("layers", None),
    ("embed", "fsdp"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),  # Toto 2.0's grouped-query key/value heads
    ("head_dim", None),
    ("qkv", None),
    ("mlp", "tensor"),
    ("unembed", "tensor"),
    ("patch", None),
    ("mixture", None),
)


def logical_to_pspec(names: Iterable[str | None] | None, rules: LogicalRules = DEFAULT_RULES) -> PartitionSpec:
    """Map a tuple of logical axis names to a ``PartitionSpec`` (unknown or unmatched names replicate)."""
    if names is None:
        return PartitionSpec()
    table: dict[str, list[Any]] = {}
    for logical, mesh_axes in rules:
        table.setdefault(logical, []).append(mesh_axes)
    used: set[str] = set()
    spec: list[Any] = []
    for name in names:
        chosen = None
        for candidate in table.get(name, []) if name is not None else []:
            axes = (candidate,) if isinstance(candidate, str) else tuple(candidate or ())
            if axes and not (set(axes) & used):
                chosen = axes[0] if len(axes) == 1 else axes
                used.update(axes)
                break
        spec.append(chosen)
    return PartitionSpec(*spec)


def make_mesh(shape: Sequence[int] = (-1, 1, 1), axis_names: Sequence[str] = MESH_AXES, devices=None) -> Mesh:
    """A mesh with Auto axis types (GSPMD style). One ``-1`` entry takes the remaining devices."""
    devices = list(jax.devices() if devices is None else devices)
    shape = list(shape)
    if shape.count(-1) > 1:
        raise ValueError(f"mesh shape {shape} has more than one -1")
    known = int(np.prod([s for s in shape if s != -1]))
    if -1 in shape:
        if len(devices) % known:
            raise ValueError(f"{len(devices)} devices cannot fill mesh shape {shape}")
        shape[shape.index(-1)] = len(devices) // known
    if int(np.prod(shape)) != len(devices):
        raise ValueError(f"mesh shape {tuple(shape)} needs {int(np.prod(shape))} devices, {len(devices)} available")
    return jax.make_mesh(
        tuple(shape), tuple(axis_names), axis_types=(AxisType.Auto,) * len(shape), devices=devices
    )


# The active (mesh, rules) pair used by ``constrain`` while tracing; unset = no constraints (single device).
_ACTIVE: contextvars.ContextVar[tuple[Mesh, LogicalRules] | None] = contextvars.ContextVar("toto_mesh", default=None)


@contextlib.contextmanager
def use_mesh(mesh: Mesh | None, rules: LogicalRules = DEFAULT_RULES):
    """Activate ``mesh`` and ``rules`` for activation constraints inside model code traced in this block."""
    token = _ACTIVE.set(None if mesh is None else (mesh, tuple(rules)))
    try:
        yield
    finally:
        _ACTIVE.reset(token)


def constrain(x: jax.Array, names: Sequence[str | None]) -> jax.Array:
    """``with_sharding_constraint`` by logical names; a no-op when no mesh is active."""
    active = _ACTIVE.get()
    if active is None:
        return x
    mesh, rules = active
    return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, logical_to_pspec(names, rules)))


def logical_axes(variable: nnx.Variable) -> tuple[str | None, ...] | None:
    return variable.get_metadata().get("logical_axes")


def state_pspecs(state: Any, rules: LogicalRules = DEFAULT_RULES) -> Any:
    """PartitionSpecs for an ``nnx.State`` (or any tree of Variables) from their logical axis names."""

    def spec(x):
        if isinstance(x, nnx.Variable):
            return x.replace(logical_to_pspec(logical_axes(x), rules))
        return PartitionSpec()

    return jax.tree.map(spec, state, is_leaf=lambda x: isinstance(x, nnx.Variable))


def state_shardings(state: Any, mesh: Mesh, rules: LogicalRules = DEFAULT_RULES) -> Any:
    specs = state_pspecs(state, rules)
    return jax.tree.map(lambda p: NamedSharding(mesh, p), specs, is_leaf=lambda x: isinstance(x, PartitionSpec))


def uneven_splits(state: Any, mesh: Mesh, rules: LogicalRules = DEFAULT_RULES) -> list[str]:
    """``"path shape by spec"`` for every array of ``state`` whose sharding under ``rules`` does not divide it
    evenly over ``mesh`` (such a sharding cannot be placed)."""
    specs = {tuple(path): spec for path, spec in nnx.to_flat_state(state_pspecs(state, rules))}
    uneven = []
    for path, variable in nnx.to_flat_state(state):
        spec = specs[tuple(path)]
        spec = spec.get_value() if isinstance(spec, nnx.Variable) else spec
        for size, axes in zip(variable.shape, spec):
            axes = (axes,) if isinstance(axes, str) else tuple(axes or ())
            if size % math.prod(mesh.shape[axis] for axis in axes):
                uneven.append(f"{'.'.join(map(str, path))} {tuple(variable.shape)} by {spec}")
                break
    return uneven
