"""Forecast plot: recent history, the median (or mean) path and nested quantile bands, one panel per series."""

from __future__ import annotations

import io

import numpy as np

MAX_PANELS = 12


def render_forecast_png(
    history: list[tuple[str, np.ndarray, np.ndarray]],
    future_times: list[np.ndarray],
    centre: np.ndarray,
    bands: dict[float, np.ndarray] | None = None,
    history_points: int | None = None,
    centre_label: str = "median",
) -> bytes:
    """PNG bytes for ``history`` [(name, times, values)], ``centre`` [panel, horizon] and ``bands``
    {quantile level: [panel, horizon]}. Symmetric levels (q, 1 - q) are drawn as shaded bands."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    panels = min(len(history), MAX_PANELS)
    horizon = centre.shape[-1]
    keep = history_points or 4 * horizon
    figure, axes = plt.subplots(panels, 1, figsize=(10, 2.6 * panels), squeeze=False)
    levels = sorted((bands or {}).keys())
    pairs = [(lo, 1 - lo) for lo in levels if lo < 0.5 and any(np.isclose(1 - lo, hi) for hi in levels)]
    for index in range(panels):
        axis = axes[index, 0]
        name, times, values = history[index]
        axis.plot(times[-keep:], values[-keep:], color="black", linewidth=1.0, label="history")
        for shade, (lo, hi) in enumerate(pairs):
            upper = next(bands[h] for h in levels if np.isclose(h, hi))
            axis.fill_between(
                future_times[index], bands[lo][index], upper[index], color="tab:blue",
                alpha=0.15 + 0.15 * shade, linewidth=0, label=f"{lo:g}-{hi:g} quantiles",
            )  # fmt: skip
        axis.plot(future_times[index], centre[index], color="tab:blue", linewidth=1.5, label=centre_label)
        axis.set_title(name, fontsize=9)
        axis.legend(loc="upper left", fontsize=7)
    if len(history) > panels:
        figure.suptitle(f"first {panels} of {len(history)} series")
    figure.autofmt_xdate()
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90)
    plt.close(figure)
    return buffer.getvalue()
