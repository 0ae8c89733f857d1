"""Where a forecast runs: its rows (series, or series x sample paths) split over a 1-D ``data`` mesh of local
devices, the model's parameters replicated.

``ForecastOptions.devices`` None takes every local device of an accelerator host and one device on CPU
(CPU "devices" share the host's cores, so splitting over them buys nothing); a number takes the first that
many local devices. Draws are keyed by series and path, so results do not depend on the device count.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from .inputs import ForecastError

ROWS = "data"


def forecast_devices(requested: int | None) -> list:
    local = jax.local_devices()
    if requested is None:
        return local if local[0].platform != "cpu" else local[:1]
    if requested > len(local):
        raise ForecastError(f"ForecastOptions.devices is {requested}, but this process has {len(local)} local devices")
    return local[:requested]


class RowPlacement:
    """Shardings of one forecast's arrays: leading (row) axis over the devices, the rest replicated."""

    def __init__(self, devices: list):
        self.mesh = Mesh(np.array(devices), (ROWS,))
        self.count = len(devices)
        self.rows = NamedSharding(self.mesh, PartitionSpec(ROWS))
        self.replicated = NamedSharding(self.mesh, PartitionSpec())

    def row_multiple(self, rows: int) -> int:
        """``rows`` rounded up to a multiple of the device count (every device gets as many rows)."""
        return -(-rows // self.count) * self.count

    def abstract(self, shape, dtype, rows: bool = True) -> jax.ShapeDtypeStruct:
        return jax.ShapeDtypeStruct(shape, dtype, sharding=self.rows if rows else self.replicated)

    def put(self, tree, rows: bool = True):
        return jax.device_put(tree, self.rows if rows else self.replicated)
