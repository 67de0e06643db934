"""The grid on screen while a benchmark runs: a live models × seeds table on a terminal, one line per
finished cell in a log."""

from __future__ import annotations

import sys
import time
from typing import IO

_STYLE = {"done": "green", "kept": "green", "failed": "red", "running": "yellow", "skipped": "dim"}


class GridDisplay:
    """Show the state of each grid cell: queued, running (with its time), done, kept, failed, skipped.

    Parameters
    ----------
    models, seeds
        The rows and columns of the grid.
    enabled
        ``False`` shows nothing.
    stream
        Where to write (default ``sys.stderr``); a terminal gets the live table (rich), anything else one
        line per finished cell.
    """

    def __init__(
        self, models: list[str], seeds: list[int], *, enabled: bool = True, stream: IO[str] | None = None
    ):
        self.models, self.seeds = list(models), list(seeds)
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self.state: dict[tuple[str, int], str] = {(m, s): "queued" for m in models for s in seeds}
        self._started: dict[tuple[str, int], float] = {}
        self._finished = 0
        self._live = None
        try:
            interactive = self.stream.isatty()
        except (AttributeError, ValueError):
            interactive = False
        if enabled and interactive:
            from rich.console import Console
            from rich.live import Live

            console = Console(file=self.stream)
            self._live = Live(self._table(), console=console, refresh_per_second=2, transient=False)

    def __enter__(self) -> GridDisplay:
        if self._live is not None:
            self._live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.update(self._table())
            self._live.stop()

    def start(self, model: str, seed: int) -> None:
        """Cell ``(model, seed)`` is running."""
        self.state[model, seed] = "running"
        self._started[model, seed] = time.monotonic()
        self.refresh()

    def finish(self, model: str, seed: int, status: str, detail: str = "") -> None:
        """Cell ``(model, seed)`` ended as ``status`` (done, kept, failed, skipped); ``detail`` follows."""
        self.state[model, seed] = status if not detail else f"{status}: {detail}"
        self._finished += 1
        if self._live is None and self.enabled:
            total = len(self.state)
            line = f"benchmark [{self._finished}/{total}] {model} seed {seed}: {status}"
            self.stream.write(line + (f" ({detail})" if detail else "") + "\n")
            self.stream.flush()
        self.refresh()

    def refresh(self) -> None:
        """Redraw the live table (running cells' times move on)."""
        if self._live is not None:
            self._live.update(self._table())

    def _cell_text(self, model: str, seed: int) -> str:
        state = self.state[model, seed]
        if state == "running":
            seconds = int(time.monotonic() - self._started[model, seed])
            return f"[yellow]running {seconds // 60}:{seconds % 60:02d}[/]"
        from rich.markup import escape

        style = _STYLE.get(state.split(":")[0])
        return f"[{style}]{escape(state)}[/]" if style else escape(state)

    def _table(self):
        from rich.table import Table

        table = Table(title="cellsynth benchmark", show_lines=False)
        table.add_column("model")
        for seed in self.seeds:
            table.add_column(f"seed {seed}", overflow="fold", max_width=40)
        for model in self.models:
            table.add_row(model, *(self._cell_text(model, s) for s in self.seeds))
        return table
