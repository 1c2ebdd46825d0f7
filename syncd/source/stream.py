"""Tail the database's change stream; hand each change to the router in order.

One database-level stream with a ``$match`` on the configured collections: one
cursor, one resume token, one total order. ``fullDocument: "updateLookup"``
gives every update the current document, so each change carries the state to
mirror (a lookup that finds nothing means the document is gone).

Resume logic, in the spirit of pymongo's own: the driver resumes once by itself
after a resumable error; anything else closes the stream and syncd reopens it
from the last token it *received* (``start_after``, which also survives an
``invalidate``), with backoff. What is *saved* is the watermark, not the last
token received. The post-batch resume token is recorded while idle so a quiet
stream's saved position keeps moving and never ages out of the oplog. A saved
position that has left the oplog (code 286) raises :class:`HistoryLost`: the
daemon then rescans instead of silently starting from "now".
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import structlog
from bson import Timestamp
from pymongo.errors import OperationFailure, PyMongoError

from syncd import metrics
from syncd.changes import Change
from syncd.ids import doc_key
from syncd.positions import StreamMark
from syncd.retry import backoff_delay, sleep_or_stop
from syncd.state import Position

if TYPE_CHECKING:
    from syncd.engine import Engine

log = structlog.get_logger("syncd.stream")

HISTORY_LOST_CODES = frozenset({286, 280})
DOC_OPS = frozenset({"insert", "update", "replace", "delete"})


class HistoryLost(Exception):
    """The saved position is older than the oplog: only a rescan can recover."""


class StreamSource:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.opened = 0  # how many times the stream was opened (tests, status)
        self.on_open: Any = None

    def pipeline(self) -> list[dict[str, Any]]:
        return [{"$match": {"ns.coll": {"$in": list(self.engine.config.mongo.collections)}}}]

    async def run(self, position: Position | None) -> None:
        engine = self.engine
        token = position.token if position else None
        start = position.cluster_time if position and token is None else None
        attempt = 0
        while not engine.stopping.is_set():
            kwargs: dict[str, Any] = {}
            if token is not None:
                kwargs["start_after"] = token
            elif start is not None:
                kwargs["start_at_operation_time"] = Timestamp(*start)
            try:
                stream = await engine.db.watch(
                    self.pipeline(),
                    full_document="updateLookup",
                    max_await_time_ms=engine.config.mongo.max_await_ms,
                    batch_size=1000,
                    **kwargs,
                )
                async with stream:
                    self.opened += 1
                    attempt = 0
                    engine.health.set_stream_connected(True)
                    log.info("stream_opened", resumed=token is not None, start=start)
                    if self.on_open is not None:
                        self.on_open()
                    while not engine.stopping.is_set():
                        change = await stream.try_next()
                        engine.health.beat("source")
                        if change is None:
                            idle = stream.resume_token
                            if idle is not None and idle != token:
                                token = dict(idle)
                                engine.positions.mark(StreamMark(dict(idle)))
                            continue
                        token = change["_id"]
                        invalidated = await self._emit(change)
                        if invalidated:
                            break
            except OperationFailure as exc:
                if exc.code in HISTORY_LOST_CODES or "ChangeStreamHistoryLost" in str(exc):
                    engine.health.set_stream_connected(False, "history lost")
                    raise HistoryLost(str(exc)) from None
                engine.health.set_stream_connected(False, f"error {exc.code}")
                delay = backoff_delay(attempt, cap=10.0)
                attempt += 1
                log.warning(
                    "stream_failed", code=exc.code, error=str(exc)[:200], retry_in=round(delay, 2)
                )
                await self._pause(delay)
            except PyMongoError as exc:
                engine.health.set_stream_connected(False, type(exc).__name__)
                delay = backoff_delay(attempt, cap=10.0)
                attempt += 1
                log.warning(
                    "stream_disconnected", error=type(exc).__name__, retry_in=round(delay, 2)
                )
                await self._pause(delay)
            else:
                engine.health.set_stream_connected(False, "reopening")
        engine.health.set_stream_connected(False, "stopped")

    async def _pause(self, seconds: float) -> None:
        """Back off, still beating: waiting for MongoDB to come back is not being stuck."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            self.engine.health.beat("source")
            await sleep_or_stop(min(1.0, left), self.engine.stopping)

    async def _emit(self, event: dict[str, Any]) -> bool:
        """Route one event; True when the stream was invalidated and must be reopened."""
        engine = self.engine
        op = event.get("operationType", "")
        token = event["_id"]
        ct = event.get("clusterTime")
        ct_pair = (ct.time, ct.inc) if isinstance(ct, Timestamp) else None
        ct_seconds = ct_pair[0] if ct_pair else None
        if op in DOC_OPS:
            coll = event["ns"]["coll"]
            metrics.EVENTS.labels(collection=coll, operation=op).inc()
            doc_id = event["documentKey"]["_id"]
            doc = event.get("fullDocument") if op != "delete" else None
            ticket = await engine.positions.open(
                StreamMark(token, ct_pair), started=ct_seconds or time.time()
            )
            change = Change(
                collection=coll,
                doc_id=doc_id,
                key=doc_key(doc_id),
                doc=doc,
                operation=op,
                ticket=ticket,
                cluster_time=ct_seconds,
            )
            await engine.router.route(change)
            return False
        coll = (event.get("ns") or {}).get("coll")
        metrics.EVENTS.labels(collection=coll or "*", operation=op).inc()
        engine.positions.mark(StreamMark(token, ct_pair))
        if op in ("drop", "rename", "dropDatabase"):
            # Every document of the collection is gone: remove their records.
            from syncd.source.backfill import Backfill

            targets = [coll] if coll else list(engine.config.mongo.collections)
            log.warning("collection_dropped", collection=coll, operation=op)
            await Backfill(engine).sweep(
                [c for c in targets if c in engine.config.mongo.collections]
            )
        return op == "invalidate"
