"""Toto 2.0 training groundwork against toto-2 / dd-unit-scaling: gradients through the u-muP backward scales
(``jax.grad`` vs ``torch.autograd`` on the same random weights, every parameter mapped through the checkpoint
layout), and steps of the u-muP AdamW and NorMuon (vs dd-unit-scaling's ``AdamW`` and ``NorMuon``, the
latter on dion's NorMuon; skipped where dion is not installed).

Tolerance: 1e-4 relative per tensor (norm of the difference over the reference's norm), for gradients,
parameters after two optimiser steps and the steps themselves (the parameter changes).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec
from reference2 import CONFIGS, config_dict, make_reference

from toto_jax.checkpoint.torch_format import model_from_tensors, torch_tensors
from toto_jax.models.toto2 import Toto2Config
from toto_jax.train import umup

TOLERANCE = 1e-4
TINY = Path(__file__).parents[1] / "experiments" / "configs" / "toto2_tiny.yaml"
WEIGHT_DECAY = 0.1  # lr-independent in both; NorMuon's cautious decay included
# Every kind of parameter: biases, q/k norm weights, layer norm weights, per-dimension scales, grouped heads.
OPTIMIZER_CONFIG = config_dict(num_groups=2, num_layers=2, attn_bias=True, mlp_bias=True, per_dim_scale=True,
                               norm_include_weight=True, qk_norm_include_weight=True)  # fmt: skip


def relative(actual, expected) -> float:
    expected = np.asarray(expected, np.float64)
    return float(np.linalg.norm(np.asarray(actual, np.float64) - expected) / np.linalg.norm(expected))


def models(config: dict, seed: int = 1):
    reference = make_reference(config, seed=seed)
    tensors = {name: tensor.detach().numpy() for name, tensor in reference.state_dict().items()}
    return reference, model_from_tensors(Toto2Config.from_dict(config), tensors)


def inputs(seed: int = 0):
    rng = np.random.default_rng(seed)
    series = (3.0 + rng.standard_normal((2, 3, 32))).astype(np.float32)
    mask = np.ones(series.shape, bool)
    mask[0, 1, :5] = False
    series_ids = np.array([[0, 0, 1], [0, 1, 2]], np.int32)
    return series, mask, series_ids


def torch_layout(model, tree) -> dict[str, np.ndarray]:
    """A tree shaped like the model's parameters (gradients, parameters) in the reference's tensor names."""
    graphdef, _, rest = nnx.split(model, nnx.Param, ...)
    return torch_tensors(nnx.merge(graphdef, tree, rest))


# ---- gradients -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["per_dim_scale_bias", "gqa_variate_last"])
def test_gradients_match_reference(name):
    """sum(quantiles * fixed random weights): every parameter's gradient as the reference's autograd."""
    reference, model = models(config_dict(**{**CONFIGS[name], "num_layers": 2}))
    series, mask, series_ids = inputs()
    output = reference(torch.as_tensor(series), torch.as_tensor(mask), torch.ones(series.shape, dtype=torch.bool),
                       torch.as_tensor(series_ids, dtype=torch.int64))  # fmt: skip
    weights = np.random.default_rng(1).standard_normal(tuple(output.quantiles.shape)).astype(np.float32)
    (output.quantiles * torch.as_tensor(weights)).sum().backward()

    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    def loss(params):
        return jnp.sum(nnx.merge(graphdef, params, rest)(series, mask, series_ids).quantiles * weights)

    gradients = torch_layout(model, jax.jit(jax.grad(loss))(params))
    errors = {key: relative(gradients[key], p.grad.numpy()) for key, p in reference.named_parameters()}
    assert len(errors) == len([k for k in gradients if not k.endswith("_tau")])
    worst = max(errors, key=errors.get)
    assert errors[worst] <= TOLERANCE, (worst, errors[worst])


def test_backward_scales_change_gradients_not_values():
    """scale_grad: value times the forward scale, gradient times the backward one (a tau array included)."""
    from toto_jax.models.toto2.unit_scaled import residual_add, residual_split, scale_grad

    x = jnp.arange(1.0, 4.0)
    value, grad = jax.value_and_grad(lambda x: jnp.sum(scale_grad(x, 3.0, 0.5) * x))(x)
    assert float(value) == pytest.approx(3.0 * 14.0) and np.allclose(grad, 3.0 * x + 0.5 * x)
    tau = jnp.float32(0.75)  # branch 0.6, skip 0.8 of sqrt(1 + tau^2) = 1.25

    def through_residual(x):
        branch, skip = residual_split(x, tau)
        return jnp.sum(residual_add(2.0 * branch, skip, tau))

    value, grad = jax.value_and_grad(through_residual)(x)
    assert float(value) == pytest.approx((0.6 * 2.0 + 0.8) * 6.0, rel=1e-6)
    assert np.allclose(grad, 0.6 * 2.0 + 0.8)


def test_fast_train_step_keeps_the_math(monkeypatch):
    """The step's speed-ups change no number: the layer groups as a Python loop (instead of ``lax.scan``) and
    ``residual_split``'s hand-written gradient (summed as [tokens, features]) give the loss, every gradient and
    one NorMuon update of the plain forms (a scan, and two ``scale_grad`` branches summed by autodiff) to float32
    rounding. Three layer groups of the published attention, so both residual factors and the group order count."""
    from toto_jax.data import make_iterator
    from toto_jax.models.toto2 import transformer, unit_scaled
    from toto_jax.sharding import make_mesh, use_mesh
    from toto_jax.train.config import load_config
    from toto_jax.train.trainer import TrainProgram

    config = load_config(TINY, ["model.num_layers=6", "model.layer_group_size=2", "mesh.shape=[1,1,1]"])
    program = TrainProgram(config, make_mesh((1, 1, 1), devices=jax.devices()[:1]))
    state = program.init(config.seed)
    batch = program.put_batch(next(make_iterator(config.data)))
    batch["hidden"] = program.hidden_spans(state.rng, state.step, batch["series"].shape)

    def loss_gradients_update():  # traced anew on each call (jax.jit caches by function)
        def run(params, opt_state):
            with use_mesh(program.mesh, program.rules):
                loss, gradients = jax.value_and_grad(lambda p: program._loss_sums(p, batch, None)[0])(params)
                return loss, gradients, program.tx.update(gradients, opt_state, params)[0]

        return jax.jit(run)(state.params, state.opt_state)

    def plain_split(x, tau):
        branch_factor, skip_factor = unit_scaled._tau_factors(tau)
        return unit_scaled.scale_grad(x, 1.0, branch_factor), unit_scaled.scale_grad(x, 1.0, skip_factor)

    fast = loss_gradients_update()
    monkeypatch.setattr(transformer, "UNROLLED_GROUPS", 0)
    monkeypatch.setattr(transformer, "residual_split", plain_split)
    monkeypatch.setattr(unit_scaled, "residual_split", plain_split)
    plain = loss_gradients_update()
    assert float(plain[0]) > 0 and float(fast[0]) == pytest.approx(float(plain[0]), rel=1e-6)
    # NorMuon rounds its input to bfloat16 (as dion does), so float32 rounding differences of the gradients
    # flip a few of those roundings: the update agrees to bfloat16's precision, the gradients to float32's.
    for name, fast_tree, plain_tree, tolerance in (("gradient", fast[1], plain[1], 1e-5),
                                                   ("update", fast[2], plain[2], 2e-2)):  # fmt: skip
        # The key biases' gradients are zero in exact arithmetic (softmax ignores a shift shared by a query's
        # logits): rounding noise in both forms, held to a floor at the tree's scale.
        floor = 1e-6 * max(np.linalg.norm(b) for b in jax.tree.leaves(plain_tree))
        for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(fast_tree), jax.tree.leaves(plain_tree)):
            error = np.linalg.norm(np.asarray(a, np.float64) - np.asarray(b, np.float64))
            assert error <= tolerance * np.linalg.norm(b) + floor, (name, jax.tree_util.keystr(path), relative(a, b))


# ---- optimisers ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def optimizer_setup():
    """Reference and JAX models with equal weights, two rounds of equal random gradients, the specs."""
    reference, model = models(OPTIMIZER_CONFIG, seed=2)
    rng = np.random.default_rng(3)
    torch_gradients = [
        {name: rng.standard_normal(p.shape).astype(np.float32) for name, p in reference.named_parameters()}
        for _ in range(2)
    ]
    buffers = {name: b.numpy() for name, b in reference.state_dict().items() if name.endswith("_tau")}
    config = Toto2Config.from_dict(OPTIMIZER_CONFIG)
    jax_gradients = [nnx.state(model_from_tensors(config, {**g, **buffers}), nnx.Param) for g in torch_gradients]
    params = nnx.state(model, nnx.Param)
    return reference, model, params, torch_gradients, jax_gradients, umup.param_specs(params)


def torch_steps(parameters, optimizers, gradients, names):
    for round_gradients in gradients:
        for name, p in zip(names, parameters):
            p.grad = torch.as_tensor(round_gradients[name])
        for optimizer in optimizers:
            optimizer.step()


def jax_steps(tx, params, gradients):
    state = tx.init(params)

    def step(gradients, state, params):
        updates, state = tx.update(gradients, state, params)
        return optax.apply_updates(params, updates), state

    # Compiled once: the second call's (committed) inputs would otherwise make jit compile again.
    step = jax.jit(step).lower(gradients[0], state, params).compile()
    for round_gradients in gradients:
        params, state = step(round_gradients, state, params)
    return params


def compare_parameters(reference, model, before, after_tree):
    """Parameters after the steps, and the steps themselves, per tensor against the reference's."""
    after = torch_layout(model, after_tree)
    worst_param, worst_update = ("", 0.0), ("", 0.0)
    for name, p in reference.named_parameters():
        expected = p.detach().numpy()
        worst_param = max(worst_param, (name, relative(after[name], expected)), key=lambda t: t[1])
        worst_update = max(worst_update, (name, relative(after[name] - before[name], expected - before[name])),
                           key=lambda t: t[1])  # fmt: skip
    assert worst_param[1] <= TOLERANCE, worst_param
    assert worst_update[1] <= TOLERANCE, worst_update


def test_param_specs_follow_reference_mup_types(optimizer_setup):
    """Each tensor's (mup_type, depth) as the reference's uu.Parameter carries it, through the layout."""
    reference, model, params, _, _, specs = optimizer_setup

    def code(mup_type, depth):
        return umup.MUP_TYPES.index(mup_type) * 100 + (depth or 0)

    coded = jax.tree_util.tree_map_with_path(
        lambda path, leaf: np.full(leaf.shape, code(specs[umup.spec_path(path)].mup_type,
                                                    specs[umup.spec_path(path)].depth), np.float32),
        params,
    )  # fmt: skip
    in_torch_layout = torch_layout(model, coded)
    for name, p in reference.named_parameters():
        assert np.all(in_torch_layout[name] == code(p.mup_type, p.mup_scaling_depth)), name
    fan_ins = {spec.fan_in for path, spec in specs.items() if path[-1] == "kernel" and "attention" in path}
    assert fan_ins == {OPTIMIZER_CONFIG["d_model"]}


def test_adamw_matches_dd_unit_scaling(optimizer_setup):
    import dd_unit_scaling as uu

    reference, model, params, torch_gradients, jax_gradients, specs = optimizer_setup
    reference = make_reference(OPTIMIZER_CONFIG, seed=2)
    before = {name: p.detach().numpy().copy() for name, p in reference.named_parameters()}
    names, parameters = zip(*reference.named_parameters())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        optimizer = uu.AdamW(parameters, lr=0.05, weight_decay=WEIGHT_DECAY)
    torch_steps(parameters, [optimizer], torch_gradients, names)
    tx = umup.umup_adamw(specs, 0.05, weight_decay=WEIGHT_DECAY)
    compare_parameters(reference, model, before, jax_steps(tx, params, jax_gradients))


def reference_normuon(parameters, lr):
    """dd-unit-scaling's NorMuon (dion's, its arguments and learning-rate rule) with Polar Express run in
    float32 instead of bfloat16: bfloat16 rounding grows through the five iterations to ~10% of the update
    (torch bfloat16 vs float32, or torch vs XLA in bfloat16), which no implementation reproduces bit for bit."""
    dion = pytest.importorskip("dion")
    from dd_unit_scaling.optim import _lr_scale_func_muon, scaled_parameters
    from dion.polar_express import _POLAR_EXPRESS_COEFFS

    def polar_express_float32(matrix, epsilon):
        x = matrix.float()
        x = x / (x.norm(dim=(-2, -1), keepdim=True) * 1.02 + epsilon)
        for a, b, c in _POLAR_EXPRESS_COEFFS:
            gram = x @ x.mT if x.size(-2) <= x.size(-1) else x.mT @ x
            update = b * gram + c * gram @ gram
            x = a * x + (update @ x if x.size(-2) <= x.size(-1) else x @ update)
        return x

    groups = scaled_parameters(parameters, _lr_scale_func_muon, lr=lr, weight_decay=WEIGHT_DECAY)
    return dion.NorMuon(groups, lr=lr, mu=0.95, muon_beta2=0.95, weight_decay=WEIGHT_DECAY, epsilon=1e-7,
                        nesterov=True, cautious_wd=True, adjust_lr="spectral_norm",
                        newton_schulz_func=polar_express_float32)  # fmt: skip


@pytest.fixture
def eager_torch():
    """dion compiles its kernels with torch.compile; eager runs the same ops, without compiling on 2 CPUs."""
    with torch.compiler.set_stance("force_eager"):
        yield


def test_normuon_matches_dd_unit_scaling(optimizer_setup, eager_torch):
    """Matrices by NorMuon (cautious weight decay included), vectors by AdamW: two steps as the reference's."""
    import dd_unit_scaling as uu

    _, model, params, torch_gradients, jax_gradients, specs = optimizer_setup
    reference = make_reference(OPTIMIZER_CONFIG, seed=2)
    before = {name: p.detach().numpy().copy() for name, p in reference.named_parameters()}
    names, parameters = zip(*reference.named_parameters())
    matrices = [p for p in parameters if p.ndim == 2]
    vectors = [p for p in parameters if p.ndim < 2]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        optimizers = [reference_normuon(matrices, 0.2), uu.AdamW(vectors, lr=0.05, weight_decay=WEIGHT_DECAY)]
    torch_steps(parameters, optimizers, torch_gradients, names)
    normuon = dict(learning_rate=0.2, weight_decay=WEIGHT_DECAY, orthogonalisation_dtype=jnp.float32)
    tx = umup.umup_normuon_adamw(specs, normuon, dict(learning_rate=0.05, weight_decay=WEIGHT_DECAY))
    compare_parameters(reference, model, before, jax_steps(tx, params, jax_gradients))


def test_adamw_on_sharded_parameters(optimizer_setup):
    """Under jit with every parameter split over 2 CPU devices (where its last axis divides): the same step."""
    _, _, params, _, jax_gradients, specs = optimizer_setup
    mesh = jax.make_mesh((2,), ("model",), devices=jax.devices()[:2])

    def sharded(x):
        spec = PartitionSpec(*(None,) * (x.ndim - 1), "model") if x.ndim and x.shape[-1] % 2 == 0 else PartitionSpec()
        return jax.device_put(x, NamedSharding(mesh, spec))

    tx = umup.umup_adamw(specs, 0.05, weight_decay=WEIGHT_DECAY)
    expected = jax_steps(tx, params, jax_gradients)
    actual = jax_steps(tx, jax.tree.map(sharded, params), [jax.tree.map(sharded, g) for g in jax_gradients])
    kernel = actual["transformer"]["groups"]["layers"][0]["attention"]["q_proj"]["kernel"][...]
    assert len(kernel.sharding.device_set) == 2
    for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected)):
        assert relative(a, e) <= 1e-6
