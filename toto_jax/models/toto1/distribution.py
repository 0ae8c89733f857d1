"""Student-T and mixture-of-Student-T output heads, and the distributions they produce as pure JAX.

A single Student-T is the one-component mixture, so one distribution type serves both heads.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
from flax import nnx

from ...layers.linear import Dense

_EPS = float(jnp.finfo(jnp.float32).eps)


def log_gamma_half_ratio(a):
    """``lgamma(a) - lgamma(a + 1/2)`` for a > 0, to ~1e-6 absolute in float32.

    The two log-gammas cancel for large a (in float32 their difference is off by 1e-4 at a = 500 and by
    whole units beyond 1e5), and XLA's lgamma and its derivative digamma are long kernels. Instead: the
    asymptotic series of the ratio at a + 7 >= 7 (truncation error < 2e-9) and the recurrence
    Gamma(x + 1) = x Gamma(x) back down to a, whose seven factors (1 + 1/(2(a + i))) stay near 1.
    Its gradient is the exact derivative of these few elementwise terms, not a digamma.
    """
    shift = 7
    x = a + shift
    inverse = 1.0 / x
    inverse2 = inverse * inverse
    series = inverse * (1 / 8 - inverse2 * (1 / 192 - inverse2 * (1 / 640 - inverse2 * (17 / 14336))))
    factors = 1.0
    for i in range(shift):
        factors = factors * (1.0 + 0.5 / (a + i))
    return series - 0.5 * jnp.log(x) + jnp.log(factors)


def _log_beta_half(df):
    """log B(df/2, 1/2)."""
    return 0.5 * math.log(math.pi) + log_gamma_half_ratio(0.5 * df)


def student_t_log_prob(x, df, loc, scale):
    y = (x - loc) / scale
    normaliser = jnp.log(scale) + 0.5 * jnp.log(df) + _log_beta_half(df)
    return -0.5 * (df + 1.0) * jnp.log1p(y**2 / df) - normaliser


_CONTINUED_FRACTION_TERMS = 12
_TINY = 1e-30


def _student_t_standard_cdf(y, df, log_beta):
    """P(T <= y) for T ~ Student-T(df), ``log_beta = _log_beta_half(df)``.

    The tail is I_z(df/2, 1/2) / 2 with z = df / (df + y^2): a continued fraction (modified Lentz) in
    whichever of I_z(df/2, 1/2) and 1 - I_w(1/2, df/2), w = y^2 / (df + y^2), converges fast, with w
    computed directly rather than as 1 - z. Twelve terms stay within 3e-6 of scipy for df in [2, 1000]
    (XLA's float32 betainc, through 1 - z: 1e-4 to 2e-3), at a fifteenth of its cost. The terms are unrolled,
    so one evaluation is one fused kernel (2.2x faster than a loop writing its state back at every term).
    """
    y2 = y * y
    z, w = df / (df + y2), y2 / (df + y2)
    a = 0.5 * df
    rapid = z < (a + 1.0) / (a + 2.5)
    p, q, x = jnp.where(rapid, a, 0.5), jnp.where(rapid, 0.5, a), jnp.where(rapid, z, w)
    guard = lambda v: jnp.where(jnp.abs(v) < _TINY, _TINY, v)  # noqa: E731

    def term(m, state):
        c, d, h = state
        m = m.astype(x.dtype)
        for numerator in (m * (q - m) * x / ((p - 1.0 + 2.0 * m) * (p + 2.0 * m)),
                          -(p + m) * (p + q + m) * x / ((p + 2.0 * m) * (p + 1.0 + 2.0 * m))):  # fmt: skip
            d = 1.0 / guard(1.0 + numerator * d)
            c = guard(1.0 + numerator / c)
            h = h * d * c
        return c, d, h

    d = 1.0 / guard(1.0 - (p + q) * x / (p + 1.0))
    _, _, fraction = jax.lax.fori_loop(1, _CONTINUED_FRACTION_TERMS + 1, term, (jnp.ones_like(x), d, d), unroll=True)
    front = jnp.exp(-a * jnp.log1p(y2 / df) + 0.5 * (jnp.log(y2) - jnp.log(df + y2)) - log_beta)  # z^a w^(1/2) / B
    regularised = front * fraction / p
    tail = 0.5 * jnp.where(rapid, regularised, 1.0 - regularised)  # P(|T| >= |y|) / 2
    return jnp.where(y > 0, 1.0 - tail, tail)


def student_t_cdf(x, df, loc, scale):
    """P(X <= x) of a Student-T."""
    return _student_t_standard_cdf((x - loc) / scale, df, _log_beta_half(df))


def mixture_log_weights(logits):
    """Log mixture weights as torch's ``Categorical(probs=softmax(logits))`` computes them.

    torch converts probabilities back to logits through ``log(clamp(p, eps, 1 - eps))``; keeping that
    clamp makes log-likelihoods of nearly-unused components agree with the reference.
    """
    probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
    return jax.nn.log_softmax(jnp.log(jnp.clip(probs, _EPS, 1.0 - _EPS)), axis=-1)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class StudentTMixture:
    """Mixture of Student-T distributions; every field has shape [..., components]."""

    df: jax.Array
    loc: jax.Array
    scale: jax.Array
    logits: jax.Array

    @property
    def weights(self):
        return jax.nn.softmax(self.logits, axis=-1)

    @property
    def mean(self):
        # df > 2 by construction, so each component mean is its location.
        return jnp.sum(self.weights * self.loc, axis=-1)

    def log_prob(self, x):
        component = student_t_log_prob(x[..., None], self.df, self.loc, self.scale)
        return jax.nn.logsumexp(component + mixture_log_weights(self.logits), axis=-1)

    def cdf(self, x):
        return self._cdf_function()(x)

    def tails(self, x):
        """(P(X <= x), P(X >= x)), each summed from its own side's component tails, so a far tail keeps its
        precision instead of becoming 1 - cdf(x) (0 in float32 beyond ~1e-7)."""
        weights, log_beta = self.weights, _log_beta_half(self.df)
        y = (x[..., None] - self.loc) / self.scale
        below = jnp.sum(weights * _student_t_standard_cdf(y, self.df, log_beta), axis=-1)
        above = jnp.sum(weights * _student_t_standard_cdf(-y, self.df, log_beta), axis=-1)
        return below, above

    def _cdf_function(self):
        """The mixture CDF with the parts that do not depend on x computed once (for the bisection)."""
        weights, log_beta = self.weights, _log_beta_half(self.df)

        def cdf(x):
            y = (x[..., None] - self.loc) / self.scale
            return jnp.sum(weights * _student_t_standard_cdf(y, self.df, log_beta), axis=-1)

        return cdf

    def quantile(self, level, halvings: int = 16):
        """Inverse CDF at ``level`` (broadcast against the batch shape): bisection, then one secant step.

        Every component has df > 2, so its quantile lies within loc -/+ scale * |q2|, q2 the closed-form
        quantile of the heavier-tailed df = 2 Student-T; the mixture's quantile lies between its
        components', which brackets it. Halvings shrink the bracket (Newton steps stall on peaked
        mixtures; bisection cannot), and the CDF values kept at its ends place the final point by linear
        interpolation: 16 CDF evaluations reach float32 resolution (about 1e-6 in level), where bisection
        alone needs ~24. The outer ends start with CDF values 0 and 1 rather than evaluated ones: an end that
        no halving moves is 2^-16 of the bracket from the quantile, so its value barely matters.
        """
        level = jnp.clip(level, 1e-6, 1.0 - 1e-6)
        reach = (jnp.abs(2.0 * level - 1.0) / jnp.sqrt(2.0 * level * (1.0 - level)))[..., None]
        low = jnp.min(self.loc - self.scale * reach, axis=-1)
        high = jnp.max(self.loc + self.scale * reach, axis=-1)
        low, high, level = jnp.broadcast_arrays(low, high, level)
        cdf = self._cdf_function()
        cdf_low, cdf_high = jnp.zeros_like(level), jnp.ones_like(level)

        def halve(_, bracket):
            low, high, cdf_low, cdf_high = bracket
            middle = 0.5 * (low + high)
            cdf_middle = cdf(middle)
            below = cdf_middle < level
            return (jnp.where(below, middle, low), jnp.where(below, high, middle),
                    jnp.where(below, cdf_middle, cdf_low), jnp.where(below, cdf_high, cdf_middle))  # fmt: skip

        low, high, cdf_low, cdf_high = jax.lax.fori_loop(0, halvings, halve, (low, high, cdf_low, cdf_high))
        fraction = jnp.clip((level - cdf_low) / jnp.maximum(cdf_high - cdf_low, 1e-12), 0.0, 1.0)
        return low + fraction * (high - low)

    def sample(self, key, shape: tuple[int, ...] = ()):
        """Draws of shape ``shape + batch_shape``."""
        component_key, t_key = jax.random.split(key)
        batch_shape = self.loc.shape[:-1]
        index = jax.random.categorical(component_key, self.logits, axis=-1, shape=shape + batch_shape)
        pick = lambda p: jnp.take_along_axis(  # noqa: E731
            jnp.broadcast_to(p, shape + p.shape), index[..., None], axis=-1
        )[..., 0]
        df, loc, scale = pick(self.df), pick(self.loc), pick(self.scale)
        return loc + scale * jax.random.t(t_key, df, shape + batch_shape)

    def affine(self, loc, scale) -> "AffineTransformed":
        return AffineTransformed(self, loc, scale)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class AffineTransformed:
    """``loc + scale * base``: a scaled-space distribution mapped back to data space."""

    base: StudentTMixture
    loc: jax.Array
    scale: jax.Array

    @property
    def mean(self):
        return self.loc + self.scale * self.base.mean

    def log_prob(self, x):
        return self.base.log_prob((x - self.loc) / self.scale) - jnp.log(jnp.abs(self.scale))

    def quantile(self, level):
        return self.loc + self.scale * self.base.quantile(level)  # scale > 0: the map is increasing

    def sample(self, key, shape: tuple[int, ...] = ()):
        return self.loc + self.scale * self.base.sample(key, shape)


class StudentTHead(nnx.Module):
    """Projects each time step's embedding to mixture parameters (k = 1 for the single Student-T head).

    The model applies it through ``projection`` and ``from_projected``, so that it can fold the
    unembedding into the projection (``Toto.distribution``)."""

    def __init__(self, embed_dim: int, components: int, mixture: bool, *, rngs: nnx.Rngs):
        axes = ("embed", "mixture")
        self.df = Dense(embed_dim, components, axes, rngs=rngs)
        self.loc_proj = Dense(embed_dim, components, axes, rngs=rngs)
        self.scale_proj = Dense(embed_dim, components, axes, rngs=rngs)
        self.mixture_weights = Dense(embed_dim, components, axes, rngs=rngs) if mixture else None

    def projection(self) -> tuple[jax.Array, jax.Array]:
        """The four (three) projections as one float32 kernel [embed, parameters * components] and bias."""
        denses = [self.df, self.loc_proj, self.scale_proj]
        if self.mixture_weights is not None:
            denses.append(self.mixture_weights)
        kernel = jnp.concatenate([d.kernel[...] for d in denses], axis=-1).astype(jnp.float32)
        bias = jnp.concatenate([d.bias[...] for d in denses], axis=-1).astype(jnp.float32)
        return kernel, bias

    def from_projected(self, projected) -> StudentTMixture:
        """``projected``: ``h @ kernel + bias`` of ``projection()`` [..., parameters * components]."""
        parts = jnp.split(projected, 4 if self.mixture_weights is not None else 3, axis=-1)
        df = 2.0 + jnp.maximum(jax.nn.softplus(parts[0]), _EPS)
        scale = jnp.maximum(jax.nn.softplus(parts[2]), _EPS)
        logits = parts[3] if self.mixture_weights is not None else jnp.zeros_like(parts[1])
        return StudentTMixture(df, parts[1], scale, logits)
