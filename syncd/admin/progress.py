"""Progress for long admin operations: a rich bar on a terminal, plain lines otherwise.

Progress goes to stderr so stdout stays the report (or the ``--json`` summary).
Plain lines look like ``reconcile: deleting alice.test paintings 40/300`` and are
printed at most every ``interval`` seconds per task (and at the end), so a
journal or a CI log gets a heartbeat without a line per record.
"""

from __future__ import annotations

import sys
import time
from types import TracebackType
from typing import Any, TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)


class Task:
    """One counted step (``advance`` it as work completes)."""

    def __init__(self, owner: Reporter, description: str, total: int | None) -> None:
        self._owner = owner
        self.description = description
        self.total = total
        self.completed = 0
        self._rich_id: Any = None
        self._last_print = 0.0

    def advance(self, n: int = 1) -> None:
        self.completed += n
        self._owner._update(self)

    def set(self, completed: int) -> None:
        self.completed = completed
        self._owner._update(self)

    def done(self) -> None:
        if self.total is not None:
            self.completed = max(self.completed, self.total)
        self._owner._finish(self)


class Reporter:
    """``with Reporter("reconcile") as rep: t = rep.task("deleting", 300); t.advance()``.

    ``mode``: ``"auto"`` (rich on a TTY, lines otherwise), ``"rich"``, ``"plain"``,
    or ``"off"`` (nothing).
    """

    def __init__(
        self,
        prefix: str,
        *,
        mode: str = "auto",
        stream: TextIO | None = None,
        interval: float = 1.0,
    ) -> None:
        self.prefix = prefix
        self.stream = stream if stream is not None else sys.stderr
        if mode == "auto":
            mode = "rich" if self.stream.isatty() else "plain"
        self.mode = mode
        self.interval = interval
        self._progress: Progress | None = None

    def __enter__(self) -> Reporter:
        if self.mode == "rich":
            self._progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=Console(file=self.stream),
                transient=False,
            )
            self._progress.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def task(self, description: str, total: int | None = None) -> Task:
        t = Task(self, description, total)
        if self._progress is not None:
            t._rich_id = self._progress.add_task(description, total=total)
        elif self.mode == "plain":
            self._line(t, "start")
        return t

    def note(self, message: str) -> None:
        """A one-off line (not a counter)."""
        if self.mode == "off":
            return
        if self._progress is not None:
            self._progress.console.print(f"{self.prefix}: {message}")
        else:
            print(f"{self.prefix}: {message}", file=self.stream, flush=True)

    # -- internals ---------------------------------------------------------------
    def _update(self, t: Task) -> None:
        if self._progress is not None:
            self._progress.update(t._rich_id, completed=t.completed, total=t.total)
        elif self.mode == "plain":
            now = time.monotonic()
            if now - t._last_print >= self.interval:
                self._line(t)

    def _finish(self, t: Task) -> None:
        if self._progress is not None:
            self._progress.update(t._rich_id, completed=t.completed, total=t.total)
        elif self.mode == "plain":
            self._line(t, "done")

    def _line(self, t: Task, state: str = "") -> None:
        t._last_print = time.monotonic()
        count = f"{t.completed}/{t.total}" if t.total is not None else str(t.completed)
        tail = f" ({state})" if state else ""
        print(f"{self.prefix}: {t.description} {count}{tail}", file=self.stream, flush=True)
