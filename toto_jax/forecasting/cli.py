"""``toto-jax forecast``: forecast every series of a CSV/Parquet table and write the forecasts in its layout."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from .preprocessing import add_clip_outliers_argument
from .sampling import add_sampling_argument

DEFAULT_QUANTILES = "0.1,0.5,0.9"


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "forecast",
        help="forecast the series of a CSV/Parquet table",
        description="Forecast a wide table (timestamp column + one column per variate: one multivariate "
        "series) or a long table (unique_id, ds, y: one series per id). Output has the same layout.",
    )
    parser.add_argument(
        "--checkpoint",
        default="default",
        help="model: a reference checkpoint (model.safetensors + config.json), a native checkpoint, a training run "
        "directory, or 'default' (the small model shipped with toto-jax; the default)",
    )
    parser.add_argument(
        "--input",
        required=True,
        type=Path,
        help="CSV or Parquet table, or a directory of them (then --output and --plot are directories, one file per "
        "input, and several processes launched together split the files between them)",
    )
    parser.add_argument("--horizon", required=True, type=int, help="steps to forecast")
    parser.add_argument("--samples", type=int, default=None, help="sample paths (default: the mean path only)")
    parser.add_argument(
        "--quantiles", default=None, help=f"comma-separated levels, with --samples (default {DEFAULT_QUANTILES})"
    )
    parser.add_argument("--output", required=True, type=Path, help="CSV or Parquet file (or directory) to write")
    parser.add_argument("--plot", type=Path, default=None, help="PNG of history, median and quantile bands")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--standardize", action=argparse.BooleanOptionalAction, default=True,
                        help="forecast each variate in units of its own context (mean 0, std 1) and map back, so "
                             "the forecast does not depend on the units (default; see toto_jax.forecast)")  # fmt: skip
    add_clip_outliers_argument(parser)
    add_sampling_argument(parser)
    parser.add_argument("--memory-budget-gb", type=float, default=4.0, help="working memory per compiled call")
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
    from .distributed import host_shard, initialize

    initialize()  # several processes launched together split a directory of inputs
    levels = _check_arguments(args)
    if not args.input.is_dir():
        _forecast_file(args, levels, args.input, args.output, args.plot, model=None)
        return 0
    inputs = sorted(p for p in args.input.iterdir() if p.suffix.lower() in TABLE_SUFFIXES)
    if not inputs:
        raise FileNotFoundError(f"no .csv or .parquet files in {args.input}")
    for name, path in (("--output", args.output), ("--plot", args.plot)):
        if path is not None and path.exists() and not path.is_dir():
            raise ValueError(f"with a directory of inputs, {name} must be a directory, got the file {path}")
    mine = [inputs[i] for i in host_shard(len(inputs))]
    args.output.mkdir(parents=True, exist_ok=True)
    if args.plot is not None:
        args.plot.mkdir(parents=True, exist_ok=True)
    model = None
    for path in mine:
        plot = None if args.plot is None else args.plot / f"{path.stem}.png"
        model = _forecast_file(args, levels, path, args.output / path.name, plot, model)
    print(f"forecast {len(mine)} of {len(inputs)} files into {args.output}")
    return 0


def _check_arguments(args: argparse.Namespace) -> list[float]:
    """Validate the arguments; returns the quantile levels to write (none for the mean path)."""
    # Everything that can be checked before the model runs is checked first; nothing is written on error.
    if args.horizon <= 0:
        raise ValueError(f"--horizon must be positive, got {args.horizon}")
    if args.samples is not None and args.samples <= 0:
        raise ValueError(f"--samples must be positive, got {args.samples}")
    if args.quantiles is not None and args.samples is None:
        raise ValueError("--quantiles need sample paths: add --samples N")
    return _parse_quantiles(args.quantiles or DEFAULT_QUANTILES) if args.samples else []


def _forecast_file(args, levels: list[float], input_path: Path, output: Path, plot: Path | None, model):
    """Forecast one table; returns the model (loaded on first use) so a directory loads it once."""
    from . import tabular
    from .forecasting import forecast

    tabular.check_output_path(output)
    if plot is not None:
        if plot.suffix.lower() != ".png":
            raise ValueError(f"--plot must name a .png file, got {plot}")
        if not plot.parent.exists():
            raise FileNotFoundError(f"plot directory does not exist: {plot.parent}")
    table = tabular.parse_table(tabular.read_table(input_path))

    if model is None:
        import toto_jax

        model = toto_jax.load(args.checkpoint)
    result = forecast(
        model, table.values, args.horizon, num_samples=args.samples, seed=args.seed,
        memory_budget=int(args.memory_budget_gb * (1 << 30)), standardize=args.standardize,
        clip_outliers=args.clip_outliers, sampling=args.sampling,
    )  # fmt: skip
    columns = {"mean": result.mean}
    if result.samples is not None:
        columns["median"] = result.median
        for level, values in zip(levels, result.quantile(levels)):
            columns[f"q{level:g}"] = values
    frame = tabular.forecast_frame(table, args.horizon, columns)

    png = None
    if plot is not None:
        png = _render(table, result, levels, args.horizon)
    tabular.write_table(frame, output)
    if png is not None:
        tabular.atomic_write(plot, lambda path: Path(path).write_bytes(png))
    print(f"wrote {len(frame)} rows to {output}" + (f" and {plot}" if png is not None else ""))
    return model


def _render(table, result, levels, horizon) -> bytes:
    from .plotting import render_forecast_png

    future = table.future_timestamps(horizon)
    history, future_times, centres, band_rows = [], [], [], {q: [] for q in levels}
    quantiles = result.quantile(levels) if levels else None
    centre = result.median if result.samples is not None else result.mean
    for b, (values, stamps) in enumerate(zip(table.values, table.timestamps)):
        for v in range(values.shape[0]):
            name = table.names[v] if table.layout == "wide" else table.names[b]
            history.append((name, np.asarray(stamps), values[v]))
            future_times.append(np.asarray(future[b]))
            centres.append(centre[b, v])
            for i, q in enumerate(levels):
                band_rows[q].append(quantiles[i, b, v])
    bands = {q: np.array(rows) for q, rows in band_rows.items()}
    label = "median" if result.samples is not None else "mean"
    return render_forecast_png(history, future_times, np.array(centres), bands, centre_label=label)
