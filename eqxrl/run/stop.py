"""Ctrl-C as a request: the loop stops at the next step boundary and checkpoints."""

from __future__ import annotations

import signal


class StopFlag:
    """Turns the first Ctrl-C into a request to stop at the next step boundary."""

    def __init__(self):
        self.requested = False
        self._old = None

    def __enter__(self) -> StopFlag:
        try:
            self._old = signal.signal(signal.SIGINT, self._handle)
        except ValueError:  # not in the main thread: leave signals alone
            self._old = None
        return self

    def _handle(self, signum, frame):
        if self.requested:  # a second Ctrl-C stops at once
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc):
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)
