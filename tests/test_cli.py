"""The ``toto-jax`` command as a whole: every flag explained, each log record printed once, times left."""

from __future__ import annotations

import argparse
import logging

from toto_jax.cli import build_parser, configure_logging
from toto_jax.eval.harness import time_left


def _subcommands(parser: argparse.ArgumentParser, path=()):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _subcommands(sub, path + (name,))


def test_every_flag_of_every_subcommand_has_help():
    """Every argument of every subcommand says what it is (no bare flag in ``--help``); eval's help says where
    its files go and what its table's columns mean; forecast's says how the shipped models scored."""
    commands = dict(_subcommands(build_parser()))
    assert {("forecast",), ("convert",), ("data", "convert"), ("train",), ("finetune",), ("eval",)} <= commands.keys()
    bare = [(" ".join(path), action.option_strings or action.dest)
            for path, parser in commands.items() for action in parser._actions
            if not isinstance(action, (argparse._HelpAction, argparse._SubParsersAction))
            and (not action.help or action.help == argparse.SUPPRESS)]  # fmt: skip
    assert bare == []
    evaluation = commands[("eval",)].format_help()
    for part in ("default out/eval", "metrics.csv", "summary.csv", "CRPS wins (the share of series", "short, medium,"):
        assert part in " ".join(evaluation.split()), part
    forecast = " ".join(commands[("forecast",)].format_help().split())
    for part in ("'toto1-small' (= 'default'; Toto 1.0, sample paths): 0.52 / 0.43", "--decode-block-size 128",
                 "--samples N Toto 1.0: sample paths behind the median and quantiles (default 64)"):  # fmt: skip
        assert part in forecast, part


def test_a_library_that_prints_its_own_records_is_not_printed_twice(capfd):
    """huggingface_hub prints its records with a handler of its own (so did every retry warning, twice: once
    by it, once by the root handler that orbax's import installs); the CLI's root handler leaves such records
    to the library's handler and prints everyone else's once, at WARNING and above."""
    import sys

    from huggingface_hub.utils import logging as hub_logging

    assert hub_logging.get_logger("huggingface_hub.utils._http").parent.handlers  # its own handler, as described
    library = logging.getLogger("a_library")  # a library like it, its handler on this test's stderr
    own = logging.StreamHandler(sys.stderr)
    library.addHandler(own)
    try:
        configure_logging()
        logging.getLogger("a_library.http").warning("Retrying in 1s [Retry 1/5].")
        logging.getLogger("toto_jax.somewhere").warning("one line")
        logging.getLogger("toto_jax.somewhere").info("below the level")
    finally:
        library.removeHandler(own)
    printed = capfd.readouterr().err.splitlines()
    assert printed == ["Retrying in 1s [Retry 1/5].", "WARNING toto_jax.somewhere: one line"]


def test_time_left_extrapolates_the_work_done():
    assert time_left(30.0, 0, 100) == ""
    assert time_left(30.0, 25, 100) == " (30s elapsed, about 1m30s left)"
    assert time_left(3000.0, 50, 100) == " (50m00s elapsed, about 50m00s left)"
    assert time_left(4000.0, 50, 100) == " (1h06m elapsed, about 1h06m left)"
    assert time_left(10.0, 100, 100) == ""
