"""State calls from the event loop without blocking it on a network round trip.

:class:`StateCalls` runs a store's calls either inline (the SQLite store: a
local file, microseconds a call) or on a dedicated thread (the MongoDB store:
every call a round trip). Every caller awaits its call before it makes the next
one, so a stage's own calls happen in its order; each call is one unit on the
store (its writes are buffered per thread and sent together), so more threads
are safe -- but measured, they did not help: scenario 6's MongoDB-state backfill
took 78 s with four threads as with one (the MongoDB sandbox was scanning its
ledger for every lookup then, so four threads waited on one busy server), and four
partitions' lease renewals waited behind the extra writes until the leases ran
out. Every call is timed (``syncd_state_call_seconds`` by call, and
``syncd_state_call_wait_seconds`` for the wait for the thread). The daemon's stages reach the
store through it for their per-batch calls (``lookup``, ``apply``), so a slow
MongoDB slows the batches that wait for it, never the event loop. Reads that may
scan go through :meth:`StateCalls.read`, off the event loop on SQLite too.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from syncd import metrics
from syncd.state.model import Store

T = TypeVar("T")


#: Threads for an offloaded store's calls (MongoDB round trips in flight at once).
STATE_THREADS = 1


class StateCalls:
    def __init__(self, store: Store, *, offload: bool, threads: int = STATE_THREADS) -> None:
        self.store = store
        self._thread = ThreadPoolExecutor(threads, thread_name_prefix="state") if offload else None

    @classmethod
    def for_store(cls, store: Store) -> StateCalls:
        """Offload every store but the local SQLite one."""
        from syncd.state.sqlite import StateStore

        return cls(store, offload=not isinstance(store, StateStore))

    async def __call__(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        if self._thread is None:
            return _timed(fn, args, kwargs, None)
        loop = asyncio.get_running_loop()
        queued = time.perf_counter()
        return await loop.run_in_executor(self._thread, _timed, fn, args, kwargs, queued)

    async def read(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """A read the store serves from any thread (its method says so), off the event loop
        on every backend: on SQLite in a worker thread with a read-only connection of its
        own, on MongoDB on the state thread like every call. For reads that may scan
        (the retry pass over a table of dead letters)."""
        if self._thread is None:
            return await asyncio.to_thread(_timed, fn, args, kwargs, None)
        return await self(fn, *args, **kwargs)

    def close(self) -> None:
        if self._thread is not None:
            self._thread.shutdown(wait=True)


def _timed(
    fn: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any], queued: float | None
) -> T:
    """Run one store call and observe ``syncd_state_call_seconds`` (and, for a call that
    waited for the state thread, ``syncd_state_call_wait_seconds``)."""
    started = time.perf_counter()
    if queued is not None:
        metrics.STATE_CALL_WAIT_SECONDS.observe(started - queued)
    try:
        return fn(*args, **kwargs)
    finally:
        name = getattr(fn, "__name__", type(fn).__name__)
        metrics.STATE_CALL_SECONDS.labels(call=name).observe(time.perf_counter() - started)
