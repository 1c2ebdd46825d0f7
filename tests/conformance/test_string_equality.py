"""Equality filters on secondary keys (``{did, nsid, rkey}``: the MongoDB state
backend's key-owner lookup), which the sandbox answers without its general matcher.

The same queries against the sandbox and (with ``SYNCD_TEST_MONGODB_URI``) a real
replica set: a string matches the field's value or an element of an array field, and
nothing else (not a number, not a nested array, not a missing field)."""

from __future__ import annotations

import uuid
from typing import Any

from pymongo import MongoClient

from tests.conformance.conftest import Backend

DOCS: list[dict[str, Any]] = [
    {"_id": 1, "did": "a", "rkey": "x"},
    {"_id": 2, "did": "a", "rkey": "y"},
    {"_id": 3, "did": ["a", "b"], "rkey": "x"},  # an array holding the value matches
    {"_id": 4, "did": [["a"]], "rkey": "x"},  # a nested array does not
    {"_id": 5, "did": "a"},  # no rkey
    {"_id": 6, "did": "A", "rkey": "x"},  # case matters
    {"_id": 7, "did": 1, "rkey": "x"},  # a number is not the string
    {"_id": 8, "did": {"a": 1}, "rkey": "x"},
    {"_id": 9, "did": None, "rkey": "x"},
]


def test_string_equality_on_secondary_keys(backend: Backend) -> None:
    client: MongoClient[dict[str, Any]] = backend.client()
    db = client[f"streq_{uuid.uuid4().hex[:8]}"]
    coll = db["c"]
    try:
        coll.create_index([("did", 1), ("rkey", 1)])
        coll.insert_many(DOCS)

        def ids(filter_: dict[str, Any]) -> list[Any]:
            return sorted(d["_id"] for d in coll.find(filter_))

        assert ids({"did": "a", "rkey": "x"}) == [1, 3]
        assert ids({"did": "a"}) == [1, 2, 3, 5]
        assert ids({"rkey": "x", "did": "b"}) == [3]
        assert ids({"did": "1"}) == []
        assert ids({"did": "a", "rkey": "z"}) == []
        assert coll.count_documents({"did": "a", "rkey": "x"}) == 2
        doc = coll.find_one({"did": "a", "rkey": "y"}, {"_id": 1})
        assert doc == {"_id": 2}
        coll.update_one({"_id": 2}, {"$set": {"rkey": "x"}})
        coll.delete_one({"_id": 1})
        assert ids({"did": "a", "rkey": "x"}) == [2, 3]
    finally:
        client.drop_database(db.name)
        client.close()


def test_in_and_eq_on_indexed_fields(backend: Backend) -> None:
    """``$in`` / ``$eq`` on an indexed field and on ``_id`` (the sandbox answers them from its
    index): a number matches the same number of another type, never a string or a
    boolean; an array matches through its elements."""
    client: MongoClient[dict[str, Any]] = backend.client()
    db = client[f"streq_{uuid.uuid4().hex[:8]}"]
    coll = db["c"]
    try:
        coll.create_index([("did", 1)])
        coll.insert_many(
            [
                *DOCS,
                {"_id": 10, "did": 2},
                {"_id": 11, "did": 2.0},
                {"_id": 12, "did": "2"},
                {"_id": 13, "did": [2, "z"]},
            ]
        )

        def ids(filter_: dict[str, Any]) -> list[Any]:
            return sorted(d["_id"] for d in coll.find(filter_))

        assert ids({"did": {"$in": ["a", "b"]}}) == [1, 2, 3, 5]
        assert ids({"did": {"$eq": "b"}}) == [3]
        assert ids({"did": {"$in": [2]}}) == [10, 11, 13]
        assert ids({"did": "z"}) == [13]
        assert ids({"_id": {"$in": [1, 3, 99]}, "did": "a"}) == [1, 3]
        assert ids({"_id": {"$in": [10, 12]}}) == [10, 12]
        assert coll.count_documents({"did": {"$in": ["a", 2]}}) == 7
        coll.update_many({"did": "a"}, {"$set": {"did": "moved"}})
        assert ids({"did": "a"}) == []  # [a, b] matched "a" too, and was replaced
        assert ids({"did": "moved"}) == [1, 2, 3, 5]
        coll.delete_many({"did": {"$in": ["moved", 2]}})
        assert ids({}) == [4, 6, 7, 8, 9, 12]
    finally:
        client.drop_database(db.name)
        client.close()
