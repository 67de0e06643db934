"""Stopping a training run cleanly on SIGTERM/SIGINT."""

from __future__ import annotations

import signal
import threading
from typing import Any


class StopSignals:
    """SIGTERM and SIGINT ask the loop to stop at the next step (a second SIGINT interrupts at once).

    Handlers are installed only in the main thread (Python allows no other) and restored on exit.
    """

    def __init__(self):
        self.received: int | None = None
        self._old: dict[int, Any] = {}

    def _handle(self, signum, frame):  # noqa: ARG002
        if self.received is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.received = signum

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
