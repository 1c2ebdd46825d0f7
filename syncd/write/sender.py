"""Send one account's planned writes to its repository.

* Batchable writes (create, update, delete -- and a *move*: the named record
  written and syncd's old one deleted) go in ``applyWrites`` calls of at most
  ``max_writes`` writes, which the PDS applies all or nothing.
* The write budget: once the PDS has said how many points the account has left
  (:mod:`syncd.pds.ratelimit`), a batch that would overdraw it is cut to the part
  the points pay for, and when they pay for nothing no call is made until the
  window resets (a refused call's points count too: each one sent to learn the
  wait would cost the daily budget a batch); a 429 that names the points left
  does the same, and otherwise the batch waits as the 429 says. A wait longer
  than ``PARK_AFTER`` parks the account (:mod:`syncd.parking`).
* A refused batch (the all-or-nothing 500, a 4xx) is sent again as idempotent
  single calls -- ``putRecord`` is an upsert, ``deleteRecord`` of a missing key
  succeeds -- which settle it one record at a time. Writes whose existence is
  uncertain (crash recovery) go that way from the start.
* Keys a document names are looked at (``getRecord``) before they are trusted.

Errors are classified by the one retry policy (:mod:`syncd.retry`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

import structlog

from syncd import metrics
from syncd.changes import Problem
from syncd.ids import ref_for
from syncd.parking import PARK_AFTER, Blocked, blocked_by
from syncd.pds.errors import XrpcError
from syncd.pds.ratelimit import writes_that_fit
from syncd.pds.repo import APPLY_WRITES, Repo, create_write, delete_write, update_write
from syncd.pds.sessions import Account
from syncd.planner import (
    BATCHABLE,
    CREATE,
    DELETE,
    DELETE_UNCERTAIN,
    FOREIGN,
    FREE,
    OURS,
    UPDATE,
    UPSERT,
    WRITES,
    KeyCheck,
    Plan,
)
from syncd.retry import Abandoned, Kind, TooLong, classify, pause_for, retrying, sleep_or_stop
from syncd.write.blobs import Blobs, count_error
from syncd.write.records import ensure_blob
from syncd.write.streamed import StreamedResult, StreamedStage

T = TypeVar("T")
log = structlog.get_logger("syncd.writer")
#: Single calls of one batch in flight at once.
SINGLE_CONCURRENCY = 8
_KINDS = {CREATE: "create", UPDATE: "update", DELETE: "delete"}
#: Waited past a budget's reset (``ratelimit-reset`` is whole seconds).
RESET_MARGIN = 0.5


def _blob_missing(exc: XrpcError) -> bool:
    return exc.status == 400 and (
        exc.error == "BlobNotFound"
        or ("blob" in exc.message.lower() and "not found" in exc.message.lower())
    )


def batchable(p: Plan) -> bool:
    return p.action in BATCHABLE and (p.retire is None or p.retire_certain)


def kinds(p: Plan) -> list[str]:
    """The ``applyWrites`` operations ``p`` sends (create 3, update 2, delete 1 points)."""
    main = [_KINDS.get(p.action, "create")]
    return [*main, "delete"] if p.retire is not None else main


def plans_that_fit(points: int | None, chunk: list[Plan]) -> int:
    """How many of ``chunk``'s plans (each whole: a move is two writes) ``points`` pay for."""
    if points is None or points <= 0:
        return 0
    ops: list[str] = []
    ends: list[int] = []
    for p in chunk:
        ops += kinds(p)
        ends.append(len(ops))
    paid = writes_that_fit(points, ops)
    return sum(1 for end in ends if end <= paid)


def chunks(plans: list[Plan], limit: int) -> Iterable[list[Plan]]:
    """``plans`` cut into calls of at most ``limit`` writes (a move is two)."""
    chunk: list[Plan] = []
    writes = 0
    for p in plans:
        n = len(kinds(p))
        if chunk and writes + n > limit:
            yield chunk
            chunk, writes = [], 0
        chunk.append(p)
        writes += n
    if chunk:
        yield chunk


class Sender:
    def __init__(
        self,
        account: Callable[[], Account],
        repo: Repo,
        blobs: Blobs,
        stopping: asyncio.Event,
        *,
        max_writes: int,
        retry_cap: float,
        streamed: StreamedStage | None = None,
    ) -> None:
        self._account = account
        self._repo = repo
        self._blobs = blobs
        self._streamed = streamed
        self._stopping = stopping
        self._max_writes = max_writes
        self._cap = retry_cap

    @property
    def did(self) -> str:
        return self._account().did

    # -- keys named by documents ---------------------------------------------------
    async def check_key(self, p: Plan, holder: str | None) -> KeyCheck:
        """Whose record is at the key ``p``'s document names; ``holder``: the document the
        ledger gives that key to in this repository (``None``: none)."""
        if holder not in (None, p.key):
            return KeyCheck(p.rkey, FOREIGN, detail=f"the ledger gives it to {holder}")
        found = await self._retrying(
            lambda: self._repo.get_record(self.did, p.nsid, p.rkey), p, "getRecord"
        )
        if found is None:
            return KeyCheck(p.rkey, FREE)
        raw = found.get("value")
        value: dict[str, Any] = raw if isinstance(raw, dict) else {}
        ref = ref_for(p.op.change.doc_id)
        # The record says whose it is: `ref`, or `mongoId` on the earliest mood records.
        named = value.get("ref") if "ref" in value else value.get("mongoId")
        if ref is not None and named == ref:
            return KeyCheck(p.rkey, OURS, cid=found.get("cid"))
        return KeyCheck(p.rkey, FOREIGN, detail=f"its record is document {str(named)[:40]!r}'s")

    # -- sending ---------------------------------------------------------------------
    async def send(self, plans: list[Plan]) -> None:
        """Send every plan; failures are recorded on the plan (``p.failed``), and when the
        account cannot write now, the plans not sent are marked parked (``p.parked``)."""
        singles = [p for p in plans if not batchable(p)]
        pending = list(chunks([p for p in plans if batchable(p)], self._max_writes))
        while pending:
            chunk = pending.pop(0)
            written: list[Plan] = []
            try:
                leftover = await self._apply(chunk, written)
                singles.extend(leftover)
                held = {id(p) for p in leftover}
                moved = [p for p in chunk if p.retire is not None and id(p) not in held]
                if moved:
                    await self._retire(moved)
            except Blocked as blocked:
                # The part of the chunk the budget paid for is written: it is committed
                # as such, not parked (a move still owes its second commit: parked, and
                # planned again as the update of the record it named).
                done = {id(p) for p in written if p.retire is None}
                for p in [*chunk, *(q for c in pending for q in c), *singles]:
                    if id(p) not in done:
                        p.parked = blocked
                return
        if singles:
            sem = asyncio.Semaphore(SINGLE_CONCURRENCY)

            async def one(p: Plan) -> None:
                async with sem:
                    await self._single(p)

            await asyncio.gather(*(one(p) for p in singles))

    async def _apply(self, chunk: list[Plan], written: list[Plan]) -> list[Plan]:
        """Send one applyWrites (or, cut to the budget, several); returns the plans that
        must be sent one by one. The plans applied are added to ``written`` as they are,
        so a :class:`Blocked` raised after part of the chunk went through parks only the
        rest."""
        writes: list[dict[str, Any]] = []
        main_index: list[int] = []
        for p in chunk:
            main_index.append(len(writes))
            if p.action == CREATE:
                assert p.record is not None
                writes.append(create_write(p.nsid, p.rkey, p.record))
            elif p.action == UPDATE:
                assert p.record is not None
                writes.append(update_write(p.nsid, p.rkey, p.record))
            else:
                writes.append(delete_write(p.nsid, p.rkey))
        attempt = 0
        while True:
            if self._stopping.is_set():
                raise Abandoned()
            budget = self._repo.write_budget(self.did)
            if budget is not None:
                # The last write said how many points are left: a batch costing more
                # would be refused whole, and its points counted all the same (the
                # daily budget's too). Send what they pay for; when they pay for
                # nothing, send nothing until the window resets -- or give way.
                fit = plans_that_fit(budget.remaining, chunk)
                if fit == 0:
                    wait = budget.reset_at - time.time()
                    if wait > PARK_AFTER:
                        raise Blocked("rate_limited", budget.reset_at)
                    log.info(
                        "write_budget_spent_waiting",
                        did=self.did,
                        points_left=budget.remaining,
                        seconds=round(max(0.0, wait), 1),
                    )
                    await sleep_or_stop(max(0.0, wait) + RESET_MARGIN, self._stopping)
                    continue
                if fit < len(chunk):
                    log.info(
                        "batch_sized_to_write_budget",
                        did=self.did,
                        points_left=budget.remaining,
                        writes=len(chunk),
                        sending=fit,
                    )
                    head = await self._apply(chunk[:fit], written)
                    return head + await self._apply(chunk[fit:], written)
            log.debug(
                "apply_writes",
                did=self.did,
                writes=[(w["$type"].rsplit("#", 1)[1], w["rkey"]) for w in writes],
            )
            try:
                results = await self._repo.apply_writes(self._account(), writes)
            except XrpcError as exc:
                self._count(chunk, exc)
                verdict = classify(exc)
                if verdict.kind is Kind.ACCOUNT:
                    raise blocked_by(exc) from None
                if verdict.kind is Kind.REFUSED:
                    # The PDS refuses a batch with a create on an existing key (or an
                    # update/delete of a missing one) with a 500 naming no write; a 4xx
                    # names none either. Idempotent single calls settle both.
                    log.warning(
                        "apply_writes_refused",
                        did=self.did,
                        status=exc.status,
                        error=exc.error,
                        writes=len(chunk),
                    )
                    for p in chunk:
                        p.action = UPSERT if p.action in (CREATE, UPDATE) else DELETE_UNCERTAIN
                        p.retire_certain = False
                    return chunk
                if verdict.kind is Kind.WAIT:
                    fit = plans_that_fit(getattr(exc, "remaining", None), chunk)
                    if 0 < fit < len(chunk):
                        # The budget left still takes part of the batch: send that now.
                        head = await self._apply(chunk[:fit], written)
                        return head + await self._apply(chunk[fit:], written)
                    if verdict.wait is not None and verdict.wait > PARK_AFTER:
                        # The budget is spent for longer than is worth holding a slot:
                        # the account gives way (syncd.parking).
                        raise blocked_by(exc, verdict.wait) from None
                wait = pause_for(verdict, attempt, cap=self._cap)
                attempt += 1
                await sleep_or_stop(wait, self._stopping)
                continue
            for p, i in zip(chunk, main_index, strict=True):
                if p.action in WRITES:
                    p.uri, p.cid = results[i].get("uri"), results[i].get("cid")
            written.extend(chunk)
            return []

    async def _retire(self, plans: list[Plan]) -> None:
        """A move's second commit: delete syncd's old records once the named ones hold the
        content. Never in the same commit: the reference PDS loses the named record when
        one ``applyWrites`` updates it and deletes an identical one (the two share a
        block, which the commit removes; tests/sandbox/test_pds.py pins it)."""
        writes = [delete_write(p.nsid, p.retire) for p in plans if p.retire is not None]
        account = self._account()
        try:
            await self._retrying(
                lambda: self._repo.apply_writes(account, writes), plans[0], APPLY_WRITES
            )
        except XrpcError as exc:
            if classify(exc).kind is Kind.ACCOUNT:
                raise blocked_by(exc) from None
            for p in plans:  # refused (one was gone already): idempotent single deletes
                assert p.retire is not None
                await self._delete(p, p.retire)

    async def _single(self, p: Plan) -> None:
        try:
            if p.action in WRITES:
                try:
                    await self._put(p)
                except XrpcError as exc:
                    thumb = p.extra.get("thumbnail")
                    streamed: StreamedResult | None = p.extra.get("streamed")
                    if not _blob_missing(exc) or p.blob_cid is None:
                        raise
                    if thumb is None and (streamed is None or self._streamed is None):
                        raise
                    # The PDS dropped a blob the state store thought it had (its
                    # records were deleted elsewhere): upload it again, once.
                    log.warning("blob_gone_reuploading", did=self.did, cid=p.blob_cid)
                    self._blobs.forget(p.blob_cid)  # in memory: the upload is redone
                    assert p.record is not None
                    if streamed is not None and self._streamed is not None:
                        await self._streamed.upload(p.collection, streamed, self._blobs, force=True)
                        if streamed.parked is not None or streamed.error is not None:
                            p.parked, p.failed = streamed.parked, streamed.error
                            return
                        p.record[streamed.blob.field] = streamed.ref()
                    else:
                        assert thumb is not None
                        blob = await ensure_blob(p, thumb, p.blob_cid, self._blobs, force=True)
                        if blob is None:
                            return
                        p.record["thumbnail"] = blob
                    await self._put(p)
            else:
                await self._delete(p, p.rkey)
            if p.retire is not None:
                await self._delete(p, p.retire)
        except Blocked as blocked:
            p.parked = blocked
        except XrpcError as exc:
            metrics.WRITE_ERRORS.labels(collection=p.collection, reason=exc.reason).inc()
            if classify(exc).kind is Kind.ACCOUNT:
                p.parked = blocked_by(exc)
                return
            p.failed = Problem("dead", "pds_rejected", f"{exc.error}: {exc.message}"[:500])
            log.warning("record_rejected", collection=p.collection, doc=p.key, error=exc.error)

    async def _put(self, p: Plan) -> None:
        assert p.record is not None
        record = p.record
        account = self._account()
        p.uri, p.cid = await self._retrying(
            lambda: self._repo.put_record(account, p.nsid, p.rkey, record), p, "putRecord"
        )

    async def _delete(self, p: Plan, rkey: str) -> None:
        account = self._account()
        await self._retrying(
            lambda: self._repo.delete_record(account, p.nsid, rkey), p, "deleteRecord"
        )

    async def _retrying(self, call: Callable[[], Awaitable[T]], p: Plan, what: str) -> T:
        """The retry policy, with a wait too long for the account turned into :class:`Blocked`."""
        try:
            return await retrying(
                call,
                stop=self._stopping,
                cap=self._cap,
                on_error=count_error(p.collection),
                what=what,
                max_wait=PARK_AFTER,
            )
        except TooLong as exc:
            assert isinstance(exc.error, XrpcError)
            raise blocked_by(exc.error, exc.wait) from None

    def _count(self, chunk: list[Plan], exc: XrpcError) -> None:
        for coll in {p.collection for p in chunk}:
            metrics.WRITE_ERRORS.labels(collection=coll, reason=exc.reason).inc()
