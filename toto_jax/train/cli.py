"""``toto-jax train``: pretrain or fine-tune from a YAML config, resuming from the run directory."""

from __future__ import annotations

import argparse
import logging


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
        help="fine-tune: start from this checkpoint (reference model.safetensors + config.json, or a run directory)",
    )
    parser.add_argument(
        "--compilation-cache-dir",
        help="JAX persistent compilation cache, local or gs:// / s3:// (compilation_cache_dir=DIR)",
    )
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides")
    parser.set_defaults(func=run)


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
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", force=True)
    # orbax and grain log through absl, at INFO every stage of every checkpoint save (~40 lines each)
    logging.getLogger("absl").setLevel(logging.WARNING)
    state = train(config, args.workdir, init_from=args.init_from)
    if int(state.step) < config.steps:
        from .preemption import PREEMPTED_EXIT_CODE

        print(f"stopped by a signal at step {int(state.step)}, checkpoint saved; the same command resumes")
        return PREEMPTED_EXIT_CODE
    print(f"finished at step {int(state.step)}; checkpoints in {args.workdir}/checkpoints")
    return 0
