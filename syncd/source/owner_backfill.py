"""Account backfills: one user's documents, published once their account appears.

When a user gains an ATProto account (or gets a new one, or theirs comes back),
every document they already have must be published -- not only the changes
made afterwards. An *account backfill* reads that user's documents in every
mirrored collection (``{user: sub}``; the guest's: ``{user: null}``) in ``_id``
order and routes them through the same path as every source (tickets in the
in-flight window, the router, the account's writer: latest state wins, the
ledger makes a second run free). It runs in its own task, beside the change
stream, so nobody else's changes wait for it, and one job at a time.

**Gap-free and resumable.** The job is written to the state store in the same
write that records the account (:meth:`~syncd.state.Store.put_known_account`),
before the stream's position passes the ``users`` event that caused it; its
progress (per collection: the last ``_id`` whose change is applied, as the
daemon's backfill does) is saved as groups complete, so a restart continues
where it stopped and replays at most the groups in flight. Documents with other
``_id`` types (dead letters: they cannot form a ``ref``) are read in a last,
non-resumable pass.

**Order per document.** The job's read of a document may be older than a change
the stream routes while the job holds it (waiting for room in the window, or
read ahead by the cursor). While a collection is scanned, an observer on the
router notes every document of this user that another source routes (and
every deletion); when the job's group gets its turn, those are left out
(``admit``): the other source carried that document's current state, with the
account already known, so the job's copy would only be older. Groups are routed
in turn with every other source's, so nothing can land in between.

Progress is in ``syncd status`` (per user and collection: read, of how many)
and in ``syncd_account_backfills``, ``syncd_account_backfill_remaining`` and
``syncd_account_backfill_documents_total``.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import PyMongoError

from syncd import metrics
from syncd.changes import Change
from syncd.checkpoint import Ticket
from syncd.ids import doc_key
from syncd.ownership import users_entry_documents
from syncd.positions import Positions
from syncd.retry import Abandoned, classify, pause_for, sleep_or_stop
from syncd.router import Router
from syncd.state import KnownAccount, OwnerScan
from syncd.state.aio import StateCalls

log = structlog.get_logger("syncd.account_backfill")

#: ``Change.operation`` of the documents an account backfill routes.
OPERATION = "account_backfill"
OBJECTID, OTHER, DONE = "objectid", "other", "done"
#: Groups of one job in flight at once (their progress is saved in order).
GROUPS_IN_FLIGHT = 2
#: The share of the in-flight window an account backfill may fill: the rest stays free for
#: the change stream (and everyone else's changes) however long the backfill is.
WINDOW_SHARE = 0.5


@dataclass
class OwnerBackfillDeps:
    db: AsyncDatabase[dict[str, Any]]
    calls: StateCalls
    positions: Positions
    router: Router
    collections: tuple[str, ...]
    guest_id: str
    page: int  # mongo.scan_batch_size
    group: int  # documents routed at once (Publisher.group)
    capacity: int  # the in-flight window (pipeline.queue_size)
    stopping: asyncio.Event
    beat: Callable[[], None] = field(default=lambda: None)


class _Cancelled(Exception):
    """The job was replaced or withdrawn (the account changed again, or went away)."""


class OwnerBackfills:
    def __init__(self, deps: OwnerBackfillDeps) -> None:
        self.deps = deps
        self._jobs: dict[str, KnownAccount] = {}
        self._wake = asyncio.Event()
        self.running: str | None = None  # the user whose job runs now
        self.finished = 0  # jobs completed by this process (tests, logs)
        self.left_to_newer = 0  # documents left out: another source routed them since
        self.remaining = 0  # documents the running job has still to read (an estimate)

    # -- what the lifecycle calls ---------------------------------------------------------
    async def load(self) -> None:
        """Jobs that survived a restart."""
        for job in await self.deps.calls(self.deps.calls.store.account_backfills):
            self._jobs.setdefault(job.sub, job)
        self._gauge()

    def due(self, job: KnownAccount) -> None:
        """Run ``job`` (already in the state store); it replaces one for the same user."""
        self._jobs[job.sub] = job
        self._gauge()
        self._wake.set()

    def cancel(self, sub: str) -> None:
        """Withdraw ``sub``'s job (the caller has cleared it from the state store)."""
        self._jobs.pop(sub, None)
        self._gauge()

    def pending(self) -> list[KnownAccount]:
        return sorted(self._jobs.values(), key=lambda j: (j.backfill_since or 0.0, j.sub))

    def _gauge(self) -> None:
        metrics.ACCOUNT_BACKFILLS.set(len(self._jobs))

    # -- the task -----------------------------------------------------------------------
    async def run(self) -> None:
        stopping = self.deps.stopping
        attempt = 0
        while not stopping.is_set():
            jobs = self.pending()
            if not jobs:
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), 1.0)
                except TimeoutError:
                    pass
                continue
            job = jobs[0]
            self.running = job.sub
            try:
                await self._run_job(job)
                attempt = 0
            except _Cancelled:
                log.info("account_backfill_withdrawn", user=job.sub, did=job.did)
            except Abandoned:
                return  # shutdown: the saved progress is where the next start continues
            except Exception as exc:  # never take the daemon down over one user's backfill
                wait = pause_for(classify(exc), attempt, cap=30.0)
                attempt += 1
                log.warning(
                    "account_backfill_interrupted",
                    user=job.sub,
                    did=job.did,
                    error=f"{type(exc).__name__}: {exc}"[:300],
                    retry_in=round(wait, 2),
                )
                try:
                    await sleep_or_stop(wait, stopping)
                except Abandoned:
                    return
            finally:
                self.running = None
                metrics.ACCOUNT_BACKFILL_REMAINING.set(0)

    def _current(self, job: KnownAccount) -> None:
        if self._jobs.get(job.sub) is not job:
            raise _Cancelled()

    async def _run_job(self, job: KnownAccount) -> None:
        deps = self.deps
        since = job.backfill_since
        assert since is not None
        started = time.monotonic()
        query = users_entry_documents(job.sub, deps.guest_id)
        totals: dict[str, int] = {}
        for coll in deps.collections:
            scan = job.progress.get(coll)
            if scan is not None and scan.phase == DONE:
                continue
            total = scan.total if scan is not None and scan.total is not None else None
            if total is None:
                total = await deps.db[coll].count_documents(query)
            totals[coll] = max(0, total - (scan.scanned if scan else 0))
        remaining = sum(totals.values())
        self.remaining = remaining
        metrics.ACCOUNT_BACKFILL_REMAINING.set(remaining)
        log.info(
            "account_backfill_started",
            user=job.sub,
            did=job.did,
            handle=job.handle,
            documents=remaining,
            resumed=bool(job.progress),
        )
        routed, left_before = 0, self.left_to_newer
        for coll in deps.collections:
            scan = job.progress.get(coll) or OwnerScan(None, OBJECTID, 0, None)
            if scan.phase == DONE:
                continue
            if scan.total is None:
                scan = OwnerScan(scan.last_id, scan.phase, scan.scanned, totals.get(coll))
            routed += await self._scan(job, since, coll, query, scan)
        self._current(job)
        await deps.calls(deps.calls.store.finish_account_backfill, job.sub, since)
        if self._jobs.get(job.sub) is job:
            self._jobs.pop(job.sub)
        self._gauge()
        self.finished += 1
        log.info(
            "account_backfill_finished",
            user=job.sub,
            did=job.did,
            handle=job.handle,
            documents=routed,
            left_to_newer_changes=self.left_to_newer - left_before,
            seconds=round(time.monotonic() - started, 2),
        )

    async def _scan(
        self, job: KnownAccount, since: float, coll: str, query: dict[str, Any], scan: OwnerScan
    ) -> int:
        """Route the owner's documents of ``coll`` after ``scan``; returns how many."""
        deps = self.deps
        seen: set[str] = set()
        guest = job.sub == deps.guest_id

        def observe(changes: Sequence[Change]) -> None:
            for c in changes:
                if c.collection != coll or c.operation == OPERATION:
                    continue
                owner = None if c.doc is None else c.doc.get("user")
                if c.doc is None or (owner is None if guest else owner == job.sub):
                    seen.add(c.key)

        inflight: deque[tuple[OwnerScan, list[Ticket]]] = deque()

        async def settle(keep: int) -> None:
            """Wait until at most ``keep`` groups are in flight; save the newest complete."""
            done: OwnerScan | None = None
            while inflight and (len(inflight) > keep or all(t.done for t in inflight[0][1])):
                mark, tickets = inflight.popleft()
                for t in tickets:
                    await t.wait()
                done = mark
            if done is not None:
                self._current(job)
                await deps.calls(deps.calls.store.save_account_scan, job.sub, since, coll, done)

        routed = 0

        def admit(change: Change) -> bool:
            if change.key in seen:
                self.left_to_newer += 1  # another source routed it since: its state is newer
                return False
            return True

        share = max(1, int(deps.capacity * WINDOW_SHARE))

        async def route(group: list[dict[str, Any]], mark: OwnerScan) -> None:
            nonlocal routed
            self._current(job)
            # Room first: the backfill never fills more than its share of the window.
            await settle(GROUPS_IN_FLIGHT - 1)
            while inflight and deps.positions.outstanding + len(group) > share:
                await settle(len(inflight) - 1)
            while deps.positions.outstanding + len(group) > share and not deps.stopping.is_set():
                await sleep_or_stop(0.02, deps.stopping)  # others fill the window: let them
            changes: list[Change] = []
            for doc in group:
                ticket = await deps.positions.open(None, started=time.time())
                changes.append(
                    Change(
                        collection=coll,
                        doc_id=doc["_id"],
                        key=doc_key(doc["_id"]),
                        doc=doc,
                        operation=OPERATION,
                        ticket=ticket,
                    )
                )
            try:
                await deps.router.route_many(changes, admit=admit)
            except BaseException:
                # Not routed (or not all): these tickets carry no position, so completing
                # them moves nothing; the group is read again from the saved progress.
                for c in changes:
                    c.ticket.complete()
                raise
            last = changes[-1].key
            if mark.phase == OBJECTID:  # keys in _id order: the ones passed are done
                seen.difference_update([k for k in seen if k <= last])
            else:
                seen.difference_update(c.key for c in changes)
            inflight.append((mark, [c.ticket for c in changes]))
            routed += len(changes)
            metrics.ACCOUNT_BACKFILL_DOCUMENTS.inc(len(changes))
            self.remaining = max(0, self.remaining - len(changes))
            metrics.ACCOUNT_BACKFILL_REMAINING.set(self.remaining)
            deps.beat()

        size = max(1, min(deps.group, share // GROUPS_IN_FLIGHT))
        deps.router.observers.append(observe)
        try:
            if scan.phase == OBJECTID:
                scan = await self._objectid_pass(coll, query, scan, route, size)
                await settle(0)
                scan = OwnerScan(None, OTHER, scan.scanned, scan.total)
                self._current(job)
                await deps.calls(deps.calls.store.save_account_scan, job.sub, since, coll, scan)
            others: list[dict[str, Any]] = []
            scanned = scan.scanned
            cursor = deps.db[coll].find({**query, "_id": {"$not": {"$type": "objectId"}}})
            async for doc in cursor.batch_size(deps.page):
                others.append(doc)
                if len(others) >= size:
                    scanned += len(others)
                    await route(others, OwnerScan(None, OTHER, scanned, scan.total))
                    others = []
            if others:
                scanned += len(others)
                await route(others, OwnerScan(None, OTHER, scanned, scan.total))
            await settle(0)
            self._current(job)
            done = OwnerScan(None, DONE, scanned, scan.total)
            await deps.calls(deps.calls.store.save_account_scan, job.sub, since, coll, done)
        finally:
            deps.router.observers.remove(observe)
        return routed

    async def _objectid_pass(
        self,
        coll: str,
        query: dict[str, Any],
        scan: OwnerScan,
        route: Callable[[list[dict[str, Any]], OwnerScan], Any],
        size: int,
    ) -> OwnerScan:
        """The owner's ObjectId documents after ``scan.last_id``, in ``_id`` order; a read
        that fails is resumed from the last group routed, forever (as the backfill does)."""
        deps = self.deps
        last, scanned, attempt = scan.last_id, scan.scanned, 0
        while True:
            where = dict(query, _id={"$type": "objectId"} if last is None else {"$gt": last})
            cursor = deps.db[coll].find(where).sort("_id", 1).batch_size(deps.page)
            group: list[dict[str, Any]] = []
            try:
                async for doc in cursor:
                    group.append(doc)
                    if len(group) >= size:
                        mark = OwnerScan(
                            group[-1]["_id"], OBJECTID, scanned + len(group), scan.total
                        )
                        await route(group, mark)
                        last, scanned, group = mark.last_id, mark.scanned, []
                if group:
                    mark = OwnerScan(group[-1]["_id"], OBJECTID, scanned + len(group), scan.total)
                    await route(group, mark)
                    last, scanned = mark.last_id, mark.scanned
                return OwnerScan(last, OBJECTID, scanned, scan.total)
            except PyMongoError as exc:
                wait = pause_for(classify(exc), attempt, cap=10.0)
                attempt += 1
                log.warning(
                    "account_backfill_read_interrupted",
                    collection=coll,
                    error=type(exc).__name__,
                    resume_after=str(last),
                    retry_in=round(wait, 2),
                )
                await sleep_or_stop(wait, deps.stopping)
                if deps.stopping.is_set():
                    raise
            finally:
                await cursor.close()
