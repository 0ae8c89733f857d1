"""``toto-jax train``: pretrain or fine-tune from a YAML config, resuming from the run directory."""

from __future__ import annotations

import argparse
import logging

from ..cli import configure_logging


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train or fine-tune a model (resumes from the latest checkpoint in --workdir)",
        description="Train from a YAML config. Extra KEY=VALUE arguments override config entries by dotted name "
        "(e.g. optimizer.learning_rate=3e-4 data.batch_size=64 mesh.shape=[2,4,1]). --workdir may be gs://. "
        "SIGTERM or SIGINT: every process finishes its step, a checkpoint is saved and the command exits with "
        "status 75; the same command resumes.",
    )
    parser.add_argument("--config", required=True, help="YAML training config, e.g. experiments/configs/small.yaml")
    parser.add_argument("--workdir", required=True, help="run directory: checkpoints, metrics, TensorBoard events")
    parser.add_argument("--steps", type=int, help="total training steps (shortcut for steps=N)")
    parser.add_argument("--checkpoint-every", type=int, help="steps between checkpoints (checkpoint.every=N)")
    parser.add_argument(
        "--init-from",
        help="fine-tune: start from this checkpoint (reference model.safetensors + config.json, hf://OWNER/NAME, or "
        "a run directory)",
    )
    parser.add_argument(
        "--compilation-cache-dir",
        help="JAX persistent compilation cache, local or gs:// / s3:// (compilation_cache_dir=DIR)",
    )
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides")
    parser.set_defaults(func=run)

    finetune = subparsers.add_parser(
        "finetune",
        help="fine-tune a Toto 1.0 checkpoint on a CSV/Parquet table (resumes from --workdir)",
        description="Fine-tune on a wide table (timestamp column + one column per variate) or a long one (unique_id, "
        "ds, y). The last validation.held_out steps of every series are held out: validation loss every "
        "validation.every steps, the best model kept in WORKDIR/best, early stopping after validation.patience "
        "passes without improvement. Preset: the reference's (learning rate 4e-5, 1000 warmup + 200 stable + 200 "
        "decay steps, batch 16, 8-patch context); KEY=VALUE overrides any training config entry. "
        "toto-jax forecast --checkpoint WORKDIR forecasts with the best model.",
    )
    finetune.add_argument("--input", required=True, help="CSV or Parquet table of the series to fine-tune on")
    finetune.add_argument("--workdir", required=True, help="run directory: checkpoints, metrics, the best model")
    finetune.add_argument("--checkpoint", default="default",
                          help="Toto 1.0 model to start from: a published checkpoint (a directory or hf://OWNER/NAME), "
                               "a native one, a run directory, or 'default' (the shipped toto1-small: held-out MASE "
                               "0.52 / 0.95 / 0.88 of seasonal naive's at 48 / 480 / 720 steps)")  # fmt: skip
    finetune.add_argument("--covariates", default=None,
                          help="comma-separated covariate columns: inputs known in the future, not forecast nor in "
                               "the loss (variate labels are added to the model)")  # fmt: skip
    finetune.add_argument("--steps", type=int,
                          help="total steps (steps=N; default 1400, the preset's schedule); fewer scale the warmup, "
                               "stable and decay phases to the run, which one line reports")  # fmt: skip
    finetune.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="training config overrides")
    finetune.set_defaults(func=run_finetune)


def run_finetune(args: argparse.Namespace) -> int:
    from ..forecasting import tabular
    from ..forecasting.cli import covariate_names
    from .finetune import finetune

    table = tabular.parse_table(tabular.read_table(args.input), covariate_names(args.covariates))
    overrides = list(args.overrides) + ([] if args.steps is None else [f"steps={args.steps}"])
    configure_logging(logging.INFO)
    _, validation = finetune(table, args.checkpoint, args.workdir, overrides)
    print(f"best validation loss {validation.best_loss:.5f} at step {validation.best_step}; "
          f"forecast with: toto-jax forecast --checkpoint {args.workdir}")  # fmt: skip
    return 0


def run(args: argparse.Namespace) -> int:
    from ..distributed import initialize
    from .config import load_config
    from .trainer import train

    initialize()  # joins a multi-host cluster when launched as one (no-op for a single process)
    overrides = list(args.overrides)
    if args.steps is not None:
        overrides.append(f"steps={args.steps}")
    if args.checkpoint_every is not None:
        overrides.append(f"checkpoint.every={args.checkpoint_every}")
    if args.compilation_cache_dir is not None:
        overrides.append(f"compilation_cache_dir={args.compilation_cache_dir}")
    config = load_config(args.config, overrides)
    if config.compilation_cache_dir is not None:
        from ..compilation_cache import enable_compilation_cache

        enable_compilation_cache(config.compilation_cache_dir)
    configure_logging(logging.INFO)
    state = train(config, args.workdir, init_from=args.init_from)
    if int(state.step) < config.steps:
        from .preemption import PREEMPTED_EXIT_CODE

        print(f"stopped by a signal at step {int(state.step)}, checkpoint saved; the same command resumes")
        return PREEMPTED_EXIT_CODE
    print(f"finished at step {int(state.step)}; checkpoints in {args.workdir}/checkpoints")
    return 0
