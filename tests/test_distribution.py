"""The Student-T mixture's log-density, CDF and quantile function (used by comonotone sampling) against scipy."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from scipy import special, stats

from toto_jax.models.toto1.distribution import StudentTMixture, log_gamma_half_ratio, student_t_cdf


def random_mixture(rng, shape, k):
    df = 2.0 + rng.gamma(2.0, 2.0, shape + (k,))
    loc = rng.normal(0, 3, shape + (k,))
    scale = rng.uniform(0.05, 2.0, shape + (k,))
    logits = rng.normal(0, 2, shape + (k,))
    return df, loc, scale, logits


def scipy_cdf(x, df, loc, scale, logits):
    weights = np.exp(logits - logits.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    return np.sum(weights * stats.t.cdf(x[..., None], df, loc, scale), axis=-1)


def as_mixture(parameters):
    return StudentTMixture(*(jnp.asarray(p, jnp.float32) for p in parameters))


def test_log_gamma_half_ratio_and_its_gradient_match_scipy_where_log_gammas_cancel():
    """lgamma(a) - lgamma(a + 1/2) and its derivative digamma(a) - digamma(a + 1/2), for the Student-T
    normaliser (a = df / 2 > 1) and beyond: the float32 difference of two log-gammas is off by whole units
    at a = 1e6."""
    a = np.concatenate([np.linspace(0.05, 10, 400), np.geomspace(10, 1e7, 400)])
    exact = special.gammaln(a) - special.gammaln(a + 0.5)
    ours = np.asarray(log_gamma_half_ratio(jnp.asarray(a, jnp.float32)), np.float64)
    np.testing.assert_allclose(ours, exact, atol=2e-6)
    gradient = np.asarray(jax.vmap(jax.grad(log_gamma_half_ratio))(jnp.asarray(a, jnp.float32)), np.float64)
    np.testing.assert_allclose(gradient, special.digamma(a) - special.digamma(a + 0.5), rtol=2e-6)


def test_mixture_log_prob_matches_scipy():
    rng = np.random.default_rng(1)
    df, loc, scale, logits = random_mixture(rng, (6, 5), 8)
    df[0, 0, 0] = 5e4  # nearly normal: the log-gamma difference cancels
    x = rng.normal(0, 6, (6, 5))
    ours = np.asarray(as_mixture((df, loc, scale, logits)).log_prob(jnp.asarray(x, jnp.float32)))
    log_weights = logits - special.logsumexp(logits, axis=-1, keepdims=True)
    expected = special.logsumexp(stats.t.logpdf(x[..., None], df, loc, scale) + log_weights, axis=-1)
    np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=1e-5)


def test_cdf_matches_scipy():
    rng = np.random.default_rng(0)
    parameters = random_mixture(rng, (6, 5), 8)
    x = rng.normal(0, 6, (6, 5))
    ours = np.asarray(as_mixture(parameters).cdf(jnp.asarray(x, jnp.float32)))
    np.testing.assert_allclose(ours, scipy_cdf(x, *parameters), atol=2e-6)


def test_student_t_cdf_matches_scipy_from_heavy_tails_to_nearly_normal():
    """The continued fraction keeps float32 accuracy where 1 - z cancels (large df, |y| small)."""
    y = np.concatenate([np.linspace(-60, 60, 1201), np.linspace(-0.05, 0.05, 101), [0.0, 1e-4, -3e4]])
    for df in (2.0001, 2.7, 9.0, 40.0, 250.0, 1000.0):
        ours = np.asarray(student_t_cdf(jnp.asarray(y, jnp.float32), jnp.float32(df), 0.0, 1.0))
        np.testing.assert_allclose(ours, stats.t.cdf(y, df), atol=4e-6, err_msg=f"df={df}")
    shifted = student_t_cdf(jnp.float32(7.0), jnp.float32(5.0), jnp.float32(3.0), jnp.float32(2.0))
    np.testing.assert_allclose(float(shifted), stats.t.cdf(2.0, 5.0), atol=2e-6)


def test_quantile_inverts_the_cdf_across_levels_including_tails():
    rng = np.random.default_rng(1)
    parameters = random_mixture(rng, (4, 3), 8)
    levels = np.array([1e-5, 0.01, 0.2, 0.5, 0.77, 0.99, 1 - 1e-5])[:, None, None] * np.ones((1, 4, 3))
    quantiles = np.asarray(as_mixture(parameters).quantile(jnp.asarray(levels, jnp.float32)), np.float64)
    np.testing.assert_allclose(scipy_cdf(quantiles, *(p[None] for p in parameters)), levels, rtol=1e-4, atol=2e-6)
    assert np.all(np.diff(quantiles, axis=0) > 0)  # increasing in the level


def test_quantile_of_uniform_levels_has_the_sampled_distribution():
    """Inverse-CDF draws and the mixture's own sampler agree in distribution (two-sample KS test)."""
    rng = np.random.default_rng(2)
    mixture = as_mixture(random_mixture(rng, (), 5))
    draws = 4000
    inverse = mixture.quantile(jax.random.uniform(jax.random.key(0), (draws,)))
    direct = mixture.sample(jax.random.key(1), (draws,))
    assert stats.ks_2samp(np.asarray(inverse), np.asarray(direct)).pvalue > 1e-3
    shifted = mixture.quantile(jax.random.uniform(jax.random.key(0), (draws,)) * 0.9)  # a wrong inverse
    assert stats.ks_2samp(np.asarray(shifted), np.asarray(direct)).pvalue < 1e-3
