"""``toto-jax detect``: anomaly scores for every row of a CSV/Parquet table, written in the input's layout.

Tables are read and written as ``toto-jax forecast`` reads and writes them (``forecasting/tabular.py``): wide
(a timestamp column + one column per variate: one multivariate series) or long (``unique_id, ds, y``: one series
per id). The output is the input table with score columns added (wide: ``<column>_score`` per variate; both:
``anomaly_score``, the combined score of the row's series, and ``anomaly``, whether it reaches the threshold).
The input is never overwritten, an existing output or plot needs ``--overwrite``, and nothing is written on
error.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

# The ForecastOptions flags that shape detection (how series are prepared); decoding flags do not apply.
_UNUSED_FORECAST_FLAGS = dict(sampling=None, decode_block_size=None, scaler_fallback_min_obs=None,
                              memory_budget_gb=None, infer_nonnegative=None)  # fmt: skip


def add_parser(subparsers) -> None:
    from ..forecasting.cli import add_job_arguments
    from ..forecasting.options import GAP_MODES, NORMALIZE_MODES, ForecastOptions, _optional_positive
    from .options import DetectOptions

    detect_default, forecast_default = DetectOptions(), ForecastOptions()
    parser = subparsers.add_parser(
        "detect",
        help="anomaly scores for the series of a CSV/Parquet table",
        description="Score every row of a wide table (timestamp column + one column per variate) or a long table "
        "(unique_id, ds, y) for anomalies with Toto's predictive distribution; each row's score uses only the rows "
        "before it. Writes the table with score columns added, in its own layout.",
    )
    parser.add_argument("--input", required=True,
                        help="CSV or Parquet table; with an --output directory, a dataset: a file, a directory or a "
                             "glob of them, local, gs:// or s3://")  # fmt: skip
    parser.add_argument("--output", required=True,
                        help="CSV or Parquet file to write (the input's layout + score columns); or a directory "
                             "(ending in '/', or an existing one; local, gs:// or s3://): a dataset job writing rows "
                             "unique_id, ds, y, surprise, score, anomaly_score, anomaly in Parquet shards (see "
                             "'dataset jobs' below)")  # fmt: skip
    parser.add_argument("--plot", type=Path, default=None, help="PNG of the series with their flagged anomalies")
    parser.add_argument("--checkpoint", default="default", help="model (any checkpoint toto_jax.load reads; a Toto "
                        "1.0 model); default: the bundled model")  # fmt: skip
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing --output / --plot (the input is never overwritten)")  # fmt: skip
    add_job_arguments(parser)
    group = parser.add_argument_group("detect options (defaults: toto_jax.DetectOptions())")
    group.add_argument("--threshold", type=float, default=detect_default.threshold,
                       help=f"scores at or above it are flagged (default {detect_default.threshold:g})")
    group.add_argument("--stride", type=int, default=detect_default.stride,
                       help="steps between sliding windows (default: half the context)")
    group.add_argument("--history", type=int, default=detect_default.history,
                       help=f"steps of the series' past surprise a step is compared with "
                            f"(default {detect_default.history})")  # fmt: skip
    group.add_argument("--min-reference", type=float, default=detect_default.min_reference,
                       help=f"floor on that past surprise, nats (default {detect_default.min_reference:g})")
    group.add_argument("--extreme-surprise", type=_optional_float, default=detect_default.extreme_surprise,
                       help="nats of surprise at which a value beyond the series' whole past range is an extreme "
                            f"('none': no extremes; default {detect_default.extreme_surprise:g})")  # fmt: skip
    group.add_argument("--level-span", type=_optional_steps, default=detect_default.level_span,
                       help="steps whose mean is a level shift when beyond the range of all earlier such means "
                            f"('none': no shifts; default {detect_default.level_span})")  # fmt: skip
    group.add_argument("--level-margin", type=float, default=detect_default.level_margin,
                       help="how far (a fraction of that range's width) the mean must pass it "
                            f"(default {detect_default.level_margin:g})")  # fmt: skip
    group.add_argument("--drift-allowance", type=_optional_float, default=detect_default.drift_allowance,
                       help="allowance per step of the CUSUM of the model's normal scores whose new maxima are "
                            f"drifts ('none': no drifts; default {detect_default.drift_allowance:g})")  # fmt: skip
    group.add_argument("--season", type=_season, default=detect_default.season,
                       help="seasonal shifts: level shifts of the change since one season earlier, a duration "
                            "(e.g. 1D, 7D, from the timestamps' median interval) or a number of steps ('none': "
                            f"no seasonal shifts; default {detect_default.season})")  # fmt: skip
    group = parser.add_argument_group("series preparation (defaults: toto_jax.ForecastOptions())")
    group.add_argument("--reference-options", action="store_true",
                       help="no gap filling, clipping or normalization (ForecastOptions.reference())")
    group.add_argument("--context-length", type=int, default=None,
                       help="steps of history per window (default: the model's maximum context)")
    group.add_argument("--gaps", choices=GAP_MODES, default=None,
                       help=f"missing values fed as the last observed value ('fill') or masked (default "
                            f"{forecast_default.gaps}); they are never scored")  # fmt: skip
    group.add_argument("--clip-outliers", type=_optional_positive("central ranges"), default=argparse.SUPPRESS,
                       metavar="K", help="clip the history the model sees to K central ranges of the past ('none': "
                       f"off; default {forecast_default.clip_outliers:g}); scored values are never clipped")
    group.add_argument("--normalize", choices=NORMALIZE_MODES, default=None,
                       help=f"per-variate normalization from the past, float64 (default {forecast_default.normalize})")
    group.add_argument("--devices", type=int, default=None, metavar="N", help="local devices to split windows over")
    parser.set_defaults(func=run, **_UNUSED_FORECAST_FLAGS)


def _optional_float(text: str) -> float | None:
    return None if text.strip().lower() in ("none", "off") else float(text)


def _optional_steps(text: str) -> int | None:
    return None if text.strip().lower() in ("none", "off") else int(text)


def _season(text: str) -> str | int | None:
    text = text.strip()
    if text.lower() in ("none", "off"):
        return None
    return int(text) if text.lstrip("-").isdigit() else text


def _options(args):
    from ..forecasting.options import options_from_args
    from .options import DetectOptions

    try:
        detect = DetectOptions(threshold=args.threshold, stride=args.stride, history=args.history,
                               min_reference=args.min_reference, extreme_surprise=args.extreme_surprise,
                               level_span=args.level_span, level_margin=args.level_margin,
                               drift_allowance=args.drift_allowance, season=args.season)  # fmt: skip
    except ValueError as error:
        message = str(error)
        for name in ("threshold", "stride", "history", "min_reference", "extreme_surprise", "level_span",
                     "level_margin", "drift_allowance", "season"):
            message = message.replace(f"DetectOptions.{name}", "--" + name.replace("_", "-"))
        raise ValueError(message) from None
    return detect, options_from_args(args).replace(progress=False)


def run(args: argparse.Namespace) -> int:
    from ..forecasting import tabular
    from ..forecasting.cli import _check_paths, names_directory

    detect_options, forecast_options = _options(args)
    if names_directory(args.output):
        return _run_job(args, detect_options, forecast_options)
    args.input, args.output = Path(args.input), Path(args.output)
    if not args.input.is_file():
        raise FileNotFoundError(f"--input file not found: {args.input}")
    _check_paths(args.input, args.output, args.plot, overwrite=args.overwrite)
    frame = tabular.read_table(args.input)
    table = tabular.parse_table(frame)

    import toto_jax

    model = toto_jax.load(args.checkpoint)
    detection = toto_jax.detect(model, table.values, timestamps=table.timestamps, options=detect_options,
                                forecast_options=forecast_options)
    output = scored_frame(frame, table, detection)
    png = _render(table, detection, args.input.name) if args.plot is not None else None
    tabular.write_table(output, args.output, overwrite=args.overwrite)
    if png is not None:
        tabular.atomic_write(args.plot, lambda path: Path(path).write_bytes(png), overwrite=args.overwrite)
    flagged = int(output["anomaly"].sum())
    print(f"scored {len(output)} rows of {args.input} ({flagged} flagged at >= {detect_options.threshold:g}); "
          f"wrote {args.output}" + (f" and {args.plot}" if png is not None else ""))  # fmt: skip
    return 0


def _run_job(args: argparse.Namespace, detect_options, forecast_options) -> int:
    from ..distributed import initialize
    from ..forecasting.cli import finish_job, job_arguments
    from .job import detect_dataset

    initialize()  # processes launched together split the shards
    if args.plot is not None:
        raise ValueError("--plot draws the series of one table; a dataset job writes Parquet shards only")
    summary = detect_dataset(args.checkpoint, args.input, args.output, options=detect_options,
                             forecast_options=forecast_options, **job_arguments(args))  # fmt: skip
    return finish_job(summary)


def scored_frame(frame, table, detection):
    """The input ``frame`` with score columns, rows in the input's order."""
    import pandas as pd

    output = frame.copy()
    if table.layout == "wide":
        for name, scores in zip(table.names, detection.scores[0]):
            output[f"{name}_score"] = scores
        output["anomaly_score"] = detection.combined[0]
    else:
        column = np.zeros(len(frame))
        for (_, group), combined in zip(frame.groupby("unique_id", sort=False), detection.combined):
            stamps = pd.to_datetime(group["ds"])
            order = np.argsort(stamps.to_numpy(), kind="stable")  # the order parse_table put the series in
            column[frame.index.get_indexer(group.index[order])] = combined
        output["anomaly_score"] = column
    output["anomaly"] = output["anomaly_score"] >= detection.threshold
    return output


def _render(table, detection, title: str) -> bytes:
    from .plotting import render_detection_png

    panels = []
    for b, (values, stamps) in enumerate(zip(table.values, table.timestamps)):
        for v in range(values.shape[0]):
            name = table.names[v] if table.layout == "wide" else table.names[b]
            panels.append((name, stamps, values[v], detection.flags[b][v], detection.scores[b][v]))
    return render_detection_png(panels, detection.threshold, title=f"{title}: anomalies")
