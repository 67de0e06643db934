"""Stopping a training run cleanly on SIGTERM/SIGINT."""

from __future__ import annotations

import signal

from .._signals import SignalTrap


class StopSignals(SignalTrap):
    """SIGTERM and SIGINT ask the loop to stop at the next step (a second SIGINT interrupts at once)."""

    def __init__(self):
        super().__init__()
        self.received: int | None = None

    def _handle(self, signum, frame):  # noqa: ARG002
        if self.received is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.received = signum
