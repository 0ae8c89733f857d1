"""Where loaded parameters go: the model's abstract state and the sharding of every array in it."""

from __future__ import annotations

import jax
from flax import nnx
from jax.sharding import SingleDeviceSharding

from ..models import build_model
from ..sharding import DEFAULT_RULES, state_shardings, uneven_splits


def abstract_model(config):
    """A model of the config's family whose arrays are shape/dtype placeholders (nothing allocated)."""
    return nnx.eval_shape(lambda: build_model(config, rngs=nnx.Rngs(0)))


def flat_shardings(state: nnx.State, mesh=None, rules=None) -> dict[tuple, jax.sharding.Sharding]:
    """{parameter path: sharding}: from the logical axes under ``rules`` on ``mesh``, else the default device."""
    if mesh is None:
        default = SingleDeviceSharding(jax.local_devices()[0])  # this process's own device, also multi-host
        return {tuple(path): default for path, _ in nnx.to_flat_state(state)}
    rules = DEFAULT_RULES if rules is None else rules
    shardings = state_shardings(state, mesh, rules)
    flat = {
        tuple(path): (value.get_value() if isinstance(value, nnx.Variable) else value)
        for path, value in nnx.to_flat_state(shardings)
    }
    uneven = uneven_splits(state, mesh, rules)
    if uneven:
        from .files import CheckpointError

        raise CheckpointError(
            f"mesh {dict(mesh.shape)} cannot evenly split these parameters under the given rules: "
            + "; ".join(uneven)
            + " (change the mesh shape or map those logical axes to no mesh axis)"
        )
    return flat
