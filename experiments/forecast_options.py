"""Validate the default ``ForecastOptions`` against ``ForecastOptions.reference()`` (issue 14).

Both parts use the validation set of ``experiments/decoding_validation.py`` (ETTh1/ETTh2 train splits and
24 fresh synthetic series, generator seed 2026): no training run and no reported held-out evaluation
uses it. Results are written under ``runs/`` (git-ignored); the tables are printed as Markdown.

    # 1. defaults against the reference, every term, seasonal naive as the baseline of every ratio
    python experiments/forecast_options.py --part options
    #    ... and the defaults with one option at a time set back to the reference's value
    python experiments/forecast_options.py --part options --variants defaults,reference,gaps=mask,...

    # 2. trailing gaps: the last k points of every context hidden (NaN, an ingestion lag); the horizon
    #    still starts right after the context, so the model forecasts k + h steps and is scored on the h
    python experiments/forecast_options.py --part gaps

``--from-csv`` reprints a part's tables from its saved records without forecasting again.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from decoding_validation import validation_series

from toto_jax.eval import baselines, harness, metrics
from toto_jax.forecasting.options import ForecastOptions

# The defaults with one option at a time set to the reference's value (part 1's ablation).
VARIANTS = {
    "defaults": ForecastOptions(),
    "reference": ForecastOptions.reference(),
    "gaps=mask": ForecastOptions(gaps="mask"),
    "clip_outliers=None": ForecastOptions(clip_outliers=None),
    "normalize=none": ForecastOptions(normalize="none"),
    "value_cap=None": ForecastOptions(value_cap=None),
    "sampling=independent": ForecastOptions(sampling="independent"),
}
PARTS = {"options": "runs/forecast_options_options.csv", "gaps": "runs/forecast_options_gaps.csv"}


class HiddenTail:
    """A forecaster that sees each context with its last ``hidden`` steps set to NaN (values not yet
    ingested) and still forecasts the ``horizon`` steps right after the whole context."""

    def __init__(self, inner, hidden: int):
        self.inner, self.hidden = inner, hidden

    def __call__(self, contexts, horizon: int, season: int):
        if self.hidden:
            contexts = [np.concatenate([c[: -self.hidden], np.full(self.hidden, np.nan)]) for c in contexts]
        return self.inner(contexts, horizon, season)


# ---- tables --------------------------------------------------------------------------------------
def markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def options_table(records) -> str:
    summary = harness.summarize(records)
    horizons = records.groupby("term")["horizon"].agg(lambda h: "/".join(map(str, sorted(set(h)))))
    rows = []
    for row in summary.itertuples(index=False):
        if row.forecaster == "seasonal_naive":
            continue
        rows.append([f"{row.term} ({horizons[row.term]})", row.forecaster, str(row.series),
                     f"{row.MASE_ratio:.3f}", f"{row.CRPS_ratio:.3f}", f"{row.WQL_ratio:.3f}",
                     f"{row.CRPS_wins:.0%}"])  # fmt: skip
    return markdown(["term (horizon)", "options", "series", "MASE/SN", "CRPS/SN", "WQL/SN", "CRPS < SN on"], rows)


def series_family(names):
    """ETT, or the synthetic series' kind (kernelsynth, periodic, observability)."""
    return names.str.replace(r"^ETTh\d-train:.*$", "ETT", regex=True).str.replace(r"^synthetic-\d+:", "", regex=True)


def options_groups_table(records) -> str:
    """MASE and CRPS ratios per series family (ETT, and each synthetic kind)."""
    records = records.assign(family=series_family(records["series"]))
    names = list(dict.fromkeys(records["family"]))
    rows = []
    for term in dict.fromkeys(records["term"]):
        block = records[records["term"] == term]
        for forecaster in dict.fromkeys(block["forecaster"]):
            if forecaster == "seasonal_naive":
                continue
            cells = []
            for family in names:
                part = block[block["family"] == family]
                own = part[part["forecaster"] == forecaster].set_index("series")
                base = part[part["forecaster"] == "seasonal_naive"].set_index("series").reindex(own.index)
                mase = metrics.geometric_mean_ratio(own["MASE"], base["MASE"])[0]
                crps = metrics.geometric_mean_ratio(own["CRPS"], base["CRPS"])[0]
                cells.append(f"{mase:.3f} / {crps:.3f}")
            rows.append([term, forecaster] + cells)
    counts = records.drop_duplicates("series")["family"].value_counts()
    return markdown(["term", "options"] + [f"{n} ({counts[n]}): MASE / CRPS" for n in names], rows)


def gaps_table(records) -> str:
    """Per hidden tail k: MASE and CRPS ratios to seasonal naive (which sees the whole context) and the
    MAE of the median relative to the same options with nothing hidden (geometric means over series)."""
    parsed = records[records["forecaster"] != "seasonal_naive"]["forecaster"].str.extract(r"^(.*) k=(\d+)$")
    options_names = list(dict.fromkeys(parsed[0]))
    hidden = sorted(set(parsed[1].astype(int)))
    rows = []
    for term in dict.fromkeys(records["term"]):
        block = records[records["term"] == term]
        base = block[block["forecaster"] == "seasonal_naive"].set_index("series")

        def own(name, block=block, base=base):
            return block[block["forecaster"] == name].set_index("series").reindex(base.index)

        for k in hidden:
            row = [term, str(k)]
            for name in options_names:
                current, start = own(f"{name} k={k}"), own(f"{name} k=0")
                mase = metrics.geometric_mean_ratio(current["MASE"], base["MASE"])[0]
                crps = metrics.geometric_mean_ratio(current["CRPS"], base["CRPS"])[0]
                mae = metrics.geometric_mean_ratio(current["MAE"], start["MAE"])[0]
                row += [f"{mase:.3f}", f"{crps:.3f}", f"{mae:.3f}"]
            rows.append(row)
    header = ["term", "k hidden"]
    for name in options_names:
        header += [f"{name}: MASE/SN", f"{name}: CRPS/SN", f"{name}: MAE / MAE(k=0)"]
    return markdown(header, rows)


def gaps_groups_table(records) -> str:
    """MAE of the median relative to k = 0, per series family."""
    records = records.assign(family=series_family(records["series"]))
    parsed = records[records["forecaster"] != "seasonal_naive"]["forecaster"].str.extract(r"^(.*) k=(\d+)$")
    options_names = list(dict.fromkeys(parsed[0]))
    hidden = sorted(set(parsed[1].astype(int)))
    names = list(dict.fromkeys(records["family"]))
    rows = []
    for term in dict.fromkeys(records["term"]):
        for name in options_names:
            for k in hidden[1:]:
                row = [term, name, str(k)]
                for group in names:
                    block = records[(records["term"] == term) & (records["family"] == group)]
                    start = block[block["forecaster"] == f"{name} k=0"].set_index("series")
                    current = block[block["forecaster"] == f"{name} k={k}"].set_index("series").reindex(start.index)
                    row.append(f"{metrics.geometric_mean_ratio(current['MAE'], start['MAE'])[0]:.2f}")
                rows.append(row)
    counts = records.drop_duplicates("series")["family"].value_counts()
    return markdown(["term", "options", "k hidden"] + [f"{n} ({counts[n]}): MAE / MAE(k=0)" for n in names], rows)


def print_tables(part: str, records) -> None:
    if part == "options":
        print(options_table(records))
        print()
        print(options_groups_table(records))
    else:
        print(gaps_table(records))
        print()
        print(gaps_groups_table(records))


# ---- runs ----------------------------------------------------------------------------------------
def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=tuple(PARTS), required=True)
    parser.add_argument("--variants", default="defaults,reference",
                        help=f"options compared in part 'options', comma-separated, of: {', '.join(VARIANTS)}")
    parser.add_argument("--gap-options", default="defaults,reference", help="options compared in part 'gaps'")
    parser.add_argument("--hidden", default="0,1,5,10,30,60", help="part 'gaps': trailing steps hidden")
    parser.add_argument("--terms", default=None, help="default: short,medium,long (options), short (gaps)")
    parser.add_argument("--num-samples", type=int, default=None,
                        help="sample paths per forecast (default: 100 for 'options', 50 for 'gaps')")
    parser.add_argument("--max-windows", type=int, default=5,
                        help="latest windows per series and term (the harness default is 20)")
    parser.add_argument("--series", type=int, default=None, help="only the first N validation series (a pilot)")
    parser.add_argument("--only", default=None, help="only series whose name matches this regular expression")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default=None, help="records CSV (default: runs/forecast_options_<part>.csv)")
    parser.add_argument("--from-csv", action="store_true", help="reprint the tables from --output's records")
    args = parser.parse_args(argv)
    output = Path(args.output or PARTS[args.part])
    if args.num_samples is None:
        args.num_samples = 100 if args.part == "options" else 50

    import pandas as pd

    if args.from_csv:
        print_tables(args.part, pd.read_csv(output))
        return

    import toto_jax

    model = toto_jax.load("default")
    series = validation_series()[: args.series]
    if args.only:
        series = [s for s in series if re.search(args.only, s.name)]
    forecasters = {"seasonal_naive": baselines.SeasonalNaive()}
    if args.part == "options":
        terms = (args.terms or "short,medium,long").split(",")
        for name in args.variants.split(","):
            forecasters[name] = harness.TotoForecaster(model, num_samples=args.num_samples, seed=args.seed,
                                                       options=VARIANTS[name])  # fmt: skip
    else:
        terms = (args.terms or "short").split(",")
        for name in args.gap_options.split(","):
            toto = harness.TotoForecaster(model, num_samples=args.num_samples, seed=args.seed, options=VARIANTS[name])
            for k in map(int, args.hidden.split(",")):
                forecasters[f"{name} k={k}"] = HiddenTail(toto, k)
    began = time.perf_counter()
    result = harness.evaluate(forecasters, series, terms, max_windows=args.max_windows, progress=True)
    elapsed = time.perf_counter() - began
    output.parent.mkdir(parents=True, exist_ok=True)
    result.records.to_csv(output, index=False)
    print(f"{len(series)} series, terms {','.join(terms)}, {args.num_samples} sample paths, at most "
          f"{args.max_windows} windows, seed {args.seed}: {elapsed / 60:.1f} min; records in {output}")
    print("forecasting seconds: " + ", ".join(f"{n} {s:.0f}" for n, s in result.seconds.items()))
    print()
    print_tables(args.part, result.records)


if __name__ == "__main__":
    main()
