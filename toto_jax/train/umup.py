"""u-muP optimisers for Toto 2.0 as optax transformations: AdamW and NorMuon with dd-unit-scaling's
per-parameter learning rates.

A parameter's u-muP role comes from its ``nnx.Param`` metadata, set where the model builds it
(``toto_jax.models.toto2.unit_scaled``): ``mup_type`` ("weight" for hidden and input linears, "output" for
readouts, "bias", "norm" for RMSNorm weights and per-dimension scales), ``mup_depth`` (the number of
transformer layers, on the parameters of the layer stack) and ``fused_with`` (the fused reference matrix a
kernel is a column block of). ``param_specs`` reads it once from the parameter state; the transformations
then find each leaf's spec by its tree path, so they accept the state with or without its ``nnx.Param``
wrappers. Every step is per-leaf arithmetic (plus a concatenation of the blocks of one fused matrix), so it
runs under ``jax.jit`` on sharded parameters.

Learning-rate rules (u-muP, as dd-unit-scaling's ``AdamW`` / ``NorMuon``), ``depth ** -1/2`` on the layer
stack in both:

* AdamW: "weight" ``lr * fan_in ** -1/2``; "output", "bias", "norm" ``lr``.
* NorMuon: ``lr`` for every matrix, times ``sqrt(fan_out / fan_in)`` of the (fused) matrix (the
  spectral-norm adjustment, which carries the width transfer).

Weight decay is lr-independent, as dd-unit-scaling sets it (``weight_decay / lr`` per parameter in torch):
each step subtracts ``weight_decay * schedule(step) * p``. ``schedule`` is a multiplier of the peak rates
(what a torch LambdaLR applies to every parameter group), so it scales the decay as well.
"""

from __future__ import annotations

import dataclasses
import math
from collections import defaultdict
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import nnx

MUP_TYPES = ("weight", "output", "bias", "norm")
STACK_AXIS = "layers"  # the logical name of the axis that stacks the transformer's layer groups

# Polar Express (Amsel, Persson, Musco, Gower 2025, arXiv:2505.16932): per-iteration (a, b, c) of
# X <- a X + b (X X^T) X + c (X X^T)^2 X for five iterations, as dion's NorMuon uses them.
POLAR_EXPRESS_COEFFICIENTS = (
    (8.156554524902461, -22.48329292557795, 15.878769915207462),
    (4.042929935166739, -2.808917465908714, 0.5000178451051316),
    (3.8916678022926607, -2.772484153217685, 0.5060648178503393),
    (3.285753657755655, -2.3681294933425376, 0.46449024233003106),
    (2.3465413258596377, -1.7097828382687081, 0.42323551169305323),
)
POLAR_EXPRESS_SAFETY = 1.02  # the input is divided by 1.02 times its Frobenius norm


@dataclasses.dataclass(frozen=True)
class ParamSpec:
    """A parameter's u-muP role. ``stacked_axes`` leading axes stack layers; after them a kernel is
    ``[fan_in, *output axes]``. ``fused`` names the group of kernels the reference holds as one matrix."""

    mup_type: str
    fan_in: int
    depth: int | None
    stacked_axes: int
    fused: tuple | None


Schedule = Callable[[jax.Array], jax.Array]


def param_specs(params: nnx.State) -> dict[tuple, ParamSpec]:
    """{path: ParamSpec} for an ``nnx.State`` of parameters (e.g. ``nnx.state(model, nnx.Param)``)."""
    specs = {}
    for path, variable in nnx.to_flat_state(params):
        metadata = variable.get_metadata()
        mup_type = metadata.get("mup_type")
        if mup_type not in MUP_TYPES:
            raise ValueError(f"parameter {'.'.join(map(str, path))} has no u-muP type (mup_type={mup_type!r})")
        stacked = sum(1 for axis in metadata.get("logical_axes") or () if axis == STACK_AXIS)
        fused_with = metadata.get("fused_with")
        specs[tuple(path)] = ParamSpec(
            mup_type=mup_type,
            fan_in=variable.shape[stacked] if mup_type in ("weight", "output") else 1,
            depth=metadata.get("mup_depth"),
            stacked_axes=stacked,
            fused=None if fused_with is None else (*path[:-2], fused_with),
        )
    return specs


def adam_lr_scale(spec: ParamSpec) -> float:
    scale = 1.0 if spec.depth is None else spec.depth**-0.5
    return scale * spec.fan_in**-0.5 if spec.mup_type == "weight" else scale


def muon_lr_scale(spec: ParamSpec) -> float:
    return 1.0 if spec.depth is None else spec.depth**-0.5


# ---- tree plumbing ---------------------------------------------------------------------------------------
def spec_path(path) -> tuple:
    """A jax tree path as the names ``param_specs`` uses, ignoring an ``nnx.Variable``'s ``value`` attribute."""
    names = []
    for entry in path:
        if isinstance(entry, jax.tree_util.DictKey):
            names.append(entry.key)
        elif isinstance(entry, jax.tree_util.SequenceKey):
            names.append(entry.idx)
        elif isinstance(entry, jax.tree_util.GetAttrKey) and entry.name != "value":
            names.append(entry.name)
    return tuple(names)


def _map_with_specs(specs: dict[tuple, ParamSpec], fn, tree, *rest):
    return jax.tree_util.tree_map_with_path(lambda path, *leaves: fn(specs[spec_path(path)], *leaves), tree, *rest)


def _multiplier(schedule: Schedule | None, count) -> jax.Array:
    return jnp.ones((), jnp.float32) if schedule is None else jnp.asarray(schedule(count), jnp.float32)


# ---- AdamW -----------------------------------------------------------------------------------------------
class UmupAdamWState(NamedTuple):
    count: jax.Array
    adam: optax.ScaleByAdamState


def umup_adamw(
    specs: dict[tuple, ParamSpec],
    learning_rate: float,
    *,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    schedule: Schedule | None = None,
) -> optax.GradientTransformation:
    """torch's AdamW (bias-corrected moments, ``eps`` outside the square root) with u-muP learning rates and
    lr-independent decoupled weight decay (defaults: torch's)."""
    adam = optax.scale_by_adam(b1=b1, b2=b2, eps=eps)

    def init(params):
        return UmupAdamWState(jnp.zeros((), jnp.int32), adam.init(params))

    def update(updates, state, params=None):
        if params is None:
            raise ValueError("umup_adamw needs the parameters (for weight decay)")
        directions, adam_state = adam.update(updates, state.adam, params)
        multiplier = _multiplier(schedule, state.count)

        def step(spec, direction, param):
            rate = learning_rate * adam_lr_scale(spec)
            return (-multiplier * (rate * direction + weight_decay * param)).astype(param.dtype)

        return _map_with_specs(specs, step, directions, params), UmupAdamWState(state.count + 1, adam_state)

    return optax.GradientTransformation(init, update)


# ---- NorMuon ---------------------------------------------------------------------------------------------
def polar_express(matrix, *, epsilon: float, dtype=jnp.bfloat16):
    """Approximate polar factor (the nearest semi-orthogonal matrix) of ``[..., rows, cols]`` in ``dtype``.
    Each iteration works on the Gram matrix of the shorter side."""
    x = matrix.astype(dtype)
    norm = jnp.sqrt(jnp.sum(jnp.square(x.astype(jnp.float32)), axis=(-2, -1), keepdims=True)).astype(dtype)
    x = x / (norm * POLAR_EXPRESS_SAFETY + epsilon)
    rows_side = x.shape[-2] < x.shape[-1]

    def iteration(x, coefficients):
        a, b, c = (coefficient.astype(dtype) for coefficient in coefficients)
        if rows_side:
            gram = x @ jnp.swapaxes(x, -1, -2)
            return a * x + (b * gram + c * (gram @ gram)) @ x, None
        gram = jnp.swapaxes(x, -1, -2) @ x
        return a * x + x @ (b * gram + c * (gram @ gram)), None

    # A loop, not five unrolled copies: one per matrix of the model, compile time matters.
    return jax.lax.scan(iteration, x, jnp.asarray(POLAR_EXPRESS_COEFFICIENTS, jnp.float32))[0]


class UmupNorMuonState(NamedTuple):
    count: jax.Array
    momentum: Any  # like the parameters
    neuron_variance: dict[str, jax.Array]  # per fused matrix: [*stack, 1, fan_out], replicated (small)


def _matrix_groups(specs: dict[tuple, ParamSpec], paths) -> dict[str, list[tuple]]:
    """Paths of the given leaves grouped into the matrices NorMuon orthogonalises (a fused group or one)."""
    groups = defaultdict(list)
    for path in paths:
        spec = specs[path]
        groups["/".join(map(str, spec.fused or path))].append(path)
    return dict(groups)


def umup_normuon(
    specs: dict[tuple, ParamSpec],
    learning_rate: float,
    *,
    momentum: float = 0.95,
    beta2: float = 0.95,
    weight_decay: float = 0.0,
    epsilon: float = 1e-7,
    nesterov: bool = True,
    cautious_weight_decay: bool = True,
    orthogonalisation_dtype=jnp.bfloat16,
    schedule: Schedule | None = None,
) -> optax.GradientTransformation:
    """NorMuon (arXiv:2510.05491) on matrix parameters, as dion's NorMuon behind dd-unit-scaling (whose
    defaults these are): momentum ``M = momentum * M + g`` (Nesterov: orthogonalise ``momentum * M + g``),
    rounded to bfloat16 and orthogonalised by Polar Express in ``orthogonalisation_dtype``; per output neuron an EMA of
    the update's mean square (``beta2``) normalises it, rescaled to keep its Frobenius norm; the step is
    ``lr * depth ** -1/2 * sqrt(fan_out / fan_in)``. Cautious weight decay only decays entries whose sign
    agrees with the update's.

    Fused matrices (attention's q/k/v, the SwiGLU's up/gate) are treated as the one matrix the reference
    holds: their kernels are joined along the output axis (the order of the blocks does not matter: the
    polar factor and the per-neuron normalisation commute with permuting columns). Use only on "weight" /
    "output" kernels (``umup_normuon_adamw`` routes the rest to AdamW).
    """

    def matrices(tree, paths):
        """The group's leaves as one [*stack, fan_in, fan_out] matrix, and the fan-out widths of the blocks."""
        blocks = [tree[p].reshape(*tree[p].shape[: specs[p].stacked_axes + 1], -1) for p in paths]
        return jnp.concatenate(blocks, axis=-1), [b.shape[-1] for b in blocks]

    def flat(tree) -> dict[tuple, jax.Array]:
        return {spec_path(path): leaf for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}

    def init(params):
        flat_params = flat(params)
        variance = {}
        for name, paths in _matrix_groups(specs, flat_params).items():
            for path in paths:
                if specs[path].mup_type not in ("weight", "output"):
                    raise ValueError(f"NorMuon takes matrices; {'.'.join(map(str, path))} is {specs[path].mup_type!r}")
            matrix, _ = matrices(flat_params, paths)
            variance[name] = jnp.zeros((*matrix.shape[:-2], 1, matrix.shape[-1]), jnp.float32)
        momentum_state = jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), params)
        return UmupNorMuonState(jnp.zeros((), jnp.int32), momentum_state, variance)

    def update(updates, state, params=None):
        if params is None:
            raise ValueError("umup_normuon needs the parameters (for weight decay)")
        new_momentum = jax.tree.map(lambda m, g: momentum * m + g.astype(jnp.float32), state.momentum, updates)
        directions = jax.tree.map(lambda m, g: momentum * m + g.astype(jnp.float32), new_momentum, updates) \
            if nesterov else new_momentum  # fmt: skip
        flat_directions, flat_params = flat(directions), flat(params)
        multiplier = _multiplier(schedule, state.count)
        steps, variance = {}, {}
        for name, paths in _matrix_groups(specs, flat_directions).items():
            direction, widths = matrices(flat_directions, paths)
            fan_in, fan_out = direction.shape[-2:]
            # dion rounds the momentum to bfloat16 (for communication) whatever it orthogonalises in.
            orthogonal = polar_express(
                direction.astype(jnp.bfloat16), epsilon=epsilon, dtype=orthogonalisation_dtype
            ).astype(jnp.float32)
            normalised, variance[name] = _normalise_neurons(orthogonal, state.neuron_variance[name], beta2)
            rate = learning_rate * muon_lr_scale(specs[paths[0]]) * math.sqrt(fan_out / fan_in)
            offsets = [sum(widths[:i]) for i in range(len(widths) + 1)]
            for path, start, stop in zip(paths, offsets[:-1], offsets[1:]):
                param = flat_params[path]
                block = normalised[..., start:stop].reshape(param.shape)
                decayed = param * (param * block >= 0) if cautious_weight_decay else param
                steps[path] = (-multiplier * (rate * block + weight_decay * decayed)).astype(param.dtype)
        new_updates = jax.tree_util.tree_map_with_path(lambda path, _: steps[spec_path(path)], updates)
        return new_updates, UmupNorMuonState(state.count + 1, new_momentum, variance)

    return optax.GradientTransformation(init, update)


def _normalise_neurons(update, variance, beta2: float):
    """Divide each output neuron (column) by the root of an EMA of its mean square, keeping the Frobenius norm."""
    norm = jnp.sqrt(jnp.sum(jnp.square(update), axis=(-2, -1), keepdims=True))
    variance = variance + (1 - beta2) * (jnp.mean(jnp.square(update), axis=-2, keepdims=True) - variance)
    normalised = update / (jnp.sqrt(variance) + 1e-8)
    new_norm = jnp.sqrt(jnp.sum(jnp.square(normalised), axis=(-2, -1), keepdims=True))
    return normalised * (norm / jnp.maximum(new_norm, 1e-8)), variance


def normuon_labels(specs: dict[tuple, ParamSpec], adam_types=("bias", "norm")) -> Callable[[Any], Any]:
    """optax.multi_transform labels: "adamw" for the given u-muP types, "normuon" for the other (matrix) ones."""

    def labels(params):
        return _map_with_specs(specs, lambda spec, _: "adamw" if spec.mup_type in adam_types else "normuon", params)

    return labels


def umup_normuon_adamw(
    specs: dict[tuple, ParamSpec],
    normuon: dict,
    adamw: dict,
    *,
    adam_types=("bias", "norm"),
) -> optax.GradientTransformation:
    """NorMuon on the matrices and AdamW on ``adam_types`` (the split dd-unit-scaling asks for: its NorMuon
    takes matrices only); ``normuon`` / ``adamw`` are the keyword arguments of each (a learning rate each)."""
    return optax.multi_transform(
        {"normuon": umup_normuon(specs, **normuon), "adamw": umup_adamw(specs, **adamw)},
        normuon_labels(specs, adam_types),
    )
