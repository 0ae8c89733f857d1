"""``toto-jax data ...`` commands (registered by toto_jax/cli.py via ``add_parser``)."""

from __future__ import annotations

import argparse
import json
import logging
import sys


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Registers ``data`` with its ``convert`` subcommand on an argparse subparsers object."""
    data_parser = subparsers.add_parser("data", help="pretraining data tools")
    data_commands = data_parser.add_subparsers(dest="data_command", required=True)
    convert = data_commands.add_parser(
        "convert",
        help="convert a directory of CSV series (NAB, cloud-monitoring, ...) to the Parquet layout",
        description=(
            "Each CSV file becomes one row: item_id, start, freq, target. The timestamp column "
            "(timestamp/TimeStamp/time/date) gives start and freq, label columns are dropped, "
            "every other column is a variate."
        ),
    )
    convert.add_argument("input", help="directory of CSV files (searched recursively)")
    convert.add_argument("output", help="output directory for part-*.parquet files (local, gs:// or s3://)")
    convert.add_argument("--rows-per-group", type=int, default=64, help="Parquet row group size (default 64)")
    convert.add_argument("--rows-per-file", type=int, default=10_000, help="rows per output file (default 10000)")
    convert.set_defaults(func=run_convert)
    return data_parser


def run_convert(args: argparse.Namespace) -> int:
    """Runs ``toto-jax data convert``; prints a JSON summary and returns the exit code."""
    from toto_jax.data.convert import convert_csv_directory
    from toto_jax.data.quality import DataError
    from toto_jax.storage import StorageError

    from toto_jax.cli import configure_logging

    configure_logging(logging.INFO)
    try:
        summary = convert_csv_directory(
            args.input, args.output, rows_per_group=args.rows_per_group, rows_per_file=args.rows_per_file
        )
    except (DataError, StorageError) as error:
        print(f"toto-jax data convert: error: {error}", file=sys.stderr)
        return 2
    print(json.dumps({"series": summary["series"], "files": summary["files"], "skipped": summary["skipped"]}, indent=2))
    return 0
