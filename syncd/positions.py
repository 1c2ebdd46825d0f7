"""Where the source is: what it has received, what is safe to save, what is saved.

Sources register every item in source order as a typed mark -- a
:class:`StreamMark` (a change event, an idle post-batch resume token) or a
:class:`BackfillMark` (a scanned page's last ``_id``) -- and get a ticket that
the writers complete. :class:`Positions` owns the three positions:

* **received**: the newest stream mark a source registered;
* **safe**: the newest mark whose predecessors have *all* completed (the
  watermark of :class:`~syncd.checkpoint.Checkpointer`, never "last seen");
* **saved**: what :meth:`Positions.save` last wrote to the state store.

It also bounds the work in flight (``open`` waits while ``capacity`` items are
outstanding): backpressure instead of unbounded buffering.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from syncd.checkpoint import Checkpointer, Ticket
from syncd.state import Store
from syncd.state.aio import StateCalls


@dataclass(frozen=True, slots=True)
class StreamMark:
    """A change-stream position: the resume token, and the cluster time it stands for."""

    token: dict[str, Any] | None
    cluster_time: tuple[int, int] | None = None


@dataclass(frozen=True, slots=True)
class BackfillMark:
    """A backfill position: everything of ``collection`` up to ``last_id`` is applied."""

    collection: str
    last_id: Any
    phase: str
    scanned: int
    done: bool


Mark = StreamMark | BackfillMark


class Positions:
    def __init__(self, store: Store, capacity: int) -> None:
        self._store = store
        self._queue = Checkpointer(capacity)
        self.received: StreamMark | None = None
        self.safe: StreamMark | None = None
        self.saved: StreamMark | None = None
        self.saved_backfill: dict[str, BackfillMark] = {}

    # -- what sources call -----------------------------------------------------
    async def open(self, mark: Mark | None, *, started: float) -> Ticket:
        """Register the next item (a change with work behind it); waits for capacity."""
        ticket = await self._queue.open(mark, started=started)
        if isinstance(mark, StreamMark):
            self.received = mark
        return ticket

    def mark(self, mark: Mark, *, started: float = 0.0) -> None:
        """A position with no work behind it (an idle resume token, a page boundary)."""
        self._queue.mark(mark, started=started)
        if isinstance(mark, StreamMark):
            self.received = mark

    def on_wait(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` while a source waits for capacity (backpressure is not a stall)."""
        self._queue.on_wait = callback

    # -- what the daemon calls ---------------------------------------------------
    async def save(self, calls: StateCalls) -> bool:
        """Write the newest safe positions (stream token, backfill progress) to the store
        (through ``calls``: off the event loop for a remote store); True when a new stream
        position was written."""
        stream: StreamMark | None = None
        backfill: dict[str, BackfillMark] = {}
        for mark in self._queue.advance():
            if isinstance(mark, StreamMark):
                stream = mark
            elif isinstance(mark, BackfillMark):
                backfill[mark.collection] = mark
        if stream is not None:
            self.safe = stream
        if stream == self.saved:
            stream = None
        if stream is None and not backfill:
            return False
        await calls(self._write, stream, list(backfill.values()))
        self.saved_backfill.update(backfill)
        if stream is None:
            return False
        self.saved = stream
        return True

    def _write(self, stream: StreamMark | None, backfill: list[BackfillMark]) -> None:
        with self._store.transaction():
            if stream is not None:
                self._store.save_position(stream.token, stream.cluster_time)
            for m in backfill:
                self._store.save_backfill_progress(
                    m.collection, m.last_id, m.phase, m.scanned, m.done
                )

    @property
    def outstanding(self) -> int:
        return self._queue.outstanding

    def oldest_pending_started(self) -> float | None:
        return self._queue.oldest_pending_started()

    async def drained(self) -> None:
        """Wait until no item is outstanding."""
        await self._queue.drained()
