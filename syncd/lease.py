"""The leader lease: which instance of a cluster partition may write.

One document per partition in ``syncd_leases`` (``_id`` ``<cluster>/<n>``):
``owner`` (the instance id), ``fence`` (the fencing token, incremented on
every change of owner), ``expires_at`` (wall-clock seconds). The holder renews
it every ``lease_seconds / 3``; another instance takes it only after
``expires_at`` has passed, and taking it increments ``fence``.

The holder does not trust the document alone: it stops considering itself the
leader at ``renewal start + lease_seconds - margin`` on its own monotonic
clock (``margin`` = a fifth of the lease), so a process that was paused
(SIGSTOP, a VM freeze, a long GC) finds on waking that its lease ran out
before any other instance could take it, and writes nothing. ``check()`` is
that test; the state store calls it before every write and the repository
client before every PDS write (see :mod:`syncd.state.mongo` and
:mod:`syncd.pds.repo` for what else fences a write that is already in flight).

Clock assumption: the hosts' wall clocks differ by less than the margin (NTP).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

import structlog
from pymongo import ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.collection import Collection
from pymongo.errors import DuplicateKeyError, PyMongoError
from pymongo.write_concern import WriteConcern

from syncd import metrics

log = structlog.get_logger("syncd.lease")

COLLECTION = "syncd_leases"  # the state database's; see syncd.state.mongo.LEASES


class LeaseLost(BaseException):
    """This instance no longer holds its lease: stop writing at once.

    A ``BaseException`` on purpose (like ``CancelledError``): it must pass
    through every ``except Exception`` that dead-letters or retries a failed
    write, because after losing the lease nothing may be written at all.
    """


class Fence(Protocol):
    """What the state store and the repository client need of a lease."""

    @property
    def token(self) -> int: ...

    def check(self) -> None:
        """Raise :class:`LeaseLost` unless the lease is certainly still held."""

    def lose(self, why: str) -> None:
        """Record that the lease is gone (a write was fenced out)."""


class Lease:
    """One partition's lease, held (or waited for) by this instance."""

    def __init__(
        self,
        collection: AsyncCollection[dict[str, Any]],
        *,
        cluster: str,
        partition: int,
        owner: str,
        seconds: float,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        renewals: Collection[dict[str, Any]] | None = None,
    ) -> None:
        majority = WriteConcern("majority", wtimeout=5000)
        self._coll = collection.with_options(write_concern=majority)
        # Renewals run on their own thread with a synchronous client (see keep()).
        self._renewals = None if renewals is None else renewals.with_options(write_concern=majority)
        self.cluster = cluster
        self.partition = partition
        self.id = f"{cluster}/{partition}"
        self.owner = owner
        self.seconds = seconds
        self.margin = seconds / 5
        self._clock = clock
        self._monotonic = monotonic
        self._token = 0
        self._deadline = 0.0
        self.held = False
        self._revoked = False
        self.lost = asyncio.Event()
        self.lost_reason: str | None = None

    @property
    def token(self) -> int:
        return self._token

    @property
    def renew_every(self) -> float:
        return self.seconds / 3

    def remaining(self) -> float:
        """Seconds this instance may still act as the leader (0 when not held)."""
        return max(0.0, self._deadline - self._monotonic()) if self.held else 0.0

    def check(self) -> None:
        if not self.held or self._revoked:
            raise LeaseLost(self.lost_reason or "the lease is not held")
        if self._monotonic() >= self._deadline:
            self.lose("the lease ran out before it was renewed")
            raise LeaseLost(self.lost_reason or "expired")

    def lose(self, why: str) -> None:
        if self.held:
            self.held = False
            self.lost_reason = why
            metrics.LEASE_LOST.inc()
            log.warning("lease_lost", lease=self.id, fence=self._token, reason=why)
        self.lost.set()

    async def try_acquire(self) -> bool:
        """Take the lease if it is free or lapsed; True if now held (with a new fence).

        A live lease is never re-taken, not even by its own ``owner`` name: a process
        restarted with a fixed ``instance_id`` waits for its predecessor's lease to
        lapse and then holds a newer fencing token than anything that one wrote."""
        started = self._monotonic()
        now = self._clock()
        expires = now + self.seconds
        try:
            doc = await self._coll.find_one_and_update(
                {
                    "_id": self.id,
                    "$or": [{"expires_at": {"$lt": now}}, {"owner": None}],
                },
                {
                    "$set": {"owner": self.owner, "expires_at": expires, "acquired_at": now},
                    "$inc": {"fence": 1},
                },
                upsert=True,
                return_document=ReturnDocument.AFTER,
            )
        except DuplicateKeyError:
            return False  # someone else holds it and it has not lapsed
        if doc is None or doc.get("owner") != self.owner:
            return False
        self._token = int(doc["fence"])
        self._deadline = started + self.seconds - self.margin
        self.held = True
        self._revoked = False
        self.lost = asyncio.Event()
        self.lost_reason = None
        metrics.LEASE_ACQUIRED.inc()
        log.info("lease_acquired", lease=self.id, fence=self._token, owner=self.owner)
        return True

    async def renew(self) -> bool:
        """Extend the lease; False (and ``lost`` set) if it is no longer ours."""
        if not self.held:
            return False
        started = self._monotonic()
        now = self._clock()
        result = await self._coll.update_one(
            {"_id": self.id, "owner": self.owner, "fence": self._token},
            {"$set": {"expires_at": now + self.seconds, "renewed_at": now}},
        )
        if result.matched_count == 0:
            self.lose("another instance holds the lease")
            return False
        if self.held:
            self._deadline = started + self.seconds - self.margin
        return self.held

    async def keep(self) -> None:
        """Renew every ``seconds / 3`` until lost; a failed renewal is retried until the deadline.

        With a synchronous ``renewals`` collection the renewals run on a thread of
        their own, so an event loop busy for seconds (a slow state store, a burst of
        CPU work) cannot starve them into a needless failover; a paused process
        (SIGSTOP) still pauses the thread with it. Without one, they run on the loop.
        """
        if self._renewals is None:
            await self._keep_on_loop()
            return
        loop = asyncio.get_running_loop()
        stop = threading.Event()
        thread = threading.Thread(
            target=self._keep_on_thread, args=(loop, stop), name="lease-renewal", daemon=True
        )
        thread.start()
        try:
            await self.lost.wait()
        finally:
            stop.set()

    def _keep_on_thread(self, loop: asyncio.AbstractEventLoop, stop: threading.Event) -> None:
        assert self._renewals is not None
        while self.held and not stop.wait(self.renew_every):
            started = self._monotonic()
            now = self._clock()
            try:
                result = self._renewals.update_one(
                    {"_id": self.id, "owner": self.owner, "fence": self._token},
                    {"$set": {"expires_at": now + self.seconds, "renewed_at": now}},
                )
            except PyMongoError as exc:
                log.warning("lease_renew_failed", lease=self.id, error=type(exc).__name__)
                if self._monotonic() >= self._deadline:
                    self._lose_from_thread(loop, "MongoDB unreachable until the lease ran out")
                    return
                continue
            if result.matched_count == 0:
                self._lose_from_thread(loop, "another instance holds the lease")
                return
            if self.held and not stop.is_set():
                self._deadline = started + self.seconds - self.margin

    def _lose_from_thread(self, loop: asyncio.AbstractEventLoop, why: str) -> None:
        self._revoked = True  # check() fails from now on, whatever the loop is doing
        try:
            loop.call_soon_threadsafe(self.lose, why)  # log, count, set ``lost`` on the loop
        except RuntimeError:  # the loop is closed: the process is exiting
            self.held = False

    async def _keep_on_loop(self) -> None:
        while self.held:
            try:
                await asyncio.wait_for(self.lost.wait(), self.renew_every)
                return
            except TimeoutError:
                pass
            try:
                if not await self.renew():
                    return
            except PyMongoError as exc:
                log.warning("lease_renew_failed", lease=self.id, error=type(exc).__name__)
                if self._monotonic() >= self._deadline:
                    self.lose("MongoDB unreachable until the lease ran out")
                    return

    async def release(self) -> None:
        """Give the lease up at a clean shutdown, so a standby need not wait for it to lapse."""
        if not self.held:
            return
        self.held = False
        try:
            await self._coll.update_one(
                {"_id": self.id, "owner": self.owner, "fence": self._token},
                {"$set": {"owner": None, "expires_at": 0.0}},
            )
            log.info("lease_released", lease=self.id, fence=self._token)
        except PyMongoError as exc:
            log.warning("lease_release_failed", lease=self.id, error=type(exc).__name__)

    async def holder(self) -> dict[str, Any] | None:
        """The lease document as stored (for status and tests)."""
        return await self._coll.find_one({"_id": self.id})
