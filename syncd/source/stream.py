"""Tail the database's change stream; hand each change to the router in order.

One database-level stream with a ``$match`` on the configured collections: one
cursor, one resume token, one total order. ``fullDocument: "updateLookup"``
gives every update the current document, so each change carries the state to
mirror (a lookup that finds nothing means the document is gone).

**What the stream asks for.** A ``$project`` keeps only what syncd reads
(:data:`EVENT_FIELDS`: the token, ``operationType``, ``ns``, ``documentKey``,
``fullDocument``, ``clusterTime``). ``updateDescription`` in particular is
dropped on the server: with ``updateLookup`` an update of a large document
would otherwise carry the document twice, and an event over 16 MiB fails the
``getMore`` with 10334 ``BSONObjectTooLarge`` -- on every retry, from the same
token. On servers that have it (7.0, and 6.0 from 6.0.9; ``buildInfo`` is
read once per open) the pipeline ends with ``$changeStreamSplitLargeEvent``:
an event still over the limit arrives as fragments, which are reassembled
before routing, and the position saved for it is the *last* fragment's token
(a crash in the middle replays the whole event, never half of one).

**An event the server cannot send** (10334 without splitting, or a split that
fails): syncd cannot learn that event's token from the failing stream, so it
reopens from the last token it received with a *slim* pipeline -- no
``fullDocument`` at all, so no event can be too large -- and reads each event
of that pass with its document fetched by ``_id`` (majority read concern, what
``updateLookup`` does). The event whose size would exceed the limit is counted
in ``syncd_oversized_events_total{handling="read_directly"}`` and routed with
the document read directly, so a valid document is still published and an
invalid one dead-lettered by its mapping, with the mapping's reason; only a
document that cannot be read either is dead-lettered here, as
``oversized_event``. The pass ends after that event, when the stream is idle,
or after one batch's worth of events (the failing event was in the batch the
server could not build), and the normal stream reopens after the last event
it routed: every event is routed exactly like any other (watermark, in order),
none is skipped, and the stream never stalls on the same token.

Resume logic, in the spirit of pymongo's own: the driver resumes once by itself
after a resumable error; anything else closes the stream and syncd reopens it
from the last token it *received* (``start_after``, which also survives an
``invalidate``), with :func:`syncd.retry.delay`'s backoff -- forever, in the
retry policy's sense: the stream has no error it gives up on (a lost history is
a rescan, an oversized event is read past). What is *saved* is the watermark, not the last
token received. The post-batch resume token is recorded while idle (never
between two fragments of one event) so a quiet stream's saved position keeps
moving and never ages out of the oplog. A saved position that has left the
oplog (code 286) raises :class:`HistoryLost`: the daemon then rescans instead
of silently starting from "now".
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import bson
import structlog
from bson import Timestamp
from pymongo.errors import OperationFailure, PyMongoError
from pymongo.read_concern import ReadConcern

from syncd import metrics
from syncd.changes import Change
from syncd.ids import doc_key
from syncd.positions import StreamMark
from syncd.retry import delay as backoff
from syncd.retry import sleep_or_stop
from syncd.source.backfill import sweep
from syncd.source.users import users_match
from syncd.state import Outcome, Position

if TYPE_CHECKING:
    from syncd.source.deps import SourceDeps

log = structlog.get_logger("syncd.stream")

HISTORY_LOST_CODES = frozenset({286, 280})
#: The server could not build an event: 10334 BSONObjectTooLarge (no splitting), 7182500
#: (``$changeStreamSplitLargeEvent`` found a single field too large to split).
OVERSIZED_CODES = frozenset({10334, 7182500})
DOC_OPS = frozenset({"insert", "update", "replace", "delete"})
#: The event fields syncd reads; the ``$project`` drops everything else on the server.
EVENT_FIELDS = ("operationType", "ns", "documentKey", "fullDocument", "clusterTime")
SPLIT_STAGE: dict[str, Any] = {"$changeStreamSplitLargeEvent": {}}
#: The largest change event a server sends (``BSONObjMaxInternalSize``).
MAX_EVENT_BYTES = 16 * 1024 * 1024 + 16 * 1024
BATCH_SIZE = 1000
#: Changes routed together at most (they are in hand: one batch from the server).
GROUP_SIZE = 200


class HistoryLost(Exception):
    """The saved position is older than the oplog: only a rescan can recover."""


class FragmentGap(Exception):
    """A fragment of a split event arrived out of order: reopen from the last whole event."""


class Reassembly:
    """The fragments of one event split by ``$changeStreamSplitLargeEvent``, merged.

    Fragments carry ``splitEvent: {fragment: i, of: n}`` and disjoint fields; the
    whole event takes the *last* fragment's ``_id``, so resuming from it resumes after
    the whole event.
    """

    def __init__(self) -> None:
        self._fields: dict[str, Any] | None = None
        self._next = 1
        self._of = 0

    @property
    def pending(self) -> bool:
        """Some fragments of an event arrived, not all: no position may be saved now."""
        return self._fields is not None

    def reset(self) -> None:
        self._fields, self._next, self._of = None, 1, 0

    def add(self, fragment: dict[str, Any]) -> dict[str, Any] | None:
        """Take one fragment; return the whole event once its last fragment arrived."""
        info = fragment.get("splitEvent") or {}
        number, of = int(info.get("fragment", 0)), int(info.get("of", 0))
        if number != self._next or of < 1 or (self._of and of != self._of):
            expected = self._next
            self.reset()
            raise FragmentGap(f"fragment {number} of {of} arrived, expected {expected}")
        if number == 1:
            self._fields, self._of = {}, of
        assert self._fields is not None
        for name, value in fragment.items():
            if name not in ("_id", "splitEvent"):
                self._fields[name] = value
        if number < of:
            self._next = number + 1
            return None
        event = {"_id": fragment["_id"], **self._fields}
        self.reset()
        return event


def split_supported(build_info: dict[str, Any]) -> bool:
    """Whether a server offers ``$changeStreamSplitLargeEvent``: 7.0+, and 6.0 from 6.0.9."""
    parts = build_info.get("versionArray")
    if not isinstance(parts, list) or len(parts) < 3:
        parts = [int(p) for p in str(build_info.get("version", "0.0.0")).split("-")[0].split(".")]
    version = tuple(int(p) for p in parts[:3])
    return version >= (7, 0) or (6, 0, 9) <= version < (6, 1)


def event_size(event: dict[str, Any], doc: dict[str, Any] | None) -> int:
    """Bytes of ``event`` (without its document) once ``doc`` is its ``fullDocument``."""
    return len(bson.encode({**event, "fullDocument": doc}))


def buffered(stream: Any) -> int:
    """Events the driver already holds (from the last batch): they can be routed with the
    ones before them without waiting. 0 when the driver does not say (older pymongo)."""
    data = getattr(getattr(stream, "_cursor", None), "_data", None)
    try:
        return len(data) if data is not None else 0
    except TypeError:
        return 0


class StreamSource:
    def __init__(self, deps: SourceDeps) -> None:
        self.deps = deps
        self.opened = 0  # how many times the stream was opened (tests, status)
        self.on_open: Any = None
        self.split = False  # the open stream ends with $changeStreamSplitLargeEvent
        # Changes registered (tickets open) and not routed yet: the events of one batch
        # go to the router together (one state read for them).
        self._group: list[Change] = []

    def pipeline(self, *, split: bool = False, slim: bool = False) -> list[dict[str, Any]]:
        """The stages after ``$changeStream``: the collections, the fields syncd reads,
        and (``split``) the split stage, which must be last. ``slim`` drops the
        documents as well (see :meth:`_read_past_oversized`)."""
        fields = [f for f in EVENT_FIELDS if not (slim and f == "fullDocument")]
        mongo = self.deps.mongo
        stages: list[dict[str, Any]] = [
            {
                "$match": {
                    "$or": [
                        {"ns.coll": {"$in": list(mongo.collections)}},
                        users_match(mongo.users_collection),  # account changes
                    ]
                }
            },
            {"$project": dict.fromkeys(fields, 1)},
        ]
        if split:
            stages.append(SPLIT_STAGE)
        return stages

    @staticmethod
    def _position(token: Any, start: tuple[int, int] | None) -> dict[str, Any]:
        if token is not None:
            return {"start_after": token}
        if start is not None:
            return {"start_at_operation_time": Timestamp(*start)}
        return {}

    async def _splits(self) -> bool:
        info = await self.deps.client.admin.command("buildInfo")
        return split_supported(dict(info))

    async def run(self, position: Position | None) -> None:
        deps = self.deps
        token = position.token if position else None
        start = position.cluster_time if position and token is None else None
        attempt = 0
        while not deps.stopping.is_set():
            fragments = Reassembly()
            try:
                self.split = await self._splits()
                stream = await deps.db.watch(
                    self.pipeline(split=self.split),
                    full_document="updateLookup",
                    max_await_time_ms=deps.mongo.max_await_ms,
                    batch_size=BATCH_SIZE,
                    **self._position(token, start),
                )
                async with stream:
                    self.opened += 1
                    attempt = 0
                    deps.health.set_stream_connected(True)
                    log.info(
                        "stream_opened", resumed=token is not None, start=start, split=self.split
                    )
                    if self.on_open is not None:
                        self.on_open()
                    while not deps.stopping.is_set():
                        change = await stream.try_next()
                        deps.health.beat("source")
                        if change is None:
                            idle = stream.resume_token
                            if fragments.pending:
                                continue  # never save a position inside a split event
                            if idle is not None and idle != token:
                                token = dict(idle)
                                deps.positions.mark(StreamMark(dict(idle)))
                            continue
                        if "splitEvent" in change:
                            whole = fragments.add(change)
                            if whole is None:
                                continue
                            change = whole
                            self._count_oversized(change, "split")
                        token = change["_id"]
                        invalidated = await self._emit(change)
                        if invalidated:
                            break
                        if not buffered(stream):
                            await self._flush()  # nothing more in hand: route what is
                    await self._flush()
            except OperationFailure as exc:
                await self._flush()
                if exc.code in HISTORY_LOST_CODES or "ChangeStreamHistoryLost" in str(exc):
                    deps.health.set_stream_connected(False, "history lost")
                    raise HistoryLost(str(exc)) from None
                if exc.code in OVERSIZED_CODES:
                    log.warning(
                        "stream_event_too_large",
                        code=exc.code,
                        error=str(exc)[:200],
                        action="reading past it with the documents fetched by _id",
                    )
                    moved = await self._past_oversized(token, start)
                    if moved is not None and moved != (token, start):
                        token, start = moved
                        continue
                    # No progress (the slim pass failed or saw nothing yet): back off.
                deps.health.set_stream_connected(False, f"error {exc.code}")
                delay = backoff(attempt, cap=10.0)
                attempt += 1
                log.warning(
                    "stream_failed", code=exc.code, error=str(exc)[:200], retry_in=round(delay, 2)
                )
                await self._pause(delay)
            except FragmentGap as exc:
                await self._flush()
                # Only the whole event is ever routed or saved: read it again from the top.
                deps.health.set_stream_connected(False, "fragment gap")
                delay = backoff(attempt, cap=10.0)
                attempt += 1
                log.warning("stream_fragment_gap", error=str(exc), retry_in=round(delay, 2))
                await self._pause(delay)
            except PyMongoError as exc:
                await self._flush()
                deps.health.set_stream_connected(False, type(exc).__name__)
                delay = backoff(attempt, cap=10.0)
                attempt += 1
                log.warning(
                    "stream_disconnected", error=type(exc).__name__, retry_in=round(delay, 2)
                )
                await self._pause(delay)
            else:
                deps.health.set_stream_connected(False, "reopening")
        deps.health.set_stream_connected(False, "stopped")

    async def _pause(self, seconds: float) -> None:
        """Back off, still beating: waiting for MongoDB to come back is not being stuck."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            self.deps.health.beat("source")
            await sleep_or_stop(min(1.0, left), self.deps.stopping)

    # -- events the server cannot send -------------------------------------------------------
    async def _past_oversized(
        self, token: Any, start: tuple[int, int] | None
    ) -> tuple[Any, tuple[int, int] | None] | None:
        """:meth:`_read_past_oversized`; None (and a log line) if that failed too."""
        try:
            return await self._read_past_oversized(token, start)
        except OperationFailure as exc:
            if exc.code in HISTORY_LOST_CODES:
                self.deps.health.set_stream_connected(False, "history lost")
                raise HistoryLost(str(exc)) from None
            log.warning("stream_failed", code=exc.code, error=str(exc)[:200], during="slim pass")
        except PyMongoError as exc:
            log.warning("stream_disconnected", error=type(exc).__name__, during="slim pass")
        return None

    async def _read_past_oversized(
        self, token: Any, start: tuple[int, int] | None
    ) -> tuple[Any, tuple[int, int] | None]:
        """Route the events after ``token`` from a slim stream until past the one too large.

        Returns the new position (the last token routed). Ends after the oversized event,
        when the stream is idle (everything up to now was read), or after one batch of
        events (the server failed to build that batch, so the event was within it).
        """
        deps = self.deps
        stream = await deps.db.watch(
            self.pipeline(slim=True),
            max_await_time_ms=deps.mongo.max_await_ms,
            batch_size=BATCH_SIZE,
            **self._position(token, start),
        )
        async with stream:
            for _ in range(BATCH_SIZE):
                if deps.stopping.is_set():
                    break
                event = await stream.try_next()
                deps.health.beat("source")
                if event is None:
                    break
                token, start = event["_id"], None
                oversized, invalidated = await self._emit_read_directly(event)
                if oversized or invalidated:
                    break
        await self._flush()
        return token, start

    async def _emit_read_directly(self, event: dict[str, Any]) -> tuple[bool, bool]:
        """Route a slim event with its document read by ``_id``: (oversized?, invalidated?)."""
        op = event.get("operationType", "")
        if op not in DOC_OPS:
            return False, await self._emit(event)
        coll = event["ns"]["coll"]
        doc: dict[str, Any] | None = None
        if op != "delete":
            source = self.deps.db.get_collection(coll, read_concern=ReadConcern("majority"))
            try:
                doc = await source.find_one({"_id": event["documentKey"]["_id"]})
            except OperationFailure as exc:
                await self._dead_letter_unreadable(event, exc)
                return True, False
        size = event_size(event, doc)
        oversized = size > MAX_EVENT_BYTES
        if oversized:
            self._count_oversized(event, "read_directly")
            log.warning(
                "oversized_event",
                collection=coll,
                doc=doc_key(event["documentKey"]["_id"]),
                bytes=size,
                action="routed with the document read by _id",
            )
        await self._emit({**event, "fullDocument": doc})
        return oversized, False

    async def _dead_letter_unreadable(self, event: dict[str, Any], exc: OperationFailure) -> None:
        """The document could not be read at all: record why, and move past its event."""
        deps = self.deps
        coll = event["ns"]["coll"]
        key = doc_key(event["documentKey"]["_id"])
        metrics.EVENTS.labels(collection=coll, operation=event["operationType"]).inc()
        self._count_oversized(event, "dead_letter")
        ct = event.get("clusterTime")
        ct_pair = (ct.time, ct.inc) if isinstance(ct, Timestamp) else None
        ticket = await deps.positions.open(
            StreamMark(event["_id"], ct_pair), started=ct_pair[0] if ct_pair else time.time()
        )
        detail = (
            f"its change event exceeds MongoDB's {MAX_EVENT_BYTES}-byte limit and reading it "
            f"by _id failed with code {exc.code}: {str(exc)[:300]}"
        )
        outcome = Outcome(coll, key, "dead", "oversized_event", detail)
        await deps.calls(deps.calls.store.apply, [outcome])
        log.warning("dead_letter", collection=coll, doc=key, reason="oversized_event")
        ticket.complete()

    @staticmethod
    def _count_oversized(event: dict[str, Any], handling: str) -> None:
        coll = (event.get("ns") or {}).get("coll") or "*"
        metrics.OVERSIZED_EVENTS.labels(collection=coll, handling=handling).inc()

    # -- routing -----------------------------------------------------------------------------
    async def _emit(self, event: dict[str, Any]) -> bool:
        """Route one event; True when the stream was invalidated and must be reopened."""
        deps = self.deps
        op = event.get("operationType", "")
        token = event["_id"]
        ct = event.get("clusterTime")
        ct_pair = (ct.time, ct.inc) if isinstance(ct, Timestamp) else None
        ct_seconds = ct_pair[0] if ct_pair else None
        if op in DOC_OPS and event["ns"]["coll"] == deps.mongo.users_collection:
            # An account change, not a document: acted on before the position passes it
            # (its order among the group's document changes does not matter: an account
            # that appears is backfilled from its documents as they are then).
            metrics.EVENTS.labels(collection=event["ns"]["coll"], operation=op).inc()
            await deps.user_event(event)
            deps.positions.mark(StreamMark(token, ct_pair))
            return False
        if op in DOC_OPS:
            coll = event["ns"]["coll"]
            metrics.EVENTS.labels(collection=coll, operation=op).inc()
            doc_id = event["documentKey"]["_id"]
            doc = event.get("fullDocument") if op != "delete" else None
            ticket = await deps.positions.open(
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
            self._group.append(change)
            if len(self._group) >= GROUP_SIZE:
                await self._flush()
            return False
        await self._flush()  # what came before is routed before this acts
        coll = (event.get("ns") or {}).get("coll")
        metrics.EVENTS.labels(collection=coll or "*", operation=op).inc()
        deps.positions.mark(StreamMark(token, ct_pair))
        if op in ("drop", "rename", "dropDatabase"):
            # Every document of the collection is gone: remove their records.
            targets = [coll] if coll else list(deps.mongo.collections)
            log.warning("collection_dropped", collection=coll, operation=op)
            await sweep(deps, [c for c in targets if c in deps.mongo.collections])
        return op == "invalidate"

    async def _flush(self) -> None:
        """Route the changes registered so far, in order, as one group."""
        if self._group:
            group, self._group = self._group, []
            await self.deps.route_many(group)
