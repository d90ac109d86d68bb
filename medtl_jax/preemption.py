"""SIGTERM as a preemption notice: finish the current step, checkpoint, exit cleanly, resume on rerun.

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
    """Context manager: while active, SIGTERM sets `requested` instead of killing the process."""

    def __init__(self):
        self._flag = False
        self._previous = None

    def _handler(self, signum, frame):  # noqa: ARG002 - signal handler signature
        self._flag = True

    def __enter__(self) -> "PreemptionWatch":
        if threading.current_thread() is threading.main_thread():  # signals can only be set there
            self._previous = signal.signal(signal.SIGTERM, self._handler)
        return self

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
            self._previous = None

    def requested(self) -> bool:
        """True once any process has received SIGTERM (agreed across processes when there are several)."""
        if jax.process_count() == 1:
            return self._flag
        from jax.experimental import multihost_utils
        flags = multihost_utils.process_allgather(np.asarray([self._flag], np.int32))
        return bool(np.any(flags))
