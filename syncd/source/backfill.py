"""Backfill: scan collections in ``_id`` order, in bounded pages, resumably.

The operation time is read *before* the scan and stored; the change stream
starts there afterwards, so nothing written during the scan is missed (events
seen twice are harmless: every write is idempotent). Progress (last ``_id``) is
saved only once every document up to it has been applied, through the same
watermark as the stream. Memory is bounded by the page size and the in-flight
capacity, never by the collection's size.

ObjectId ``_id``s are scanned first, resumably, with ``$gt`` (type bracketing
keeps other types out); documents with other ``_id`` types (dead letters, since
they cannot form a ``ref``) are scanned in a final, non-resumable pass.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog
from pymongo.errors import PyMongoError

from syncd import metrics
from syncd.ids import doc_key, parse_doc_key
from syncd.positions import BackfillMark
from syncd.retry import classify, pause_for, sleep_or_stop

if TYPE_CHECKING:
    from syncd.source.deps import SourceDeps

log = structlog.get_logger("syncd.backfill")

OBJECTID, OTHER, DONE = "objectid", "other", "done"


@dataclass
class _Scan:
    """How far one collection's ObjectId scan has got."""

    collection: str
    last_id: Any
    scanned: int
    remaining: int
    page: int
    persist: bool
    in_page: int = 0


class Backfill:
    def __init__(self, deps: SourceDeps) -> None:
        self.deps = deps

    async def ensure_started(self, reason: str) -> None:
        calls = self.deps.calls
        if await calls(calls.store.backfill_start_time) is None:
            start = await self.deps.operation_time()
            collections = self.deps.mongo.collections
            await calls(calls.store.begin_backfill, start, collections, reason=reason)
            log.info("backfill_started", reason=reason, operation_time=list(start))

    async def run(self, *, sweep: bool = False) -> None:
        """Continue (or start) the daemon's backfill pass, then hand over to the stream."""
        calls = self.deps.calls
        await self.ensure_started("first_start")
        reason = await calls(calls.store.backfill_reason) or "first_start"
        self.deps.health.set_phase("backfill")
        progress = await calls(calls.store.backfill_progress)
        for coll in self.deps.mongo.collections:
            p = progress.get(coll)
            if p is not None and p.done:
                log.info("backfill_collection_already_done", collection=coll)
                continue
            await self.scan(
                coll,
                last_id=p.last_id if p else None,
                phase=p.phase if p else OBJECTID,
                scanned=p.scanned if p else 0,
                persist=True,
            )
        await self.deps.positions.drained()
        await self.deps.save_positions()
        if sweep or reason == "history_lost":
            await self.sweep(self.deps.mongo.collections)
            await self.deps.positions.drained()
        await calls(calls.store.finish_backfill)
        log.info("backfill_finished", reason=reason)

    async def scan(
        self,
        collection: str,
        *,
        last_id: Any = None,
        phase: str = OBJECTID,
        scanned: int = 0,
        persist: bool = False,
        extra_filter: dict[str, Any] | None = None,
    ) -> int:
        """Emit every document of ``collection`` (matching ``extra_filter``) as a change."""
        deps = self.deps
        coll = deps.db[collection]
        page = deps.mongo.scan_batch_size
        size = deps.publisher.group
        base = dict(extra_filter or {})
        started = time.monotonic()
        if phase == OBJECTID:
            remaining_filter = dict(
                base, _id={"$type": "objectId"} if last_id is None else {"$gt": last_id}
            )
            remaining = await coll.count_documents(remaining_filter)
            metrics.BACKFILL_REMAINING.labels(collection=collection).set(remaining)
            log.info(
                "backfill_collection",
                collection=collection,
                remaining=remaining,
                resumed_after=str(last_id) if last_id else None,
            )
            # One sorted cursor per collection, re-opened from the last _id only to
            # resume (after an error or a restart): a fresh `$gt ... limit` query per
            # page costs a full scan on servers (and the sandbox) without an index plan.
            scan = _Scan(collection, last_id, scanned, remaining, page, persist)
            attempt = 0
            while True:
                query = dict(
                    base,
                    _id={"$type": "objectId"} if scan.last_id is None else {"$gt": scan.last_id},
                )
                cursor = coll.find(query).sort("_id", 1).batch_size(page)
                group: list[tuple[Any, dict[str, Any]]] = []
                try:
                    async for doc in cursor:
                        group.append((doc["_id"], doc))
                        if len(group) >= size:
                            await self._route(scan, group)
                            group = []
                    await self._route(scan, group)
                    break
                except PyMongoError as exc:
                    # Whatever the error (a killed cursor too), reading on from the last
                    # _id is idempotent and nothing may be skipped: retry, forever.
                    wait = pause_for(classify(exc), attempt, cap=10.0)
                    attempt += 1
                    log.warning(
                        "backfill_scan_interrupted",
                        collection=collection,
                        error=type(exc).__name__,
                        resume_after=str(scan.last_id),
                        retry_in=round(wait, 2),
                    )
                    await sleep_or_stop(wait, deps.stopping)
                finally:
                    await cursor.close()
            last_id, scanned, in_page = scan.last_id, scan.scanned, scan.in_page
            if in_page:
                self._page_done(collection, last_id, scanned, 0, persist)
            phase = OTHER
            if persist:
                deps.positions.mark(BackfillMark(collection, None, OTHER, scanned, False))
        if phase == OTHER:
            query = dict(base, _id={"$not": {"$type": "objectId"}})
            others: list[tuple[Any, dict[str, Any]]] = []
            async for doc in coll.find(query).batch_size(page):
                others.append((doc["_id"], doc))
                if len(others) >= size:
                    await deps.publisher.emit_many(collection, others, operation="backfill")
                    scanned += len(others)
                    others = []
            if others:
                await deps.publisher.emit_many(collection, others, operation="backfill")
                scanned += len(others)
            if persist:
                deps.positions.mark(BackfillMark(collection, None, DONE, scanned, True))
        metrics.BACKFILL_REMAINING.labels(collection=collection).set(0)
        log.info(
            "backfill_collection_scanned",
            collection=collection,
            scanned=scanned,
            seconds=round(time.monotonic() - started, 2),
        )
        return scanned

    async def _route(self, scan: _Scan, group: list[tuple[Any, dict[str, Any]]]) -> None:
        """Route a group (one ledger read); ``scan.last_id`` moves past it only then, so an
        interrupted scan re-reads what was not routed."""
        if not group:
            return
        await self.deps.publisher.emit_many(scan.collection, group, operation="backfill")
        scan.last_id = group[-1][0]
        scan.scanned += len(group)
        scan.in_page += len(group)
        if scan.in_page >= scan.page:
            scan.remaining = max(0, scan.remaining - scan.in_page)
            scan.in_page = 0
            self._page_done(
                scan.collection, scan.last_id, scan.scanned, scan.remaining, scan.persist
            )

    def _page_done(
        self, collection: str, last_id: Any, scanned: int, remaining: int, persist: bool
    ) -> None:
        deps = self.deps
        metrics.BACKFILL_REMAINING.labels(collection=collection).set(remaining)
        if persist:
            deps.positions.mark(BackfillMark(collection, last_id, OBJECTID, scanned, False))
        deps.health.beat("source")

    async def sweep(self, collections: Iterable[str]) -> int:
        """Remove records whose documents no longer exist (:func:`sweep`)."""
        return await sweep(self.deps, collections)


async def sweep(deps: SourceDeps, collections: Iterable[str]) -> int:
    """Remove records whose documents no longer exist (ledger rows without a document),
    reading the ledger a page at a time off the event loop."""
    removed = 0
    for collection in collections:
        after = ""
        while page := await deps.calls(deps.calls.store.ledger_page, collection, after, 500):
            deps.health.beat("source")
            keys = [e.doc_key for e in page]
            ids = [parse_doc_key(k) for k in keys]
            found = {
                doc_key(d["_id"])
                async for d in deps.db[collection].find({"_id": {"$in": ids}}, {"_id": 1})
            }
            missing = [i for k, i in zip(keys, ids, strict=True) if k not in found]
            if missing:
                await deps.publisher.emit_many(
                    collection, [(i, None) for i in missing], operation="sweep"
                )
            removed += len(missing)
            after = page[-1].doc_key
    log.info("sweep_finished", removed=removed)
    return removed
