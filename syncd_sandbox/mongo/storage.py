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
from mongomock.filtering import filter_applies, resolve_sort_key
from pymongo.errors import WriteError as PyMongoWriteError

from .diff import update_description
from .errors import CommandError, WriteFailure
from .indexes import CollectionIndex
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


def _sort_key(field: str) -> Any:
    def key(doc: dict[str, Any]) -> Any:
        return resolve_sort_key(field, doc)

    return key


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
        #: Equality maps per collection (built on first use, kept up to date by every
        #: write, dropped when the collection or its index definitions change).
        self._cidx: dict[Namespace, CollectionIndex] = {}

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
        self._cidx.pop((db, name), None)
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
        self._cidx.pop((db, name), None)
        self._cidx.pop((to_db, to_name), None)

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
        self._cidx.pop((db, name), None)
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
        finally:
            self._cidx.pop((db, name), None)

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

    def _index(self, db: str, name: str) -> CollectionIndex:
        ns = (db, name)
        cidx = self._cidx.get(ns)
        if cidx is None:
            store = self._store(db, name)
            fields = {
                field
                for info in store.indexes.values()
                for field, _direction in info.get("key", [])
                if field != "_id" and "." not in field
            }
            cidx = CollectionIndex(fields)
            for key, doc in store._documents.items():
                cidx.put(key, doc)
            self._cidx[ns] = cidx
        return cidx

    def _touch(self, db: str, name: str, key: Any, doc: dict[str, Any] | None) -> None:
        """Keep the equality maps in step: ``doc`` is now stored under ``key`` (None: gone)."""
        cidx = self._cidx.get((db, name))
        if cidx is not None:
            if doc is None:
                cidx.drop(key)
            else:
                cidx.put(key, doc)

    def _matching(self, db: str, name: str, filter_: dict[str, Any]) -> list[dict[str, Any]]:
        """The stored documents matching ``filter_``, in natural order.

        A plain ``_id`` is one look-up; equality or ``$in`` on ``_id`` or on a field of an
        index is answered from the equality maps (then checked against the whole filter);
        string equality on other fields scans with a cheap matcher; anything else is
        mongomock's matcher over every document. Raises mongomock's errors.
        """
        store = self._store(db, name)
        docs = store._documents
        if not filter_:
            return list(docs.values())
        is_id, doc_id = simple_id(filter_)
        if is_id:
            doc = self.get(db, name, doc_id)
            return [doc] if doc is not None else []
        strings = string_equality(filter_)
        plan = self._index(db, name).candidates(filter_, _doc_key)
        if plan is not None:
            keys, exact = plan
            found = [docs[k] for k in keys if k in docs]
            if exact:
                return found
            if strings is not None:
                return [d for d in found if string_matches(d, strings)]
            if not found:
                filter_applies(filter_, {})  # still refuse an invalid filter
            return [d for d in found if filter_applies(filter_, d)]
        if strings is not None:
            return [d for d in docs.values() if string_matches(d, strings)]
        return list(self.coll(db, name)._iter_documents(filter_))

    @staticmethod
    def _sorted(docs: list[dict[str, Any]], sort: dict[str, Any]) -> list[dict[str, Any]]:
        """``docs`` ordered as mongomock's cursor sorts (stable, last key first)."""
        for key, direction in reversed(list(sort.items())):
            if key == "$natural":
                if direction < 0:
                    docs = list(reversed(docs))
                continue
            if key.startswith("$"):
                raise NotImplementedError(f"Sorting by {key} is not implemented in mongomock")
            docs = sorted(docs, key=_sort_key(key), reverse=direction < 0)
        return docs

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
        try:
            docs = self._matching(db, name, filter_ or {})
            if sort:
                docs = self._sorted(docs, sort)
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
        if not filter_:
            return len(self._store(db, name)._documents)
        try:
            return len(self._matching(db, name, filter_))
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
        self._touch(db, name, key, doc)
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
        if replacement:
            return self._replace(db, name, query, update, upsert, images)
        if isinstance(update, list):
            return self._update_pipeline(db, name, query, update, upsert, multi, images)
        try:
            matched = self._matching(db, name, query)
        except Exception as exc:
            raise _translate(exc) from exc
        if not multi:
            matched = matched[:1]
        if not matched:
            if not upsert:
                return UpdateOutcome(0, 0, None, [])
            return self._upsert_new(db, name, query, update, False)
        changes: list[Change] = []
        for existing in matched:
            try:
                change = self._update_in_place(db, name, existing, query, update, False)
            except WriteFailure:
                # The statement fails as a whole (a server keeps the documents it updated
                # before the failing one; the sandbox keeps none).
                for done in changes:
                    assert done.pre is not None
                    restored = bson.decode(done.pre, DECODE_OPTIONS)
                    store._documents[_doc_key(done.doc_id)] = restored
                    self._touch(db, name, _doc_key(done.doc_id), restored)
                raise
            if change is not None:
                changes.append(change)
        if not images:
            for change in changes:
                change.pre = None
        return UpdateOutcome(len(matched), len(changes), None, changes)

    def _update_pipeline(
        self,
        db: str,
        name: str,
        query: dict[str, Any],
        update: list[Any],
        upsert: bool,
        multi: bool,
        images: bool,
    ) -> UpdateOutcome:
        """A pipeline-style update, as far as mongomock goes."""
        store = self._store(db, name)
        coll = self.coll(db, name)
        try:
            candidates = [d["_id"] for d in self._matching(db, name, query)]
        except Exception as exc:
            raise _translate(exc) from exc
        if not multi:
            candidates = candidates[:1]
        raw_before: list[tuple[Any, bytes]] = []
        for cid in candidates:
            doc = store._documents.get(_doc_key(cid))
            if doc is not None:
                raw_before.append((cid, bson.encode(doc)))
        try:
            result = coll._update(query, update, upsert=upsert, multi=multi)
        except Exception as exc:
            raise _translate(exc) from exc
        if result.get("upserted") is not None and not store._is_force_created:
            store.create()
        afters: list[tuple[Any, bytes, bytes, dict[str, Any]]] = []
        for cid, before in raw_before:
            doc = store._documents.get(_doc_key(cid))
            if doc is None:
                continue
            after = bson.encode(doc)
            if after != before:
                afters.append((cid, before, after, doc))
        upserted_id = result.get("upserted")
        too_large = any(len(after) > MAX_USER_SIZE for _, _, after, _ in afters)
        if too_large:
            for cid, before, _after, _doc in afters:
                store._documents[_doc_key(cid)] = bson.decode(before, DECODE_OPTIONS)
        inserted: list[Change] = []
        if upserted_id is not None:
            doc = store._documents.get(_doc_key(upserted_id))
            if doc is not None:
                post = bson.encode(doc)
                if too_large or len(post) > MAX_USER_SIZE:
                    del store._documents[_doc_key(upserted_id)]
                    if not too_large:
                        raise WriteFailure(17420, UPSERT_TOO_LARGE)
                else:
                    self._touch(db, name, _doc_key(upserted_id), doc)
                    inserted.append(Change("insert", upserted_id, post=post))
        if too_large:
            raise WriteFailure(17419, UPDATE_TOO_LARGE)
        changes: list[Change] = []
        for cid, before, after, doc in afters:
            self._touch(db, name, _doc_key(cid), doc)
            changes.append(self._change_for(before, after, doc, False, images, cid))
        changes.extend(inserted)
        return UpdateOutcome(int(result.get("n", 0)), len(afters), upserted_id, changes)

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
            found = self._matching(db, name, query)
        except Exception as exc:
            raise _translate(exc) from exc
        existing = found[0] if found else None
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
        self._touch(db, name, key, target)
        if after == before:
            return None
        return self._change_for(before, after, target, replacement, True, doc_id)

    def delete(self, db: str, name: str, query: dict[str, Any], limit: int) -> list[Change]:
        images = self.images_enabled(db, name)
        store = self._store(db, name)
        try:
            victims = self._matching(db, name, query)
        except Exception as exc:
            raise _translate(exc) from exc
        if limit:
            victims = victims[:limit]
        changes = []
        for doc in victims:
            vid = doc["_id"]
            pre = bson.encode(doc) if images else None
            key = _doc_key(vid)
            del store._documents[key]
            self._touch(db, name, key, None)
            changes.append(Change("delete", vid, pre=pre))
        return changes

    # -- replay (journal / snapshot) -------------------------------------------------------
    def put_raw(self, db: str, name: str, raw: bytes) -> None:
        doc = bson.decode(raw, DECODE_OPTIONS)
        store = self._store(db, name)
        key = _doc_key(doc["_id"])
        store._documents[key] = doc
        self._touch(db, name, key, doc)
        if not store._is_force_created:
            store.create()

    def remove_id(self, db: str, name: str, doc_id: Any) -> None:
        key = _doc_key(doc_id)
        self._store(db, name)._documents.pop(key, None)
        self._touch(db, name, key, None)


def bson_equal_id(a: Any, b: Any) -> bool:
    if type(a) is not type(b):
        return False
    return bool(a == b)
