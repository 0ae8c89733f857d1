"""The ``toto-jax`` command: one subcommand per job, each defined beside the code it runs."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

# Each module defines ``add_parser(subparsers)``, which registers its subcommand and sets ``func``.
COMMAND_MODULES = (
    "toto_jax.forecasting.cli",
    "toto_jax.detection.cli",
    "toto_jax.checkpoint.cli",
    "toto_jax.data.cli",
    "toto_jax.train.cli",
    "toto_jax.eval.cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="toto-jax", description="Toto time-series foundation model in JAX")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as error:
            if error.name and (name == error.name or name.startswith(error.name + ".")):
                continue  # that job is not part of this build
            raise
        module.add_parser(subparsers)
    return parser


def _printed_by_its_own_handler(record: logging.LogRecord) -> bool:
    """Whether a logger below the root (huggingface_hub's) has printed this record with a handler of its own."""
    logger = logging.getLogger(record.name)
    while logger.parent is not None and logger.propagate:
        if logger.handlers:
            return True
        logger = logger.parent
    return False


def configure_logging(level: int = logging.WARNING) -> None:
    """One root handler for every library's records, each printed once: records a library printed itself are
    dropped, and absl's and jax's chatter stays at WARNING (orbax and grain log every checkpoint stage at
    INFO; jax every backend it probes)."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    handler.addFilter(lambda record: not _printed_by_its_own_handler(record))
    logging.basicConfig(level=level, handlers=[handler], force=True)
    logging.getLogger("absl").setLevel(logging.WARNING)
    logging.getLogger("jax").setLevel(logging.WARNING)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging()
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, FileExistsError) as error:
        # Input problems carry a message written for the user; no traceback from deep inside.
        print(f"toto-jax {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
