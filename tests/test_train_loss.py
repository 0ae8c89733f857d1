"""Loss and gradient parity with the reference's fine-tuning module (toto-ts 0.2.0)."""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx
from reference import (
    make_reference,
    reference_config,
    reference_training_batch,
    relative_error,
    save_reference,
)

from toto_jax.checkpoint import load
from toto_jax.models.toto1.distribution import StudentTMixture
from toto_jax.sharding import make_mesh
from toto_jax.train.config import TrainConfig
from toto_jax.train.loss import loss_terms, pointwise_losses, robust_loss
from toto_jax.train.optimizer import warmup_stable_decay
from toto_jax.train.trainer import TrainProgram

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from gluonts.torch.distributions.studentT import StudentT as ReferenceStudentT
    from toto.model.lightning_module import TotoForFinetuning
    from toto.model.losses import CombinedLoss, GeneralRobustLoss, NegativeLogLikelihood
    from toto.model.scheduler import WarmupStableDecayLR


def random_mixture(rng, shape, k):
    df = 2.0 + rng.gamma(2.0, 2.0, shape + (k,)).astype(np.float32)
    loc = rng.normal(0, 1, shape + (k,)).astype(np.float32)
    scale = rng.uniform(0.05, 2.0, shape + (k,)).astype(np.float32)
    logits = rng.normal(0, 2, shape + (k,)).astype(np.float32)
    return df, loc, scale, logits


def reference_mixture(df, loc, scale, logits):
    t = lambda x: torch.as_tensor(x)  # noqa: E731
    probs = torch.softmax(t(logits), -1)
    return torch.distributions.MixtureSameFamily(
        torch.distributions.Categorical(probs=probs), ReferenceStudentT(t(df), t(loc), t(scale))
    )


def test_pointwise_nll_and_combined_loss_match_reference():
    rng = np.random.default_rng(0)
    df, loc, scale, logits = random_mixture(rng, (3, 4, 32), 5)
    # targets near and far from the bulk (far ones exercise the log-sum-exp)
    target = (rng.standard_t(3, (3, 4, 32)) * rng.choice([0.5, 5.0, 50.0], (3, 4, 32))).astype(np.float32)
    ours = StudentTMixture(*map(jnp.asarray, (df, loc, scale, logits)))
    combined, nll, robust = pointwise_losses(ours, jnp.asarray(target))
    reference = reference_mixture(df, loc, scale, logits)
    tt = torch.as_tensor(target)
    assert relative_error(nll, NegativeLogLikelihood()(reference, tt).numpy()) <= 1e-5
    assert relative_error(combined, CombinedLoss()(reference, tt).numpy()) <= 1e-5
    assert relative_error(robust, GeneralRobustLoss(delta=0.1, alpha=0.0)(reference, tt).numpy()) <= 1e-5


@pytest.mark.parametrize("alpha", [2.0, 1.0, -2.0, float("-inf")])
def test_robust_loss_shapes_match_reference(alpha):
    rng = np.random.default_rng(1)
    df, loc, scale, logits = random_mixture(rng, (50,), 3)
    target = rng.normal(0, 3, (50,)).astype(np.float32)
    reference = GeneralRobustLoss(delta=0.3, alpha=alpha)(reference_mixture(df, loc, scale, logits), torch.as_tensor(target))
    mean = StudentTMixture(*map(jnp.asarray, (df, loc, scale, logits))).mean
    assert relative_error(robust_loss(mean, jnp.asarray(target), 0.3, alpha), reference.numpy()) <= 1e-5
    with pytest.raises(ValueError, match="alpha"):
        robust_loss(mean, jnp.asarray(target), 0.3, 2.5)


def test_masked_mean_matches_reference_reduction_and_ignores_padding_content():
    rng = np.random.default_rng(2)
    shape = (2, 3, 16)
    df, loc, scale, logits = random_mixture(rng, shape, 4)
    target = rng.normal(5, 2, shape).astype(np.float32)
    model_loc = rng.normal(5, 1, shape).astype(np.float32)
    model_scale = rng.uniform(0.5, 3, shape).astype(np.float32)
    mask = rng.random(shape) > 0.3
    # reference reduction, as in TotoForFinetuning._train_or_val_step
    eps = torch.finfo(torch.float32).eps
    scaled = (torch.as_tensor(target) - torch.as_tensor(model_loc)) / (torch.as_tensor(model_scale) + eps)
    losses = CombinedLoss()(reference_mixture(df, loc, scale, logits), scaled) * torch.as_tensor(mask)
    expected = (losses.sum() / (torch.as_tensor(mask).sum() + eps)).item()

    distribution = StudentTMixture(*map(jnp.asarray, (df, loc, scale, logits)))
    terms = loss_terms(distribution, model_loc, model_scale, target, mask)
    assert abs(float(terms.means()["loss"]) - expected) <= 1e-5 * abs(expected)
    assert float(terms.count) == mask.sum()
    # padded targets may hold NaN or garbage: neither the loss nor its gradient sees them
    garbage = np.where(mask, target, np.float32(np.nan))
    garbage[0, 0, 0] = np.nan if not mask[0, 0, 0] else garbage[0, 0, 0]
    grad = jax.jit(jax.grad(
        lambda l: loss_terms(StudentTMixture(df, l, scale, logits), model_loc, model_scale, garbage, mask).loss
    ))(jnp.asarray(loc))  # fmt: skip
    assert np.isfinite(np.asarray(grad)).all()
    assert float(loss_terms(distribution, model_loc, model_scale, garbage, mask).loss) == pytest.approx(float(terms.loss), rel=1e-6)


def test_exogenous_variates_are_excluded():
    rng = np.random.default_rng(3)
    shape = (2, 4, 8)
    distribution = StudentTMixture(*map(jnp.asarray, random_mixture(rng, shape, 2)))
    target = rng.normal(0, 1, shape).astype(np.float32)
    ones, zeros = np.ones(shape, np.float32), np.zeros(shape, np.float32)
    mask = np.ones(shape, bool)
    with_exogenous = loss_terms(distribution, zeros, ones, target, mask, num_exogenous_variables=1)
    manual = mask.copy()
    manual[:, -1] = False
    assert with_exogenous == loss_terms(distribution, zeros, ones, target, manual)
    assert float(with_exogenous.count) == 2 * 3 * 8


def test_schedule_matches_reference_wsd():
    params = [torch.nn.Parameter(torch.zeros(1))]
    optimizer = torch.optim.AdamW(params, lr=1e-3)
    reference = WarmupStableDecayLR(optimizer, warmup_steps=5, stable_steps=4, decay_steps=7, min_lr=1e-5, base_lr=1e-3)
    ours = warmup_stable_decay(1e-3, 1e-5, 5, 4, 7)
    for step in range(20):
        assert float(ours(step)) == pytest.approx(optimizer.param_groups[0]["lr"], rel=1e-6), step
        optimizer.step()
        reference.step()


# ---- end to end: the reference's training step vs ours on the same weights and batch ----------------


@pytest.fixture(scope="module")
def reference_and_ours(tmp_path_factory):
    config = reference_config(patch_size=8, embed_dim=32, num_layers=2, num_heads=4, k_components=3)
    reference = make_reference(config, seed=4)
    directory = save_reference(reference, config, tmp_path_factory.mktemp("reference"))
    model = load(directory)
    rng = np.random.default_rng(5)
    batch, variates, context, patch = 2, 3, 32, 8
    series = (rng.normal(0, 1, (batch, variates, context + patch)).cumsum(-1) * 3 + 10).astype(np.float32)
    padding_mask = np.ones(series.shape, bool)
    padding_mask[0, 1, :13] = False  # left padding, as the reference's data module makes
    padding_mask[1, 2, -5:] = False  # padded targets
    series[~padding_mask] = 0.0
    id_mask = np.zeros(series.shape, np.int32)
    id_mask[1, 2] = 1
    data = {"series": series, "padding_mask": padding_mask, "id_mask": id_mask}
    return reference, model, data


def reference_training_loss(reference, data, patch):
    module = TotoForFinetuning(pretrained_backbone=reference.model)
    module.log = lambda *args, **kwargs: None  # no Lightning trainer attached
    batch = reference_training_batch(data, patch)
    module.zero_grad()
    loss = module._train_or_val_step(batch, is_train=True)
    loss.backward()
    grads = {name: p.grad.numpy() for name, p in module.named_parameters() if p.grad is not None}
    return loss.item(), grads


def test_training_loss_and_gradients_match_reference(reference_and_ours):
    from toto_jax.checkpoint.torch_format import state_to_torch_tensors

    reference, model, data = reference_and_ours
    config = TrainConfig(model=model.config).to_dict()
    config["data"].update(patch_size=8, context_length=32, num_variates=3, batch_size=2)
    program = TrainProgram(TrainConfig.from_dict(config), make_mesh((1, 1, 1), devices=jax.devices()[:1]))
    params = nnx.state(model, nnx.Param)
    batch = {k: jnp.asarray(v) for k, v in data.items()}

    def mean_loss(params):
        loss_sum, terms = program._loss_sums(params, batch, None)
        return loss_sum / (terms.count + np.finfo(np.float32).eps), terms

    gradient = jax.jit(jax.value_and_grad(mean_loss, has_aux=True), compiler_options={"xla_backend_optimization_level": 0})
    (loss, terms), grads = gradient(params)
    expected_loss, expected_grads = reference_training_loss(reference, data, patch=8)
    assert abs(float(loss) - expected_loss) <= 1e-5 * abs(expected_loss)
    assert float(terms.count) == data["padding_mask"][..., 8:].sum()

    ours = state_to_torch_tensors(model.config, grads)
    assert set(ours) == set(expected_grads)
    errors = {name: relative_error(ours[name], expected_grads[name]) for name in expected_grads}
    worst = max(errors, key=errors.get)
    assert errors[worst] <= 1e-4, (worst, errors[worst])
