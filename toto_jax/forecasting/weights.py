"""A model's weights as the compiled forecast programs take them: split, placed, and kept between calls.

Splitting a model, placing 600 MB of parameters and hashing their shapes for the program caches took longer
than the Python side of a whole forecast of the bundled model, so it happens once per model and placement,
and again only when the model's arrays change (``nnx.update`` gives a Variable a new array).

Toto 1.0 decodes on ``Toto.for_decoding()``: a layer's weights read out of a stacked stage are copied before
each of its matmuls (XLA CPU), which doubles the cost of a weight-bound decode step, so that copy holds one
array per layer, its 2D kernels stored [out, in] (which XLA CPU multiplies a forecast's few rows by faster),
and the head with the unembedding folded in. It lives beside the model's weights, as much memory again,
for as long as the model does.
A model loaded with ``dtype="bfloat16"`` casts its float32 weights to bfloat16 at every matmul; its decoding
copy stores them cast, which halves the bytes a decode step reads (the head stays float32).
"""

from __future__ import annotations

import dataclasses
import math
import threading
import weakref

import jax
import jax.numpy as jnp
from flax import nnx

from ..layers.linear import Dense
from ..models.toto1 import Toto


@dataclasses.dataclass(frozen=True, eq=False)
class Weights:
    graphdef: object
    params: object
    key: CachedHash  # the graph and the params' shapes and shardings: what compiled programs depend on
    device_bytes: int  # of one device's share of the params


class CachedHash:
    """A hashable value whose (costly: a model's whole graph) hash is computed once."""

    __slots__ = ("value", "_hash")

    def __init__(self, value):
        self.value, self._hash = value, hash(value)

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other) -> bool:
        return isinstance(other, CachedHash) and self._hash == other._hash and self.value == other.value


def signature(tree) -> tuple:
    """Shapes, dtypes and shardings of a tree's arrays, and its structure: what a compiled program is specific to."""

    def leaf(a):
        return (a.shape, str(a.dtype), str(getattr(a, "sharding", None))) if hasattr(a, "shape") else a

    return tuple(leaf(a) for a in jax.tree.leaves(tree)), str(jax.tree.structure(tree))


_HELD: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_PLACING = threading.Lock()


def placed_weights(model, placement) -> Weights:
    """``model``'s weights for the forecast programs under ``placement`` (``placement.Placement``); placed once
    however many threads ask at the same time."""
    with _PLACING:
        return _placed_weights(model, placement)


def _placed_weights(model, placement) -> Weights:
    arrays = jax.tree.leaves(model)  # nnx modules are pytrees: a tenth of the time nnx.state takes
    held = _HELD.get(model)
    if held is not None and held[0] == placement.key and len(held[1]) == len(arrays):
        if all(a is b for a, b in zip(held[1], arrays)):
            return held[2]
    if isinstance(model, Toto):
        decoding = model.for_decoding()
        graphdef, params = nnx.split(decoding)
        params = _stored_in_compute_dtype(decoding, params)
    else:
        graphdef, params = nnx.split(model)
    params = placement.put_parameters(params)
    device_bytes = sum(math.prod(a.sharding.shard_shape(a.shape)) * a.dtype.itemsize for a in jax.tree.leaves(params))
    weights = Weights(graphdef, params, CachedHash((graphdef, signature(params))), device_bytes)
    _HELD[model] = (placement.key, arrays, weights)
    return weights


def _stored_in_compute_dtype(model: Toto, params):
    """``params`` with the weights of Dense layers that compute in a narrower dtype stored in it (new Variables:
    the model's own are shared with its decoding copy)."""
    narrow = {path: module.dtype for path, module in nnx.iter_graph(model)
              if isinstance(module, Dense) and jnp.dtype(module.dtype).itemsize < 4}  # fmt: skip
    flat = [(path, variable.replace(variable[...].astype(narrow[path[:-1]])) if path[:-1] in narrow else variable)
            for path, variable in nnx.to_flat_state(params)]  # fmt: skip
    return nnx.from_flat_state(flat)
