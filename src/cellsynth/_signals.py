"""Handling SIGTERM and SIGINT in a context (training loops, the benchmark grid); imports nothing heavy."""

from __future__ import annotations

import signal
import threading
from typing import Any


class SignalTrap:
    """A context that routes SIGTERM and SIGINT to ``_handle`` and restores the previous handlers on exit.

    Handlers are installed only in the main thread (Python allows no other).
    """

    def __init__(self):
        self._old: dict[int, Any] = {}

    def _handle(self, signum, frame):
        raise NotImplementedError

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
