"""The machine's load around a measurement: a speed ratio measured above the core count is not a result
(PyTorch's thread pool slows far more than XLA under load)."""

from __future__ import annotations

import os


def load_average() -> float:
    return os.getloadavg()[0]


def report(before: float) -> None:
    """Print the load average before and now, and warn when either is above the core count."""
    after, cores = load_average(), os.cpu_count()
    print(f"load average before {before:.2f}, after {after:.2f} ({cores} cores)")
    if max(before, after) > cores:
        print("WARNING: the machine was loaded (load average above the core count); PyTorch's thread pool slows "
              "far more than XLA under load, so these ratios are not a result. Re-run on an idle machine.")
