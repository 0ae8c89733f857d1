"""The Toto model families, side by side over the shared layers in ``toto_jax.layers``.

- ``toto1``: Toto 1.0 (toto-ts): Student-T mixture head, autoregressive decoding.
- ``toto2``: Toto 2.0 (toto-2): u-muP unit-scaled layers, grouped-query attention, quantile head.
"""

from __future__ import annotations

from typing import Any


def is_toto2(config_or_model: Any) -> bool:
    return getattr(config_or_model, "config", config_or_model).family == "toto2"


def build_model(config, rngs=None):
    """A freshly initialised model of the config's family."""
    if is_toto2(config):
        from .toto2 import Toto2

        return Toto2(config, rngs=rngs)
    from .toto1 import Toto

    return Toto(config, rngs=rngs)


def split_for_training(config):
    """(graphdef, abstract parameters, non-parameter state) of a model of ``config``, nothing allocated but the
    non-parameter state (Toto 2.0's residual taus, fixed by the config), computed without the parameters."""
    import jax
    from flax import nnx

    graphdef, params, rest = nnx.split(nnx.eval_shape(lambda: build_model(config, rngs=nnx.Rngs(0))), nnx.Param, ...)
    if jax.tree.leaves(rest):  # the parameters' initialisation is compiled away
        rest = jax.jit(lambda: nnx.split(build_model(config, rngs=nnx.Rngs(0)), nnx.Param, ...)[2])()
    return graphdef, params, rest
