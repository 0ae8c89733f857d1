"""Training loss: Student-T mixture NLL combined with Barron's robust loss on the mixture mean.

Everything is computed on targets normalised by the model's own loc/scale (the scaled space the
distribution lives in), masked by padding, and reduced to *sums* plus a valid-point count so that
microbatches and devices combine into one exact global mean.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from ..models.toto1.distribution import StudentTMixture

# The reference adds float32 eps to the scale and to the valid-point count before dividing.
_EPS = float(jnp.finfo(jnp.float32).eps)


class LossWeights(NamedTuple):
    lambda_nll: float = 0.575  # the robust loss gets 1 - lambda_nll
    robust_delta: float = 0.1
    robust_alpha: float = 0.0


def negative_log_likelihood(distribution: StudentTMixture, target) -> jax.Array:
    """Pointwise -log p(target); the mixture sums components with a log-sum-exp."""
    return -distribution.log_prob(target)


def robust_loss(prediction, target, delta: float = 0.1, alpha: float = 0.0) -> jax.Array:
    """Barron's general robust loss (arXiv:1701.03077) of ``prediction - target`` with scale ``delta``."""
    if alpha > 2:
        raise ValueError(f"robust loss alpha must be <= 2, got {alpha}")
    squared = ((prediction - target) / delta) ** 2
    if alpha == 2:
        return 0.5 * squared
    if alpha == 0:
        return jnp.log1p(0.5 * squared)
    if alpha == float("-inf"):
        return -jnp.expm1(-0.5 * squared)
    shift = abs(alpha - 2.0)
    return shift / alpha * ((squared / shift + 1.0) ** (alpha / 2.0) - 1.0)


class LossTerms(NamedTuple):
    """Sums over valid points (divide by ``count`` for means)."""

    loss: jax.Array
    nll: jax.Array
    robust: jax.Array
    count: jax.Array

    def __add__(self, other: "LossTerms") -> "LossTerms":  # type: ignore[override]
        return LossTerms(*(a + b for a, b in zip(self, other)))

    def means(self) -> dict[str, jax.Array]:
        denominator = self.count + _EPS
        return {"loss": self.loss / denominator, "nll": self.nll / denominator, "robust": self.robust / denominator}


def pointwise_losses(distribution: StudentTMixture, scaled_target, weights: LossWeights = LossWeights()):
    """(combined, nll, robust) at every point of ``scaled_target``."""
    nll = negative_log_likelihood(distribution, scaled_target)
    robust = robust_loss(distribution.mean, scaled_target, weights.robust_delta, weights.robust_alpha)
    return weights.lambda_nll * nll + (1.0 - weights.lambda_nll) * robust, nll, robust


def loss_mask(target_padding_mask, target, num_exogenous_variables: int = 0) -> jax.Array:
    """Points that count: real (not padded, not NaN) values of the non-exogenous variates.

    Exogenous variables are the last ``num_exogenous_variables`` variates (axis -2). (The reference's
    fine-tuning module writes ``mask[..., -n:] = False``, which masks the last *time steps* instead.)
    """
    mask = jnp.asarray(target_padding_mask, bool) & ~jnp.isnan(target)
    if num_exogenous_variables > 0:
        variates = mask.shape[-2]
        mask = mask & (jnp.arange(variates) < variates - num_exogenous_variables)[:, None]
    return mask


def loss_terms(
    distribution: StudentTMixture,
    loc,
    scale,
    target,
    target_padding_mask,
    *,
    num_exogenous_variables: int = 0,
    weights: LossWeights = LossWeights(),
) -> LossTerms:
    """Masked loss sums for data-space ``target`` [batch, variate, time] (the input shifted by one patch).

    The model's ``loc``/``scale`` (computed causally on the input) normalise the target, so the
    prediction for step t + patch uses the statistics known at step t.
    """
    mask = loss_mask(target_padding_mask, target, num_exogenous_variables)
    # Padded targets may hold anything (NaN included); replace them so no NaN reaches the gradient.
    safe_target = jnp.where(mask, target, loc)
    scaled_target = (safe_target - loc) / (scale + _EPS)
    combined, nll, robust = pointwise_losses(distribution, scaled_target, weights)
    total = lambda x: jnp.sum(jnp.where(mask, x, 0.0), dtype=jnp.float32)  # noqa: E731
    return LossTerms(total(combined), total(nll), total(robust), jnp.sum(mask, dtype=jnp.float32))


def split_batch(series, padding_mask, id_mask, patch_size: int):
    """A training window [..., T + patch] -> model inputs [..., :T] and targets [..., patch:]."""
    inputs = (series[..., :-patch_size], padding_mask[..., :-patch_size], id_mask[..., :-patch_size])
    targets = (series[..., patch_size:], padding_mask[..., patch_size:])
    return inputs, targets
