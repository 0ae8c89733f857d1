"""``toto-jax eval``: score a checkpoint against baselines on series files (registered by toto_jax/cli.py)."""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

from ..forecasting.options import add_options_arguments, options_from_args


def _csv_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "eval",
        help="rolling-window evaluation of a checkpoint against baselines",
        description=(
            "Rolling-window evaluation (GIFT-Eval conventions): short/medium/long horizons (1x/10x/15x the "
            "frequency's base prediction length), metrics pooled per series, reported as geometric means of "
            "ratios to seasonal naive (< 1 beats it). --protocol lsf runs the Toto paper's ETTh1/ETTh2 "
            "protocol instead (train-split z-normalisation, horizons 96/192/336/720, MAE/MSE of the median). "
            "The model forecasts with toto_jax.ForecastOptions() (the defaults of the API and toto-jax forecast), "
            "changed by the forecast option flags below. Progress (one line per series and term, with the time "
            "left) goes to stderr; the summary table to stdout."
        ),
        epilog=(
            "Summary columns: term; forecaster; series (how many were scored); MASE/SN, CRPS/SN, WQL/SN, MAE/SN, MSE/SN "
            "(the forecaster's metric divided by seasonal naive's on each series, geometric mean over the series: "
            "< 1 beats seasonal naive); CRPS wins (the share of series on which the forecaster's CRPS is below "
            "seasonal naive's). Files in --output-dir: metrics.csv (one row per term, forecaster and series: the "
            "metrics themselves), summary.csv (the table), plots/ (--plot); lsf.csv for --protocol lsf; nab.json or "
            "labelled.json for --anomaly."
        ),
    )
    parser.add_argument("data", nargs="+", help="CSV/Parquet files or directories of them (ETT CSV files for lsf; "
                        "the NAB directory for --anomaly nab; labelled tables for --anomaly labelled)")
    from ..checkpoint import BUNDLED_MODELS_HELP

    parser.add_argument("--checkpoint", default="default",
                        help="model checkpoint (any layout toto_jax.load reads, hf://OWNER/NAME, or a shipped model's "
                             f"name); default: the better shipped model, toto1-small. {BUNDLED_MODELS_HELP}")  # fmt: skip
    parser.add_argument("--protocol", choices=("rolling", "lsf"), default="rolling",
                        help="rolling: windows over the last --test-fraction of every series, scored against the "
                             "baselines (default); lsf: the ETTh1/ETTh2 long-sequence protocol on ETT CSV files")  # fmt: skip
    parser.add_argument("--anomaly", choices=("nab", "labelled"), default=None,
                        help="evaluate anomaly detection (toto_jax.detect, default DetectOptions) instead of "
                             "forecasts: 'nab' scores the Numenta Anomaly Benchmark directory given as DATA with "
                             "NAB's scorer (three profiles, beside NAB's scoreboard); 'labelled' reports AUC-PR, "
                             "best F1 and best point-adjusted F1 on wide tables with a 0/1 --label-column")
    parser.add_argument("--label-column", default="label", help="--anomaly labelled: the 0/1 column (default label)")
    parser.add_argument("--terms", type=_csv_list, default=["short", "medium", "long"], metavar="TERM[,TERM...]",
                        help="comma-separated horizons to score, from short, medium, long (1x, 10x, 15x the frequency's "
                             "base prediction length, e.g. 48, 480, 720 steps for 5-minute data); default: all three")  # fmt: skip
    parser.add_argument("--baselines", type=_csv_list, default=["seasonal_naive", "auto_ets"],
                        help="comma-separated from seasonal_naive, auto_ets, auto_arima (default: seasonal_naive,"
                             "auto_ets); AutoETS/AutoARIMA need statsforecast (pip install 'toto-jax[eval]')")  # fmt: skip
    parser.add_argument("--num-samples", type=int, default=100, help="sample paths per forecast (default 100)")
    parser.add_argument("--baseline-context", type=int, default=2048,
                        help="history given to AutoETS/AutoARIMA (default 2048 steps)")  # fmt: skip
    parser.add_argument("--max-windows", type=int, default=20, help="windows per series and term (default 20)")
    parser.add_argument("--test-fraction", type=float, default=0.1, help="share of each series tested (default 0.1)")
    parser.add_argument("--stride", type=int, default=None,
                        help="steps between windows (default: the horizon; lsf default 96)")  # fmt: skip
    parser.add_argument("--lsf-horizons", type=lambda s: [int(x) for x in _csv_list(s)], default=[96, 192, 336, 720],
                        metavar="H[,H...]", help="--protocol lsf: comma-separated horizons (default 96,192,336,720)")
    parser.add_argument("--output-dir", default="out/eval",
                        help="directory for metrics.csv, summary.csv and plots/ (lsf: lsf.csv; --anomaly: nab.json or "
                             "labelled.json) (default out/eval, created if missing; existing files there are "
                             "replaced)")  # fmt: skip
    parser.add_argument("--plot", action="store_true", help="write example forecast figures to OUTPUT_DIR/plots")
    parser.add_argument("--plot-count", type=int, default=4, help="series plotted per term (default 4)")
    parser.add_argument("--seed", type=int, default=0, help="seed of Toto's sample paths (default 0)")
    add_options_arguments(parser)  # --context-length, --clip-outliers, --sampling, --reference-options, ...
    parser.set_defaults(func=run_eval)
    return parser


def run_eval(args: argparse.Namespace) -> int:
    from .baselines import STATSFORECAST_HINT

    for name in ("num_samples", "max_windows", "plot_count", "baseline_context"):
        if getattr(args, name) <= 0:
            raise ValueError(f"--{name.replace('_', '-')} must be positive")
    if not 0 < args.test_fraction <= 1:
        raise ValueError("--test-fraction must be in (0, 1]")
    # The harness reports its own progress per series; the options' bars would interleave with it.
    options = options_from_args(args).replace(progress=False)
    if args.anomaly is not None:
        return _run_anomaly(args, options)
    try:
        if args.protocol == "lsf":
            return _run_lsf(args, options)
        return _run_rolling(args, options)
    except ImportError as error:
        if "statsforecast" in str(error):
            print(f"toto-jax eval: error: {STATSFORECAST_HINT}", file=sys.stderr)
            return 2
        raise


def _run_rolling(args, options) -> int:
    import toto_jax

    from . import harness
    from .baselines import make_baseline

    unknown = [t for t in args.terms if t not in harness.TERM_MULTIPLIERS]
    if unknown:
        raise ValueError(f"unknown term(s) {unknown}; expected some of {list(harness.TERM_MULTIPLIERS)}")
    baselines = list(dict.fromkeys(["seasonal_naive", *args.baselines]))
    forecasters = {name: make_baseline(name, max_context=args.baseline_context) for name in baselines}
    series = harness.read_series(args.data)
    model = toto_jax.load(args.checkpoint)  # "default": the model bundled with the package
    toto = harness.TotoForecaster(model, num_samples=args.num_samples, seed=args.seed, options=options)
    forecasters = {"toto": toto, **forecasters}
    print(f"evaluating {len(series)} series, terms {args.terms}, forecasters {list(forecasters)}", file=sys.stderr)
    began = time.perf_counter()
    result = harness.evaluate(
        forecasters, series, args.terms, test_fraction=args.test_fraction, max_windows=args.max_windows,
        stride=args.stride, keep_examples=args.plot_count if args.plot else 0, progress=True,
    )  # fmt: skip
    summary = harness.summarize(result.records)
    output = Path(args.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    result.records.to_csv(output / "metrics.csv", index=False)
    summary.to_csv(output / "summary.csv", index=False)
    print(harness.format_table(summary))
    timing = ", ".join(f"{name} {seconds:.0f}s" for name, seconds in result.seconds.items())
    print(f"\nX/SN: the metric's ratio to seasonal naive's, geometric mean over series (< 1 beats it); CRPS wins: "
          f"the share of series where the forecaster's CRPS is below seasonal naive's.\nforecasting time: {timing}; "
          f"total {time.perf_counter() - began:.0f}s")  # fmt: skip
    fallbacks = {n: f.fallbacks for n, f in forecasters.items() if getattr(f, "fallbacks", 0)}
    if fallbacks:
        print(f"fits that failed and fell back to seasonal naive: {fallbacks}")
    print(f"wrote {output / 'metrics.csv'} (per series) and {output / 'summary.csv'}")
    if args.plot:
        paths = harness.plot_examples(result.examples, output / "plots")
        print(f"wrote {len(paths)} figures to {output / 'plots'}")
    return 0


def _run_lsf(args, options) -> int:
    import pandas as pd

    import toto_jax

    from . import lsf

    model = toto_jax.load(args.checkpoint)  # "default": the model bundled with the package
    stride = args.stride or 96
    forecast_fn = lsf.toto_lsf_forecaster(model, num_samples=args.num_samples, seed=args.seed, options=options)
    context = forecast_fn.context_length  # --context-length, else the model's max_context
    from .harness import time_left

    rows = []
    work = {h: len(lsf.lsf_window_starts(h, stride)) * h for h in args.lsf_horizons}  # windows x steps
    total, done, began = len(args.data) * sum(work.values()), 0, time.perf_counter()
    for path in args.data:
        values, _ = lsf.read_ett(path)
        for horizon in args.lsf_horizons:
            print(f"[lsf] {Path(path).stem}, horizon {horizon}{time_left(time.perf_counter() - began, done, total)}",
                  file=sys.stderr, flush=True)  # fmt: skip
            for result in lsf.evaluate_lsf(forecast_fn, values, [horizon], stride=stride):
                rows.append({"dataset": Path(path).stem, "context": context, "stride": stride, **result})
            done += work[horizon]
    table = pd.DataFrame(rows)
    output = Path(args.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    table.to_csv(output / "lsf.csv", index=False)
    print(table.to_string(index=False, float_format=lambda x: f"{x:.4f}"))
    print(f"wrote {output / 'lsf.csv'}")
    return 0


def _run_anomaly(args, options) -> int:
    import json

    import toto_jax

    model = toto_jax.load(args.checkpoint)
    output = Path(args.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    if args.anomaly == "nab":
        from . import nab

        if len(args.data) != 1:
            raise ValueError("--anomaly nab takes one DATA argument: the NAB directory (data/, labels/)")
        corpus = nab.read_corpus(args.data[0])
        scores = nab.detect_corpus(model, corpus, forecast_options=options)
        results = {profile: nab.score_corpus(corpus, scores, profile) for profile in nab.PROFILES}
        print(nab.format_scoreboard(results))
        print(f"\nNAB {len(corpus.files)} files, thresholds optimised per profile over the corpus: "
              + ", ".join(f"{p} {r.threshold:.4f}" for p, r in results.items())
              + f"; {time.perf_counter() - began:.0f}s")  # fmt: skip
        summary = {p: {"score": r.score, "threshold": r.threshold, "raw": r.raw, **dataclasses.asdict(r.counts)}
                   for p, r in results.items()}  # fmt: skip
        (output / "nab.json").write_text(json.dumps(summary, indent=2))
        print(f"wrote {output / 'nab.json'}")
        return 0
    from .labelled import POINT_ADJUSTED_CAVEAT, evaluate_files, table_paths

    result, _ = evaluate_files(model, table_paths(args.data), args.label_column, forecast_options=options)
    print(f"{result.steps} steps, {result.labelled} labelled in {result.segments} segments")
    print(f"AUC-PR                  {result.auc_pr:.4f}")
    print(f"best F1                 {result.best_f1:.4f} (threshold {result.best_f1_threshold:.4f})")
    print(f"best point-adjusted F1  {result.best_point_adjusted_f1:.4f} (threshold "
          f"{result.best_point_adjusted_threshold:.4f}): {POINT_ADJUSTED_CAVEAT}")  # fmt: skip
    (output / "labelled.json").write_text(json.dumps(dataclasses.asdict(result), indent=2))
    print(f"wrote {output / 'labelled.json'}")
    return 0
