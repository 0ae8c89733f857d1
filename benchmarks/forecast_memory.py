"""Peak memory of ``toto_jax.forecast`` against its memory budget, for many variates x many sample paths.

    python benchmarks/forecast_memory.py [--cases all|quick]

Each case runs in its own subprocess with the bundled model (random-walk inputs, horizon 96, default
``ForecastOptions`` but the budget): the memory plan (series and sample paths per compiled call, XLA's
buffer assignment of the largest program), the process's peak resident memory above what it held after
loading the model, and the wall time. Peak memory includes the compiler's own use and the output arrays,
which the budget (working memory of one compiled call) does not cover. Prints the load average before and
after; a time measured with a load above the core count is not a result (memory is).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

# (series, variates, context steps, sample paths, budget GiB)
CASES = {
    "quick": [(1, 2000, 1024, 32, 1.0)],
    "all": [
        (1, 2000, 1024, 32, 1.0),
        (1, 2000, 1024, 32, 4.0),
        (1, 2000, 2048, 32, 4.0),
        (64, 8, 2048, 100, 1.0),
    ],
}
HORIZON = 96


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux reports KiB


def run_case(series: int, variates: int, context: int, samples: int, budget_gib: float) -> dict:
    import numpy as np

    import toto_jax
    from toto_jax.forecasting.api import memory_plan

    model = toto_jax.load("default")
    rng = np.random.default_rng(0)
    values = 50 + np.cumsum(rng.normal(0, 1, (series, variates, context)), axis=-1)
    options = toto_jax.ForecastOptions(memory_budget=int(budget_gib * (1 << 30)), progress=False)
    loaded = peak_rss_mib()
    began = time.perf_counter()
    plan = memory_plan(model, values, HORIZON, samples, options=options)
    result = toto_jax.forecast(model, values, HORIZON, samples, options=options)
    seconds = time.perf_counter() - began
    assert np.isfinite(result.samples).all()
    return {"plan": plan.__dict__, "rss_after_load_mib": loaded, "peak_rss_mib": peak_rss_mib(), "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", choices=tuple(CASES), default="all")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        print(json.dumps(run_case(*json.loads(args.case))))
        return

    print(f"load average before: {os.getloadavg()} ({os.cpu_count()} cores)")
    print(f"{'series x variates x context, paths':<36}{'budget':>8}{'per call':>16}{'calls':>7}{'XLA working':>13}"
          f"{'peak above load':>17}{'time':>8}")  # fmt: skip
    for case in CASES[args.cases]:
        env = dict(os.environ, JAX_PLATFORMS=os.environ.get("JAX_PLATFORMS", "cpu"))
        completed = subprocess.run([sys.executable, __file__, "--case", json.dumps(case)], capture_output=True,
                                   text=True, env=env)  # fmt: skip
        if completed.returncode:
            sys.exit(f"case {case} failed:\n{completed.stderr[-3000:]}")
        r = json.loads(completed.stdout.strip().splitlines()[-1])
        series, variates, context, samples, budget = case
        plan = r["plan"]
        above = r["peak_rss_mib"] - r["rss_after_load_mib"]
        shape, per_call = f"{series} x {variates} x {context}, {samples}", "{series_per_call} x {paths_per_call} paths"
        print(f"{shape:<36}{budget:>6.1f} G{per_call.format(**plan):>16}{plan['calls']:>7}"
              f"{plan['working_bytes'] / 2**30:>11.2f} G{above / 1024:>15.2f} G{r['seconds']:>7.0f}s")  # fmt: skip
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
