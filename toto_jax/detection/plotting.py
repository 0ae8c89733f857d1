"""Detection plot: each series with its flagged anomalies, and its score beneath, one panel pair per variate."""

from __future__ import annotations

import io

import numpy as np

from ..forecasting.plotting import MAX_PANELS, _plain_times


def render_detection_png(panels, threshold: float, title: str | None = None) -> bytes:
    """PNG bytes of ``panels`` [(name, times, values, flags, scores)]: the values with flagged steps marked,
    and the score with the threshold."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    shown = panels[:MAX_PANELS]
    figure, axes = plt.subplots(2 * len(shown), 1, figsize=(11, 0.4 + 3.4 * len(shown)), squeeze=False,
                                layout="constrained", gridspec_kw={"height_ratios": [3, 1] * len(shown)})  # fmt: skip
    for number, (name, times, values, flags, scores) in enumerate(shown):
        top, bottom = axes[2 * number, 0], axes[2 * number + 1, 0]
        times, zone = _plain_times(times)
        values, flags = np.asarray(values, np.float64), np.asarray(flags, bool)
        top.plot(times, values, color="black", linewidth=0.8, label="value")
        top.plot(times[flags], values[flags], "o", color="tab:red", markersize=5, fillstyle="none",
                 label=f"anomaly ({int(flags.sum())})")  # fmt: skip
        top.set_title(name, fontsize=9)
        top.set_ylabel("value", fontsize=8)
        top.legend(loc="upper left", bbox_to_anchor=(1.005, 1.0), fontsize=7, borderaxespad=0)
        bottom.plot(times, scores, color="tab:purple", linewidth=0.8)
        bottom.axhline(threshold, color="tab:red", linewidth=0.8, linestyle="--")
        bottom.set_ylim(0, 1)
        bottom.set_ylabel("score", fontsize=8)
        bottom.set_xlabel("time" if zone is None else f"time ({zone})", fontsize=8)
        for axis in (top, bottom):
            locator = mdates.AutoDateLocator()
            axis.xaxis.set_major_locator(locator)
            axis.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
            axis.grid(alpha=0.3)
    heading = [title] if title else []
    if len(panels) > len(shown):
        heading.append(f"first {len(shown)} of {len(panels)} series")
    if heading:
        figure.suptitle(" - ".join(heading))
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=80)
    plt.close(figure)
    return buffer.getvalue()
