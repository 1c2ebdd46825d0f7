"""CRUD commands of the MongoDB sandbox, through plain pymongo."""

from __future__ import annotations

from typing import Any

import pytest
from pymongo import ASCENDING, DESCENDING, MongoClient, ReturnDocument
from pymongo.database import Database
from pymongo.errors import BulkWriteError, DuplicateKeyError, OperationFailure
from pymongo.monitoring import CommandListener, CommandStartedEvent

from syncd_sandbox.mongo.process import SandboxProcess

pytestmark = pytest.mark.slow  # every test here talks to a sandbox subprocess

Doc = dict[str, Any]


def test_hello_reports_a_replica_set_primary(
    client: MongoClient[Doc], mongo: SandboxProcess
) -> None:
    hello = client.admin.command("hello")
    assert hello["isWritablePrimary"] is True
    assert hello["setName"] == "rs0"
    assert hello["hosts"] == [f"{mongo.host}:{mongo.port}"]
    assert hello["me"] == hello["primary"] == hello["hosts"][0]
    assert hello["maxWireVersion"] in (21, 25)
    for key in ("operationTime", "$clusterTime", "topologyVersion", "connectionId", "localTime"):
        assert key in hello
    assert client.admin.command("buildInfo")["version"].startswith("7.0.")


def test_unknown_command_is_command_not_found(client: MongoClient[Doc]) -> None:
    with pytest.raises(OperationFailure) as info:
        client.admin.command("noSuchCommand")
    assert info.value.code == 59
    assert info.value.details["codeName"] == "CommandNotFound"
    assert info.value.details["ok"] == 0


def test_unique_index_duplicate_key(db: Database[Doc]) -> None:
    coll = db["u"]
    coll.create_index([("email", ASCENDING)], unique=True)
    coll.insert_one({"_id": 1, "email": "a@x"})
    with pytest.raises(DuplicateKeyError) as info:
        coll.insert_one({"_id": 2, "email": "a@x"})
    assert info.value.code == 11000
    with pytest.raises(DuplicateKeyError):
        coll.insert_one({"_id": 1, "email": "b@x"})
    with pytest.raises(DuplicateKeyError):
        coll.insert_one({"_id": 3, "email": "a@x"})
    coll.insert_one({"_id": 3, "email": "c@x"})
    with pytest.raises(DuplicateKeyError):
        coll.update_one({"_id": 3}, {"$set": {"email": "a@x"}})
    assert coll.find_one({"_id": 3}) == {"_id": 3, "email": "c@x"}
    names = [i["name"] for i in coll.list_indexes()]
    assert names == ["_id_", "email_1"]
    with pytest.raises(BulkWriteError) as bulk:
        coll.insert_many([{"_id": 10, "email": "d@x"}, {"_id": 11, "email": "d@x"}, {"_id": 12}])
    assert bulk.value.details["nInserted"] == 1
    assert bulk.value.details["writeErrors"][0]["code"] == 11000
    assert bulk.value.details["writeErrors"][0]["index"] == 1


class _Commands(CommandListener):
    def __init__(self) -> None:
        self.names: list[str] = []

    def started(self, event: CommandStartedEvent) -> None:
        self.names.append(event.command_name)

    def succeeded(self, event: Any) -> None:
        pass

    def failed(self, event: Any) -> None:
        pass


def test_find_sort_skip_limit_projection_and_batches(mongo: SandboxProcess) -> None:
    listener = _Commands()
    client: MongoClient[Doc] = MongoClient(mongo.uri, event_listeners=[listener])
    try:
        coll = client["sb_find"]["f"]
        coll.drop()
        coll.insert_many(
            [{"_id": i, "n": i % 5, "s": f"v{i:02d}", "big": "x" * 10} for i in range(20)]
        )
        got = list(
            coll.find({"n": {"$gte": 2}}, {"s": 1, "_id": 0})
            .sort([("n", DESCENDING), ("s", ASCENDING)])
            .skip(2)
            .limit(5)
        )
        assert got == [{"s": "v14"}, {"s": "v19"}, {"s": "v03"}, {"s": "v08"}, {"s": "v13"}]
        listener.names.clear()
        batched = [d["_id"] for d in coll.find({}, batch_size=6).sort("_id", 1)]
        assert batched == list(range(20))
        assert listener.names.count("getMore") == 3
        assert coll.find_one({"_id": 7}, {"n": 1}) == {"_id": 7, "n": 2}
        assert coll.find_one({"_id": 99}) is None
        assert sorted(coll.distinct("n")) == [0, 1, 2, 3, 4]
        assert coll.count_documents({}) == 20
        assert coll.count_documents({"n": 1}) == 4
        assert coll.count_documents({"n": {"$in": [1, 2]}}, skip=1, limit=5) == 5
        assert coll.estimated_document_count() == 20
        groups = list(
            coll.aggregate([{"$group": {"_id": "$n", "c": {"$sum": 1}}}, {"$sort": {"_id": 1}}])
        )
        assert groups == [{"_id": k, "c": 4} for k in range(5)]
        coll.drop()
    finally:
        client.close()


def test_updates_upserts_and_deletes(db: Database[Doc]) -> None:
    coll = db["w"]
    coll.insert_many([{"_id": i, "tag": "a" if i < 3 else "b", "n": i} for i in range(6)])
    res = coll.update_many({"tag": "a"}, {"$inc": {"n": 10}})
    assert (res.matched_count, res.modified_count) == (3, 3)
    res = coll.update_one({"_id": 0}, {"$set": {"n": 10}})
    assert (res.matched_count, res.modified_count) == (1, 0)
    res = coll.update_one({"_id": "new"}, {"$set": {"x": 1}}, upsert=True)
    assert res.upserted_id == "new"
    assert coll.find_one({"_id": "new"}) == {"_id": "new", "x": 1}
    res = coll.replace_one({"tag": "zzz"}, {"tag": "zzz", "n": 0}, upsert=True)
    assert res.upserted_id is not None
    res = coll.delete_many({"tag": "b"})
    assert res.deleted_count == 3
    res = coll.delete_one({"tag": "a"})
    assert res.deleted_count == 1
    assert coll.count_documents({}) == 4
    with pytest.raises(OperationFailure):
        coll.update_one({"_id": 1}, {"$set": {"_id": 2}})


def test_find_and_modify(db: Database[Doc]) -> None:
    coll = db["fam"]
    coll.insert_many([{"_id": i, "q": "x", "n": i} for i in range(3)])
    before = coll.find_one_and_update(
        {"q": "x"}, {"$inc": {"n": 100}}, sort=[("n", DESCENDING)], projection={"n": 1}
    )
    assert before == {"_id": 2, "n": 2}
    after = coll.find_one_and_update(
        {"_id": 1}, {"$set": {"y": True}}, return_document=ReturnDocument.AFTER
    )
    assert after == {"_id": 1, "q": "x", "n": 1, "y": True}
    up = coll.find_one_and_update(
        {"_id": 9}, {"$set": {"n": 9}}, upsert=True, return_document=ReturnDocument.AFTER
    )
    assert up == {"_id": 9, "n": 9}
    none = coll.find_one_and_update({"_id": 10}, {"$set": {"n": 1}})
    assert none is None
    replaced = coll.find_one_and_replace({"_id": 0}, {"z": 1}, return_document=ReturnDocument.AFTER)
    assert replaced == {"_id": 0, "z": 1}
    gone = coll.find_one_and_delete({"q": "x"}, sort=[("n", ASCENDING)])
    assert gone is not None and gone["_id"] == 1
    assert coll.find_one({"_id": 1}) is None


def test_collections_and_databases(client: MongoClient[Doc], db: Database[Doc]) -> None:
    db.create_collection("made")
    with pytest.raises(OperationFailure) as info:
        db.command("create", "made")
    assert info.value.code == 48
    db["other"].insert_one({"_id": 1})
    assert sorted(db.list_collection_names()) == ["made", "other"]
    assert db.name in client.list_database_names()
    db["other"].drop()
    assert db.list_collection_names() == ["made"]
    db["made"].rename("renamed")
    assert db.list_collection_names() == ["renamed"]
    client.admin.command("ping")
    client.admin.command("serverStatus")
    client.admin.command("getParameter", 1, featureCompatibilityVersion=1)
    client.admin.command("endSessions", [])


def test_transactions_are_refused_cleanly(client: MongoClient[Doc], db: Database[Doc]) -> None:
    db["t"].insert_one({"_id": 1})
    with client.start_session() as session:
        with pytest.raises(OperationFailure) as info:
            with session.start_transaction():
                db["t"].insert_one({"_id": 2}, session=session)
    assert info.value.code == 20
    assert db["t"].count_documents({}) == 1


def test_update_description_for_arrays_and_nesting(db: Database[Doc]) -> None:
    coll = db["ud"]
    coll.insert_one({"_id": 1, "tags": ["a", "b", "c"], "m": {"x": {"y": 1}, "z": 1}})
    with coll.watch(max_await_time_ms=100) as stream:
        coll.update_one({"_id": 1}, {"$push": {"tags": "d"}, "$set": {"m.x.y": 2}})
        coll.update_one({"_id": 1}, {"$pop": {"tags": 1}, "$unset": {"m.z": ""}})
        coll.update_one({"_id": 1}, {"$set": {"tags": "scalar now"}})
        events = []
        while len(events) < 3:
            ev = stream.try_next()
            if ev is not None:
                events.append(ev["updateDescription"])
    assert events[0] == {
        "updatedFields": {"tags.3": "d", "m.x.y": 2},
        "removedFields": [],
        "truncatedArrays": [],
    }
    assert events[1] == {
        "updatedFields": {},
        "removedFields": ["m.z"],
        "truncatedArrays": [{"field": "tags", "newSize": 3}],
    }
    assert events[2]["updatedFields"] == {"tags": "scalar now"}
