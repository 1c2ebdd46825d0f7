"""Equality look-ups from the indexes of the MongoDB sandbox (dev/test only).

A real server answers ``{did: "…", nsid: "…", rkey: "…"}`` from an index; mongomock scans
every document with its general matcher. For each collection this module keeps, per
top-level field that appears in one of its indexes, a hash map from the field's values
to the documents holding them (an array field: under each element, as a multikey index
does), plus each document's position in natural order.

:meth:`CollectionIndex.candidates` turns a filter's equality and ``$in`` conditions on
``_id`` or an indexed field into the few documents that can match; the caller checks
them against the whole filter unless the look-up was exact. Values of types the maps do
not model (Decimal128, documents, nested arrays, binary, ...) are kept in a side set and
always handed out as candidates, so a look-up never misses a match.
"""

from __future__ import annotations

import datetime
import math
import re
from collections.abc import Iterable
from typing import Any

import bson
from bson.objectid import ObjectId

#: A value as an index key: (type tag, value). Ints, Int64 and doubles compare by value,
#: as the server's numeric equality does. Booleans share the numbers' tag because
#: mongomock's matcher, which answers every query without an index, treats ``true`` as
#: ``1`` (a server does not): an index must not change what a query finds.
TypedKey = tuple[str, Any]


def typed(value: Any) -> TypedKey | None:
    """The index key of a scalar, or None for a type the maps do not model."""
    if isinstance(value, int | float):
        if isinstance(value, float) and math.isnan(value):
            return None
        return ("n", value)
    if isinstance(value, str):
        return ("s", value)
    if isinstance(value, ObjectId):
        return ("o", value)
    if isinstance(value, datetime.datetime):
        return ("d", value)
    return None


def stored_keys(value: Any) -> tuple[list[TypedKey], bool]:
    """(keys a stored value is found under by scalar equality, has unmodelled parts?)."""
    if value is None:
        return [], False
    if isinstance(value, list):
        keys: list[TypedKey] = []
        odd = False
        for element in value:
            if element is None or isinstance(element, list):
                continue  # never equal to a scalar
            key = typed(element)
            if key is None:
                odd = odd or not isinstance(element, dict)
            else:
                keys.append(key)
        return keys, odd
    if isinstance(value, dict):
        return [], False  # a document never equals a scalar
    key = typed(value)
    return ([key], False) if key is not None else ([], True)


def query_values(cond: Any) -> list[Any] | None:
    """The values an equality (``v``, ``{$eq: v}``) or ``{$in: [...]}`` condition pins."""
    if isinstance(cond, dict):
        if len(cond) != 1:
            return None
        op, arg = next(iter(cond.items()))
        if op == "$eq":
            values = [arg]
        elif op == "$in" and isinstance(arg, list):
            values = arg
        else:
            return None
    else:
        values = [cond]
    for value in values:
        if value is None or isinstance(value, list | dict | re.Pattern | bson.Regex):
            return None
    return values


class FieldIndex:
    """Value → documents (dict as an ordered set) for one top-level field."""

    __slots__ = ("entries", "field", "map", "odd")

    def __init__(self, field: str) -> None:
        self.field = field
        self.map: dict[TypedKey, dict[Any, None]] = {}
        self.entries: dict[Any, list[TypedKey]] = {}
        self.odd: dict[Any, None] = {}

    def add(self, key: Any, doc: dict[str, Any]) -> None:
        keys, odd = stored_keys(doc.get(self.field))
        if keys:
            self.entries[key] = keys
            for k in keys:
                self.map.setdefault(k, {})[key] = None
        if odd:
            self.odd[key] = None

    def remove(self, key: Any) -> None:
        for k in self.entries.pop(key, ()):
            bucket = self.map.get(k)
            if bucket is not None:
                bucket.pop(key, None)
                if not bucket:
                    del self.map[k]
        self.odd.pop(key, None)

    def size(self, values: list[Any]) -> int | None:
        """How many documents a look-up of ``values`` hands out (None: cannot look up)."""
        total = len(self.odd)
        for value in values:
            k = typed(value)
            if k is None:
                return None
            total += len(self.map.get(k, ()))
        return total

    def lookup(self, values: list[Any]) -> tuple[set[Any], bool]:
        """(documents, exact?) for ``values`` (all of which :meth:`size` accepted)."""
        found: set[Any] = set()
        for value in values:
            k = typed(value)
            assert k is not None
            found.update(self.map.get(k, ()))
        if self.odd:
            found.update(self.odd)
            return found, False
        return found, True


class CollectionIndex:
    """The equality maps and natural order of one collection's documents."""

    def __init__(self, fields: Iterable[str]) -> None:
        self.fields = {f: FieldIndex(f) for f in fields}
        self.seq: dict[Any, int] = {}
        self._next = 0

    def put(self, key: Any, doc: dict[str, Any]) -> None:
        """``doc`` is now stored under ``key`` (new, or changed in place)."""
        if key not in self.seq:
            self.seq[key] = self._next
            self._next += 1
        for index in self.fields.values():
            index.remove(key)
            index.add(key, doc)

    def drop(self, key: Any) -> None:
        self.seq.pop(key, None)
        for index in self.fields.values():
            index.remove(key)

    def natural(self, keys: Iterable[Any]) -> list[Any]:
        """``keys`` in natural (insertion) order."""
        seq = self.seq
        return sorted((k for k in keys if k in seq), key=seq.__getitem__)

    def _or_keys(self, branches: Any, id_key: Any) -> set[Any] | None:
        """The keys that may match some branch of an ``$or``; None unless every branch
        has an index plan (one branch without means a scan, as on a real server)."""
        if not isinstance(branches, list) or not branches:
            return None
        keys: set[Any] = set()
        for branch in branches:
            if not isinstance(branch, dict) or not branch:
                return None
            plan = self.candidates(branch, id_key)
            if plan is None:
                return None
            keys.update(plan[0])
        return keys

    def candidates(self, filter_: dict[str, Any], id_key: Any) -> tuple[list[Any], bool] | None:
        """(document keys that may match, exact?) from the most selective equality.

        ``id_key`` maps an ``_id`` value to its storage key. ``exact`` means every
        candidate matches ``filter_`` (a single condition, fully answered by the look-up).
        """
        best: tuple[int, str, list[Any]] | None = None
        for field, cond in filter_.items():
            if field != "_id" and field not in self.fields:
                continue
            values = query_values(cond)
            if values is None:
                continue
            size = len(values) if field == "_id" else self.fields[field].size(values)
            if size is not None and (best is None or size < best[0]):
                best = (size, field, values)
        either = self._or_keys(filter_.get("$or"), id_key) if "$or" in filter_ else None
        if either is not None and (best is None or len(either) < best[0]):
            # Every branch answered by an index (a real server's OR plan, one index scan
            # per branch): the union may match, the whole filter decides.
            return self.natural(either), False
        if best is None:
            return None
        _size, field, values = best
        if field == "_id":
            try:
                found = {id_key(v) for v in values}
            except TypeError:
                return None
            found &= self.seq.keys()
            # Storage keys compare embedded documents regardless of field order, the
            # server does not: check those against the filter.
            exact = not any(isinstance(v, dict) for v in values)
        else:
            found, exact = self.fields[field].lookup(values)
        return self.natural(found), exact and len(filter_) == 1
