"""Equality look-ups answered from the sandbox's indexes agree with mongomock's matcher.

In-process (no server): a :class:`Storage` with two indexes, documents of mixed types
(strings, numbers, booleans, null, arrays, documents, ObjectIds, dates, Decimal128),
random writes that must keep the maps in step, then random equality / ``$eq`` / ``$in``
filters on indexed and unindexed fields (and ``$or`` of them): the documents found, *in order*, are the ones
mongomock's general matcher finds scanning the collection in natural order.
"""

from __future__ import annotations

import datetime
from typing import Any

from bson import Decimal128, ObjectId
from hypothesis import given, settings
from hypothesis import strategies as st
from mongomock.filtering import filter_applies

from syncd_sandbox.mongo.indexes import CollectionIndex
from syncd_sandbox.mongo.storage import Storage

OID = ObjectId("65f0c0ffee0123456789abcd")
WHEN = datetime.datetime(2024, 1, 2, 3, 4, 5)
scalars = st.sampled_from(["a", "b", "A", "", "1", 1, 2, 1.0, 2.5, True, False, OID, WHEN])
odd = st.sampled_from([None, Decimal128("1"), {"x": 1}, b"raw"])
values = st.one_of(
    scalars,
    odd,
    st.lists(st.one_of(scalars, odd, st.lists(scalars, max_size=2)), max_size=3),
)
FIELDS = ("a", "b", "c", "d")  # a, b and c are indexed; d is not
docs = st.lists(st.dictionaries(st.sampled_from(FIELDS), values, max_size=4), max_size=25)
conditions = st.one_of(
    scalars,
    st.builds(lambda v: {"$eq": v}, scalars),
    st.builds(lambda vs: {"$in": vs}, st.lists(scalars, max_size=3)),
)
plain_filters = st.one_of(
    st.dictionaries(st.sampled_from(FIELDS), conditions, min_size=1, max_size=3),
    st.builds(
        lambda ids, f: {"_id": {"$in": ids}, **f},
        st.lists(st.integers(0, 30)),
        st.dictionaries(st.sampled_from(FIELDS), conditions, max_size=1),
    ),
)
filters = st.one_of(
    plain_filters,
    # $or, alone or beside other conditions (syncd's ledger look-up is one): an index plan
    # when every branch has one, a scan otherwise.
    st.builds(
        lambda branches, f: {"$or": branches, **f},
        st.lists(plain_filters, min_size=1, max_size=3),
        st.dictionaries(st.sampled_from(FIELDS), conditions, max_size=1),
    ),
)
writes = st.lists(
    st.tuples(
        st.sampled_from(["set", "unset", "delete", "update_many", "replace"]),
        st.integers(0, 30),
        st.sampled_from(FIELDS),
        values,
    ),
    max_size=12,
)


def reference(storage: Storage, filter_: dict[str, Any]) -> list[Any]:
    everything = storage.all_documents("db", "c")
    return [d["_id"] for d in everything if filter_applies(filter_, d)]


@settings(max_examples=300, deadline=None)
@given(initial=docs, ops=writes, probes=st.lists(filters, min_size=1, max_size=6))
def test_indexed_lookups_match_mongomock(
    initial: list[dict[str, Any]], ops: list[Any], probes: list[dict[str, Any]]
) -> None:
    storage = Storage()
    storage.create_indexes("db", "c", [{"key": {"a": 1, "b": 1}, "name": "a_b"}])
    for i, doc in enumerate(initial):
        storage.insert_one("db", "c", {"_id": i, **doc}, None)
    storage.create_indexes("db", "c", [{"key": {"c": 1}, "name": "c_1"}])
    assert storage.count("db", "c", {"a": "warm the maps up"}) >= 0
    for kind, i, field, value in ops:
        if kind == "set":
            storage.update("db", "c", {"_id": i}, {"$set": {field: value}})
        elif kind == "unset":
            storage.update("db", "c", {"_id": i}, {"$unset": {field: ""}})
        elif kind == "delete":
            storage.delete("db", "c", {"_id": i}, 1)
        elif kind == "replace":
            storage.update("db", "c", {"_id": i}, {field: value}, upsert=True)
        else:
            storage.update("db", "c", {"a": "a"}, {"$set": {field: value}}, multi=True)
    # The maps kept up to date by every write are the maps a fresh build makes.
    kept = storage._index("db", "c")
    fresh = CollectionIndex(kept.fields)
    for key, doc in storage._store("db", "c")._documents.items():
        fresh.put(key, doc)
    assert kept.natural(kept.seq) == fresh.natural(fresh.seq)
    for field, index in kept.fields.items():
        assert index.map == fresh.fields[field].map, field
        assert set(index.odd) == set(fresh.fields[field].odd), field
    for filter_ in probes:
        want = reference(storage, filter_)
        got = [d["_id"] for d in storage.find("db", "c", filter_)]
        assert got == want, filter_
        assert storage.count("db", "c", filter_) == len(want)


def test_lookups_use_the_index_not_a_scan() -> None:
    storage = Storage()
    storage.create_indexes("db", "c", [{"key": {"did": 1, "rkey": 1}, "name": "d_r"}])
    for i in range(2000):
        storage.insert_one("db", "c", {"_id": i, "did": f"d{i % 10}", "rkey": f"r{i}"}, None)
    cidx = storage._index("db", "c")
    plan = cidx.candidates({"did": "d3", "rkey": "r13"}, lambda v: v)
    assert plan is not None and plan[0] == [13]  # one candidate: the rarer key wins
    plan = cidx.candidates({"_id": {"$in": [5, 7, 99999]}}, lambda v: v)
    assert plan is not None and plan[0] == [5, 7]
    assert cidx.candidates({"other": "x"}, lambda v: v) is None
    # syncd's ledger look-up: the batch's ids, or the keys held in one repository.
    either = {"$or": [{"_id": {"$in": [5, 7]}}, {"did": "d3", "rkey": {"$in": ["r13", "r23"]}}]}
    plan = cidx.candidates(either, lambda v: v)
    assert plan is not None and plan[0] == [5, 7, 13, 23] and plan[1] is False
    assert [d["_id"] for d in storage.find("db", "c", either)] == [5, 7, 13, 23]
    # One branch without an index: no plan (the matcher scans).
    assert cidx.candidates({"$or": [{"_id": 5}, {"other": "x"}]}, lambda v: v) is None
