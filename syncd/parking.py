"""Accounts that cannot write now are parked, so nobody else waits for them.

An account whose write budget is spent for longer than ``PARK_AFTER`` seconds
(the PDS's hourly limit: the shared guest account is exhausted by any busy
hour), whose credentials fail, or that the PDS refuses, gives up its PDS slot
and its place in the in-flight window: the writer hands its waiting documents
here, their *keys* (not their contents) are written to the state store, and
their changes complete, so the resume position moves on and every other
account carries on at once.

When the account can write again (its ``until`` passes, or its credentials
change in ``users``), its parked documents are re-read from MongoDB a page at a
time and routed as they are *then* -- a document that became private meanwhile
is never published, one that changed is published in its newest state -- and
each page is forgotten only once its changes are applied. Nothing is lost
(the keys are durable; a crash replays the unpark), and nothing waits in memory.

``syncd status`` lists each parked account (why, how many documents, until
when); ``syncd_parked_documents{account,reason}`` and a log line at the start
and the end of each parking say it too.

An account the PDS *refuses* (it does not exist, is deactivated or taken down)
is not parked: it is *gone* (:mod:`syncd.gone`, handled by :mod:`syncd.lifecycle`
through :attr:`Parking.gone`). Its waiting documents become skips, and its
writer gives way as a parked one does, for as long as it is gone.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import structlog

from syncd.changes import Op
from syncd.pds.errors import AccountUnavailableError, XrpcError
from syncd.state import ParkedAccount
from syncd.state.aio import StateCalls

log = structlog.get_logger("syncd.parking")

#: A wait the PDS asks for longer than this parks the account (shorter ones are waited).
PARK_AFTER = 15.0
#: Failing credentials are tried again after this long (or as soon as they change).
AUTH_RETRY = 600.0
#: An account the PDS refuses (deactivated, taken down) is tried again after this long.
REFUSED_RETRY = 3600.0
#: What the PDS answers (to a login too) for an account it will not write for.
REFUSALS = frozenset(
    {
        "AccountDeactivated",
        "AccountTakedown",
        "RepoDeactivated",
        "RepoTakendown",
        "AccountNotFound",
    }
)
#: Parked documents re-read and routed at once when an account is unparked.
UNPARK_PAGE = 200

#: Route these (collection, key) documents again, as they are now; returns once applied.
Reroute = Callable[[Sequence[tuple[str, str]]], Awaitable[None]]


class Blocked(Exception):
    """The account cannot write now: park what it has until ``until`` (epoch seconds)."""

    def __init__(self, reason: str, until: float) -> None:
        super().__init__(f"{reason} until {until:.0f}")
        self.reason = reason
        self.until = until


def blocked_by(exc: XrpcError, wait: float | None = None) -> Blocked:
    """The parking an account error (or a long rate-limit wait) calls for."""
    now = time.time()
    if wait is not None:
        return Blocked("rate_limited", now + wait)
    if isinstance(exc, AccountUnavailableError) or exc.error in REFUSALS:
        return Blocked(f"refused: {exc.error}", now + REFUSED_RETRY)
    return Blocked(f"auth: {exc.error}", now + AUTH_RETRY)


class GoneHandler(Protocol):
    """What becomes of an account the PDS refuses (:class:`syncd.lifecycle.Lifecycle`)."""

    def is_gone(self, did: str) -> bool: ...

    async def refused(self, did: str, reason: str, ops: Sequence[Op]) -> None:
        """``did`` is gone (``reason``: the refusal, or why it is gone already); settle
        ``ops`` (the caller then completes them)."""
        ...


@dataclass
class _Parked:
    reason: str
    until: float


class Parking:
    def __init__(self, calls: StateCalls, reroute: Reroute) -> None:
        self._calls = calls
        self._reroute = reroute
        self._parked: dict[str, _Parked] = {}
        self._woken: set[str] = set()
        self._wake = asyncio.Event()
        #: Refusals make an account gone instead of parked (set by the engine).
        self.gone: GoneHandler | None = None

    def is_parked(self, did: str) -> bool:
        """The account gives way: parked, or gone."""
        return did in self._parked or (self.gone is not None and self.gone.is_gone(did))

    def until(self, did: str) -> float | None:
        p = self._parked.get(did)
        return None if p is None else p.until

    def reason(self, did: str) -> str | None:
        p = self._parked.get(did)
        return None if p is None else p.reason

    async def load(self) -> None:
        """Parkings that survived a restart (their documents are still waiting)."""
        for a in await self._calls(self._calls.store.parked_accounts):
            self._parked[a.did] = _Parked(a.reason, a.until)

    async def park(self, did: str, blocked: Blocked, ops: Sequence[Op]) -> None:
        """Write ``ops``' document keys as parked under ``did`` (durably; the caller then
        completes the ops). A refusal, or an account that is gone, hands them to
        :attr:`gone` instead."""
        gone = self.gone
        if gone is not None and (blocked.reason.startswith("refused") or gone.is_gone(did)):
            await gone.refused(did, blocked.reason, ops)
            return
        keys = sorted({(op.change.collection, op.change.key) for op in ops})
        await self._calls(self._calls.store.park, did, blocked.reason, blocked.until, keys)
        current = self._parked.get(did)
        if current is None or current.reason != blocked.reason:
            log.warning(
                "account_parked",
                did=did,
                reason=blocked.reason,
                until=round(blocked.until),
                seconds=round(blocked.until - time.time(), 1),
                documents=len(keys),
            )
        self._parked[did] = _Parked(blocked.reason, max(blocked.until, time.time()))

    def wake(self, did: str) -> None:
        """The account may write again (its credentials changed): unpark it now."""
        if did in self._parked:
            self._woken.add(did)
            self._wake.set()

    def accounts(self) -> list[tuple[str, str, float]]:
        return [(did, p.reason, p.until) for did, p in sorted(self._parked.items())]

    async def run(self, stopping: asyncio.Event) -> None:
        """Unpark each account whose time has come (or that was woken)."""
        while not stopping.is_set():
            now = time.time()
            due = [d for d, p in self._parked.items() if p.until <= now or d in self._woken]
            for did in due:
                await self._unpark(did)
            self._wake.clear()
            soonest = min((p.until for p in self._parked.values()), default=now + 1.0)
            try:
                await asyncio.wait_for(self._wake.wait(), max(0.05, min(1.0, soonest - now)))
            except TimeoutError:
                pass

    async def _unpark(self, did: str) -> None:
        parked = self._parked.pop(did)
        self._woken.discard(did)
        started = time.time()
        log.info("account_unparking", did=did, reason=parked.reason)
        store = self._calls.store
        routed = 0
        after: tuple[str, str] | None = None
        while page := await self._calls(store.parked_page, did, started, UNPARK_PAGE, after):
            after = page[-1]
            await self._reroute(page)
            await self._calls(store.unpark, did, page, started)
            routed += len(page)
            if did in self._parked:
                break  # blocked again while unparking: the rest waits for the next turn
        before = max(started, parked.until)
        if did not in self._parked and await self._calls(store.unpark_account, did, before):
            log.info("account_unparked", did=did, reason=parked.reason, documents=routed)
        elif did not in self._parked:
            # Documents remain (parked again by an unpark that raced): go round again.
            self._parked[did] = parked
            self._woken.add(did)


def reason_label(reason: str) -> str:
    """A bounded metric label: the kind of reason, not its detail."""
    return reason.split(":", 1)[0]


def describe(accounts: Sequence[ParkedAccount]) -> list[dict[str, object]]:
    """For ``syncd status``."""
    now = time.time()
    return [
        {
            "did": a.did,
            "reason": a.reason,
            "documents": a.documents,
            "until": a.until,
            "in_seconds": round(max(0.0, a.until - now), 1),
            "since": a.since,
        }
        for a in accounts
    ]
