"""SIGTERM as a flag checked between steps (then: checkpoint and stop, exit 75)."""
from __future__ import annotations

import signal

import jax
import numpy as np


class Preemption:
    """Context manager: while active, SIGTERM sets `requested` instead of killing the process."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def __enter__(self):
        def handler(signum, frame):
            del signum, frame
            self.requested = True
        try:
            self._previous = signal.signal(signal.SIGTERM, handler)
        except ValueError:  # not the main thread: no preemption handling
            self._previous = None
        return self

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)

    def agreed(self) -> bool:
        """Whether any process was asked to stop (all processes agree on the answer)."""
        if jax.process_count() == 1:
            return self.requested
        from jax.experimental import multihost_utils
        flags = multihost_utils.process_allgather(np.asarray(self.requested))
        return bool(np.any(flags))
