"""Bad-data policy: validate raw series, count and log what gets skipped.

Policy (documented in docs/data.md):

* Problems with a single series (empty, all values missing, non-numeric
  values, wrong number of dimensions) never raise: the series is skipped and
  counted under a reason, with a logged warning the first time a reason occurs
  for a source and again at every power of ten of its count.
* Non-finite values (NaN, +-inf, values overflowing float32) inside an
  otherwise usable series become missing values (padding_mask False); inf
  values are counted under ``inf_values``.
* Problems with a whole file or with the configuration (unreadable Parquet
  footer, missing ``target`` column, non-numeric ``target`` type, missing
  directory) are detected when the source is built, in the main process:
  either the file is skipped with a counted warning (``on_bad_file="skip"``,
  the default) or a ``DataError`` naming the file is raised
  (``on_bad_file="raise"``). A source with no usable file is always an error.
"""

from __future__ import annotations

import collections
import logging
import threading

import numpy as np

logger = logging.getLogger("toto_jax.data")


class DataError(ValueError):
    """Raised for data that cannot be used and cannot be skipped silently."""


class BadDataLog:
    """Per-process counters of skipped series / repaired values for one source.

    Instances live inside sources, so each grain worker process has its own
    copy; counts are per process and restart from zero after unpickling.
    """

    def __init__(self, source_name: str):
        self.source_name = source_name
        self.counts: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()

    def record(self, reason: str, detail: str = "", count: int = 1) -> None:
        with self._lock:
            before = self.counts[reason]
            self.counts[reason] += count
            after = self.counts[reason]
        # Log on the first occurrence and whenever the count crosses a power of 10.
        if before == 0 or len(str(before)) != len(str(after)):
            logger.warning(
                "data source %r: %s (%s); %d so far for this reason in this process",
                self.source_name,
                reason,
                detail or "no detail",
                after,
            )

    def __getstate__(self):
        return {"source_name": self.source_name}

    def __setstate__(self, state):
        self.__init__(state["source_name"])


def clean_target(raw, log: BadDataLog, detail: str = "") -> np.ndarray | None:
    """Validates one raw series and returns float32 [variates, length] or None.

    Missing values stay NaN (they become padding_mask False later). Returns None
    (and records the reason in ``log``) when the series must be skipped.
    """
    if raw is None:
        log.record("empty", detail)
        return None
    try:
        array = np.asarray(raw)
    except ValueError:  # ragged nested lists
        log.record("ragged_variates", detail)
        return None
    if array.dtype.kind not in "biuf":
        try:
            array = array.astype(np.float64)
        except (TypeError, ValueError):
            log.record("non_numeric", f"{detail} dtype={array.dtype}")
            return None
    if array.ndim == 1:
        array = array[None, :]
    if array.ndim != 2:
        log.record("bad_shape", f"{detail} shape={array.shape}")
        return None
    if array.size == 0:
        log.record("empty", detail)
        return None
    with np.errstate(over="ignore", invalid="ignore"):
        values = array.astype(np.float32, copy=False)
    infinite = np.isinf(values)
    if infinite.any():
        log.record("inf_values", detail, count=int(infinite.sum()))
        values = np.where(infinite, np.float32(np.nan), values)
    has_real = ~np.isnan(values).all(axis=1)
    if not has_real.any():
        log.record("all_missing", detail)
        return None
    if not has_real.all():
        log.record("all_missing_variate", detail, count=int((~has_real).sum()))
        values = values[has_real]
    return np.ascontiguousarray(values)
