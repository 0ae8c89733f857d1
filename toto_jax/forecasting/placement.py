"""Where a forecast runs: a mesh of the training axes (``data``, ``fsdp``, ``tensor``) under logical-axis rules
(``toto_jax.sharding``), as ``toto_jax.load(mesh=, rules=)`` and the trainer place a model.

Rows (series, or series x sample paths) are split over the mesh axes the rules map ``batch`` to; each
parameter is split as its logical axes map (under the default rules: heads, MLP and head units over
``tensor``, i.e. tensor parallelism), and activations and the KV cache are constrained by the same rules
while the programs trace.

Without ``mesh=``, ``ForecastOptions.devices`` picks local devices for the ``data`` axis (None: every local
accelerator, one device on CPU, whose "devices" share the host's cores; a number: the first that many),
the other axes have size 1, so the parameters are replicated. Draws are keyed by series and path, so
results do not depend on the mesh.
"""

from __future__ import annotations

import math
import threading

import jax
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from ..sharding import DEFAULT_RULES, logical_to_pspec, make_mesh, state_shardings, uneven_splits, use_mesh
from .inputs import ForecastError

_COMPILING = threading.Lock()  # one program compiles at a time (see Placement.compiled)


def forecast_devices(requested: int | None) -> list:
    local = jax.local_devices()
    if requested is None:
        return local if local[0].platform != "cpu" else local[:1]
    if requested > len(local):
        raise ForecastError(f"ForecastOptions.devices is {requested}, but this process has {len(local)} local devices")
    return local[:requested]


def forecast_placement(devices: int | None, mesh: Mesh | None = None, rules=None) -> Placement:
    """The placement of one forecast: ``mesh`` and ``rules`` (default rules) as given, else a data mesh of
    ``devices`` local devices (``ForecastOptions.devices``; giving both is an error)."""
    if mesh is None:
        if rules is not None:
            raise ForecastError("rules= places parameters on a mesh: give mesh= with it")
        return Placement(make_mesh((-1, 1, 1), devices=forecast_devices(devices)), DEFAULT_RULES)
    if devices is not None:
        raise ForecastError(
            f"ForecastOptions.devices is {devices} and a mesh is given: the mesh decides the devices, "
            "leave devices None"
        )
    if not isinstance(mesh, Mesh):
        raise ForecastError(
            f"mesh must be a jax.sharding.Mesh (e.g. toto_jax.sharding.make_mesh), got {type(mesh).__name__}"
        )
    rules = DEFAULT_RULES if rules is None else tuple(rules)
    used = {axis for _, axes in rules for axis in ((axes,) if isinstance(axes, str) else tuple(axes or ()))}
    missing = sorted(used - set(mesh.axis_names))
    if missing:
        raise ForecastError(
            f"the mesh has axes {mesh.axis_names}, but the rules map logical axes to {', '.join(map(repr, missing))}: "
            "make the mesh with toto_jax.sharding.make_mesh (axes data, fsdp, tensor) or give rules= without them"
        )
    if any(kind != AxisType.Auto for kind in mesh.axis_types):
        raise ForecastError(
            f"mesh axis types must be Auto (as toto_jax.sharding.make_mesh makes them), got {mesh.axis_types}"
        )
    if not set(mesh.devices.flat) <= set(jax.local_devices()):
        raise ForecastError(
            "the mesh holds devices of other processes: a forecast runs within one process (each forecasts its own "
            "series), so build the mesh from jax.local_devices()"
        )
    return Placement(mesh, rules)


class Placement:
    """Shardings of one forecast's arrays: the leading (row) axis as the rules place ``batch``, parameters by
    their logical axes, everything else replicated."""

    def __init__(self, mesh: Mesh, rules):
        # Hashable (rules read from a config hold lists): compiled programs are cached by them.
        self.mesh = mesh
        self.rules = tuple((name, tuple(axes) if isinstance(axes, list) else axes) for name, axes in rules)
        row_axes = logical_to_pspec(("batch",), self.rules)[0]
        row_axes = (row_axes,) if isinstance(row_axes, str) else tuple(row_axes or ())
        self.count = math.prod(mesh.shape[axis] for axis in row_axes)  # row shards
        self.rows = NamedSharding(mesh, PartitionSpec(row_axes or None))
        self.replicated = NamedSharding(mesh, PartitionSpec())

    def row_multiple(self, rows: int) -> int:
        """``rows`` rounded up to a multiple of the row shards (every shard gets as many rows)."""
        return -(-rows // self.count) * self.count

    def abstract(self, shape, dtype, rows: bool = True) -> jax.ShapeDtypeStruct:
        return jax.ShapeDtypeStruct(shape, dtype, sharding=self.rows if rows else self.replicated)

    def put(self, tree, rows: bool = True):
        return jax.device_put(tree, self.rows if rows else self.replicated)

    def put_parameters(self, state):
        uneven = uneven_splits(state, self.mesh, self.rules)
        if uneven:
            raise ForecastError(
                f"mesh {dict(self.mesh.shape)} cannot evenly split these parameters under the rules: "
                + "; ".join(uneven)
                + " (change the mesh shape or map those logical axes to no mesh axis)"
            )
        return jax.device_put(state, state_shardings(state, self.mesh, self.rules))

    def compile(self, function, *arguments):
        """``function`` lowered for ``arguments`` with the model's activation constraints on this mesh."""
        with use_mesh(self.mesh, self.rules):
            return function.lower(*arguments).compile()

    def compiled(self, programs: dict, key, function, *arguments):
        """``programs[key]``, compiled (``compile``) the first time it is asked for. Forecasts may run from several
        threads (a dataset job keeps two batches in flight): one compiles while the others wait for it."""
        program = programs.get(key)
        if program is None:
            with _COMPILING:
                program = programs.get(key)
                if program is None:
                    program = programs[key] = self.compile(function, *arguments)
        return program

    @property
    def key(self) -> tuple:
        """What a compiled program depends on beyond its arguments' shardings (the activation constraints)."""
        return self.mesh, self.rules
