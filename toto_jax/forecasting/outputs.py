"""Which statistics a written forecast holds (``toto-jax forecast``, dataset jobs, any tool that writes them).

One rule for every writer: by default a forecast carries its uncertainty (Toto 1.0 draws
``DEFAULT_NUM_SAMPLES`` sample paths, Toto 2.0 uses its quantile head) and writes the mean, the median and
the ``DEFAULT_QUANTILES`` levels; Toto 1.0's deterministic mean path alone (``num_samples`` None or 0, the
CLI's ``--samples 0``) writes the mean only. Imports no jax.
"""

from __future__ import annotations

import numpy as np

from .options import DEFAULT_NUM_SAMPLES

DEFAULT_QUANTILES = (0.1, 0.5, 0.9)


def output_statistics(quantile_model: bool, num_samples="auto", quantiles=None) -> tuple[int | None, list[float]]:
    """(the ``num_samples`` to give ``toto_jax.forecast``, the quantile levels to write beside the mean; with
    levels a median is written too). ``num_samples``: "auto" (the default above), a positive count of sample
    paths, or None / 0 for Toto 1.0's mean path alone. ``quantiles``: levels in (0, 1) (default
    ``DEFAULT_QUANTILES``; a Toto 2.0 model covers 0.1-0.9)."""
    if isinstance(num_samples, str) and num_samples != "auto":
        raise ValueError(f"num_samples must be 'auto', a positive integer, or 0 / None (the mean path), got {num_samples!r}")
    if num_samples is not None and not isinstance(num_samples, str) and (
        isinstance(num_samples, bool) or not isinstance(num_samples, (int, np.integer)) or num_samples < 0
    ):  # fmt: skip
        raise ValueError(f"the number of sample paths must be positive, or 0 for the mean path alone, got {num_samples!r}")
    levels = list(DEFAULT_QUANTILES if quantiles is None else (float(q) for q in quantiles))
    if not levels or any(not 0.0 < q < 1.0 for q in levels):
        raise ValueError(f"quantile levels must lie strictly between 0 and 1, got {levels}")
    if quantile_model:
        if num_samples not in ("auto", None):
            raise ValueError("a Toto 2.0 model forecasts quantiles directly, without sample paths: leave the sample "
                             "count unset (--samples, num_samples)")  # fmt: skip
        outside = [q for q in levels if not 0.1 <= q <= 0.9]
        if outside:
            raise ValueError(f"a Toto 2.0 forecast covers quantile levels 0.1 to 0.9, got {outside}")
        return None, levels
    if num_samples in (None, 0):
        if quantiles is not None:
            raise ValueError("quantile levels need sample paths: the mean path alone (--samples 0, num_samples None) "
                             "has none")  # fmt: skip
        return None, []
    return (DEFAULT_NUM_SAMPLES if num_samples == "auto" else int(num_samples)), levels


def statistic_columns(result, levels: list[float]) -> dict[str, np.ndarray]:
    """The columns of a written forecast, arrays [batch, variate, horizon]: ``mean``, and with levels ``median``
    and ``q<level>`` (``q0.1``)."""
    columns = {"mean": result.mean}
    if levels:
        columns["median"] = result.median
        columns.update({f"q{level:g}": values for level, values in zip(levels, result.quantile(levels))})
    return columns
