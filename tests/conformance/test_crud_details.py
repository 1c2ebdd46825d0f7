"""Smaller CRUD and aggregation details where the sandbox once differed from a server
(issue 16, point 4). Sandbox and (with ``SYNCD_TEST_MONGODB_URI``) a real replica set."""

from __future__ import annotations

from typing import Any

import pytest
from bson import ObjectId
from pymongo import UpdateOne
from pymongo.database import Database
from pymongo.errors import OperationFailure, WriteError

from .test_change_streams import AWAIT_MS, next_events

Doc = dict[str, Any]


def test_update_reply_counts_upserts_in_n(db: Database[Doc]) -> None:
    coll = db["n"]
    coll.insert_one({"_id": 1})
    result = coll.bulk_write(
        [
            UpdateOne({"_id": 50}, {"$set": {"a": 1}}, upsert=True),
            UpdateOne({"_id": 1}, {"$set": {"a": 1}}, upsert=True),
        ]
    )
    assert (result.matched_count, result.modified_count, result.upserted_count) == (1, 1, 1)
    raw = coll.update_one({"_id": 51}, {"$set": {"a": 1}}, upsert=True).raw_result
    assert raw["n"] == 1 and raw["nModified"] == 0 and raw["upserted"] == 51


def test_replace_with_an_operator_filter_on_id(db: Database[Doc]) -> None:
    coll = db["rep"]
    coll.insert_many([{"_id": i, "v": i} for i in range(3)])
    result = coll.replace_one({"_id": {"$gt": 1}}, {"v": 9})
    assert (result.matched_count, result.modified_count) == (1, 1)
    assert coll.find_one({"_id": 2}) == {"_id": 2, "v": 9}
    up = coll.replace_one({"_id": {"$gt": 100}}, {"v": 10}, upsert=True)
    assert isinstance(up.upserted_id, ObjectId)
    assert coll.find_one({"v": 10}) == {"_id": up.upserted_id, "v": 10}
    with pytest.raises(WriteError) as info:  # changing _id is still refused
        coll.replace_one({"_id": {"$lt": 1}}, {"_id": 7, "v": 0})
    assert info.value.code == 66


@pytest.mark.parametrize("target", [99, 1], ids=["no-match", "match"])
def test_unknown_update_operator_is_refused(db: Database[Doc], target: int) -> None:
    coll = db["op"]
    coll.insert_one({"_id": 1})
    with pytest.raises(WriteError) as info:
        coll.update_one({"_id": target}, {"$foo": {"a": 1}})
    assert info.value.code == 9
    with pytest.raises(OperationFailure) as info2:
        coll.find_one_and_update({"_id": target}, {"$foo": {"a": 1}})
    assert info2.value.code == 9
    assert coll.find_one({"_id": 1}) == {"_id": 1}


def test_distinct_values_come_sorted(db: Database[Doc]) -> None:
    coll = db["d"]
    coll.insert_many([{"k": v} for v in ["b", 3, "a", 1, {"x": 1}, 2.5, "a", [4, "c"]]])
    assert coll.distinct("k") == [1, 2.5, 3, 4, "a", "b", "c", {"x": 1}]


def test_dotted_project_paths_build_nested_documents(db: Database[Doc]) -> None:
    coll = db["p"]
    coll.insert_one({"_id": 1, "ns": {"db": "d", "coll": "c"}, "x": 5})
    got = list(coll.aggregate([{"$project": {"ns.viewOn": "$x", "x": 1}}]))
    assert got == [{"_id": 1, "x": 5, "ns": {"viewOn": 5}}]
    got = list(coll.aggregate([{"$project": {"ns": {"coll": 1}}}]))
    assert got == [{"_id": 1, "ns": {"coll": "c"}}]


def test_dotted_project_in_a_change_stream(db: Database[Doc]) -> None:
    coll = db["cs"]
    pipeline = [{"$project": {"operationType": 1, "ns.viewOn": "$ns.coll"}}]
    with coll.watch(pipeline, max_await_time_ms=AWAIT_MS) as stream:
        coll.insert_one({"_id": 1})
        (ev,) = next_events(stream, 1)
    assert set(ev) == {"_id", "operationType", "ns"}
    assert ev["ns"] == {"viewOn": "cs"}
