"""Synthetic series: KernelSynth-style GP compositions and observability shapes.

Everything is a pure function of a ``numpy.random.Generator``; the source
derives that generator from ``(seed, index)`` so series ``i`` is identical in
every process and on every run.

KernelSynth (Ansari et al., Chronos 2024) draws 1-5 kernels from a bank and
combines them with random ``+`` / ``*``. Exact GP sampling costs O(L^3); here
the composition is expanded into a sum of product terms and each term is
sampled with random Fourier features (stationary factors multiply by adding
their spectral frequencies), linear factors multiply the sample by ``(u - c)``
and a white factor makes the term white noise. This keeps the kernel
semantics at O(L * features).
"""

from __future__ import annotations

import dataclasses
import functools
import math

import numpy as np

MINUTES_PER_DAY = 1440
MINUTES_PER_WEEK = 7 * MINUTES_PER_DAY

# Periods (in steps) of the KernelSynth periodic-kernel bank.
KERNELSYNTH_PERIODS = (4, 6, 7, 10, 12, 14, 24, 26, 30, 40, 48, 52, 60, 96, 168, 336, 365)
_FOURIER_FEATURES = 32


# --------------------------------------------------------------------------
# KernelSynth-style Gaussian processes
# --------------------------------------------------------------------------


@dataclasses.dataclass
class _ProductTerm:
    """scale * prod(u - c_i) * g(u), g white noise / stationary GP / constant."""

    scale: float = 1.0
    linear_offsets: tuple[float, ...] = ()
    white: bool = False
    # Each entry draws angular frequencies for one stationary factor.
    spectral: tuple[tuple, ...] = ()

    def times(self, other: "_ProductTerm") -> "_ProductTerm":
        return _ProductTerm(
            scale=self.scale * other.scale,
            linear_offsets=self.linear_offsets + other.linear_offsets,
            white=self.white or other.white,
            spectral=self.spectral + other.spectral,
        )


def _log_bessel_i(order: int, z: float, terms: int = 60) -> float:
    """log I_order(z) by its power series (z is small here: <= 16)."""
    log_terms = [
        (2 * m + order) * math.log(z / 2) - math.lgamma(m + 1) - math.lgamma(m + order + 1)
        for m in range(terms)
    ]
    peak = max(log_terms)
    return peak + math.log(sum(math.exp(t - peak) for t in log_terms))


@functools.lru_cache(maxsize=64)
def _periodic_harmonic_probabilities(length_scale: float, max_harmonic: int = 24) -> np.ndarray:
    """Spectrum of exp(-2 sin^2(pi r / p) / l^2): harmonic k has weight I_k(1/l^2)."""
    z = 1.0 / length_scale**2
    log_weights = np.array([_log_bessel_i(k, z) for k in range(max_harmonic + 1)])
    weights = np.exp(log_weights - log_weights.max())
    weights[1:] *= 2.0  # +k and -k
    return weights / weights.sum()


def _draw_frequencies(rng: np.random.Generator, factor: tuple, count: int) -> np.ndarray:
    kind = factor[0]
    if kind == "rbf":
        (_, length_scale) = factor
        return rng.normal(0.0, 1.0 / length_scale, count)
    if kind == "rq":
        (_, length_scale, alpha) = factor
        # RQ is a Gamma(alpha, rate alpha) scale mixture of RBF kernels.
        precision = rng.gamma(alpha, 1.0 / alpha, count)
        return rng.normal(0.0, 1.0, count) * np.sqrt(precision) / length_scale
    if kind == "periodic":
        (_, period, length_scale) = factor
        probabilities = _periodic_harmonic_probabilities(length_scale)
        chosen = rng.choice(len(probabilities), size=count, p=probabilities)
        return 2.0 * np.pi * chosen / period
    raise ValueError(f"unknown stationary factor {kind!r}")


def _pick(rng: np.random.Generator, options: tuple):
    # rng.choice on a Python sequence converts it to an array first: slow here.
    return options[int(rng.integers(len(options)))]


_LEAF_KINDS = ("constant", "linear", "rbf", "rq", "periodic", "periodic", "white")


def _random_kernel_leaf(rng: np.random.Generator, length: int) -> list[_ProductTerm]:
    """One kernel from the bank, as a sum of product terms (time u = step / length)."""
    kind = _pick(rng, _LEAF_KINDS)
    if kind == "constant":
        return [_ProductTerm(scale=_pick(rng, (0.1, 1.0, 4.0)))]
    if kind == "linear":
        return [_ProductTerm(scale=_pick(rng, (0.5, 1.0, 4.0)), linear_offsets=(float(rng.uniform(-0.5, 1.0)),))]
    if kind == "rbf":
        return [_ProductTerm(spectral=(("rbf", _pick(rng, (0.01, 0.05, 0.1, 0.5, 1.0))),))]
    if kind == "rq":
        factor = ("rq", _pick(rng, (0.02, 0.1, 1.0)), _pick(rng, (0.1, 1.0, 10.0)))
        return [_ProductTerm(spectral=(factor,))]
    if kind == "periodic":
        period_steps = float(_pick(rng, KERNELSYNTH_PERIODS))
        factor = ("periodic", period_steps / length, _pick(rng, (0.5, 1.0, 2.0)))
        return [_ProductTerm(spectral=(factor,))]
    return [_ProductTerm(scale=_pick(rng, (0.01, 0.1, 1.0)), white=True)]


def sample_kernel_composition(rng: np.random.Generator, length: int, max_kernels: int = 5) -> list[_ProductTerm]:
    """KernelSynth composition: reduce 1..max_kernels bank kernels with random + / *."""
    terms = _random_kernel_leaf(rng, length)
    for _ in range(int(rng.integers(1, max_kernels + 1)) - 1):
        leaf = _random_kernel_leaf(rng, length)
        if rng.random() < 0.5:
            terms = terms + leaf
        else:  # distribute the product over the sum
            terms = [a.times(b) for a in terms for b in leaf]
    return terms


def sample_gp(rng: np.random.Generator, terms: list[_ProductTerm], length: int) -> np.ndarray:
    """Draws one function from the GP defined by a sum of product terms."""
    u = np.arange(length, dtype=np.float64) / length
    total = np.zeros(length)
    for term in terms:
        if term.white:
            g = rng.standard_normal(length)
        elif term.spectral:
            freqs = sum(_draw_frequencies(rng, factor, _FOURIER_FEATURES) for factor in term.spectral)
            phases = rng.uniform(0, 2 * np.pi, _FOURIER_FEATURES)
            weights = rng.standard_normal(_FOURIER_FEATURES)
            # float32 halves the cost of the cosines; phase errors stay < 1e-3 rad.
            angles = np.outer(u.astype(np.float32), freqs.astype(np.float32)) + phases.astype(np.float32)
            g = np.cos(angles) @ weights.astype(np.float32) * math.sqrt(2.0 / _FOURIER_FEATURES)
        else:
            g = np.full(length, rng.standard_normal())
        for offset in term.linear_offsets:
            g = g * (u - offset)
        total += math.sqrt(term.scale) * g
    return total


def kernelsynth_series(rng: np.random.Generator, length: int) -> np.ndarray:
    """One KernelSynth-style univariate series, float64 [length]."""
    values = sample_gp(rng, sample_kernel_composition(rng, length), length)
    return values * math.exp(rng.normal(0, 1.5)) + rng.normal(0, 3)


# --------------------------------------------------------------------------
# Observability building blocks (public: the statistics tests use them)
# --------------------------------------------------------------------------


def daily_weekly_profile(rng: np.random.Generator, minutes: np.ndarray, weekly: bool = True) -> np.ndarray:
    """Positive multiplicative seasonality, mean ~1, period 1 day (and 1 week)."""
    day_phase = 2 * np.pi * minutes / MINUTES_PER_DAY
    profile = np.ones_like(minutes, dtype=np.float64)
    amplitude = rng.uniform(0.2, 0.6)
    for harmonic in range(1, int(rng.integers(1, 4)) + 1):
        profile += amplitude / harmonic * np.cos(harmonic * day_phase - rng.uniform(0, 2 * np.pi))
    if weekly:
        day_of_week = (minutes // MINUTES_PER_DAY) % 7
        weekend_factor = rng.uniform(0.4, 0.9)
        profile *= np.where(day_of_week >= 5, weekend_factor, 1.0)
    return np.maximum(profile, 0.05)


def heavy_tailed_noise(rng: np.random.Generator, size: int, degrees_of_freedom: float = 3.0) -> np.ndarray:
    """Student-t noise: occasional large deviations like real latencies."""
    return rng.standard_t(degrees_of_freedom, size)


def spike_train(rng: np.random.Generator, size: int, rate: float, magnitude: float = 1.0) -> np.ndarray:
    """Isolated positive spikes: Bernoulli(rate) times Pareto-distributed heights."""
    hits = rng.random(size) < rate
    heights = magnitude * (1.0 + rng.pareto(2.5, size))
    return np.where(hits, heights, 0.0)


def burst_indicator(rng: np.random.Generator, size: int, rate: float, mean_length: float) -> np.ndarray:
    """0/1 indicator of bursts: starts at ``rate`` per step, geometric lengths."""
    indicator = np.zeros(size)
    for start in np.flatnonzero(rng.random(size) < rate):
        indicator[start : start + int(rng.geometric(1.0 / mean_length))] = 1.0
    return indicator


def level_shifts(rng: np.random.Generator, size: int, rate: float, scale: float = 1.0) -> np.ndarray:
    """Piecewise-constant offsets changing at Bernoulli(rate) change points."""
    jumps = np.where(rng.random(size) < rate, rng.normal(0, scale, size), 0.0)
    return np.cumsum(jumps)


def sawtooth(rng: np.random.Generator, size: int, mean_period: float) -> np.ndarray:
    """GC-like ramps in [0, 1): linear growth, then a drop at jittered cycle ends."""
    out = np.empty(size)
    position = 0
    while position < size:
        cycle = max(2, int(rng.normal(mean_period, 0.2 * mean_period)))
        ramp = np.linspace(0.0, 1.0, cycle, endpoint=False)
        out[position : position + cycle] = ramp[: size - position]
        position += cycle
    return out


def counter_from_rate(rng: np.random.Generator, rate: np.ndarray, reset_probability: float = 0.0) -> np.ndarray:
    """Monotone cumulative counter of a non-negative rate, with rare resets."""
    increments = rng.poisson(np.maximum(rate, 0.0)).astype(np.float64)
    counter = np.cumsum(increments)
    resets = np.flatnonzero(rng.random(len(rate)) < reset_probability)
    for reset in resets:  # process restart: the counter starts again from 0
        counter[reset:] -= counter[reset]
    return counter


def intermittent_counts(rng: np.random.Generator, intensity: np.ndarray) -> np.ndarray:
    """Sparse non-negative integer counts (error counts): Poisson of a small rate."""
    return rng.poisson(np.maximum(intensity, 0.0)).astype(np.float64)


OBSERVABILITY_KINDS = ("traffic", "cpu_percent", "latency", "memory_gc", "counter", "error_count")
STEP_MINUTES = (1, 1, 1, 5, 10, 15, 60)


def observability_group(rng: np.random.Generator, length: int, num_variates: int) -> np.ndarray:
    """A multivariate group of metrics sharing one latent load driver, [v, length]."""
    step = _pick(rng, STEP_MINUTES)
    minutes = (int(rng.integers(0, MINUTES_PER_WEEK)) + np.arange(length)) * step
    driver = daily_weekly_profile(rng, minutes, weekly=rng.random() < 0.7)
    driver *= 1.0 + rng.uniform(0.5, 3.0) * burst_indicator(rng, length, rate=rng.uniform(0, 0.003), mean_length=20)
    driver *= np.exp(level_shifts(rng, length, rate=rng.uniform(0, 0.002), scale=0.3))
    driver /= driver.mean()

    kinds = rng.choice(OBSERVABILITY_KINDS, size=num_variates)
    group = np.stack([metric_from_driver(rng, str(kind), driver, step) for kind in kinds])
    if rng.random() < 0.15:  # collection gaps shared by the whole host
        for start in rng.integers(0, length, size=int(rng.integers(1, 4))):
            group[:, start : start + int(rng.integers(1, 30))] = np.nan
    return group


def metric_from_driver(rng: np.random.Generator, kind: str, driver: np.ndarray, step: int) -> np.ndarray:
    size = len(driver)
    if kind == "traffic":
        level = math.exp(rng.uniform(0, 8))
        noise = 1.0 + 0.05 * rng.standard_normal(size)
        return np.maximum(level * driver * noise + level * spike_train(rng, size, rng.uniform(0, 0.005)), 0.0)
    if kind == "cpu_percent":
        base = rng.uniform(2, 30)
        load = base + rng.uniform(20, 90) * driver + rng.uniform(1, 5) * rng.standard_normal(size)
        load += 100 * spike_train(rng, size, rng.uniform(0, 0.003), magnitude=0.5)
        return np.clip(load, 0.0, 100.0)  # saturation at 100%
    if kind == "latency":
        base = math.exp(rng.uniform(0, 6))
        congestion = base * rng.uniform(0, 1.5) * driver ** rng.uniform(1, 3)
        noise = base * 0.1 * np.abs(heavy_tailed_noise(rng, size, rng.uniform(1.5, 4)))
        return base + congestion + noise + base * spike_train(rng, size, rng.uniform(0, 0.01), magnitude=3)
    if kind == "memory_gc":
        capacity = math.exp(rng.uniform(4, 10))
        ramps = sawtooth(rng, size, mean_period=rng.uniform(10, 200))
        baseline = 0.3 + 0.1 * level_shifts(rng, size, rate=rng.uniform(0, 0.002), scale=1.0)
        return np.maximum(capacity * (baseline + 0.4 * ramps + 0.05 * driver), 0.0)
    if kind == "counter":
        rate = math.exp(rng.uniform(0, 5)) * driver * step
        return counter_from_rate(rng, rate, reset_probability=rng.uniform(0, 0.001))
    if kind == "error_count":
        intensity = rng.uniform(0.001, 0.3) * driver
        intensity *= 1.0 + 20.0 * burst_indicator(rng, size, rate=rng.uniform(0, 0.002), mean_length=10)
        return intermittent_counts(rng, intensity)
    raise ValueError(f"unknown observability metric kind {kind!r}")



# --------------------------------------------------------------------------
# Strictly periodic series (what seasonal naive forecasts well)
# --------------------------------------------------------------------------

# Season lengths of common sampling rates (hourly, 30/15/10/5/1-minute daily cycles, weekly) plus a
# random period; all at most 1440 so a 2048-step context shows more than one cycle.
PERIODIC_SEASONS = (24, 48, 96, 144, 168, 288, 336, 720, 1440)
TEMPLATE_SHAPES = ("smooth", "square", "steps", "pulses", "ramp")


def periodic_template(rng: np.random.Generator, period: int) -> np.ndarray:
    """One cycle of a repeating pattern, scaled to unit range: a random Fourier series, a square
    wave, piecewise-constant steps, short pulses, or a ramp (cron jobs, batch windows, backups)."""
    phase = np.arange(period) / period
    shape = _pick(rng, TEMPLATE_SHAPES)
    if shape == "smooth":
        harmonics = np.arange(1, int(rng.integers(1, 9)) + 1)[:, None]
        weights = rng.normal(0, 1, (len(harmonics), 1)) / harmonics ** rng.uniform(0.5, 2.0)
        cycle = (weights * np.cos(2 * np.pi * harmonics * phase - rng.uniform(0, 2 * np.pi, (len(harmonics), 1)))).sum(0)
    elif shape == "square":
        start, width = rng.uniform(0, 1), rng.uniform(0.1, 0.7)
        cycle = (((phase - start) % 1.0) < width).astype(np.float64)
    elif shape == "steps":
        edges = np.sort(rng.integers(0, period, int(rng.integers(2, 9))))
        cycle = rng.normal(0, 1, len(edges) + 1)[np.searchsorted(edges, np.arange(period), side="right")]
    elif shape == "pulses":
        cycle = np.zeros(period)
        for start in rng.integers(0, period, int(rng.integers(1, 4))):
            cycle[start : start + max(1, int(period * rng.uniform(0.005, 0.05)))] += rng.uniform(0.5, 1.0)
    else:
        cycle = (phase - rng.uniform(0, 1)) % 1.0
    spread = cycle.max() - cycle.min()
    return (cycle - cycle.min()) / (spread if spread > 0 else 1.0)


def periodic_group(rng: np.random.Generator, length: int, num_variates: int) -> np.ndarray:
    """Variates repeating one period each (shared by the group), with small noise, an optional slow
    trend or level shift, at arbitrary offset and scale, [v, length]."""
    period = _pick(rng, PERIODIC_SEASONS) if rng.random() < 0.8 else int(rng.integers(8, 1441))
    start = int(rng.integers(0, period))
    positions = start + np.arange(length)
    group = []
    for _ in range(num_variates):
        cycle = periodic_template(rng, period)
        if rng.random() < 0.5:  # a second, smooth component on top of a sharp one
            cycle = cycle + rng.uniform(0, 0.5) * periodic_template(rng, period)
        values = cycle[positions % period]
        values = values + rng.uniform(0.0, 0.1) * rng.standard_normal(length)
        if rng.random() < 0.3:
            values = values + rng.normal(0, 0.5) * np.arange(length) / length
        if rng.random() < 0.2:
            values = values + level_shifts(rng, length, rate=2.0 / length, scale=0.5)
        scale, offset = math.exp(rng.normal(0, 2)), rng.normal(0, 3) * math.exp(rng.normal(0, 2))
        group.append(values * scale + offset)
    return np.stack(group)


def add_outliers(rng: np.random.Generator, group: np.ndarray) -> np.ndarray:
    """1-3 isolated outliers (runs of 1-3 steps) per variate, 5-1000 standard deviations away, mostly
    upward: a single huge spike (a counter glitch, a retry storm) inflates a causal scale for the rest
    of a window, and the model must keep forecasting the now nearly-flat normal behaviour."""
    group = group.copy()
    length = group.shape[1]
    for row in group:
        spread = float(np.nanstd(row)) if np.isfinite(row).any() else 0.0
        spread = spread if spread > 0 else 1.0
        for start in rng.integers(0, length, int(rng.integers(1, 4))):
            sign = 1.0 if rng.random() < 0.8 else -1.0
            row[start : start + int(rng.integers(1, 4))] += sign * spread * 10 ** rng.uniform(0.7, 3.0)
    return group


def synthetic_group(
    rng: np.random.Generator,
    length: int,
    max_variates: int,
    kernelsynth_fraction: float = 0.5,
    periodic_fraction: float = 0.0,
    outlier_fraction: float = 0.0,
) -> tuple[str, np.ndarray]:
    """One synthetic (multivariate) series: returns (kind, float32 [v, length]). A ``periodic_fraction``
    of series are strictly periodic; the rest split into KernelSynth (``kernelsynth_fraction``) and
    observability shapes. An ``outlier_fraction`` of all series gets isolated extreme outliers."""
    # Drawn only when enabled, so the default stream of series is unchanged.
    if outlier_fraction > 0 and rng.random() < outlier_fraction:
        kind, group = synthetic_group(rng, length, max_variates, kernelsynth_fraction, periodic_fraction)
        return kind, add_outliers(rng, group).astype(np.float32)
    num_variates = 1 if rng.random() < 0.5 else int(rng.integers(1, max_variates + 1))
    if periodic_fraction > 0 and rng.random() < periodic_fraction:
        return "periodic", periodic_group(rng, length, num_variates).astype(np.float32)
    if rng.random() < kernelsynth_fraction:
        if num_variates == 1:
            return "kernelsynth", kernelsynth_series(rng, length)[None].astype(np.float32)
        # Variates mix two shared latent GP draws (one GP draw per variate would
        # cost v compositions), plus their own noise, scale and offset.
        latents = np.stack([kernelsynth_series(rng, length) for _ in range(2)])
        latents /= latents.std(axis=1, keepdims=True) + 1e-8
        loadings = rng.normal(0.0, 1.0, (num_variates, 2))
        noise = rng.uniform(0.0, 0.5, (num_variates, 1)) * rng.standard_normal((num_variates, length))
        scales = np.exp(rng.normal(0, 1.5, (num_variates, 1)))
        offsets = rng.normal(0, 3, (num_variates, 1))
        group = (loadings @ latents + noise) * scales + offsets
        return "kernelsynth", group.astype(np.float32)
    return "observability", observability_group(rng, length, num_variates).astype(np.float32)
