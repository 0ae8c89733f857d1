"""Stopping a run cleanly on SIGTERM / SIGINT, and time-based checkpoints, agreed on by every process.

A signal only marks the run as stopping; the training loop asks ``StopSignals.reached(step)`` after each
step, finishes that step, saves a checkpoint and exits with ``PREEMPTED_EXIT_CODE`` (``toto-jax train``).
Every process must stop after the same step, since a checkpoint save is a collective:

- one process: the Python signal handler's flag decides;
- several: JAX's preemption service (started by ``jax.distributed.initialize``) catches SIGTERM on any
  host, the coordination service picks the first step every host can still reach, and
  ``multihost_utils.reached_preemption_sync_point`` turns true there on all of them. SIGINT is turned into
  a SIGTERM to the process itself, so it goes the same way. No device collective runs per step.

Time-based saves (``checkpoint.every_minutes``) are decided by process 0's clock and broadcast, only at
the steps where metrics are read back anyway, so the other hosts never wait on it in between.
"""

from __future__ import annotations

import os
import signal
import threading
import time

import jax
import numpy as np

# EX_TEMPFAIL: "try again later". The run saved a checkpoint and stopped early; the same command resumes it.
PREEMPTED_EXIT_CODE = 75
SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopSignals:
    """Signal handlers installed by ``install`` and put back by ``restore`` (main thread only); created as soon
    as the step the run resumes from is known."""

    def __init__(self, resume_step: int = 0):
        self.multiprocess = jax.process_count() > 1
        self.received: int | None = None  # the signal number, once one arrived
        self.previous = {}
        self.notified_before = False
        if self.multiprocess:
            from jax.experimental import multihost_utils

            # JAX's step counter starts at 0 and a notice sets the stop at the highest counter reported + 1: a
            # resumed run notified before its first step (while it restores and compiles) would get a stop
            # behind it, never reached. True if a notice already set the stop at exactly this step.
            self.notified_before = multihost_utils.reached_preemption_sync_point(resume_step)

    def install(self) -> "StopSignals":
        if threading.current_thread() is not threading.main_thread():  # Python only signals the main thread
            return self
        # With several processes SIGTERM stays with JAX's preemption notifier; only SIGINT is rerouted.
        for signum in (signal.SIGINT,) if self.multiprocess else SIGNALS:
            self.previous[signum] = signal.signal(signum, self._handle)
        return self

    def restore(self) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)

    def _handle(self, signum, frame) -> None:
        self.received = signum
        if self.multiprocess:
            os.kill(os.getpid(), signal.SIGTERM)

    def reached(self, step: int) -> bool:
        """True after the step at which every process stops (to be called after every step)."""
        if self.multiprocess:
            from jax.experimental import multihost_utils

            return multihost_utils.reached_preemption_sync_point(step) or self.notified_before
        return self.received is not None


class SaveClock:
    """Whether ``every_minutes`` have passed since the last save, the same answer on every process."""

    def __init__(self, every_minutes: float | None):
        self.seconds = None if every_minutes is None else 60.0 * every_minutes
        self.last_save = time.monotonic()

    def saved(self) -> None:
        self.last_save = time.monotonic()

    def due(self) -> bool:
        if self.seconds is None:
            return False
        due = time.monotonic() - self.last_save >= self.seconds
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            due = bool(multihost_utils.broadcast_one_to_all(np.bool_(due)))
        return due
