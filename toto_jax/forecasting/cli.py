"""``toto-jax forecast``: forecast every series of a CSV/Parquet table and write the forecasts in its layout.

How the forecast is made is ``ForecastOptions`` (flags from ``add_options_arguments``, the same defaults
as ``toto_jax.forecast``). The input is never overwritten; an existing output or plot is replaced only
with ``--overwrite``; every path is checked before the model loads, and nothing is written on error.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np

from .. import storage
from .dataset import DEFAULT_MIN_LENGTH, DEFAULT_ROWS_PER_SHARD, DEFAULT_SERIES_PER_BATCH
from .job import ON_ERROR
from .options import DEFAULT_NUM_SAMPLES, add_options_arguments, options_from_args
from .outputs import DEFAULT_QUANTILES, output_statistics, statistic_columns


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "forecast",
        help="forecast the series of a CSV/Parquet table",
        description="Forecast a wide table (timestamp column + one column per variate: one multivariate "
        "series) or a long table (unique_id, ds, y: one series per id). Output has the same layout.",
    )
    from ..checkpoint import BUNDLED_MODELS_HELP

    parser.add_argument(
        "--checkpoint",
        default="default",
        help="model: a reference checkpoint (model.safetensors + config.json), a native checkpoint, a training run "
        "directory, a Hugging Face Hub model (hf://OWNER/NAME), or a model shipped with toto-jax: 'toto1-small', "
        f"'toto2-small' or 'default' (the better of them, toto1-small; the default). {BUNDLED_MODELS_HELP}",
    )
    parser.add_argument(
        "--input",
        required=True,
        help="CSV or Parquet table; with an --output directory, a dataset: a file, a directory or a glob of them, "
        "local, gs:// or s3://",
    )
    parser.add_argument("--horizon", required=True, type=int, help="steps to forecast")
    parser.add_argument("--samples", type=int, default=None, metavar="N",
                        help=f"Toto 1.0: sample paths behind the median and quantiles (default {DEFAULT_NUM_SAMPLES}); "
                             "0: the deterministic mean path alone (a mean column, no bands; the cheapest). Toto 2.0 "
                             "forecasts its quantiles without samples")  # fmt: skip
    parser.add_argument(
        "--quantiles", default=None,
        help=f"comma-separated quantile levels to write (Toto 2.0: within 0.1-0.9) (default "
             f"{','.join(map(str, DEFAULT_QUANTILES))})",
    )  # fmt: skip
    parser.add_argument("--output", required=True,
                        help="CSV or Parquet file to write, in the input's layout with the timestamps continued: "
                             "wide, COLUMN_mean, COLUMN_median, COLUMN_q0.1, COLUMN_q0.5, ... per variate; long, "
                             "unique_id, ds, mean, median, q0.1, ... (mean alone with --samples 0). Or a directory "
                             "(ending in '/', or an existing one; local, gs:// or s3://): a dataset job, streamed in "
                             "shards, resumable (see 'dataset jobs' below)")  # fmt: skip
    add_job_arguments(parser)
    parser.add_argument("--plot", type=Path, default=None,
                        help="PNG of the history, the median and the quantile bands (the mean with --samples 0)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing --output / --plot (the input is never overwritten)")  # fmt: skip
    parser.add_argument("--seed", type=int, default=0, help="seed of the sample paths")
    parser.add_argument("--covariates", default=None,
                        help="comma-separated columns that are covariates: known in the future (from "
                             "--future-covariates), not forecast. A Toto 1.0 checkpoint needs variate labels "
                             "(toto-jax finetune --covariates gives them) and sees them one patch ahead, as it was "
                             "fine-tuned")  # fmt: skip
    parser.add_argument("--future-covariates", default=None,
                        help="CSV/Parquet with the covariates' values for the horizon: the input's layout (wide: its "
                             "timestamp column; long: unique_id, ds) and the --covariates columns")  # fmt: skip
    add_options_arguments(parser)
    parser.set_defaults(func=run)


def add_job_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of a dataset job (``--output DIR/``), for ``toto-jax forecast`` and ``toto-jax detect``."""
    job = parser.add_argument_group(
        "dataset jobs (--output DIR/)",
        "The input is read in batches of whole series; the results go into Parquet shards DIR/part-NNNNN.parquet "
        "(pyarrow.dataset.dataset(DIR) reads them as one table), series that cannot be used into DIR/_errors/, "
        "and DIR/_SUCCESS (a JSON summary) when complete. The same command resumes a stopped job (SIGTERM/SIGINT: "
        "exit 75); a different one against DIR is refused. Processes launched together split the shards.",
    )
    job.add_argument("--on-error", choices=ON_ERROR, default="skip",
                     help="series too short, all NaN, non-numeric or irregular: 'skip' writes them to DIR/_errors/ "
                          "with the reason; 'fail' checks every series first and stops before anything is written "
                          "(default skip)")  # fmt: skip
    job.add_argument("--min-length", type=int, default=DEFAULT_MIN_LENGTH, metavar="STEPS",
                     help=f"fewest observed steps a series needs (default {DEFAULT_MIN_LENGTH})")
    job.add_argument("--series-per-batch", type=int, default=DEFAULT_SERIES_PER_BATCH, metavar="N",
                     help=f"series per compiled call (default {DEFAULT_SERIES_PER_BATCH}); part of the job: a "
                          "resumed job keeps it")  # fmt: skip
    job.add_argument("--rows-per-shard", type=int, default=DEFAULT_ROWS_PER_SHARD, metavar="ROWS",
                     help=f"Parquet input rows per output shard (default {DEFAULT_ROWS_PER_SHARD}); part of the job")


def job_arguments(args: argparse.Namespace) -> dict:
    return dict(on_error=args.on_error, min_length=args.min_length, rows_per_shard=args.rows_per_shard,
                series_per_batch=args.series_per_batch, overwrite=args.overwrite)  # fmt: skip


def finish_job(summary) -> int:
    """Print a dataset job's summary; its exit status (75 when stopped before it completed)."""
    from ..train.preemption import PREEMPTED_EXIT_CODE

    print(summary.describe())
    if not summary.complete:
        print(f"stopped: the same command resumes the job (exit {PREEMPTED_EXIT_CODE})")
        return PREEMPTED_EXIT_CODE
    return 0


def _parse_quantiles(text: str) -> list[float]:
    try:
        levels = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ValueError(f"--quantiles must be comma-separated numbers, got {text!r}") from None
    if not levels or any(not 0.0 < q < 1.0 for q in levels):
        raise ValueError(f"--quantiles must lie strictly between 0 and 1, got {text!r}")
    return levels


def run(args: argparse.Namespace) -> int:
    options = _check_arguments(args)
    if names_directory(args.output):
        return _run_job(args, options)
    if Path(args.input).is_dir() or storage.is_remote(args.input):
        raise ValueError(f"--input {args.input}: a directory or a bucket is a dataset; name an --output directory "
                         "(ending in '/') for a dataset job")  # fmt: skip
    job = (Path(args.input), Path(args.output), args.plot)
    _check_paths(*job, overwrite=args.overwrite)  # every path is checked before the model loads
    _forecast_file(args, options, *job, None)
    return 0


def names_directory(output: str) -> bool:
    """An output ending in '/' or naming an existing directory: a dataset job's directory."""
    return str(output).endswith("/") or (not storage.is_remote(output) and Path(output).is_dir())


def _run_job(args: argparse.Namespace, options) -> int:
    from ..distributed import initialize
    from .job import forecast_dataset

    initialize()  # processes launched together split the shards
    if args.plot is not None:
        raise ValueError("--plot draws the series of one table; a dataset job writes Parquet shards only")
    quantiles = None if args.quantiles is None else _parse_quantiles(args.quantiles)
    summary = forecast_dataset(
        args.checkpoint, args.input, args.output, args.horizon, _sample_count(args), quantiles, seed=args.seed,
        options=options,
        covariates=covariate_names(args.covariates), future_covariates=args.future_covariates, **job_arguments(args),
    )
    return finish_job(summary)


def _check_arguments(args: argparse.Namespace):
    """Validate the arguments (the model-dependent ones in ``output_statistics``); returns the forecast options."""
    # Everything that can be checked before the model runs is checked first; nothing is written on error.
    if args.horizon <= 0:
        raise ValueError(f"--horizon must be positive, got {args.horizon}")
    if args.samples is not None and args.samples < 0:
        raise ValueError(f"--samples must be positive (or 0: the mean path alone), got {args.samples}")
    if args.quantiles is not None:
        _parse_quantiles(args.quantiles)
    options = options_from_args(args)
    if (args.covariates is None) != (args.future_covariates is None):
        raise ValueError("--covariates and --future-covariates go together: name the columns and the file of their "
                         "future values")  # fmt: skip
    if args.future_covariates is not None and not storage.is_remote(args.future_covariates) and not (
        Path(args.future_covariates).exists()
    ):
        raise FileNotFoundError(f"--future-covariates file not found: {args.future_covariates}")
    return options


def _sample_count(args: argparse.Namespace):
    """``--samples`` as ``output_statistics`` takes it: unset is "auto", 0 the mean path."""
    return "auto" if args.samples is None else args.samples


def covariate_names(text: str | None) -> list[str]:
    names = [] if text is None else [part.strip() for part in text.split(",") if part.strip()]
    if text is not None and not names:
        raise ValueError(f"--covariates must name at least one column, got {text!r}")
    return names


def with_future_covariates(model, table, future: np.ndarray):
    """The table's series with their covariates led one patch for a Toto 1.0 model (as fine-tuning trains
    them), and the future values to pass as ``future_exogenous_variables``; Toto 2.0 takes them as they are."""
    from ..models import is_toto2
    from .covariates import lead_series_covariates

    if is_toto2(model):
        return table.values, future
    if not model.config.variate_labels:
        raise ValueError(f"--covariates {table.covariates}: this Toto 1.0 checkpoint has no variate labels to tell "
                         "covariates from targets; fine-tune it with toto-jax finetune --covariates first")  # fmt: skip
    led = [lead_series_covariates(values, len(table.covariates), model.config.patch_size, known)
           for values, known in zip(table.values, future)]  # fmt: skip
    return [series for series, _ in led], np.stack([ahead for _, ahead in led])


def _check_paths(input_path: Path, output: Path, plot: Path | None, overwrite: bool) -> None:
    """The input is never written; an existing output or plot needs ``--overwrite``."""
    from . import tabular

    tabular.check_output_path(output)
    if plot is not None:
        if plot.suffix.lower() != ".png":
            raise ValueError(f"--plot must name a .png file, got {plot}")
        if not plot.parent.exists():
            raise FileNotFoundError(f"plot directory does not exist: {plot.parent}")
    for name, path in (("--output", output), ("--plot", plot)):
        if path is None or not os.path.lexists(path):
            continue
        if input_path.exists() and path.exists() and os.path.samefile(path, input_path):
            raise ValueError(f"{name} {path} is the input file {input_path}; the input is never overwritten "
                             "(not even with --overwrite): name another file")  # fmt: skip
        if path.is_dir():
            raise ValueError(f"{name} {path} is a directory; name a file")
        if not overwrite:
            raise FileExistsError(f"{name} {path} already exists; pass --overwrite to replace it")


def _forecast_file(args, options, input_path: Path, output: Path, plot: Path | None, model):
    """Forecast one table; returns the model (loaded on first use) so a directory loads it once."""
    from . import tabular
    from .api import forecast

    table = tabular.parse_table(tabular.read_table(input_path), covariate_names(args.covariates))
    series, future = table.values, None
    if table.covariates:
        future = tabular.read_future_covariates(args.future_covariates, table, args.horizon)

    if model is None:
        import toto_jax

        model = toto_jax.load(args.checkpoint)
    from ..models import is_toto2

    num_samples, levels = output_statistics(is_toto2(model), _sample_count(args),
                                            None if args.quantiles is None else _parse_quantiles(args.quantiles))  # fmt: skip
    if future is not None:
        series, future = with_future_covariates(model, table, future)
    # The values stay float64: the options normalize them in float64 before the model's float32.
    result = forecast(model, series, args.horizon, num_samples=num_samples, seed=args.seed, options=options,
                      future_exogenous_variables=future)  # fmt: skip
    frame = tabular.forecast_frame(table, args.horizon, statistic_columns(result, levels))

    png = None
    if plot is not None:
        png = _render(table, result, levels, args.horizon, title=f"{input_path.name}: {args.horizon}-step forecast")
    tabular.write_table(frame, output, overwrite=args.overwrite)
    if png is not None:
        tabular.atomic_write(plot, lambda path: Path(path).write_bytes(png), overwrite=args.overwrite)
    print(f"wrote {len(frame)} rows to {output}" + (f" and {plot}" if png is not None else ""))
    return model


def _render(table, result, levels, horizon, title: str | None = None) -> bytes:
    from .plotting import render_forecast_png

    future = table.future_timestamps(horizon)
    history, future_times, centres, band_rows = [], [], [], {q: [] for q in levels}
    quantiles = result.quantile(levels) if levels else None
    centre = result.median if levels else result.mean
    for b, (values, stamps) in enumerate(zip(table.values, table.timestamps)):
        for v in range(values.shape[0] - len(table.covariates)):
            name = table.names[v] if table.layout == "wide" else table.names[b]
            history.append((name, stamps, values[v]))
            future_times.append(future[b])
            centres.append(centre[b, v])
            for i, q in enumerate(levels):
                band_rows[q].append(quantiles[i, b, v])
    bands = {q: np.array(rows) for q, rows in band_rows.items()}
    label = "median" if levels else "mean"
    return render_forecast_png(history, future_times, np.array(centres), bands, centre_label=label, title=title)
