"""SIGTERM (and Ctrl-C) as a preemption notice: finish the step, checkpoint, exit cleanly, resume on rerun.

Cloud TPU/GPU preemption and SLURM (`--signal=TERM@<seconds>`, `scancel`) send SIGTERM some seconds
before killing a job. `PreemptionWatch` turns the signal into a flag the training loop polls after every
step; the trainer then saves its 'latest' checkpoint and raises `Preempted`, which `launch.train`
reports as a clean exit. Multi-process runs agree on the flag (any process notified stops all), so every
process reaches the collective checkpoint save together.
"""

from __future__ import annotations

import signal
import threading

import jax
import numpy as np


class Preempted(RuntimeError):
    """Training stopped on SIGTERM after saving a checkpoint; rerunning the same command resumes."""


class PreemptionWatch:
    """Context manager: while active, SIGTERM and Ctrl-C (SIGINT) set `requested` instead of killing the
    process; a second Ctrl-C interrupts at once (KeyboardInterrupt), for a user who will not wait."""

    _REASONS = {signal.SIGTERM: "SIGTERM", signal.SIGINT: "Ctrl-C (SIGINT)"}

    def __init__(self):
        self._flag = False
        self.reason = ""
        self._previous: dict = {}

    def _handler(self, signum, frame):  # noqa: ARG002 - signal handler signature
        if self._flag and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self._flag = True
        self.reason = self.reason or self._REASONS.get(signum, f"signal {signum}")

    def __enter__(self) -> "PreemptionWatch":
        if threading.current_thread() is threading.main_thread():  # signals can only be set there
            self._previous = {sig: signal.signal(sig, self._handler) for sig in self._REASONS}
        return self

    def __exit__(self, *exc) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous = {}

    def requested(self) -> bool:
        """True once any process has received SIGTERM or Ctrl-C (agreed across processes when there are
        several)."""
        if jax.process_count() == 1:
            return self._flag
        from jax.experimental import multihost_utils
        flags = multihost_utils.process_allgather(np.asarray([self._flag], np.int32))
        if np.any(flags) and not self.reason:
            self.reason = "a stop signal (on another process)"
        return bool(np.any(flags))
