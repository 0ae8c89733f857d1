"""Sharded pretraining and fine-tuning: loss, optimiser, config, trainer, checkpoints, metrics, CLI."""

from .checkpointing import is_run_directory, load_model_from_run
from .config import TrainConfig, load_config
from .loss import LossTerms, LossWeights, loss_terms
from .optimizer import OptimizerConfig, make_optimizer, warmup_stable_decay
from .trainer import TrainProgram, TrainState, train

__all__ = [
    "LossTerms",
    "LossWeights",
    "OptimizerConfig",
    "TrainConfig",
    "TrainProgram",
    "TrainState",
    "is_run_directory",
    "load_config",
    "load_model_from_run",
    "loss_terms",
    "make_optimizer",
    "train",
    "warmup_stable_decay",
]
