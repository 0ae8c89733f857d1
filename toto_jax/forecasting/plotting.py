"""Forecast plot: recent history, the median (or mean) path and nested quantile bands, one panel per series.

Every panel has its own dated time axis (panels may cover different time grids), axis labels, and
y-limits that ignore isolated spikes of the history (a single glitch would otherwise flatten the panel):
history points beyond the limits are marked at the panel's edge.
"""

from __future__ import annotations

import io

import numpy as np

MAX_PANELS = 12
# The y-range of a panel: the central 90 % of the visible history widened by SPIKE_FENCE times its width on
# each side, plus the whole forecast, plus a margin. History values beyond it are drawn as edge markers.
CENTRAL = (0.05, 0.95)
SPIKE_FENCE = 1.0
MARGIN = 0.08


def _plain_times(times):
    """Times as naive datetime64 for matplotlib (wall-clock time in their own zone) and the zone's name."""
    import pandas as pd

    stamps = pd.DatetimeIndex(times)
    if stamps.tz is None:
        return stamps.to_numpy(), None
    return stamps.tz_localize(None).to_numpy(), str(stamps.tz)


def y_limits(history: np.ndarray, forecast: list[np.ndarray]) -> tuple[float, float]:
    """Limits that contain the forecast and the history except its isolated spikes: history values more
    than ``SPIKE_FENCE`` central (5-95 %) ranges beyond that range are left out."""
    shown = [np.asarray(a, np.float64).ravel() for a in forecast]
    history = np.asarray(history, np.float64)
    history = history[np.isfinite(history)]
    if history.size:
        lo, hi = np.quantile(history, CENTRAL)
        fence = SPIKE_FENCE * (hi - lo)
        shown.append(history[(history >= lo - fence) & (history <= hi + fence)])
    values = np.concatenate(shown) if shown else np.zeros(0)
    values = values[np.isfinite(values)]
    if not values.size:
        return -1.0, 1.0
    low, high = float(values.min()), float(values.max())
    span = high - low
    if span <= 0:
        span = max(abs(high), 1.0) * 0.1
    return low - MARGIN * span, high + MARGIN * span


def render_forecast_png(*args, **kwargs) -> bytes:
    """PNG bytes of ``forecast_figure(*args, **kwargs)``."""
    figure = forecast_figure(*args, **kwargs)
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90)
    plt.close(figure)
    return buffer.getvalue()


def forecast_figure(
    history: list[tuple[str, np.ndarray, np.ndarray]],
    future_times: list[np.ndarray],
    centre: np.ndarray,
    bands: dict[float, np.ndarray] | None = None,
    history_points: int | None = None,
    centre_label: str = "median",
    title: str | None = None,
):
    """A matplotlib figure of ``history`` [(name, times, values)], ``centre`` [panel, horizon] and ``bands``
    {quantile level: [panel, horizon]}. Symmetric levels (q, 1 - q) are drawn as shaded bands. Times may
    be datetime64 arrays or ``pd.DatetimeIndex`` of any unit, with or without a time zone (shown in it)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    panels = min(len(history), MAX_PANELS)
    horizon = centre.shape[-1]
    keep = history_points or 4 * horizon
    # Constrained layout reserves room for the suptitle, the legends and the dates of every panel.
    figure, axes = plt.subplots(panels, 1, figsize=(10, 0.4 + 2.8 * panels), squeeze=False, layout="constrained")
    levels = sorted((bands or {}).keys())
    pairs = [(lo, 1 - lo) for lo in levels if lo < 0.5 and any(np.isclose(1 - lo, hi) for hi in levels)]
    for index in range(panels):
        axis = axes[index, 0]
        name, times, values = history[index]
        times, zone = _plain_times(times[-keep:])
        values = np.asarray(values, np.float64)[-keep:]
        future, _ = _plain_times(future_times[index])
        axis.plot(times, values, color="black", linewidth=1.0, label="history")
        shown = [centre[index]]
        for shade, (lo, hi) in enumerate(pairs):
            upper = next(bands[h] for h in levels if np.isclose(h, hi))
            axis.fill_between(
                future, bands[lo][index], upper[index], color="tab:blue",
                alpha=0.15 + 0.15 * shade, linewidth=0, label=f"{lo:g}-{hi:g} quantiles",
            )  # fmt: skip
            shown += [bands[lo][index], upper[index]]
        axis.plot(future, centre[index], color="tab:blue", linewidth=1.5, label=centre_label)
        low, high = y_limits(values, shown)
        axis.set_ylim(low, high)
        above, below = values > high, values < low
        if above.any() or below.any():  # marked just inside the top / bottom edge
            edge = dict(color="tab:red", markersize=6, linestyle="none", transform=axis.get_xaxis_transform())
            axis.plot(times[above], np.full(above.sum(), 0.96), marker="^", label="off-scale history", **edge)
            axis.plot(times[below], np.full(below.sum(), 0.04), marker="v", **edge)
        locator = mdates.AutoDateLocator()
        axis.xaxis.set_major_locator(locator)
        axis.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
        axis.tick_params(axis="x", labelbottom=True)
        axis.set_xlabel("time" if zone is None else f"time ({zone})", fontsize=8)
        axis.set_ylabel("value", fontsize=8)
        axis.set_title(name, fontsize=9)
        axis.grid(alpha=0.3)
        axis.legend(loc="upper left", bbox_to_anchor=(1.005, 1.0), fontsize=7, borderaxespad=0)
    heading = [title] if title else []
    if len(history) > panels:
        heading.append(f"first {panels} of {len(history)} series")
    if heading:
        figure.suptitle(" - ".join(heading))
    return figure
