"""Account handles remembered for ``syncd status`` (a handle change needs no PDS write).

The router learns a handle when it makes or updates an account's writer, the account
lifecycle when ``users`` says so. Both note it here: a handle already noted costs
nothing, a new one is saved through :class:`~syncd.state.aio.StateCalls`, so on the
MongoDB state the round trip never blocks the event loop.
"""

from __future__ import annotations

import asyncio

import structlog

from syncd.state.aio import StateCalls
from syncd.state.model import Store

log = structlog.get_logger("syncd.handles")


def _key(did: str) -> str:
    return f"handle:{did}"


def _save(store: Store, did: str, handle: str) -> None:
    if store.get_meta(_key(did)) != handle:
        store.set_meta(_key(did), handle)


class Handles:
    def __init__(self, calls: StateCalls) -> None:
        self.calls = calls
        self._noted: dict[str, str] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def save(self, did: str, handle: str | None) -> None:
        """Remember ``handle`` as ``did``'s now."""
        if not handle or self._noted.get(did) == handle:
            return
        self._noted[did] = handle
        await self.calls(_save, self.calls.store, did, handle)

    def note(self, did: str, handle: str | None) -> None:
        """:meth:`save` in the background (for callers that cannot wait)."""
        if not handle or self._noted.get(did) == handle:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no event loop (a one-shot tool): save it now
            self._noted[did] = handle
            _save(self.calls.store, did, handle)
            return
        task = loop.create_task(self._save_logged(did, handle))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _save_logged(self, did: str, handle: str) -> None:
        try:
            await self.save(did, handle)
        except Exception as exc:  # status shows the old handle; the next note retries
            self._noted.pop(did, None)
            log.warning("handle_not_saved", did=did, error=type(exc).__name__)

    async def flush(self) -> None:
        """Wait for the handles being saved (before the store closes)."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
