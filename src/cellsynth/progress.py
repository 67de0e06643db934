"""Progress of long steps: a redrawing bar on a terminal, a short plain line now and then in a log.

A tqdm bar rewrites its line with ``\\r`` several times a second; sent to a file or a pipe (a batch
job's log) a ten-minute fit leaves hundreds of kilobytes of such updates. :class:`Progress` draws the
tqdm bar only when its stream is a terminal (or a Jupyter kernel's); otherwise it writes one plain,
complete line at most every ``interval`` seconds, and a last line with the final count when it closes.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from typing import IO, Any


class Progress:
    """Report the progress of a long step; the same calls on a terminal, in a log, or switched off.

    Parameters
    ----------
    total
        Expected number of units (``None``: unknown, or only a cap; a rate is shown, not an ETA).
    desc
        What is progressing, e.g. ``"training"``.
    unit
        Name of one unit, e.g. ``"epoch"``.
    enabled
        ``False`` writes nothing at all.
    stream
        Where to write; ``None`` is ``sys.stderr`` at construction time.
    interval
        Off a terminal: the least number of seconds between two lines.
    clock
        Off a terminal: the source of seconds (``time.monotonic``); tests pass a fake one.

    Notes
    -----
    Use it as a context manager, or call :meth:`close`. Set the postfix before :meth:`update` so the
    line that update may write carries the current values.

    Examples
    --------
    >>> with Progress(total=3, desc="GAT", unit="epoch", enabled=False) as bar:
    ...     for epoch in range(3):
    ...         bar.set_postfix(loss=0.5)
    ...         bar.update(1)
    """

    def __init__(
        self,
        total: float | None = None,
        *,
        desc: str = "",
        unit: str = "it",
        enabled: bool = True,
        stream: IO[str] | None = None,
        interval: float = 10.0,
        clock: Callable[[], float] | None = None,
    ):
        self.total = total
        self.desc = desc
        self.unit = unit
        self.enabled = enabled
        self.n: float = 0
        self.interval = float(interval)
        self._stream = sys.stderr if stream is None else stream
        self._clock = clock or time.monotonic
        self._postfix = ""
        self._closed = not enabled
        self._bar = None
        self._start = self._last_line = self._clock()
        self._written: tuple[float, str] | None = None  # (count, postfix) of the last plain line
        if enabled and _is_interactive(self._stream, stream is None):
            from tqdm.auto import tqdm

            self._bar = tqdm(
                total=total, desc=desc, unit=unit, file=self._stream, leave=False, mininterval=0.5
            )

    @property
    def redraws(self) -> bool:
        """Whether this is a redrawing (tqdm) bar rather than plain lines or nothing."""
        return self._bar is not None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def update(self, n: float = 1) -> None:
        """Count ``n`` more units done; off a terminal, write a line when ``interval`` has passed."""
        if self._closed:
            return
        self.n += n
        if self._bar is not None:
            self._bar.update(n)
            return
        now = self._clock()
        if now - self._last_line >= self.interval:
            self._write_line(now)

    def set_postfix(self, **values: Any) -> None:
        """Show ``key=value`` pairs after the count (floats to 4 significant digits); replaces the last."""
        self.set_status(", ".join(f"{k}={_fmt(v)}" for k, v in values.items()))

    def set_status(self, text: str) -> None:
        """Show a short free text after the count; replaces the last postfix or status."""
        if self._closed:
            return
        self._postfix = str(text)
        if self._bar is not None:
            self._bar.set_postfix_str(self._postfix, refresh=False)

    def close(self) -> None:
        """Finish: clear the bar, or write the final line if the last one written is out of date."""
        if self._closed:
            return
        self._closed = True
        if self._bar is not None:
            self._bar.close()
        elif self._written != (self.n, self._postfix):
            self._write_line(self._clock())

    def _write_line(self, now: float) -> None:
        self._stream.write(self._line(now) + "\n")
        self._stream.flush()
        self._last_line = now
        self._written = (self.n, self._postfix)

    def _line(self, now: float) -> str:
        elapsed = max(now - self._start, 0.0)
        count = _number(self.n)
        done = f"{count}/{_number(self.total)} {self.unit}" if self.total else f"{count} {self.unit}"
        if self.total:
            done += f" ({100 * self.n / self.total:.0f}%)"
        timing = [_duration(elapsed)]
        if self.n > 0 and elapsed > 0:
            rate = self.n / elapsed
            timing.append(f"{rate:.3g} {self.unit}/s" if rate >= 1 else f"{1 / rate:.3g} s/{self.unit}")
            if self.total and self.n < self.total:
                timing.append(f"ETA {_duration((self.total - self.n) / rate)}")
        head = f"{self.desc}: " if self.desc else ""
        tail = f" {self._postfix}" if self._postfix else ""
        return f"{head}{done} [{', '.join(timing)}]{tail}"


def _is_interactive(stream: IO[str], default_stream: bool) -> bool:
    """A terminal, or (for the default stream) a Jupyter kernel, where tqdm.auto draws a widget."""
    try:
        if stream.isatty():
            return True
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False
    get_ipython = getattr(sys.modules.get("IPython"), "get_ipython", None)
    if default_stream and get_ipython is not None:
        return getattr(get_ipython(), "kernel", None) is not None
    return False


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _number(value: float | None) -> str:
    if value is None:
        return "?"
    return str(int(value)) if float(value).is_integer() else f"{value:.4g}"


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"
