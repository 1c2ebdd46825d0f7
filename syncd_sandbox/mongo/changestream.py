"""Change-stream cursors of the MongoDB sandbox: event shaping and pipeline stages.

Dev/test only. A cursor is a position in the oplog (see :mod:`.oplog`) plus a scope
(collection, database or whole deployment), the ``fullDocument`` /
``fullDocumentBeforeChange`` options and the stages that followed ``$changeStream``
(applied to each event with mongomock's aggregation).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import bson
from bson.raw_bson import RawBSONDocument
from mongomock import aggregate as mm_aggregate
from mongomock import filtering as mm_filtering

from .errors import CommandError
from .oplog import KIND_INVALIDATE, Key, Oplog, OplogEntry, encode_token
from .storage import Storage
from .wire import DECODE_OPTIONS

SYSTEM_DBS = frozenset({"admin", "config", "local"})
DOC_OPS = frozenset({"insert", "update", "replace", "delete"})

FULL_DOCUMENT_MODES = ("default", "updateLookup", "whenAvailable", "required")
BEFORE_CHANGE_MODES = ("off", "whenAvailable", "required")

#: Rough cap on the bytes of events in one batch (replies must stay under 48 MB).
MAX_BATCH_BYTES = 8 * 1024 * 1024


@dataclass
class ChangeStreamSpec:
    scope: str  # "collection" | "database" | "cluster"
    db: str
    coll: str | None
    full_document: str = "default"
    before_change: str = "off"
    stages: list[dict[str, Any]] = field(default_factory=list)


def parse_spec(
    db: str, target: Any, options: dict[str, Any], stages: list[Any]
) -> ChangeStreamSpec:
    """Validate the ``$changeStream`` stage options (not the start position)."""
    if isinstance(target, str):
        scope, coll = "collection", target
        if db in SYSTEM_DBS and db != "admin":
            raise CommandError(73, f"$changeStream may not be opened on the internal {db} database")
    else:
        coll = None
        if options.get("allChangesForCluster"):
            if db != "admin":
                raise CommandError(
                    73,
                    "A $changeStream with 'allChangesForCluster:true' may only be opened on the 'admin' database",
                )
            scope = "cluster"
        else:
            if db in SYSTEM_DBS:
                raise CommandError(
                    73, f"$changeStream may not be opened on the internal {db} database"
                )
            scope = "database"
    full = options.get("fullDocument", "default")
    if full not in FULL_DOCUMENT_MODES:
        raise CommandError(2, f"unknown fullDocument mode {full!r}")
    before = options.get("fullDocumentBeforeChange", "off")
    if before not in BEFORE_CHANGE_MODES:
        raise CommandError(2, f"unknown fullDocumentBeforeChange mode {before!r}")
    checked: list[dict[str, Any]] = []
    for stage in stages:
        if not isinstance(stage, dict) or len(stage) != 1:
            raise CommandError(
                40323, "A pipeline stage specification object must contain exactly one field."
            )
        name = next(iter(stage))
        if name == "$changeStream":
            raise CommandError(
                40602, "$changeStream is only valid as the first stage in a pipeline."
            )
        if name not in (
            "$match",
            "$project",
            "$addFields",
            "$set",
            "$unset",
            "$replaceRoot",
            "$replaceWith",
            "$redact",
        ):
            raise CommandError(
                40324, f"Stage {name} is not permitted in a $changeStream pipeline (sandbox)"
            )
        checked.append(stage)
    return ChangeStreamSpec(scope, db, coll, full, before, checked)


class ChangeStreamCursor:
    """A ``$changeStream`` cursor: reads the oplog after ``position``."""

    def __init__(self, cursor_id: int, spec: ChangeStreamSpec, position: Key, ns: str) -> None:
        self.id = cursor_id
        self.spec = spec
        self.position = position
        self.ns = ns
        self.done = False
        self.is_change_stream = True
        self.last_events_at = 0.0
        self.last_used = time.monotonic()

    # -- scope ---------------------------------------------------------------------------
    def _in_scope(self, entry: OplogEntry) -> bool:
        spec = self.spec
        if spec.scope == "collection":
            return entry.db == spec.db and entry.coll == spec.coll
        if spec.scope == "database":
            return entry.db == spec.db and not entry.coll.startswith("system.")
        return entry.db not in SYSTEM_DBS and not entry.coll.startswith("system.")

    def _invalidates(self, entry: OplogEntry) -> bool:
        if self.spec.scope == "collection":
            return entry.op in ("drop", "rename")
        if self.spec.scope == "database":
            return entry.op == "dropDatabase"
        return False

    # -- events --------------------------------------------------------------------------
    def _doc(self, raw: bytes, as_dict: bool) -> Any:
        return bson.decode(raw, DECODE_OPTIONS) if as_dict else RawBSONDocument(raw)

    def shape(self, entry: OplogEntry, storage: Storage, as_dict: bool) -> dict[str, Any]:
        """The change event for ``entry`` as this stream's options want it."""
        ev: dict[str, Any] = {
            "_id": {"_data": encode_token(entry.key)},
            "operationType": entry.op,
            "clusterTime": entry.ts,
            "wallTime": entry.wall,
        }
        op = entry.op
        if op in DOC_OPS:
            full = self.spec.full_document
            if op in ("insert", "replace"):
                if entry.post is not None:
                    ev["fullDocument"] = self._doc(entry.post, as_dict)
            elif op == "update":
                if full == "updateLookup":
                    current = storage.get(entry.db, entry.coll, entry.doc_id)
                    if current is None:
                        ev["fullDocument"] = None
                    else:
                        ev["fullDocument"] = self._doc(bson.encode(current), as_dict)
                elif full in ("whenAvailable", "required"):
                    if entry.images and entry.post is not None:
                        ev["fullDocument"] = self._doc(entry.post, as_dict)
                    elif full == "required":
                        raise CommandError(
                            280,
                            "Change stream was configured to require a post-image for all update, "
                            "delete and replace events, but no post-image was found",
                        )
                    else:
                        ev["fullDocument"] = None
            ev["ns"] = {"db": entry.db, "coll": entry.coll}
            ev["documentKey"] = {"_id": entry.doc_id}
            if op == "update":
                ev["updateDescription"] = entry.update_desc or {
                    "updatedFields": {},
                    "removedFields": [],
                    "truncatedArrays": [],
                }
            before = self.spec.before_change
            if before != "off" and op != "insert":
                if entry.pre is not None:
                    ev["fullDocumentBeforeChange"] = self._doc(entry.pre, as_dict)
                elif before == "required":
                    raise CommandError(
                        280,
                        "Change stream was configured to require a pre-image for all update, "
                        "delete and replace events, but no pre-image was found",
                    )
                else:
                    ev["fullDocumentBeforeChange"] = None
        elif op == "dropDatabase":
            ev["ns"] = {"db": entry.db}
        else:
            ev["ns"] = {"db": entry.db, "coll": entry.coll}
            if op == "rename" and entry.to is not None:
                ev["to"] = dict(entry.to)
        return ev

    def _apply_stages(self, ev: dict[str, Any]) -> dict[str, Any] | None:
        stages = self.spec.stages
        if not stages:
            return ev
        token = ev["_id"]
        out: dict[str, Any] | None = ev
        try:
            if all("$match" in s for s in stages):
                for stage in stages:
                    if not mm_filtering.filter_applies(stage["$match"], ev):
                        return None
                out = ev
            else:
                results = list(mm_aggregate.process_pipeline([ev], None, stages, None))
                out = results[0] if results else None
        except CommandError:
            raise
        except Exception as exc:
            raise CommandError(2, f"change stream pipeline failed in the sandbox: {exc}") from exc
        if out is not None and out.get("_id") != token:
            raise CommandError(
                280,
                "Encountered an event whose _id field, which contains the resume token, was "
                "modified by the pipeline. Modifying the _id field of an event makes it "
                "impossible to resume the stream from that point.",
            )
        return out

    def scan(self, oplog: Oplog, storage: Storage, limit: int) -> list[Any]:
        """Return up to ``limit`` events after the position and advance it."""
        if self.done:
            return []
        if oplog.is_lost(self.position):
            # The stream fell behind a bounded oplog: entries it has not seen are gone.
            raise CommandError(
                286,
                "Error on remote shard: Resume of change stream was not possible, as the "
                "resume point may no longer be in the oplog.",
            )
        events: list[Any] = []
        size = 0
        as_dict = bool(self.spec.stages)
        index = oplog.index_after(self.position)
        while len(events) < limit and size < MAX_BATCH_BYTES:
            entry = oplog.entry_at(index)
            if entry is None:
                # Reached the end: everything up to the newest entry has been seen.
                if oplog.last_key > self.position:
                    self.position = oplog.last_key
                break
            index += 1
            if not self._in_scope(entry):
                self.position = entry.key
                continue
            ev = self._apply_stages(self.shape(entry, storage, as_dict))
            self.position = entry.key
            if ev is not None:
                events.append(ev)
                size += len(entry.post or b"") + len(entry.pre or b"") + 200
            if self._invalidates(entry):
                inv_key = (entry.key[0], entry.key[1], entry.key[2], KIND_INVALIDATE)
                events.append(
                    {
                        "_id": {"_data": encode_token(inv_key)},
                        "operationType": "invalidate",
                        "clusterTime": entry.ts,
                        "wallTime": entry.wall,
                    }
                )
                self.position = inv_key
                self.done = True
                break
        return events

    def post_batch_resume_token(self) -> dict[str, str]:
        return {"_data": encode_token(self.position)}
