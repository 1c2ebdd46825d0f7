"""``serverStatus().opcounters`` as a mongod counts them (issue 14, point 7).

From the server's documentation: ``insert`` counts each document of an insert (a bulk
insert of N counts N), ``update`` and ``delete`` each statement, ``query`` each ``find``
(and, from 7.1, each ``aggregate``), ``getmore`` each ``getMore``, ``command`` every
other command (never insert, update, delete). Sandbox and real server.
"""

from __future__ import annotations

from typing import Any

from pymongo import DeleteOne, MongoClient, UpdateOne
from pymongo.database import Database

Doc = dict[str, Any]


def counters(client: MongoClient[Doc]) -> dict[str, int]:
    return {k: int(v) for k, v in client.admin.command("serverStatus")["opcounters"].items()}


def delta(client: MongoClient[Doc], before: dict[str, int]) -> dict[str, int]:
    after = counters(client)
    return {k: after[k] - before[k] for k in ("insert", "query", "update", "delete", "getmore")}


def test_opcounters_move_as_a_server_counts(client: MongoClient[Doc], db: Database[Doc]) -> None:
    coll = db["ops"]
    coll.insert_one({"_id": "warm-up"})  # creates the collection outside the measurement
    before = counters(client)
    coll.insert_many([{"_id": i, "v": i} for i in range(5)])
    coll.insert_one({"_id": 5, "v": 5})
    assert delta(client, before) == {
        "insert": 6,
        "query": 0,
        "update": 0,
        "delete": 0,
        "getmore": 0,
    }

    before = counters(client)
    assert len(list(coll.find({"v": {"$gte": 0}}))) == 6
    assert len(list(coll.find({}, batch_size=2))) == 7  # 1 find + 3 getMores
    assert delta(client, before) == {
        "insert": 0,
        "query": 2,
        "update": 0,
        "delete": 0,
        "getmore": 3,
    }

    before = counters(client)
    coll.update_one({"_id": 1}, {"$set": {"w": 1}})
    coll.update_many({"v": {"$gt": 2}}, {"$set": {"w": 2}})  # one statement, three documents
    coll.update_one({"_id": 99}, {"$set": {"w": 3}}, upsert=True)  # an upsert is an update
    ops: list[Any] = [
        UpdateOne({"_id": 2}, {"$set": {"w": 4}}),
        UpdateOne({"_id": 3}, {"$inc": {"w": 1}}),
        DeleteOne({"_id": 4}),
    ]
    coll.bulk_write(ops)
    coll.delete_many({"v": {"$lt": 2}})
    assert delta(client, before) == {
        "insert": 0,
        "query": 0,
        "update": 5,
        "delete": 2,
        "getmore": 0,
    }

    version = tuple(client.admin.command("buildInfo")["versionArray"][:2])
    before = counters(client)
    db.command("count", "ops")
    list(coll.aggregate([{"$match": {}}]))
    after = counters(client)
    assert after["query"] - before["query"] == (1 if version >= (7, 1) else 0)
    assert after["command"] - before["command"] >= (1 if version >= (7, 1) else 2)
    assert after["insert"] == before["insert"] and after["update"] == before["update"]


def test_command_totals_count_round_trips(client: MongoClient[Doc], db: Database[Doc]) -> None:
    """``serverStatus().metrics.commands.<name>.total``: one per command received, so a
    bulk write of many statements is one ``update`` (how the benchmarks count round trips)."""

    def totals() -> dict[str, int]:
        commands = client.admin.command("serverStatus")["metrics"]["commands"]
        return {name: int(c["total"]) for name, c in commands.items()}

    coll = db["round_trips"]
    coll.insert_one({"_id": "warm-up"})
    before = totals()
    coll.bulk_write([UpdateOne({"_id": i}, {"$set": {"v": i}}, upsert=True) for i in range(50)])
    coll.insert_many([{"_id": f"n{i}"} for i in range(30)])
    list(coll.find({}))
    after = totals()
    assert after.get("update", 0) - before.get("update", 0) == 1
    assert after.get("insert", 0) - before.get("insert", 0) == 1
    assert after.get("find", 0) - before.get("find", 0) == 1
