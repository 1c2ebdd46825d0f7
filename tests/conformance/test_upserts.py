"""Conditional upserts, as the MongoDB state backend's fencing uses them.

The same statements against the sandbox and (with ``SYNCD_TEST_MONGODB_URI``) a real
replica set: a filter pinning ``_id`` plus a condition either updates the document,
or, when the condition fails, the upsert's insert collides on ``_id``; an upsert that
inserts is an ``insert`` change event.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from pymongo import MongoClient, UpdateOne
from pymongo.errors import BulkWriteError, DuplicateKeyError

from tests.conformance.conftest import Backend


def test_conditional_upserts(backend: Backend) -> None:
    client: MongoClient[dict[str, Any]] = backend.client()
    db = client[f"ups_{uuid.uuid4().hex[:8]}"]
    coll = db["c"]
    try:
        with coll.watch() as stream:
            fenced = {"_id": "p", "$or": [{"fence": {"$lte": 2}}, {"fence": {"$exists": False}}]}
            coll.update_one(fenced, {"$set": {"fence": 2, "v": 1}}, upsert=True)
            coll.update_one(fenced, {"$set": {"v": 2}}, upsert=True)
            assert coll.find_one({"_id": "p"}) == {"_id": "p", "fence": 2, "v": 2}
            coll.update_one({"_id": "p"}, {"$set": {"fence": 3}})
            with pytest.raises(DuplicateKeyError):
                coll.update_one(fenced, {"$set": {"v": 99}}, upsert=True)
            with pytest.raises(BulkWriteError) as err:
                coll.bulk_write([UpdateOne(fenced, {"$set": {"v": 99}}, upsert=True)])
            assert err.value.details["writeErrors"][0]["code"] == 11000
            assert coll.update_one(fenced, {"$set": {"v": 99}}).matched_count == 0  # no upsert
            assert coll.find_one({"_id": "p"}) == {"_id": "p", "fence": 3, "v": 2}
            coll.update_one({"_id": "q"}, {"$setOnInsert": {"a": 1}, "$inc": {"n": 1}}, upsert=True)
            assert coll.find_one({"_id": "q"}) == {"_id": "q", "a": 1, "n": 1}
            kinds = []
            for _ in range(4):
                event = stream.try_next()
                while event is None:
                    event = stream.try_next()
                kinds.append((event["operationType"], event["documentKey"]["_id"]))
            assert kinds == [("insert", "p"), ("update", "p"), ("update", "p"), ("insert", "q")]
    finally:
        client.drop_database(db.name)
        client.close()
