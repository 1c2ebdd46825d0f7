"""One writer per account: batches of changes become ``applyWrites`` calls.

The writer takes its :class:`~syncd.write.queue.DocumentQueue` in order -- a
document's changes are applied in order, a batch never holds a document twice,
and a newer change supersedes an older one still waiting. For each batch:

1. **read** the batch's ledger rows and key holders: one state call;
2. **plan** every op (:mod:`syncd.planner`), looking first at keys documents
   name (:meth:`Sender.check_key`), and give colliding new keys a salt;
3. **prepare** the records: thumbnails and streamed blobs (tape MP4s, fetched and
   uploaded ahead of the batch, outside its PDS slot) attached, lexicons checked
   (:mod:`syncd.write.records`);
4. **mark pending** what will be sent (one state call), **send** it
   (:mod:`syncd.write.sender`), and **commit** the results (one state call,
   :mod:`syncd.write.commit`);
5. **write back** the back-reference (``atproto``; ``at`` on tapes) to MongoDB (:mod:`syncd.write.writeback`) while
   the next batch is sent (at most one behind), then report each op done
   (``on_done``), which completes its change so the resume position can pass it.

The writer holds no engine: it is given exactly what it uses (:class:`WriterDeps`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import structlog
from pymongo.asynchronous.database import AsyncDatabase

from syncd import metrics
from syncd.changes import Op, Problem
from syncd.mappings import MAPPINGS, MappingContext, MappingError
from syncd.mappings.base import when_of
from syncd.parking import Blocked, Parking
from syncd.pds.errors import XrpcError
from syncd.pds.repo import Repo
from syncd.pds.sessions import Account
from syncd.planner import (
    CHECK,
    CREATE,
    FOREIGN,
    NONE,
    UPDATE,
    UPSERT,
    WRITES,
    KeyCheck,
    Plan,
    after_failure,
    plan,
)
from syncd.retry import Abandoned, Kind, classify
from syncd.rkey import RkeyError, derive_rkey, named_key
from syncd.state import LedgerEntry, Lookup, Outcome
from syncd.state.aio import StateCalls
from syncd.write.blobs import Blobs
from syncd.write.commit import action_label, commit_ops, pending_ops
from syncd.write.images import ImageResult, ImageStage
from syncd.write.queue import DocumentQueue
from syncd.write.records import IMAGE, STREAMED, build_records
from syncd.write.sender import Sender
from syncd.write.streamed import StreamedResult, StreamedStage
from syncd.write.writeback import write_back

log = structlog.get_logger("syncd.writer")
#: Documents named keys are checked for at once (``getRecord`` calls in flight).
CHECK_CONCURRENCY = 8


@dataclass
class WriterDeps:
    """What an account writer uses, and nothing else."""

    calls: StateCalls
    repo: Repo
    db: AsyncDatabase[dict[str, Any]]  # the source database: the write-back
    images: ImageStage | None
    slots: asyncio.Semaphore  # PDS calls in flight, shared by every account
    stopping: asyncio.Event
    mapping_ctx: MappingContext
    max_writes: int
    retry_cap: float
    parking: Parking  # accounts that cannot write now give way
    on_done: Callable[[Op, str], None]  # an op is finished (applied, failed, superseded, parked)
    streamed: StreamedStage | None = None  # tape MP4s: fetched and uploaded ahead


class AccountWriter:
    def __init__(self, account: Account, deps: WriterDeps) -> None:
        self.account = account
        self.deps = deps
        self.blobs = Blobs(lambda: self.account, deps.repo, deps.calls, deps.stopping)
        self.sender = Sender(
            lambda: self.account,
            deps.repo,
            self.blobs,
            deps.stopping,
            max_writes=deps.max_writes,
            retry_cap=deps.retry_cap,
            streamed=deps.streamed,
        )
        self.queue = DocumentQueue(self._superseded)
        self._wake = asyncio.Event()
        self._images: set[asyncio.Task[Any]] = set()  # images and streamed blobs being prepared
        self._writeback: asyncio.Task[None] | None = None
        self.task: asyncio.Task[None] | None = None

    @property
    def did(self) -> str:
        return self.account.did

    # -- the queue ---------------------------------------------------------------------
    def submit(self, op: Op) -> None:
        """Queue ``op``; a painting this account will write starts its image work now, a
        tape its MP4's fetch and upload."""
        images, streamed, draft = self.deps.images, self.deps.streamed, op.draft
        task: asyncio.Task[Any] | None = None
        if images is not None and draft is not None and draft.image is not None:
            if self._will_write(op):
                assert op.change.doc is not None
                task = asyncio.create_task(
                    images.prepare(op.change.collection, op.change.doc, self.blobs),
                    name="painting-image",
                )
                op.extra[IMAGE] = task
        elif streamed is not None and draft is not None and draft.blob is not None:
            if self._will_write(op):
                task = asyncio.create_task(
                    streamed.prepare(op.change.collection, draft.blob, self.blobs),
                    name="streamed-blob",
                )
                op.extra[STREAMED] = task
        if task is not None:
            self._images.add(task)
            task.add_done_callback(self._images.discard)
            task.add_done_callback(partial(self._image_ready, op))
            self.queue.push(op, ready=False)
        else:
            self.queue.push(op)
            self._wake.set()

    def _will_write(self, op: Op) -> bool:
        """A guess (from the ledger row the router read) that this account will write
        ``op``'s record; the batch plans again, a wrong guess costs only the work."""
        if op.desired is None or op.desired.did != self.did or op.change.doc is None:
            return False
        return plan(op, self.did, op.holder_hint).action in (*WRITES, CHECK)

    def _image_ready(self, op: Op, _: object = None) -> None:
        if self.queue.mark_ready(op):
            self._wake.set()

    def _superseded(self, op: Op) -> None:
        """A newer change of the same document replaced ``op`` before it was sent."""
        for key in (IMAGE, STREAMED):
            task: asyncio.Future[Any] | None = op.extra.get(key)
            if task is not None and not task.done():
                task.cancel()
        self._finish([op])

    def _finish(self, ops: Sequence[Op]) -> None:
        for op in ops:
            task: asyncio.Future[ImageResult] | None = op.extra.pop(IMAGE, None)
            if task is not None and task.done() and not task.cancelled():
                if task.exception() is None and self.deps.images is not None:
                    self.deps.images.release(task.result())
            blob: asyncio.Future[StreamedResult] | None = op.extra.pop(STREAMED, None)
            if blob is not None and self.deps.streamed is not None:
                if blob.done() and not blob.cancelled() and blob.exception() is None:
                    self.deps.streamed.release(blob.result())
                elif not blob.done():
                    blob.cancel()  # its own cleanup releases what it held
            self.deps.on_done(op, self.did)

    # -- the loop ----------------------------------------------------------------------
    def start(self) -> None:
        self.task = asyncio.create_task(self._run(), name=f"writer:{self.did}")

    async def _run(self) -> None:
        try:
            await self._loop()
        finally:
            for task in list(self._images):
                task.cancel()
            if self._writeback is not None:
                self._writeback.cancel()
                if self._writeback.done() and not self._writeback.cancelled():
                    self._writeback.exception()  # retrieved (Abandoned at shutdown)

    async def _loop(self) -> None:
        parking = self.deps.parking
        while True:
            if parking.is_parked(self.did):
                await self._park_writes()
                if not self.queue.ready:
                    await self._wait_parked()
                    continue
                # What is left needs no PDS write (an echo of syncd's own write-back, a
                # dead letter to record): settled now, not parked.
            elif not self.queue.ready:
                self._wake.clear()
                await self._wake.wait()
                continue
            batch: list[Op] = []
            plans: list[Plan] | None = None
            try:
                async with self.deps.slots:
                    # Take the batch once a slot is ours: what queued up while waiting
                    # rides in this call instead of the next (fewer, fuller applyWrites).
                    batch = self.queue.take(self.deps.max_writes)
                    if batch:
                        plans = await self.process(batch)
            except Abandoned:
                # Shutdown: the batch is not applied, so its changes stay incomplete and
                # the saved position stays before them; the next start replays them.
                return
            except Exception as exc:  # a bug must not stall the stream or lose the document
                log.exception("batch_failed", did=self.did, ops=len(batch))
                detail = f"{type(exc).__name__}: {exc}"[:500]
                await self.deps.calls(
                    self.deps.calls.store.apply,
                    [
                        Outcome(
                            op.change.collection,
                            op.change.key,
                            "dead",
                            "internal_error",
                            detail,
                            retryable=True,
                        )
                        for op in batch
                    ],
                )
            if plans is None:
                self._finish(batch)
                continue
            parked = [p for p in plans if p.parked is not None]
            if parked:
                # The account cannot write now: what was not sent waits by key, and the
                # account gives way until it can (syncd.parking).
                blocked = parked[0].parked
                assert isinstance(blocked, Blocked)
                await parking.park(self.did, blocked, [p.op for p in parked])
                self._finish([p.op for p in parked])
                held = {id(p.op) for p in parked}
                batch = [op for op in batch if id(op) not in held]
                plans = [p for p in plans if p.parked is None]
            previous = self._writeback
            if previous is not None:
                try:
                    await previous  # at most one write-back behind the batches
                except Abandoned:
                    return
            self._writeback = asyncio.create_task(self._write_back_then_finish(batch, plans))

    async def _park_writes(self) -> None:
        """Parked: hand every waiting op that would write to the PDS to the parking (by
        key). Ops whose plan is already known to need no write (the ledger row the router
        read says the record holds this content) stay, so an echo of syncd's own
        write-back is not parked and re-read later, and the parked count is what waits."""
        parking = self.deps.parking
        ops = self.queue.drop_where(self._would_write)
        if ops:
            for op in ops:
                for key in (IMAGE, STREAMED):
                    task: asyncio.Future[Any] | None = op.extra.get(key)
                    if task is not None and not task.done():
                        task.cancel()
            until = parking.until(self.did) or time.time()
            reason = parking.reason(self.did) or "parked"
            await parking.park(self.did, Blocked(reason, until), ops)
            self._finish(ops)

    def _would_write(self, op: Op) -> bool:
        """Whether ``op`` may need a PDS call (a guess from the router's ledger read; the
        batch plans again, and a write it finds after all is parked by the sender)."""
        try:
            return plan(op, self.did, op.holder_hint).action != NONE
        except Exception:  # whatever it is, the parking keeps it
            return True

    async def _wait_parked(self) -> None:
        """Wait until the account may write again, or more ops arrive (at most 1 s)."""
        if self.deps.parking.is_parked(self.did):
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), 1.0)

    async def _write_back_then_finish(self, batch: list[Op], plans: list[Plan]) -> None:
        """The records are written: set the back-references in MongoDB, then finish the ops (so
        the saved position never passes a document not written back)."""
        try:
            await write_back(self.deps.db, plans, self.did, self.deps.stopping)
        except Abandoned:
            raise  # shutdown: the changes stay incomplete and are replayed
        except Exception:  # a bug: the records are written, the next change retries
            log.exception("writeback_failed_unexpectedly", did=self.did)
        self._finish(batch)

    # -- one batch -----------------------------------------------------------------------
    async def process(self, ops: list[Op]) -> list[Plan]:
        """Read, plan, prepare, send and commit one batch; returns the plans to write back."""
        calls, store, did = self.deps.calls, self.deps.calls.store, self.did
        keys = [(op.change.collection, op.change.key) for op in ops]
        candidates = _candidate_keys(ops)
        found = await calls(store.lookup, keys, did, candidates)
        entries = [found.entries.get(k) for k in keys]
        plans = [plan(op, did, e) for op, e in zip(ops, entries, strict=True)]
        if any(p.action == CHECK for p in plans):
            plans = await self._plan_checked(plans, entries, found)
        await self._resolve_key_collisions(plans, found, set(candidates))
        await build_records(
            plans, self.blobs, self.deps.images, self.deps.mapping_ctx, self.deps.streamed
        )
        for p, entry in zip(plans, entries, strict=True):
            if p.failed is not None and not p.failed.retryable and p.action in WRITES:
                after_failure(p, entry if entry is not None and entry.did == did else None)
        for p in plans:
            if p.refused_key is not None:
                self._refused(p, p.refused_key)
        to_send = [
            p
            for p in plans
            if p.action not in (NONE, CHECK) and p.failed is None and p.parked is None
        ]
        for p in to_send:
            log.debug(
                "plan",
                did=did,
                collection=p.collection,
                doc=p.key,
                action=p.action,
                rkey=p.rkey,
                retire=p.retire,
                named=p.seen_rkey,
            )
        sent = {id(p) for p in to_send}
        if to_send:
            await calls(store.apply, pending_ops(to_send, did))
            await self.sender.send(to_send)
        ops_, forgotten = commit_ops([p for p in plans if p.parked is None], did)
        await calls(store.apply, ops_)
        for cid in forgotten:
            self.blobs.forget(cid)
        for p in plans:
            if p.parked is not None:
                continue
            if p.failed is not None:
                log.warning(
                    "dead_letter", collection=p.collection, doc=p.key, reason=p.failed.reason
                )
            elif id(p) in sent:
                metrics.RECORDS_WRITTEN.labels(
                    collection=p.collection, action=action_label(p)
                ).inc()
                if p.extra.get("image_missing"):
                    metrics.THUMBNAILS_MISSING.labels(collection=p.collection).inc()
        return plans

    async def _plan_checked(
        self, plans: list[Plan], entries: list[LedgerEntry | None], found: Lookup
    ) -> list[Plan]:
        """Look at the keys documents name (a few at a time), then plan those again."""
        sem = asyncio.Semaphore(CHECK_CONCURRENCY)

        async def one(p: Plan, entry: LedgerEntry | None) -> Plan:
            if p.action != CHECK:
                return p
            async with sem:
                try:
                    check = await self.sender.check_key(p, found.holders.get((p.nsid, p.rkey)))
                except Blocked as blocked:
                    p.parked = blocked
                    return p
                except XrpcError as exc:
                    kind = classify(exc).kind
                    reason = "account_unavailable" if kind is Kind.ACCOUNT else "key_check_failed"
                    p.failed = Problem("dead", reason, exc.error or exc.reason, retryable=True)
                    return p
            return plan(p.op, self.did, entry, {check.rkey: check})

        return list(await asyncio.gather(*(one(p, e) for p, e in zip(plans, entries, strict=True))))

    def _refused(self, p: Plan, check: KeyCheck) -> None:
        metrics.REFUSED_KEYS.labels(collection=p.collection).inc()
        log.warning(
            "named_key_refused",
            collection=p.collection,
            doc=p.key,
            did=self.did,
            rkey=check.rkey,
            detail=check.detail,
        )

    async def _resolve_key_collisions(
        self, plans: list[Plan], found: Lookup, covered: set[tuple[str, str]]
    ) -> None:
        """Give a new record another derived key when its key is already taken here
        (two documents in one millisecond, or two naming the same key in one batch)."""
        calls, store, did = self.deps.calls, self.deps.calls.store, self.did
        taken: set[tuple[str, str]] = set()

        async def held(nsid: str, rkey: str, key: str) -> bool:
            if (nsid, rkey) in taken:
                return True
            if (nsid, rkey) in found.holders:
                return found.holders[(nsid, rkey)] != key
            if (nsid, rkey) in covered:
                return False  # the batch's lookup asked: nobody holds it
            # A salted key (two documents in one millisecond): ask the store.
            return await calls(store.rkey_owner, did, nsid, rkey) not in (None, key)

        for p in plans:
            if p.action not in WRITES or p.failed is not None:
                continue
            doc = p.op.change.doc
            assert doc is not None
            named = named_key(doc, MAPPINGS[p.collection].backref) == p.rkey
            if named and (p.nsid, p.rkey) in taken:
                # Another document of this batch took the key this one names first.
                p.refused_key = KeyCheck(p.rkey, FOREIGN, detail="named by another document")
                self._refused(p, p.refused_key)
                named = False
                if p.retire is not None:
                    p.rkey, p.retire = p.retire, None
                    p.action = UPDATE if p.retire_certain else UPSERT
                else:
                    p.action = CREATE
            if p.action == CREATE and not named:
                when, salt = when_of(doc), 0
                p.rkey = derive_rkey(when, p.op.change.doc_id)
                while await held(p.nsid, p.rkey, p.key):
                    salt += 1
                    p.rkey = derive_rkey(when, p.op.change.doc_id, salt)
            taken.add((p.nsid, p.rkey))


def _candidate_keys(ops: list[Op]) -> list[tuple[str, str]]:
    """The record keys a batch may use in its account's repository: the keys documents
    name and the keys derived from them (so one read also finds who holds each)."""
    out: list[tuple[str, str]] = []
    for op in ops:
        doc = op.change.doc
        if doc is None:
            continue
        mapping = MAPPINGS[op.change.collection]
        nsid = mapping.nsid
        named = named_key(doc, mapping.backref)
        if named is not None:
            out.append((nsid, named))
        if op.draft is not None:
            try:
                out.append((nsid, derive_rkey(when_of(doc), op.change.doc_id)))
            except (MappingError, RkeyError):
                pass
    return out
