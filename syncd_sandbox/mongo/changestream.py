"""Change-stream cursors of the MongoDB sandbox: event shaping and pipeline stages.

Dev/test only. A cursor is a position in the oplog (see :mod:`.oplog`) plus a scope
(collection, database or whole deployment), the ``fullDocument`` /
``fullDocumentBeforeChange`` options and the stages that followed ``$changeStream``
(applied to each event with mongomock's aggregation, or directly for ``$match`` on the
event's own fields and top-level ``$project``, which is what consumers such as syncd
send).

Each event is encoded once: its size decides, as on a real server, whether it is
returned (a batch holds at most 16 MiB; an event that does not fit waits for the next
``getMore``), split into fragments by a final ``$changeStreamSplitLargeEvent`` (events
over ``BSONObjMaxInternalSize - 8 KiB``), or fails the command with 10334
``BSONObjectTooLarge`` (events over ``BSONObjMaxInternalSize`` without that stage).
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import bson
from bson.raw_bson import RawBSONDocument
from mongomock import aggregate as mm_aggregate
from mongomock import filtering as mm_filtering

from .errors import CommandError
from .limits import MAX_CHANGE_EVENT_SIZE, MAX_INTERNAL_SIZE, MAX_USER_SIZE
from .oplog import KIND_BEFORE, KIND_INVALIDATE, Key, Oplog, OplogEntry, encode_token
from .pipeline import normalize_stage
from .storage import Storage
from .wire import DECODE_OPTIONS

SYSTEM_DBS = frozenset({"admin", "config", "local"})
DOC_OPS = frozenset({"insert", "update", "replace", "delete"})

FULL_DOCUMENT_MODES = ("default", "updateLookup", "whenAvailable", "required")
BEFORE_CHANGE_MODES = ("off", "whenAvailable", "required")
PERMITTED_STAGES = frozenset(
    {"$match", "$project", "$addFields", "$set", "$unset", "$replaceRoot", "$replaceWith"}
    | {"$redact"}
)
SPLIT_STAGE = "$changeStreamSplitLargeEvent"
#: Event fields held as undecoded BSON when no stage needs to look inside them.
_RAW_FIELDS = frozenset({"fullDocument", "fullDocumentBeforeChange"})


@dataclass
class ChangeStreamSpec:
    scope: str  # "collection" | "database" | "cluster"
    db: str
    coll: str | None
    full_document: str = "default"
    before_change: str = "off"
    stages: list[dict[str, Any]] = field(default_factory=list)
    #: The pipeline ends with ``$changeStreamSplitLargeEvent``.
    split: bool = False


def parse_spec(
    db: str,
    target: Any,
    options: dict[str, Any],
    stages: list[Any],
    split_supported: bool = True,
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
    split = False
    for i, stage in enumerate(stages):
        if not isinstance(stage, dict) or len(stage) != 1:
            raise CommandError(
                40323, "A pipeline stage specification object must contain exactly one field."
            )
        name = next(iter(stage))
        if name == "$changeStream":
            raise CommandError(
                40602, "$changeStream is only valid as the first stage in a pipeline."
            )
        if name == SPLIT_STAGE and split_supported:
            if stage[name] != {}:
                raise CommandError(7182800, f"{SPLIT_STAGE} spec should be an empty object")
            if i != len(stages) - 1:
                raise CommandError(7182802, f"{SPLIT_STAGE} must be the last stage in the pipeline")
            split = True
            continue
        if name == SPLIT_STAGE or name not in PERMITTED_STAGES:
            raise CommandError(
                40324, f"Stage {name} is not permitted in a $changeStream pipeline (sandbox)"
            )
        checked.append(normalize_stage(stage))
    return ChangeStreamSpec(scope, db, coll, full, before, checked, split)


def _expr_fields(expr: Any) -> set[str] | None:
    """Top-level event fields an aggregation expression reads (``"$a.b"`` -> ``a``;
    ``$$variables`` read none; None: it reads the whole event, ``$$ROOT``/``$$CURRENT``)."""
    if isinstance(expr, str):
        if expr.startswith("$$"):
            name = expr[2:].split(".", 1)[0]
            return None if name in ("ROOT", "CURRENT") else set()
        return {expr[1:].split(".", 1)[0]} if expr.startswith("$") else set()
    items = expr.values() if isinstance(expr, dict) else expr if isinstance(expr, list) else ()
    out: set[str] = set()
    for item in items:
        fields = _expr_fields(item)
        if fields is None:
            return None
        out |= fields
    return out


def _match_fields(filter_: Any) -> set[str] | None:
    """Top-level event fields a ``$match`` filter reads (None: cannot tell)."""
    if not isinstance(filter_, dict):
        return None
    out: set[str] = set()
    for key, value in filter_.items():
        if key in ("$and", "$or", "$nor"):
            if not isinstance(value, list):
                return None
            for sub in value:
                fields = _match_fields(sub)
                if fields is None:
                    return None
                out |= fields
        elif key == "$expr":
            fields = _expr_fields(value)
            if fields is None:
                return None
            out |= fields
        elif key.startswith("$"):
            return None
        else:
            out.add(key.split(".", 1)[0])
    return out


_NO_VALUE = object()


def _string_conditions(filter_: Any) -> list[tuple[list[str], frozenset[str]]] | None:
    """``filter_`` as (path, allowed strings) pairs if it only pins paths to strings
    (``{"ns.coll": "a"}``, ``{"ns.coll": {"$in": ["a", "b"]}}``, ``{... {"$eq": "a"}}``)."""
    if not isinstance(filter_, dict) or not filter_:
        return None
    out = []
    for key, cond in filter_.items():
        if not isinstance(key, str) or key.startswith("$"):
            return None
        if isinstance(cond, dict):
            if len(cond) != 1:
                return None
            op, arg = next(iter(cond.items()))
            values = (
                arg if op == "$in" and isinstance(arg, list) else [arg] if op == "$eq" else None
            )
        else:
            values = [cond]
        if values is None or not all(type(v) is str for v in values):
            return None
        out.append((key.split("."), frozenset(values)))
    return out


def _match_strings(
    conditions: list[tuple[list[str], frozenset[str]]], ev: dict[str, Any]
) -> bool | None:
    """Apply :func:`_string_conditions` to an event; None when a path crosses an array
    (then mongomock's matcher decides)."""
    for path, allowed in conditions:
        value: Any = ev
        for part in path:
            if isinstance(value, dict):
                value = value.get(part, _NO_VALUE)
            elif isinstance(value, list):
                return None
            else:
                value = _NO_VALUE
                break
        if isinstance(value, list):
            return None
        if type(value) is not str or value not in allowed:
            return False  # missing, another type, or another string
    return True


def _compiled_match(filter_: dict[str, Any]) -> tuple[str, Any]:
    """A ``$match`` filter as ("strings", (conditions, filter)) when it only pins paths to
    strings, ("any", [clauses]) for a lone ``$or`` (each clause compiled so, tried in
    order: syncd's clause for its collections first), else ("match", filter)."""
    strings = _string_conditions(filter_)
    if strings:
        return "strings", (strings, filter_)
    clauses = filter_.get("$or") if len(filter_) == 1 else None
    if isinstance(clauses, list) and clauses and all(isinstance(c, dict) for c in clauses):
        return "any", [_compiled_match(c) for c in clauses]
    return "match", filter_


def _matches(compiled: tuple[str, Any], ev: dict[str, Any]) -> bool:
    kind, arg = compiled
    if kind == "strings":
        conditions, filter_ = arg
        matched = _match_strings(conditions, ev)
        if matched is None:
            matched = mm_filtering.filter_applies(filter_, ev)
        return bool(matched)
    if kind == "any":
        return any(_matches(clause, ev) for clause in arg)
    return bool(mm_filtering.filter_applies(arg, ev))


def _simple_projection(spec: Any) -> tuple[bool, frozenset[str], bool] | None:
    """(inclusion?, top-level fields, keep _id?) of a flag-only, top-level ``$project``."""
    if not isinstance(spec, dict) or not spec:
        return None
    keep_id = True
    fields: dict[str, bool] = {}
    for key, value in spec.items():
        if not isinstance(key, str) or "." in key or key.startswith("$"):
            return None
        if not isinstance(value, bool | int | float):
            return None
        if key == "_id":
            keep_id = bool(value)
        else:
            fields[key] = bool(value)
    kinds = set(fields.values())
    if len(kinds) > 1:
        return None
    inclusion = kinds == {True} or (not fields and keep_id)
    return inclusion, frozenset(fields), keep_id


def _element_size(key: str, value: Any) -> int:
    """Bytes of one BSON element (type byte, key, value)."""
    return len(bson.encode({key: value})) - 5


class ChangeStreamCursor:
    """A ``$changeStream`` cursor: reads the oplog after ``position``.

    ``resume_split`` is ``(event key, fragment number)`` when the stream resumes from the
    token of a fragment: that event is split again and the fragments up to and including
    that one are skipped, as the server's split stage and resume check do.
    """

    def __init__(
        self,
        cursor_id: int,
        spec: ChangeStreamSpec,
        position: Key,
        ns: str,
        resume_split: tuple[Key, int] | None = None,
        start_token: dict[str, str] | None = None,
    ) -> None:
        self.id = cursor_id
        self.spec = spec
        self.position = position
        self.ns = ns
        self.done = False
        self.is_change_stream = True
        self.last_events_at = 0.0
        self.last_used = time.monotonic()
        self.resume_split = resume_split
        self.lookups = 0
        #: Encoded events (or fragments) that did not fit into the last batch.
        self.pending: deque[tuple[RawBSONDocument, dict[str, str]]] = deque()
        self._pbrt: dict[str, str] = start_token or {"_data": encode_token(position)}
        self._fast = self._fast_stages()

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
                    self.lookups += 1  # a mongod counts each lookup in opcounters.query
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

    def _fast_stages(self) -> list[tuple[str, Any]] | None:
        """The stages as (kind, arg) applied without mongomock, or None if some need it.

        ``$match`` on fields other than the (undecoded) documents, and a flag-only
        top-level ``$project``, are applied directly to the event.
        """
        out: list[tuple[str, Any]] = []
        for stage in self.spec.stages:
            name, arg = next(iter(stage.items()))
            if name == "$match":
                fields = _match_fields(arg)
                if fields is None or fields & _RAW_FIELDS:
                    return None
                out.append(_compiled_match(arg))
            elif name == "$project":
                proj = _simple_projection(arg)
                if proj is None:
                    return None
                out.append(("project", proj))
            else:
                return None
        return out

    def _apply_stages(self, ev: dict[str, Any]) -> dict[str, Any] | None:
        stages = self.spec.stages
        if not stages:
            return ev
        token = ev["_id"]
        out: dict[str, Any] | None = ev
        try:
            if self._fast is not None:
                for kind, arg in self._fast:
                    assert out is not None
                    if kind in ("strings", "match", "any"):
                        if not _matches((kind, arg), out):
                            return None
                    else:
                        inclusion, fields, keep_id = arg
                        if inclusion:
                            out = {k: v for k, v in out.items() if k in fields or k == "_id"}
                        else:
                            out = {k: v for k, v in out.items() if k not in fields}
                        if not keep_id:
                            out.pop("_id", None)
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

    def _too_large(self, size: int, token: dict[str, str], command: str) -> CommandError:
        return CommandError(
            10334,
            f"Executor error during {command} :: caused by :: BSONObj size: {size} "
            f"(0x{size:X}) is invalid. Size must be between 0 and {MAX_INTERNAL_SIZE}(16MB) "
            f'First element: _id: {{ _data: "{token["_data"]}" }}',
        )

    def _split(self, ev: dict[str, Any], key: Key) -> list[tuple[RawBSONDocument, dict[str, str]]]:
        """Fragments of an oversized event, as the server's split stage builds them.

        Fields (all but ``_id``) in ascending order of (BSON size, name); each fragment
        takes as many as fit under ``kBSONObjMaxChangeEventSize`` less the token's size,
        at least one; it carries its own token and ``splitEvent: {fragment, of}``.
        """
        fields = sorted(
            ((_element_size(k, v), k, v) for k, v in ev.items() if k != "_id"),
            key=lambda t: (t[0], t[1]),
        )
        if not fields:
            raise CommandError(
                7182502, "Cannot split an empty event or an event containing solely '_id' field"
            )
        token_size = len(bson.encode(ev["_id"]))
        max_size = MAX_CHANGE_EVENT_SIZE - token_size
        fragments: list[dict[str, Any]] = []
        i = 0
        while i < len(fields):
            number = len(fragments)
            frag: dict[str, Any] = {
                "_id": {"_data": encode_token(key, number)},
                "splitEvent": {"fragment": number + 1, "of": 0},
            }
            size = len(bson.encode(frag))
            while True:
                fsize, name, value = fields[i]
                frag[name] = value
                size += fsize
                i += 1
                if i >= len(fields) or size + fields[i][0] > max_size:
                    break
            if size > max_size:
                raise CommandError(
                    7182500,
                    f"Splitting change event failed: fragment size {size} is greater than "
                    f"maximum allowed fragment size {max_size}",
                )
            fragments.append(frag)
        for frag in fragments:
            frag["splitEvent"]["of"] = len(fragments)
        return [(RawBSONDocument(bson.encode(f)), f["_id"]) for f in fragments]

    def _items(
        self, entry: OplogEntry, storage: Storage, command: str
    ) -> list[tuple[RawBSONDocument, dict[str, str]]]:
        """The encoded event(s) ``entry`` produces for this stream (none if filtered)."""
        ev = self._apply_stages(
            self.shape(entry, storage, self._fast is None and bool(self.spec.stages))
        )
        resume = self.resume_split
        if resume is not None:
            self.resume_split = None
            if entry.key != resume[0] or ev is None:
                raise CommandError(
                    280,
                    "Attempted to resume from a split event, but the resumed stream produced a "
                    "different split. Ensure that the pipeline used to resume is the same as the "
                    "original",
                )
        if ev is None:
            return []
        raw = bson.encode(ev)
        token = ev["_id"]
        if self.spec.split and len(raw) > MAX_CHANGE_EVENT_SIZE:
            items = self._split(ev, entry.key)
        elif len(raw) > MAX_INTERNAL_SIZE:
            raise self._too_large(len(raw), token, command)
        else:
            if resume is not None:
                raise CommandError(
                    280,
                    "Attempted to resume from a split event fragment, but the event in the "
                    "resumed stream was not large enough to be split",
                )
            return [(RawBSONDocument(raw), token)]
        if resume is not None:
            skip = resume[1] + 1
            if resume[1] >= len(items):
                raise CommandError(
                    280,
                    "Attempted to resume from a split event, but the resumed stream produced a "
                    "different split. Ensure that the pipeline used to resume is the same as the "
                    "original",
                )
            items = items[skip:]
        return items

    def scan(
        self, oplog: Oplog, storage: Storage, limit: int, command: str = "getMore"
    ) -> list[RawBSONDocument]:
        """Return up to ``limit`` events (at most 16 MiB, but at least one) and advance."""
        events: list[RawBSONDocument] = []
        size = 0

        def take(item: tuple[RawBSONDocument, dict[str, str]]) -> bool:
            nonlocal size
            raw, token = item
            if events and (len(events) >= limit or size + len(raw.raw) > MAX_USER_SIZE):
                return False
            events.append(raw)
            size += len(raw.raw)
            self._pbrt = token
            return True

        while self.pending and take(self.pending[0]):
            self.pending.popleft()
        if self.pending or self.done:
            return events
        if oplog.is_lost(self.position):
            # The stream fell behind a bounded oplog: entries it has not seen are gone.
            raise CommandError(
                286,
                "Error on remote shard: Resume of change stream was not possible, as the "
                "resume point may no longer be in the oplog.",
            )
        index = oplog.index_after(self.position)
        while len(events) < limit and size < MAX_USER_SIZE:
            entry = oplog.entry_at(index)
            if entry is None:
                # Reached the end: everything up to the newest entry has been seen.
                if oplog.last_key > self.position:
                    self.position = oplog.last_key
                    self._pbrt = {"_data": encode_token(self.position)}
                break
            index += 1
            if not self._in_scope(entry):
                self.position = entry.key
                self._pbrt = {"_data": encode_token(self.position)}
                continue
            items = self._items(entry, storage, command)
            self.position = entry.key
            if not items:
                self._pbrt = {"_data": encode_token(self.position)}
            for item in items:
                if self.pending or not take(item):
                    self.pending.append(item)
            if self._invalidates(entry):
                inv_key = (entry.key[0], entry.key[1], entry.key[2], KIND_INVALIDATE)
                inv_token = {"_data": encode_token(inv_key)}
                inv = {
                    "_id": inv_token,
                    "operationType": "invalidate",
                    "clusterTime": entry.ts,
                    "wallTime": entry.wall,
                }
                item = (RawBSONDocument(bson.encode(inv)), inv_token)
                if self.pending or not take(item):
                    self.pending.append(item)
                self.position = inv_key
                self.done = True
                break
            if self.pending:
                break
        return events

    @property
    def exhausted(self) -> bool:
        """True once an invalidate has been returned: the server closes the cursor."""
        return self.done and not self.pending

    def post_batch_resume_token(self) -> dict[str, str]:
        return dict(self._pbrt)


def resume_position(key: Key, fragment: int | None) -> tuple[Key, tuple[Key, int] | None]:
    """Where a stream resumed from a token starts, and the split event it resumes inside."""
    if fragment is None:
        return key, None
    return (key[0], key[1], key[2], KIND_BEFORE), (key, fragment)
