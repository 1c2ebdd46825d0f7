"""Collections of the MongoDB sandbox, kept in mongomock (dev/test only).

Query and update semantics are mongomock's; this module adds what a server needs on
top: per-collection options, before/after images of every write (for the oplog),
write errors in the server's format, and fast paths for ``_id`` look-ups and inserts
(mongomock scans and deep-copies on every call).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import bson
import mongomock
from bson.objectid import ObjectId
from bson.raw_bson import RawBSONDocument
from mongomock import helpers as mm_helpers
from mongomock.filtering import filter_applies
from pymongo.errors import WriteError as PyMongoWriteError

from .diff import update_description
from .errors import CommandError, WriteFailure
from .limits import MAX_USER_SIZE, UPDATE_TOO_LARGE, UPSERT_TOO_LARGE
from .wire import DECODE_OPTIONS

Namespace = tuple[str, str]


@dataclass(slots=True)
class Change:
    """One document-level change produced by a write (becomes an oplog entry)."""

    op: str  # insert | update | replace | delete
    doc_id: Any
    post: bytes | None = None
    pre: bytes | None = None
    update_desc: dict[str, Any] | None = None


@dataclass(slots=True)
class UpdateOutcome:
    matched: int
    modified: int
    upserted_id: Any
    changes: list[Change]


def _doc_key(doc_id: Any) -> Any:
    """The key mongomock uses in its document store for an ``_id``."""
    if isinstance(doc_id, dict):
        return mm_helpers.hashdict(doc_id)
    return doc_id


def simple_id(filter_: Any) -> tuple[bool, Any]:
    """If ``filter_`` is exactly ``{_id: <plain value>}``, return (True, value)."""
    if not isinstance(filter_, dict) or len(filter_) != 1 or "_id" not in filter_:
        return False, None
    value = filter_["_id"]
    if isinstance(value, dict):
        if any(isinstance(k, str) and k.startswith("$") for k in value):
            return False, None
        return True, value
    if isinstance(value, list | re.Pattern | bson.Regex):
        return False, None
    return True, value


def id_equality(filter_: Any) -> tuple[bool, Any]:
    """If ``filter_`` pins ``_id`` to one plain value (other conditions allowed), return it."""
    if not isinstance(filter_, dict) or "_id" not in filter_:
        return False, None
    return simple_id({"_id": filter_["_id"]})


def _duplicate_id(db: str, name: str, doc_id: Any) -> WriteFailure:
    return WriteFailure(
        11000,
        f"E11000 duplicate key error collection: {db}.{name} index: _id_ dup key: "
        f"{{ _id: {doc_id!r} }}",
        {"keyPattern": {"_id": 1}, "keyValue": {"_id": doc_id}},
    )


def string_equality(filter_: Any) -> dict[str, str] | None:
    """``filter_`` if it only pins top-level fields to strings (``{did: "...", rkey: "..."}``).

    Such a filter is answered by :func:`string_matches` over the documents instead of
    mongomock's general matcher, which costs ~100x more per document: a lookup on a
    secondary key (where MongoDB would use an index) no longer costs the sandbox most
    of a core once a collection holds thousands of documents.
    """
    if not isinstance(filter_, dict) or not filter_:
        return None
    for field, value in filter_.items():
        if type(value) is not str or field.startswith("$") or "." in field or field == "_id":
            return None
    return filter_


def string_matches(doc: dict[str, Any], filter_: dict[str, str]) -> bool:
    """MongoDB's equality on each field: the value itself, or an array holding it."""
    for field, value in filter_.items():
        have = doc.get(field)
        if have != value and not (isinstance(have, list) and value in have):
            return False
    return True


def is_replacement(update: Any) -> bool:
    return isinstance(update, dict) and not any(k.startswith("$") for k in update)


#: The update modifiers a server knows.
UPDATE_OPERATORS = frozenset(
    {"$set", "$unset", "$inc", "$mul", "$rename", "$setOnInsert", "$min", "$max"}
    | {"$currentDate", "$push", "$pull", "$pullAll", "$addToSet", "$pop", "$bit"}
)


def check_update(update: Any) -> None:
    """Refuse an update document as a server's parser does, before anything is matched."""
    if not isinstance(update, dict) or not update:
        return
    if not str(next(iter(update))).startswith("$"):
        return  # a replacement
    for op, arg in update.items():
        if op not in UPDATE_OPERATORS:
            raise WriteFailure(
                9,
                f"Unknown modifier: {op}. Expected a valid update modifier or pipeline-style "
                "update specified as an array",
            )
        if not isinstance(arg, dict):
            raise WriteFailure(
                9,
                f"Modifiers operate on fields but we found type {type(arg).__name__} instead. "
                f"For example: {{$mod: {{<field>: ...}}}} not {{{op}: {arg!r}}}",
            )


def _translate(exc: Exception) -> WriteFailure:
    if isinstance(exc, mongomock.DuplicateKeyError):
        return WriteFailure(11000, f"E11000 duplicate key error: {exc}")
    if isinstance(exc, PyMongoWriteError):
        code = getattr(exc, "code", None) or 2
        return WriteFailure(int(code), str(exc))
    if isinstance(exc, mongomock.OperationFailure):
        code = getattr(exc, "code", None) or 2
        return WriteFailure(int(code), str(exc))
    if isinstance(exc, NotImplementedError):
        return WriteFailure(2, f"not supported by the sandbox (mongomock): {exc}")
    return WriteFailure(2, f"{type(exc).__name__}: {exc}")


def translate_query_error(exc: Exception) -> CommandError:
    """Map a mongomock exception raised while reading to a command error."""
    if isinstance(exc, mongomock.OperationFailure):
        code = getattr(exc, "code", None) or 2
        return CommandError(int(code), str(exc))
    if isinstance(exc, NotImplementedError):
        return CommandError(115, f"not supported by the sandbox (mongomock): {exc}")
    return CommandError(2, f"{type(exc).__name__}: {exc}")


class Storage:
    """All databases of the sandbox, in memory (persistence is :mod:`.journal`)."""

    def __init__(self) -> None:
        self.client: mongomock.MongoClient = mongomock.MongoClient()
        self._scratch: Any = mongomock.MongoClient()["scratch"]["upsert"]  # see _upsert_new
        self._colls: dict[Namespace, Any] = {}
        self.options: dict[Namespace, dict[str, Any]] = {}

    # -- namespaces ----------------------------------------------------------------------
    def coll(self, db: str, name: str) -> Any:
        ns = (db, name)
        coll = self._colls.get(ns)
        if coll is None:
            coll = self.client[db][name]
            self._colls[ns] = coll
        return coll

    def _store(self, db: str, name: str) -> Any:
        return self.client._store[db][name]

    def exists(self, db: str, name: str) -> bool:
        return bool(self._store(db, name).is_created)

    def collection_names(self, db: str) -> list[str]:
        return sorted(self.client._store[db].list_created_collection_names())

    def database_names(self) -> list[str]:
        return sorted(self.client._store.list_created_database_names())

    def images_enabled(self, db: str, name: str) -> bool:
        opts = self.options.get((db, name), {})
        cfg = opts.get("changeStreamPreAndPostImages")
        return isinstance(cfg, dict) and bool(cfg.get("enabled"))

    def create(self, db: str, name: str, options: dict[str, Any] | None = None) -> bool:
        """Create a collection; return False when it already existed."""
        existed = self.exists(db, name)
        self._store(db, name).create()
        if options:
            self.options.setdefault((db, name), {}).update(options)
        else:
            self.options.setdefault((db, name), {})
        return not existed

    def coll_mod(self, db: str, name: str, options: dict[str, Any]) -> None:
        self.options.setdefault((db, name), {}).update(options)

    def drop(self, db: str, name: str) -> bool:
        existed = self.exists(db, name)
        self._store(db, name).drop()
        self.options.pop((db, name), None)
        self._colls.pop((db, name), None)
        return existed

    def drop_database(self, db: str) -> list[str]:
        names = self.collection_names(db)
        for name in names:
            self.drop(db, name)
        return names

    def rename(self, db: str, name: str, to_db: str, to_name: str) -> None:
        src = self._store(db, name)
        dst = self._store(to_db, to_name)
        dst.drop()
        dst._documents = src._documents
        dst.indexes = src.indexes
        dst._ttl_indexes = src._ttl_indexes
        dst.create()
        src.drop()
        opts = self.options.pop((db, name), {})
        self.options[(to_db, to_name)] = opts
        self._colls.pop((db, name), None)
        self._colls.pop((to_db, to_name), None)

    # -- indexes -------------------------------------------------------------------------
    def create_indexes(self, db: str, name: str, indexes: list[dict[str, Any]]) -> tuple[int, int]:
        coll = self.coll(db, name)
        before = len(self._store(db, name).indexes) + 1
        self.create(db, name)
        for spec in indexes:
            key = spec.get("key")
            if not isinstance(key, dict) or not key:
                raise CommandError(2, "index specification must have a non-empty 'key' document")
            kwargs = {k: v for k, v in spec.items() if k not in ("key", "v", "ns")}
            try:
                coll.create_index(list(key.items()), **kwargs)
            except mongomock.DuplicateKeyError as exc:
                raise CommandError(11000, f"E11000 duplicate key error: {exc}") from exc
            except mongomock.OperationFailure as exc:
                raise CommandError(getattr(exc, "code", None) or 85, str(exc)) from exc
        after = len(self._store(db, name).indexes) + 1
        return before, after

    def list_indexes(self, db: str, name: str) -> list[dict[str, Any]]:
        out = []
        for info in self.coll(db, name).list_indexes():
            doc = dict(info)
            doc.pop("ns", None)
            if isinstance(doc.get("key"), list):
                doc["key"] = dict(doc["key"])
            out.append(doc)
        return out

    def drop_indexes(self, db: str, name: str, index: Any) -> None:
        coll = self.coll(db, name)
        try:
            if index == "*":
                coll.drop_indexes()
            else:
                coll.drop_index(index if isinstance(index, str) else list(index.items()))
        except mongomock.OperationFailure as exc:
            raise CommandError(27, str(exc)) from exc

    def index_specs(self, db: str, name: str) -> list[dict[str, Any]]:
        """Index definitions for a snapshot (excluding ``_id_``)."""
        return [i for i in self.list_indexes(db, name) if i.get("name") != "_id_"]

    # -- reads ---------------------------------------------------------------------------
    def get(self, db: str, name: str, doc_id: Any) -> dict[str, Any] | None:
        store = self._store(db, name)
        try:
            doc: dict[str, Any] = store._documents[_doc_key(doc_id)]
        except (KeyError, TypeError):
            return None
        return doc

    def find(
        self,
        db: str,
        name: str,
        filter_: dict[str, Any] | None,
        projection: dict[str, Any] | None = None,
        sort: dict[str, Any] | None = None,
        skip: int = 0,
        limit: int = 0,
    ) -> list[RawBSONDocument]:
        """Matching documents, encoded (so later writes cannot change them)."""
        filter_ = filter_ or {}
        is_id, doc_id = simple_id(filter_)
        if is_id and not sort:
            doc = self.get(db, name, doc_id)
            docs: list[dict[str, Any]] = [doc] if doc is not None else []
        elif (strings := string_equality(filter_)) is not None and not sort:
            store = self._store(db, name)
            docs = [d for d in store._documents.values() if string_matches(d, strings)]
        else:
            coll = self.coll(db, name)
            try:
                if sort:
                    cursor = coll.find(filter_, sort=list(sort.items()))
                    docs = list(cursor)
                else:
                    docs = list(coll._iter_documents(filter_))
            except Exception as exc:
                raise translate_query_error(exc) from exc
        if skip:
            docs = docs[skip:]
        if limit:
            docs = docs[: abs(limit)]
        if projection:
            coll = self.coll(db, name)
            try:
                docs = [coll._copy_only_fields(d, projection, dict) for d in docs]
            except Exception as exc:
                raise translate_query_error(exc) from exc
        return [RawBSONDocument(bson.encode(d)) for d in docs]

    def project(
        self, db: str, name: str, doc: dict[str, Any], fields: dict[str, Any]
    ) -> dict[str, Any]:
        try:
            out: dict[str, Any] = self.coll(db, name)._copy_only_fields(doc, fields, dict)
        except Exception as exc:
            raise translate_query_error(exc) from exc
        return out

    def count(self, db: str, name: str, filter_: dict[str, Any] | None) -> int:
        filter_ = filter_ or {}
        if not filter_:
            return len(self._store(db, name)._documents)
        is_id, doc_id = simple_id(filter_)
        if is_id:
            return 1 if self.get(db, name, doc_id) is not None else 0
        strings = string_equality(filter_)
        if strings is not None:
            docs = self._store(db, name)._documents.values()
            return sum(1 for d in docs if string_matches(d, strings))
        try:
            return sum(1 for _ in self.coll(db, name)._iter_documents(filter_))
        except Exception as exc:
            raise translate_query_error(exc) from exc

    def all_documents(self, db: str, name: str) -> list[dict[str, Any]]:
        return list(self._store(db, name)._documents.values())

    # -- writes --------------------------------------------------------------------------
    def _has_unique(self, db: str, name: str) -> bool:
        return any(i.get("unique") for i in self._store(db, name).indexes.values())

    def insert_one(self, db: str, name: str, doc: dict[str, Any], raw: bytes | None) -> Change:
        """Insert one decoded document; ``raw`` is its BSON if already at hand."""
        if "_id" not in doc:
            doc = {"_id": ObjectId(), **doc}
            raw = None
        doc_id = doc["_id"]
        if isinstance(doc_id, list) or isinstance(doc_id, re.Pattern | bson.Regex):
            raise WriteFailure(2, "can't use an array or regex for _id")
        store = self._store(db, name)
        key = _doc_key(doc_id)
        if key in store._documents:
            raise _duplicate_id(db, name, doc_id)
        store._documents[key] = doc
        if not store._is_force_created:
            store.create()
        if self._has_unique(db, name):
            try:
                self.coll(db, name)._ensure_uniques(doc)
            except mongomock.DuplicateKeyError as exc:
                del store._documents[key]
                raise WriteFailure(11000, f"E11000 duplicate key error: {exc}") from exc
        if raw is None:
            raw = bson.encode(doc)
        return Change("insert", doc_id, post=raw)

    def _encode(self, doc: dict[str, Any]) -> bytes:
        return bson.encode(doc)

    def update(
        self,
        db: str,
        name: str,
        query: dict[str, Any],
        update: Any,
        upsert: bool = False,
        multi: bool = False,
        array_filters: list[Any] | None = None,
    ) -> UpdateOutcome:
        """Apply one update statement (operator update, replacement or pipeline)."""
        if array_filters:
            raise WriteFailure(2, "arrayFilters are not supported by the sandbox (mongomock)")
        if not isinstance(update, dict | list):
            raise WriteFailure(9, "update must be a document or a pipeline")
        check_update(update)
        replacement = is_replacement(update)
        if replacement and multi:
            raise WriteFailure(9, "multi update is not supported for replacement-style update")
        images = self.images_enabled(db, name)
        store = self._store(db, name)
        is_id, doc_id = simple_id(query)
        pinned, pinned_id = id_equality(query)
        if pinned and not is_id and not isinstance(update, list):
            # ``{_id: X, <more conditions>}`` (a fenced or conditional upsert): one
            # lookup instead of mongomock's scan of the whole collection.
            fast = self._update_pinned(db, name, query, update, pinned_id, upsert, replacement)
            if fast is not None:
                if fast.changes and not images:
                    for ch in fast.changes:
                        ch.pre = None
                return fast
        if is_id and not isinstance(update, list):
            existing = self.get(db, name, doc_id)
            if existing is None:
                if not upsert:
                    return UpdateOutcome(0, 0, None, [])
                return self._upsert_new(db, name, query, update, replacement)
            else:
                change = self._update_in_place(db, name, existing, query, update, replacement)
                if change is None:
                    return UpdateOutcome(1, 0, None, [])
                if not images:
                    change.pre = None
                return UpdateOutcome(1, 1, None, [change])
        coll = self.coll(db, name)
        if replacement:
            return self._replace(db, name, query, update, upsert, images)
        try:
            candidates = [d["_id"] for d in coll._iter_documents(query)]
        except Exception as exc:
            raise _translate(exc) from exc
        if not multi:
            candidates = candidates[:1]
        raw_before: list[tuple[Any, bytes]] = []
        for cid in candidates:
            doc = store._documents.get(_doc_key(cid))
            if doc is not None:
                raw_before.append((cid, bson.encode(doc)))
        if replacement:
            for _cid, raw in raw_before:
                old = bson.decode(raw, DECODE_OPTIONS)
                if "_id" in update and not bson_equal_id(update["_id"], old["_id"]):
                    raise WriteFailure(
                        66,
                        "After applying the update, the (immutable) field '_id' was found "
                        "to have been altered",
                    )
        try:
            result = coll._update(query, update, upsert=upsert, multi=multi)
        except Exception as exc:
            raise _translate(exc) from exc
        if result.get("upserted") is not None and not store._is_force_created:
            store.create()
        changes: list[Change] = []
        modified = 0
        afters: list[tuple[Any, bytes, bytes, dict[str, Any]]] = []
        for cid, before in raw_before:
            doc = store._documents.get(_doc_key(cid))
            if doc is None:
                continue
            after = bson.encode(doc)
            if after != before:
                afters.append((cid, before, after, doc))
        if any(len(after) > MAX_USER_SIZE for _, _, after, _ in afters):
            # The statement fails as a whole here (a server would keep the documents it
            # updated before the oversized one; the sandbox keeps none).
            for cid, before, _after, _doc in afters:
                store._documents[_doc_key(cid)] = bson.decode(before, DECODE_OPTIONS)
            if result.get("upserted") is not None:
                store._documents.pop(_doc_key(result["upserted"]), None)
            raise WriteFailure(17419, UPDATE_TOO_LARGE)
        for cid, before, after, doc in afters:
            modified += 1
            changes.append(self._change_for(before, after, doc, replacement, images, cid))
        upserted_id = result.get("upserted")
        if upserted_id is not None:
            doc = store._documents.get(_doc_key(upserted_id))
            if doc is not None:
                post = bson.encode(doc)
                if len(post) > MAX_USER_SIZE:
                    del store._documents[_doc_key(upserted_id)]
                    raise WriteFailure(17420, UPSERT_TOO_LARGE)
                changes.append(Change("insert", upserted_id, post=post))
        return UpdateOutcome(int(result.get("n", 0)), modified, upserted_id, changes)

    def _replace(
        self,
        db: str,
        name: str,
        query: dict[str, Any],
        replacement: dict[str, Any],
        upsert: bool,
        images: bool,
    ) -> UpdateOutcome:
        """A replacement whose filter is not a plain ``_id``: the first match is replaced.

        (mongomock would copy an ``_id`` condition such as ``{$gt: 1}`` into the new
        document.) An upsert that matches nothing inserts the replacement with the
        filter's ``_id`` if it pins one, else a new ObjectId.
        """
        try:
            existing = next(iter(self.coll(db, name)._iter_documents(query)), None)
        except Exception as exc:
            raise _translate(exc) from exc
        if existing is None:
            if not upsert:
                return UpdateOutcome(0, 0, None, [])
            doc = dict(replacement)
            if "_id" not in doc:
                pinned, pinned_id = id_equality(query)
                doc = {"_id": pinned_id if pinned else ObjectId(), **doc}
            raw = bson.encode(doc)
            if len(raw) > MAX_USER_SIZE:
                raise WriteFailure(17420, UPSERT_TOO_LARGE)
            inserted = self.insert_one(db, name, doc, raw)
            return UpdateOutcome(0, 0, doc["_id"], [inserted])
        change = self._update_in_place(db, name, existing, query, replacement, True)
        if change is None:
            return UpdateOutcome(1, 0, None, [])
        if not images:
            change.pre = None
        return UpdateOutcome(1, 1, None, [change])

    def _update_pinned(
        self,
        db: str,
        name: str,
        query: dict[str, Any],
        update: dict[str, Any],
        doc_id: Any,
        upsert: bool,
        replacement: bool,
    ) -> UpdateOutcome | None:
        """An update whose filter pins ``_id``; None to fall back to the general path."""
        existing = self.get(db, name, doc_id)
        if existing is None:
            if not upsert:
                return UpdateOutcome(0, 0, None, [])
            return self._upsert_new(db, name, query, update, replacement)
        try:
            matches = filter_applies(query, existing)
        except Exception:
            return None
        if not matches:
            if not upsert:
                return UpdateOutcome(0, 0, None, [])
            # MongoDB would insert, and collide with the existing ``_id``.
            raise _duplicate_id(db, name, doc_id)
        change = self._update_in_place(db, name, existing, query, update, replacement)
        if change is None:
            return UpdateOutcome(1, 0, None, [])
        return UpdateOutcome(1, 1, None, [change])

    def _upsert_new(
        self, db: str, name: str, query: dict[str, Any], update: Any, replacement: bool
    ) -> UpdateOutcome:
        """An upsert that matched nothing: build the document as MongoDB would, insert it.

        The document is built by mongomock on an empty scratch collection (query
        equality fields, then the update operators), so the real collection is not
        scanned; the change is an ``insert``, as MongoDB reports an upsert that inserts.
        """
        scratch = self._scratch
        scratch.delete_many({})
        try:
            scratch._update(query, update, upsert=True, multi=False)
        except Exception as exc:
            raise _translate(exc) from exc
        doc = scratch.find_one({})
        scratch.delete_many({})
        if doc is None:
            raise WriteFailure(2, "upsert produced no document")
        raw = bson.encode(doc)
        if len(raw) > MAX_USER_SIZE:
            raise WriteFailure(17420, UPSERT_TOO_LARGE)
        change = self.insert_one(db, name, doc, raw)
        return UpdateOutcome(0, 0, doc["_id"], [change])

    def _change_for(
        self,
        before: bytes,
        after: bytes,
        doc: dict[str, Any],
        replacement: bool,
        images: bool,
        doc_id: Any,
    ) -> Change:
        if replacement:
            return Change("replace", doc_id, post=after, pre=before if images else None)
        old = bson.decode(before, DECODE_OPTIONS)
        desc = update_description(old, doc)
        return Change(
            "update", doc_id, post=after, pre=before if images else None, update_desc=desc
        )

    def _update_in_place(
        self,
        db: str,
        name: str,
        existing: dict[str, Any],
        query: dict[str, Any],
        update: dict[str, Any],
        replacement: bool,
    ) -> Change | None:
        store = self._store(db, name)
        doc_id = existing["_id"]
        key = _doc_key(doc_id)
        before = bson.encode(existing)
        if replacement:
            if "_id" in update and not bson_equal_id(update["_id"], doc_id):
                raise WriteFailure(
                    66,
                    "After applying the update, the (immutable) field '_id' was found to "
                    "have been altered",
                )
            new_doc = {"_id": doc_id, **{k: v for k, v in update.items() if k != "_id"}}
            store._documents[key] = new_doc
            target = new_doc
        else:
            coll = self.coll(db, name)
            try:
                coll._apply_update_document(existing, query, update, False)
            except Exception as exc:
                store._documents[key] = bson.decode(before, DECODE_OPTIONS)
                raise _translate(exc) from exc
            if not bson_equal_id(existing.get("_id"), doc_id):
                store._documents[key] = bson.decode(before, DECODE_OPTIONS)
                raise WriteFailure(
                    66,
                    "After applying the update, the (immutable) field '_id' was found to "
                    "have been altered",
                )
            target = existing
        after = bson.encode(target)
        if len(after) > MAX_USER_SIZE:
            store._documents[key] = bson.decode(before, DECODE_OPTIONS)
            raise WriteFailure(17419, UPDATE_TOO_LARGE)
        if self._has_unique(db, name):
            try:
                self.coll(db, name)._ensure_uniques(target)
            except mongomock.DuplicateKeyError as exc:
                store._documents[key] = bson.decode(before, DECODE_OPTIONS)
                raise WriteFailure(11000, f"E11000 duplicate key error: {exc}") from exc
        if after == before:
            return None
        return self._change_for(before, after, target, replacement, True, doc_id)

    def delete(self, db: str, name: str, query: dict[str, Any], limit: int) -> list[Change]:
        images = self.images_enabled(db, name)
        store = self._store(db, name)
        is_id, doc_id = simple_id(query)
        if is_id:
            doc = self.get(db, name, doc_id)
            victims = [doc] if doc is not None else []
        else:
            try:
                victims = list(self.coll(db, name)._iter_documents(query))
            except Exception as exc:
                raise _translate(exc) from exc
            if limit:
                victims = victims[:limit]
        changes = []
        for doc in victims:
            vid = doc["_id"]
            pre = bson.encode(doc) if images else None
            del store._documents[_doc_key(vid)]
            changes.append(Change("delete", vid, pre=pre))
        return changes

    # -- replay (journal / snapshot) -------------------------------------------------------
    def put_raw(self, db: str, name: str, raw: bytes) -> None:
        doc = bson.decode(raw, DECODE_OPTIONS)
        store = self._store(db, name)
        store._documents[_doc_key(doc["_id"])] = doc
        if not store._is_force_created:
            store.create()

    def remove_id(self, db: str, name: str, doc_id: Any) -> None:
        self._store(db, name)._documents.pop(_doc_key(doc_id), None)


def bson_equal_id(a: Any, b: Any) -> bool:
    if type(a) is not type(b):
        return False
    return bool(a == b)
