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

from .options import DEFAULT_NUM_SAMPLES, add_options_arguments, options_from_args

DEFAULT_QUANTILES = "0.1,0.5,0.9"


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
        type=Path,
        help="CSV or Parquet table, or a directory of them (then --output and --plot are directories, one file per "
        "input, and several processes launched together split the files between them)",
    )
    parser.add_argument("--horizon", required=True, type=int, help="steps to forecast")
    parser.add_argument("--samples", type=int, default=None, metavar="N",
                        help=f"Toto 1.0: sample paths behind the median and quantiles (default {DEFAULT_NUM_SAMPLES}); "
                             "0: the deterministic mean path alone (a mean column, no bands; the cheapest). Toto 2.0 "
                             "forecasts its quantiles without samples")  # fmt: skip
    parser.add_argument(
        "--quantiles", default=None,
        help=f"comma-separated quantile levels to write (Toto 2.0: within 0.1-0.9) (default {DEFAULT_QUANTILES})",
    )  # fmt: skip
    parser.add_argument("--output", required=True, type=Path,
                        help="CSV or Parquet file (or directory) to write, in the input's layout with the timestamps "
                             "continued: wide, COLUMN_mean, COLUMN_median and COLUMN_q0.1, COLUMN_q0.5, ... per "
                             "variate; long, unique_id, ds, mean, median, q0.1, ... (mean alone with --samples 0)")  # fmt: skip
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
    parser.add_argument("--future-covariates", type=Path, default=None,
                        help="CSV/Parquet with the covariates' values for the horizon: the input's layout (wide: its "
                             "timestamp column; long: unique_id, ds) and the --covariates columns")  # fmt: skip
    add_options_arguments(parser)
    parser.set_defaults(func=run)


def _parse_quantiles(text: str) -> list[float]:
    try:
        levels = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ValueError(f"--quantiles must be comma-separated numbers, got {text!r}") from None
    if not levels or any(not 0.0 < q < 1.0 for q in levels):
        raise ValueError(f"--quantiles must lie strictly between 0 and 1, got {text!r}")
    return levels


TABLE_SUFFIXES = (".csv", ".parquet")


def run(args: argparse.Namespace) -> int:
    from ..distributed import host_shard, initialize

    initialize()  # several processes launched together split a directory of inputs
    options = _check_arguments(args)
    if not args.input.is_dir():
        jobs, total = [(args.input, args.output, args.plot)], 1
    else:
        jobs, total = _directory_jobs(args, host_shard)
        args.output.mkdir(parents=True, exist_ok=True)
        if args.plot is not None:
            args.plot.mkdir(parents=True, exist_ok=True)
    for job in jobs:  # every path is checked before the model loads and anything is written
        _check_paths(*job, overwrite=args.overwrite)
    model = None
    for input_path, output, plot in jobs:
        model = _forecast_file(args, options, input_path, output, plot, model)
    if args.input.is_dir():
        print(f"forecast {len(jobs)} of {total} files into {args.output}")
    return 0


def _directory_jobs(args: argparse.Namespace, host_shard) -> tuple[list[tuple[Path, Path, Path | None]], int]:
    """(input, output, plot) for this process's share of a directory of tables, and the number of tables."""
    inputs = sorted(p for p in args.input.iterdir() if p.is_file() and p.suffix.lower() in TABLE_SUFFIXES)
    if not inputs:
        raise FileNotFoundError(f"no .csv or .parquet files in {args.input}")
    for name, path in (("--output", args.output), ("--plot", args.plot)):
        if path is not None and path.exists() and not path.is_dir():
            raise ValueError(f"with a directory of inputs, {name} must be a directory, got the file {path}")
    if args.output.exists() and os.path.samefile(args.output, args.input):
        raise ValueError(f"--output {args.output} is the input directory; the inputs are never overwritten: "
                         "name another directory")  # fmt: skip
    stems = [p.stem for p in inputs]
    if args.plot is not None and len(set(stems)) < len(stems):
        twice = sorted({stem for stem in stems if stems.count(stem) > 1})
        raise ValueError(f"--plot: several inputs would write {args.plot / (twice[0] + '.png')} ({twice}); "
                         "give the tables different names")  # fmt: skip
    mine = [inputs[i] for i in host_shard(len(inputs))]
    plots = [None if args.plot is None else args.plot / f"{path.stem}.png" for path in mine]
    return [(path, args.output / path.name, plot) for path, plot in zip(mine, plots)], len(inputs)


def _check_arguments(args: argparse.Namespace):
    """Validate the arguments (the model-dependent ones in ``forecast_outputs``); returns the forecast options."""
    # Everything that can be checked before the model runs is checked first; nothing is written on error.
    if args.horizon <= 0:
        raise ValueError(f"--horizon must be positive, got {args.horizon}")
    if args.samples is not None and args.samples < 0:
        raise ValueError(f"--samples must be positive (or 0: the mean path alone), got {args.samples}")
    options = options_from_args(args)
    if (args.covariates is None) != (args.future_covariates is None):
        raise ValueError("--covariates and --future-covariates go together: name the columns and the file of their "
                         "future values")  # fmt: skip
    if args.future_covariates is not None and not args.future_covariates.is_file():
        raise FileNotFoundError(f"--future-covariates file not found: {args.future_covariates}")
    if args.quantiles is not None:
        _parse_quantiles(args.quantiles)
    return options


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


def forecast_outputs(toto2: bool, samples: int | None, quantiles: str | None) -> tuple[int | None, list[float]]:
    """What a forecast draws and writes, from ``--samples`` and ``--quantiles``: the ``num_samples`` to give
    ``toto_jax.forecast`` and the quantile levels to write. ``forecast_columns`` turns them into columns.

    By default Toto 1.0 draws DEFAULT_NUM_SAMPLES sample paths and Toto 2.0 uses its quantile head, and
    both write DEFAULT_QUANTILES; ``samples=0`` is Toto 1.0's deterministic mean path alone (no levels)."""
    levels = _parse_quantiles(quantiles or DEFAULT_QUANTILES)
    if toto2:
        if samples is not None:
            raise ValueError("--samples: a Toto 2.0 checkpoint forecasts quantiles directly; drop --samples")
        outside = [q for q in levels if not 0.1 <= q <= 0.9]
        if outside:
            raise ValueError(f"--quantiles: a Toto 2.0 forecast covers levels 0.1 to 0.9, got {outside}")
        return None, levels
    if samples == 0:
        if quantiles is not None:
            raise ValueError("--quantiles need sample paths: --samples 0 forecasts the mean path alone")
        return None, []
    return samples or DEFAULT_NUM_SAMPLES, levels


def forecast_columns(result, levels: list[float]) -> dict[str, np.ndarray]:
    """The output columns of a forecast [batch, variate, horizon] each: ``mean``, and with quantile levels
    ``median`` and ``q{level}`` per level (``q0.1``)."""
    columns = {"mean": result.mean}
    if levels:
        columns["median"] = result.median
        columns.update({f"q{level:g}": values for level, values in zip(levels, result.quantile(levels))})
    return columns


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

    num_samples, levels = forecast_outputs(is_toto2(model), args.samples, args.quantiles)
    if future is not None:
        series, future = with_future_covariates(model, table, future)
    # The values stay float64: the options normalize them in float64 before the model's float32.
    result = forecast(model, series, args.horizon, num_samples=num_samples, seed=args.seed, options=options,
                      future_exogenous_variables=future)  # fmt: skip
    frame = tabular.forecast_frame(table, args.horizon, forecast_columns(result, levels))

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
