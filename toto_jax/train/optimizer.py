"""Optimisers with a warmup-stable-decay (1-sqrt) learning-rate schedule and global-norm gradient clipping.

``optimizer.name``: ``adamw`` (plain AdamW on every parameter; Toto 1.0's default), ``umup_adamw`` and
``umup_normuon`` (NorMuon on the matrices, AdamW on biases and norms; Toto 2.0's default), the last two with
the u-muP per-parameter rates of ``umup`` read from the parameters' metadata. For the u-muP ones the schedule
is a multiplier of ``learning_rate`` (as a torch LambdaLR), and ``weight_decay`` keeps torch AdamW's meaning
at the peak rate: each step decays by ``learning_rate * weight_decay * multiplier``, whatever a parameter's
own u-muP rate.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import optax

from . import umup

OPTIMIZERS = ("adamw", "umup_adamw", "umup_normuon")
DEFAULT_OPTIMIZER = {"toto1": "adamw", "toto2": "umup_normuon"}  # by model family


@dataclasses.dataclass
class OptimizerConfig:
    """Fields of the YAML ``optimizer:`` section."""

    name: str | None = None  # None: the model family's default (DEFAULT_OPTIMIZER)
    learning_rate: float = 1e-4  # peak (stable-phase) rate
    min_learning_rate: float = 1e-5  # start of warmup and end of decay
    warmup_steps: int = 200
    stable_steps: int = 1000
    decay_steps: int = 1000
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-7
    weight_decay: float = 0.01
    max_grad_norm: float | None = 1.0  # None: no clipping
    accumulation_steps: int = 1  # microbatches per step (the batch is split, gradients summed)
    # umup_normuon (dion's defaults, as dd-unit-scaling's NorMuon)
    adamw_learning_rate: float | None = None  # peak rate of the AdamW half (biases, norms); None: learning_rate
    momentum: float = 0.95
    normuon_beta2: float = 0.95  # EMA of each output neuron's mean square update

    def resolved_name(self, family: str = "toto1") -> str:
        return self.name or DEFAULT_OPTIMIZER[family]

    def validate(self, family: str = "toto1") -> None:
        if self.name is not None and self.name not in OPTIMIZERS:
            raise ValueError(f"optimizer.name must be one of {OPTIMIZERS} or null, got {self.name!r}")
        if self.resolved_name(family).startswith("umup") and family != "toto2":
            raise ValueError(f"optimizer.name {self.name!r} needs u-muP parameters: model.family toto2")
        if not (0 <= self.momentum < 1 and 0 <= self.normuon_beta2 < 1):
            raise ValueError("optimizer.momentum and optimizer.normuon_beta2 must be in [0, 1)")
        if self.adamw_learning_rate is not None and self.adamw_learning_rate <= 0:
            raise ValueError(f"optimizer.adamw_learning_rate must be > 0 or null, got {self.adamw_learning_rate}")
        if self.learning_rate <= 0 or self.min_learning_rate < 0:
            raise ValueError("optimizer.learning_rate must be > 0 and optimizer.min_learning_rate >= 0")
        for name in ("warmup_steps", "stable_steps", "decay_steps"):
            if getattr(self, name) < 0:
                raise ValueError(f"optimizer.{name} must be >= 0, got {getattr(self, name)}")
        if not (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1):
            raise ValueError("optimizer.beta1 and optimizer.beta2 must be in [0, 1)")
        if self.max_grad_norm is not None and self.max_grad_norm <= 0:
            raise ValueError("optimizer.max_grad_norm must be positive or null")
        if self.accumulation_steps < 1:
            raise ValueError(f"optimizer.accumulation_steps must be >= 1, got {self.accumulation_steps}")


def warmup_stable_decay(
    learning_rate: float, min_learning_rate: float, warmup_steps: int, stable_steps: int, decay_steps: int
) -> optax.Schedule:
    """Linear warmup from ``min`` to ``learning_rate``, a plateau, then ``min + (1 - sqrt(progress)) * range``.

    Update ``n`` (counting from 0) uses the rate of position ``n + 1``, as the reference's
    ``WarmupStableDecayLR`` does (its first rate is already one warmup step in).
    """
    span = learning_rate - min_learning_rate
    stable_end = warmup_steps + stable_steps
    total = stable_end + decay_steps

    def schedule(count):
        position = jnp.asarray(count, jnp.float32) + 1.0
        warmup = min_learning_rate + position / max(warmup_steps, 1) * span
        progress = jnp.clip((position - stable_end) / max(decay_steps, 1), 0.0, 1.0)
        decay = min_learning_rate + (1.0 - jnp.sqrt(progress)) * span
        rate = jnp.where(position < warmup_steps, warmup, jnp.where(position < stable_end, learning_rate, decay))
        return jnp.where(position < total, rate, min_learning_rate)

    return schedule


def schedule_from_config(config: OptimizerConfig) -> optax.Schedule:
    return warmup_stable_decay(
        config.learning_rate, config.min_learning_rate, config.warmup_steps, config.stable_steps, config.decay_steps
    )


def make_optimizer(config: OptimizerConfig, params=None, family: str = "toto1") -> optax.GradientTransformation:
    """The configured optimiser behind optional clipping. ``params``: the (abstract) ``nnx.State`` of
    parameters, whose metadata the u-muP optimisers read; plain AdamW decays every parameter, as the
    Toto 1.0 reference does."""
    config.validate(family)
    name = config.resolved_name(family)
    if name == "adamw":
        optimizer = optax.adamw(
            schedule_from_config(config), b1=config.beta1, b2=config.beta2, eps=config.eps,
            weight_decay=config.weight_decay,
        )  # fmt: skip
    else:
        if params is None:
            raise ValueError(f"optimizer {name!r} needs the model's parameters (their u-muP metadata)")
        specs = umup.param_specs(params)
        peak = config.learning_rate
        multiplier = lambda count: schedule_from_config(config)(count) / peak  # noqa: E731
        adamw = dict(learning_rate=peak, b1=config.beta1, b2=config.beta2, eps=config.eps,
                     weight_decay=peak * config.weight_decay, schedule=multiplier)  # fmt: skip
        if name == "umup_adamw":
            optimizer = umup.umup_adamw(specs, **adamw)
        else:
            normuon = dict(learning_rate=peak, momentum=config.momentum, beta2=config.normuon_beta2,
                           weight_decay=peak * config.weight_decay, schedule=multiplier)  # fmt: skip
            adamw_peak = config.adamw_learning_rate or peak
            adamw = {**adamw, "learning_rate": adamw_peak, "weight_decay": adamw_peak * config.weight_decay}
            optimizer = umup.umup_normuon_adamw(specs, normuon, adamw)
    if config.max_grad_norm is None:
        return optimizer
    return optax.chain(optax.clip_by_global_norm(config.max_grad_norm), optimizer)
