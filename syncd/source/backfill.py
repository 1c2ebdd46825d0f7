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
    from syncd.engine import Engine

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
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    async def ensure_started(self, reason: str) -> None:
        store = self.engine.store
        if store.backfill_start_time() is None:
            start = await self.engine.operation_time()
            store.begin_backfill(start, self.engine.config.mongo.collections, reason=reason)
            log.info("backfill_started", reason=reason, operation_time=list(start))

    async def run(self, *, sweep: bool = False) -> None:
        """Continue (or start) the daemon's backfill pass, then hand over to the stream."""
        store = self.engine.store
        await self.ensure_started("first_start")
        reason = store.backfill_reason() or "first_start"
        self.engine.health.set_phase("backfill")
        progress = store.backfill_progress()
        if not any(p.scanned or p.done for p in progress.values()):
            await self.engine.lifecycle.resync()  # lifecycle: accounts as users shows them now
        for coll in self.engine.config.mongo.collections:
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
        await self.engine.positions.drained()
        await self.engine.save_checkpoints()
        if sweep or reason == "history_lost":
            await self.sweep(self.engine.config.mongo.collections)
            await self.engine.positions.drained()
        store.finish_backfill()
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
        engine = self.engine
        coll = engine.db[collection]
        page = engine.config.mongo.scan_batch_size
        size = engine.publisher.group
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
                    await sleep_or_stop(wait, engine.stopping)
                finally:
                    await cursor.close()
            last_id, scanned, in_page = scan.last_id, scan.scanned, scan.in_page
            if in_page:
                self._page_done(collection, last_id, scanned, 0, persist)
            phase = OTHER
            if persist:
                engine.positions.mark(BackfillMark(collection, None, OTHER, scanned, False))
        if phase == OTHER:
            query = dict(base, _id={"$not": {"$type": "objectId"}})
            others: list[tuple[Any, dict[str, Any]]] = []
            async for doc in coll.find(query).batch_size(page):
                others.append((doc["_id"], doc))
                if len(others) >= size:
                    await engine.publisher.emit_many(collection, others, operation="backfill")
                    scanned += len(others)
                    others = []
            if others:
                await engine.publisher.emit_many(collection, others, operation="backfill")
                scanned += len(others)
            if persist:
                engine.positions.mark(BackfillMark(collection, None, DONE, scanned, True))
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
        await self.engine.publisher.emit_many(scan.collection, group, operation="backfill")
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
        engine = self.engine
        metrics.BACKFILL_REMAINING.labels(collection=collection).set(remaining)
        if persist:
            engine.positions.mark(BackfillMark(collection, last_id, OBJECTID, scanned, False))
        engine.health.beat("source")

    async def sweep(self, collections: Iterable[str]) -> int:
        """Remove records whose documents no longer exist (ledger rows without a document)."""
        engine = self.engine
        removed = 0
        for collection in collections:
            after = ""
            while page := await engine.calls(engine.store.ledger_page, collection, after, 500):
                engine.health.beat("source")
                removed += await self._sweep_keys(collection, [e.doc_key for e in page])
                after = page[-1].doc_key
        log.info("sweep_finished", removed=removed)
        return removed

    async def _sweep_keys(self, collection: str, keys: list[str]) -> int:
        engine = self.engine
        ids = [parse_doc_key(k) for k in keys]
        found = {
            doc_key(d["_id"])
            async for d in engine.db[collection].find({"_id": {"$in": ids}}, {"_id": 1})
        }
        missing = [i for k, i in zip(keys, ids, strict=True) if k not in found]
        if missing:
            await engine.publisher.emit_many(
                collection, [(i, None) for i in missing], operation="sweep"
            )
        return len(missing)
