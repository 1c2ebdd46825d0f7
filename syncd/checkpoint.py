"""Watermarks: which source position is safe to save.

Items enter in source order (change events, idle resume tokens, backfill batch
boundaries) and complete in any order (accounts write in parallel). The
checkpoint is the payload of the newest item whose predecessors have *all*
completed — a watermark, not "last seen" — so a saved position never skips an
event that was still in flight when the process died.

``Checkpointer`` also bounds the work in flight: ``open`` waits while
``capacity`` items are outstanding, which stops the source from reading while
the PDS is slow (backpressure instead of unbounded buffering).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Any


class Ticket:
    """One source item's completion. It may fan out into several parts (accounts)."""

    __slots__ = ("_owner", "_waiter", "done", "parts", "payload", "started")

    def __init__(self, owner: Checkpointer, payload: Any, started: float) -> None:
        self._owner = owner
        self.payload = payload
        self.parts = 1
        self.done = False
        self.started = started
        self._waiter: asyncio.Future[None] | None = None

    def add_part(self) -> None:
        self.parts += 1

    def complete(self) -> None:
        """Complete one part; the ticket is done when every part is."""
        if self.done:
            return
        self.parts -= 1
        if self.parts <= 0:
            self.done = True
            self._owner._completed()
            if self._waiter is not None and not self._waiter.done():
                self._waiter.set_result(None)

    async def wait(self) -> None:
        """Until every part is complete."""
        if self.done:
            return
        if self._waiter is None:
            self._waiter = asyncio.get_running_loop().create_future()
        await self._waiter


class Checkpointer:
    def __init__(self, capacity: int) -> None:
        self._items: deque[Ticket] = deque()
        self._capacity = max(1, capacity)
        self._outstanding = 0
        self._space = asyncio.Event()
        self._space.set()
        self._drained = asyncio.Event()
        self._drained.set()
        self.on_wait: Callable[[], None] | None = None

    @property
    def outstanding(self) -> int:
        return self._outstanding

    def oldest_pending_started(self) -> float | None:
        for item in self._items:
            if not item.done:
                return item.started
        return None

    async def open(
        self, payload: Any = None, *, started: float = 0.0, weight: bool = True
    ) -> Ticket:
        """Register the next item in source order (waits for capacity if ``weight``)."""
        while weight and self._outstanding >= self._capacity:
            self._space.clear()
            try:
                await asyncio.wait_for(self._space.wait(), 1.0)
            except TimeoutError:
                pass
            if self.on_wait is not None:
                self.on_wait()  # waiting on the PDS is backpressure, not a stuck loop
        ticket = Ticket(self, payload, started)
        self._items.append(ticket)
        self._outstanding += 1
        self._drained.clear()
        return ticket

    def mark(self, payload: Any, *, started: float = 0.0) -> None:
        """A position with no work behind it (an idle resume token, a batch boundary)."""
        ticket = Ticket(self, payload, started)
        ticket.done = True
        self._items.append(ticket)
        if self._outstanding == 0:
            self._drained.set()

    def _completed(self) -> None:
        self._outstanding -= 1
        if self._outstanding < self._capacity:
            self._space.set()
        if self._outstanding == 0:
            self._drained.set()

    def advance(self) -> list[Any]:
        """Pop every leading completed item; return their non-None payloads in order."""
        out: list[Any] = []
        while self._items and self._items[0].done:
            item = self._items.popleft()
            if item.payload is not None:
                out.append(item.payload)
        return out

    async def drained(self) -> None:
        """Wait until no item is outstanding."""
        await self._drained.wait()
