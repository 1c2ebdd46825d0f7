"""State calls from the event loop without blocking it on a network round trip.

:class:`StateCalls` runs a store's calls either inline (the SQLite store: a
local file, microseconds a call) or on a dedicated thread (the MongoDB store:
every call a round trip). Every caller awaits its call before it makes the next
one, so a stage's own calls happen in its order; each call is one unit on the
store (its writes are buffered per thread and sent together), so more threads
are safe -- but measured, they did not help: scenario 6's MongoDB-state backfill
took 78 s with four threads as with one, and four partitions' lease renewals
waited behind the extra writes until the leases ran out. The daemon's stages reach the
store through it for their per-batch calls (``lookup``, ``apply``), so a slow
MongoDB slows the batches that wait for it, never the event loop. Reads that may
scan go through :meth:`StateCalls.read`, off the event loop on SQLite too.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, TypeVar

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
            return fn(*args, **kwargs)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread, partial(fn, *args, **kwargs))

    async def read(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """A read the store serves from any thread (its method says so), off the event loop
        on every backend: on SQLite in a worker thread with a read-only connection of its
        own, on MongoDB on the state thread like every call. For reads that may scan
        (the retry pass over a table of dead letters)."""
        if self._thread is None:
            return await asyncio.to_thread(fn, *args, **kwargs)
        return await self(fn, *args, **kwargs)

    def close(self) -> None:
        if self._thread is not None:
            self._thread.shutdown(wait=True)
