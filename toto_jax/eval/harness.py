"""Rolling-window evaluation of forecasters on a collection of series (GIFT-Eval style).

For each series and each horizon term (short / medium / long = 1x / 10x / 15x the frequency's base
prediction length, as GIFT-Eval), the last ``test_fraction`` of the series is cut into consecutive
windows of ``horizon`` steps (at most ``max_windows``, the latest ones). Every forecaster is given the whole
history before each window (``toto_jax.forecast`` keeps the last ``ForecastOptions.context_length`` steps;
classical models their own cap) and forecasts the window. Per series, metrics are pooled over its windows;
the summary divides each forecaster's metric by the seasonal-naive baseline's on the same series and takes
the geometric mean over series.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from ..forecasting.options import ForecastOptions
from . import metrics
from .baselines import QUANTILE_LEVELS, WindowForecast

log = logging.getLogger(__name__)

# GIFT-Eval's base prediction length per base frequency; medium and long are 10x and 15x.
BASE_PREDICTION_LENGTH = {"M": 12, "W": 8, "D": 30, "H": 48, "T": 48, "S": 60}
TERM_MULTIPLIERS = {"short": 1, "medium": 10, "long": 15}
SUMMARY_METRICS = ("MASE", "CRPS", "WQL", "MAE", "MSE")


@dataclasses.dataclass(frozen=True)
class Series:
    name: str
    values: np.ndarray  # float64 [time], NaN = missing
    freq: str | None

    @property
    def season(self) -> int:
        return metrics.seasonality(self.freq)


def prediction_length(freq: str | None, term: str) -> int:
    if term not in TERM_MULTIPLIERS:
        raise ValueError(f"unknown horizon term {term!r}; expected one of {list(TERM_MULTIPLIERS)}")
    base = 48
    if freq:
        base = BASE_PREDICTION_LENGTH.get(metrics._split_freq(freq)[1], 48)
    return base * TERM_MULTIPLIERS[term]


# ---- reading series ------------------------------------------------------------------------------
def _series_from_target(name: str, target: np.ndarray, freq: str | None) -> list[Series]:
    target = np.atleast_2d(np.asarray(target, np.float64))
    if target.shape[0] == 1:
        return [Series(name, target[0], freq)]
    return [Series(f"{name}[{i}]", row, freq) for i, row in enumerate(target)]


def _read_csv(path: Path, root: Path) -> list[Series]:
    from toto_jax.data.sources import read_csv_series

    series = read_csv_series(str(path))
    name = path.relative_to(root).as_posix() if path != root else path.name
    return _series_from_target(name, series["target"], series["freq"])


def _read_parquet(path: Path) -> list[Series]:
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    if "target" not in table.column_names:
        raise ValueError(f"{path}: no 'target' column (columns: {table.column_names})")
    columns = table.to_pydict()
    found = []
    for row, target in enumerate(columns["target"]):
        item = columns["item_id"][row] if "item_id" in columns else f"{path.stem}:{row}"
        freq = columns["freq"][row] if "freq" in columns else None
        values = np.array(target, dtype=np.float64)  # None -> NaN
        found += _series_from_target(str(item), values, freq)
    return found


def read_series(paths: Sequence[str | os.PathLike]) -> list[Series]:
    """Series from CSV files (NAB / cloud-monitoring layout: one series per file, a time column, value
    columns; label columns dropped), Parquet files (``target`` list column, one series per row; optional
    ``item_id``, ``freq``) or directories of them (searched recursively). Multivariate targets are
    evaluated variate by variate."""
    found: list[Series] = []
    for entry in map(Path, paths):
        if not entry.exists():
            raise FileNotFoundError(f"no such file or directory: {entry}")
        files = sorted(p for p in entry.rglob("*") if p.is_file()) if entry.is_dir() else [entry]
        root = entry if entry.is_dir() else entry.parent
        for path in files:
            suffix = path.suffix.lower()
            if suffix == ".csv":
                found += _read_csv(path, root)
            elif suffix == ".parquet":
                found += _read_parquet(path)
    if not found:
        raise ValueError(f"no .csv or .parquet series found in {[str(p) for p in paths]}")
    return found


# ---- windows ----------------------------------------------------------------------------------
def window_starts(length: int, horizon: int, *, test_fraction: float = 0.1, max_windows: int = 20,
                  min_history: int = 64, stride: int | None = None) -> list[int]:  # fmt: skip
    """Start indices of the evaluation windows: ``ceil(test_fraction * length / horizon)`` windows (at
    most ``max_windows``), every ``stride`` (default ``horizon``) steps, the last one ending at the end of
    the series; windows that would leave less than ``min_history`` steps of history are dropped."""
    stride = stride or horizon
    count = min(max_windows, max(1, math.ceil(test_fraction * length / horizon)))
    last = length - horizon
    starts = [last - i * stride for i in range(count)]
    return sorted(s for s in starts if s >= min_history)


# ---- forecasters ------------------------------------------------------------------------------
Forecaster = Callable[[Sequence[np.ndarray], int, int], list[WindowForecast]]


class TotoForecaster:
    """A Toto model as a forecaster: ``toto_jax.forecast`` of each window's whole history with
    ``num_samples`` sample paths (a Toto 2.0 model: its quantiles), made as ``options`` says (None: ``ForecastOptions()``, the defaults of
    the API and every tool). ``forecast`` keeps the last ``options.context_length`` steps (None: the
    model's ``config.max_context``) and does all preprocessing; values reach it in float64."""

    name = "toto"

    def __init__(self, model, *, num_samples: int = 100, seed: int = 0, options: ForecastOptions | None = None):
        self.model = model
        self.num_samples = num_samples
        self.seed = seed
        self.options = ForecastOptions() if options is None else options

    def __call__(self, contexts, horizon: int, season: int) -> list[WindowForecast]:
        from toto_jax.forecasting import forecast
        from toto_jax.models import is_toto2

        rows = [np.asarray(c)[None] for c in contexts]
        if is_toto2(self.model):  # a quantile model: its nine knots, no sample paths
            result = forecast(self.model, rows, horizon, seed=self.seed, options=self.options)
            return [
                WindowForecast.from_quantile_forecast(result.median[i, 0], result.mean[i, 0], result.quantiles[i, 0],
                                                      result.quantile_levels)  # fmt: skip
                for i in range(len(rows))
            ]
        result = forecast(self.model, rows, horizon, num_samples=self.num_samples, seed=self.seed,
                          options=self.options)  # fmt: skip
        return [WindowForecast.from_samples(result.samples[i, 0]) for i in range(len(rows))]


# ---- evaluation -------------------------------------------------------------------------------
def _window_stats(target: np.ndarray, history: np.ndarray, season: int, forecast: WindowForecast) -> dict:
    observed = ~np.isnan(target)
    crps = metrics.crps_from_quantiles(target, forecast.quantiles, QUANTILE_LEVELS)
    wql_rows = [QUANTILE_LEVELS.index(q) for q in metrics.WQL_LEVELS]
    quantile_losses = [
        metrics.quantile_loss(target, forecast.quantiles[row], q)[observed].sum()
        for row, q in zip(wql_rows, metrics.WQL_LEVELS)
    ]
    error = target - forecast.median
    stats = {
        "mase": metrics.mase(target, forecast.median, metrics.seasonal_error(history, season)),
        "crps_sum": float(crps[observed].sum()),
        "wql_sum": float(np.mean(quantile_losses)),
        "abs_target_sum": float(np.abs(target[observed]).sum()),
        "abs_error_sum": float(np.abs(error[observed]).sum()),
        "squared_error_sum": float(np.square(error[observed]).sum()),
        "observed": int(observed.sum()),
        "crps_samples_sum": float("nan"),
    }
    if forecast.samples is not None:
        stats["crps_samples_sum"] = float(metrics.crps_from_samples(target, forecast.samples)[observed].sum())
    return stats


def _pool(stats: list[dict]) -> dict:
    total = {key: sum(s[key] for s in stats) for key in stats[0] if key != "mase"}
    scale = total["abs_target_sum"]
    count = max(total["observed"], 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        mase_values = np.array([s["mase"] for s in stats])
        return {
            "MASE": float(np.mean(mase_values)) if np.all(np.isfinite(mase_values)) else float("nan"),
            "CRPS": total["crps_sum"] / scale if scale > 0 else float("nan"),
            "WQL": total["wql_sum"] / scale if scale > 0 else float("nan"),
            "MAE": total["abs_error_sum"] / count,
            "MSE": total["squared_error_sum"] / count,
            "CRPS_samples": total["crps_samples_sum"] / scale if scale > 0 else float("nan"),
            "windows": len(stats),
        }


@dataclasses.dataclass
class EvalResult:
    records: "pd.DataFrame"  # noqa: F821 - one row per (term, forecaster, series)
    examples: dict  # (term, series name) -> {"history", "target", "forecasts": {name: WindowForecast}}
    seconds: dict  # forecaster -> seconds spent forecasting


def evaluate(
    forecasters: Mapping[str, Forecaster],
    series: Sequence[Series],
    terms: Sequence[str] = ("short", "medium", "long"),
    *,
    test_fraction: float = 0.1,
    max_windows: int = 20,
    min_history: int = 64,
    stride: int | None = None,
    keep_examples: int = 0,
    progress: bool = False,
) -> EvalResult:
    """Metrics of every forecaster on every series and term; ``keep_examples`` series per term keep their
    last window's forecasts (for plots). ``progress`` prints a line per series and term with the time left,
    estimated from the forecast steps done so far (windows x horizon)."""
    import pandas as pd

    if "seasonal_naive" not in forecasters:
        raise ValueError("the evaluation needs the seasonal_naive baseline (every ratio is taken against it)")
    jobs = []  # (term, position, series, horizon, window starts)
    for term in terms:
        for position, item in enumerate(series, 1):
            horizon = prediction_length(item.freq, term)
            starts = window_starts(len(item.values), horizon, test_fraction=test_fraction, max_windows=max_windows,
                                   min_history=min_history, stride=stride)  # fmt: skip
            starts = [s for s in starts if np.any(~np.isnan(item.values[s : s + horizon]))
                      and np.any(~np.isnan(item.values[:s]))]  # fmt: skip
            if starts:
                jobs.append((term, position, item, horizon, starts))
            else:
                log.info("%s: too short for the %s horizon (%d steps); skipped", item.name, term, horizon)
    rows, examples = [], {}
    seconds = {name: 0.0 for name in forecasters}
    kept = dict.fromkeys(terms, 0)
    total, done, started = sum(len(starts) * horizon for *_, horizon, starts in jobs), 0, time.perf_counter()
    for term, position, item, horizon, starts in jobs:
        if progress:
            print(f"[{term}] {position}/{len(series)} {item.name}: {len(starts)} window(s) of {horizon}"
                  f"{time_left(time.perf_counter() - started, done, total)}", file=sys.stderr, flush=True)  # fmt: skip
        histories = [item.values[:s] for s in starts]
        targets = [item.values[s : s + horizon] for s in starts]
        season = item.season
        forecasts = {}
        for name, forecaster in forecasters.items():
            began = time.perf_counter()
            forecasts[name] = forecaster(histories, horizon, season)
            seconds[name] += time.perf_counter() - began
            stats = [_window_stats(t, h, season, f) for t, h, f in zip(targets, histories, forecasts[name])]
            rows.append({"term": term, "forecaster": name, "series": item.name, "freq": item.freq,
                         "season": season, "horizon": horizon, **_pool(stats)})  # fmt: skip
        if kept[term] < keep_examples:
            examples[(term, item.name)] = {
                "history": histories[-1], "target": targets[-1],
                "forecasts": {name: f[-1] for name, f in forecasts.items()},
            }  # fmt: skip
            kept[term] += 1
        done += len(starts) * horizon
    if not rows:
        raise ValueError("no series is long enough for any evaluation window")
    return EvalResult(pd.DataFrame(rows), examples, seconds)


def _duration(seconds: float) -> str:
    minutes, seconds = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"


def time_left(elapsed: float, done: float, total: float) -> str:
    """`` (1m05s elapsed, about 4m20s left)`` from the share of the work done (nothing before any is done)."""
    if done <= 0 or total <= done:
        return ""
    return f" ({_duration(elapsed)} elapsed, about {_duration(elapsed / done * (total - done))} left)"


def summarize(records, baseline: str = "seasonal_naive"):
    """One row per (term, forecaster): geometric means over series of each metric's ratio to ``baseline``,
    the number of series, and the share of series where the forecaster beats the baseline on CRPS."""
    import pandas as pd

    out = []
    for term in dict.fromkeys(records["term"]):
        block = records[records["term"] == term]
        reference = block[block["forecaster"] == baseline].set_index("series")
        for name in dict.fromkeys(block["forecaster"]):
            own = block[block["forecaster"] == name].set_index("series").reindex(reference.index)
            row = {"term": term, "forecaster": name, "series": len(own)}
            for metric in SUMMARY_METRICS:
                row[f"{metric}_ratio"], row[f"{metric}_n"] = metrics.geometric_mean_ratio(own[metric], reference[metric])
            with np.errstate(invalid="ignore"):
                row["CRPS_wins"] = float(np.mean(own["CRPS"].to_numpy() < reference["CRPS"].to_numpy()))
            out.append(row)
    return pd.DataFrame(out)


def format_table(summary) -> str:
    """A fixed-width text table of the ratios (lower is better; < 1 beats seasonal naive)."""
    header = ["term", "forecaster", "series"] + [f"{m}/SN" for m in SUMMARY_METRICS] + ["CRPS wins"]
    lines = [header]
    for row in summary.itertuples(index=False):
        row = row._asdict()
        lines.append(
            [row["term"], row["forecaster"], str(row["series"])]
            + [f"{row[f'{m}_ratio']:.3f}" for m in SUMMARY_METRICS]
            + [f"{row['CRPS_wins']:.0%}"]
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = ["  ".join(cell.rjust(w) if i > 1 else cell.ljust(w) for i, (cell, w) in enumerate(zip(line, widths)))
            for line in lines]  # fmt: skip
    text.insert(1, "-" * len(text[0]))
    return "\n".join(text)


def plot_examples(examples: Mapping, directory: str | os.PathLike, history_steps: int = 512) -> list[Path]:
    """One PNG per kept example: history tail, actuals, each forecaster's median, the model's 10-90% band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    low, high = QUANTILE_LEVELS.index(0.1), QUANTILE_LEVELS.index(0.9)
    for (term, name), example in examples.items():
        history = example["history"][-history_steps:]
        target = example["target"]
        past = np.arange(-len(history), 0)
        future = np.arange(len(target))
        figure, axis = plt.subplots(figsize=(11, 3.6))
        axis.plot(past, history, color="0.3", linewidth=0.8, label="history")
        axis.plot(future, target, color="black", linewidth=0.8, label="actual")
        for index, (forecaster, forecast) in enumerate(example["forecasts"].items()):
            color = f"C{index}"
            axis.plot(future, forecast.median, color=color, linewidth=1.1, label=f"{forecaster} median")
            if forecaster == "toto":
                axis.fill_between(future, forecast.quantiles[low], forecast.quantiles[high], color=color, alpha=0.25,
                                  label="toto 10-90%")  # fmt: skip
        axis.axvline(0, color="0.6", linewidth=0.6)
        axis.set_title(f"{name} ({term}, horizon {len(target)})", fontsize=9)
        axis.legend(fontsize=7, loc="upper left")
        figure.tight_layout()
        path = directory / f"{term}_{name.replace('/', '__').replace('.csv', '')}.png"
        figure.savefig(path, dpi=110)
        plt.close(figure)
        written.append(path)
    return written
