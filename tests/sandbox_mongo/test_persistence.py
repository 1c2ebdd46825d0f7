"""Persistence of the MongoDB sandbox across SIGTERM and kill -9 restarts."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from pymongo import ASCENDING, MongoClient
from pymongo.errors import DuplicateKeyError

from syncd_sandbox.mongo.faults import send_fault
from syncd_sandbox.mongo.process import start_sandbox_process

pytestmark = pytest.mark.slow  # every test here talks to a sandbox subprocess

Doc = dict[str, Any]


def _events(stream: Any, n: int) -> list[Doc]:
    out: list[Doc] = []
    deadline = time.monotonic() + 10
    while len(out) < n and time.monotonic() < deadline:
        ev = stream.try_next()
        if ev is not None:
            out.append(ev)
    assert len(out) == n, out
    return out


@pytest.mark.parametrize("how", ["sigterm", "kill9"])
def test_data_indexes_oplog_and_tokens_survive_restart(tmp_path: Path, how: str) -> None:
    data = tmp_path / "data"
    handle = start_sandbox_process(data, oplog_size=1000)
    port = handle.port
    client: MongoClient[Doc] = MongoClient(handle.uri)
    coll = client["app"]["docs"]
    coll.create_index([("key", ASCENDING)], unique=True)
    client["app"].command("collMod", "docs", changeStreamPreAndPostImages={"enabled": True})
    with coll.watch(max_await_time_ms=100) as stream:
        coll.insert_many([{"_id": i, "key": f"k{i}"} for i in range(5)])
        coll.update_one({"_id": 1}, {"$set": {"v": 1}})
        coll.delete_one({"_id": 4})
        events = _events(stream, 7)
    token = events[2]["_id"]
    last_time = events[-1]["clusterTime"]
    before_status = send_fault(handle.uri, "status")
    client.close()

    if how == "kill9":
        handle.kill()
    else:
        assert handle.stop() == 0

    handle = start_sandbox_process(data, port=port, oplog_size=1000)
    try:
        assert handle.port == port
        client = MongoClient(handle.uri)
        coll = client["app"]["docs"]
        assert sorted(d["_id"] for d in coll.find()) == [0, 1, 2, 3]
        assert coll.find_one({"_id": 1}) == {"_id": 1, "key": "k1", "v": 1}
        with pytest.raises(DuplicateKeyError):
            coll.insert_one({"_id": 9, "key": "k0"})
        status = send_fault(handle.uri, "status")
        assert status["oplogEntries"] == before_status["oplogEntries"]
        assert status["oplogFirst"] == before_status["oplogFirst"]
        # A token taken before the restart still resumes, with the events after it.
        with coll.watch(
            resume_after=token,
            full_document_before_change="whenAvailable",
            max_await_time_ms=100,
        ) as resumed:
            got = _events(resumed, 4)
            coll.insert_one({"_id": 5, "key": "k5"})
            got += _events(resumed, 1)
        assert [(e["operationType"], e["documentKey"]["_id"]) for e in got] == [
            ("insert", 3),
            ("insert", 4),
            ("update", 1),
            ("delete", 4),
            ("insert", 5),
        ]
        assert got[3]["fullDocumentBeforeChange"] == {"_id": 4, "key": "k4"}
        # The clock keeps going forward across the restart.
        assert got[-1]["clusterTime"] > last_time
        client.close()
    finally:
        handle.stop()


def test_writes_acknowledged_before_kill9_are_kept(tmp_path: Path) -> None:
    data = tmp_path / "data"
    handle = start_sandbox_process(data)
    client: MongoClient[Doc] = MongoClient(handle.uri)
    coll = client["app"]["many"]
    for i in range(200):
        coll.insert_one({"_id": i})
    coll.update_many({}, {"$set": {"flag": True}})
    client.close()
    handle.kill()
    handle = start_sandbox_process(data, port=handle.port)
    try:
        client = MongoClient(handle.uri)
        assert client["app"]["many"].count_documents({"flag": True}) == 200
        client.close()
        # and once more, now from the snapshot written at start-up
        assert handle.stop() == 0
        handle = start_sandbox_process(data, port=handle.port)
        client = MongoClient(handle.uri)
        assert client["app"]["many"].count_documents({}) == 200
        client.close()
    finally:
        handle.stop()


def test_truncation_survives_restart(tmp_path: Path) -> None:
    data = tmp_path / "data"
    handle = start_sandbox_process(data)
    client: MongoClient[Doc] = MongoClient(handle.uri)
    coll = client["app"]["t"]
    with coll.watch(max_await_time_ms=100) as stream:
        coll.insert_many([{"_id": i} for i in range(3)])
        events = _events(stream, 3)
    send_fault(handle.uri, "truncateOplog")
    client.close()
    handle.kill()
    handle = start_sandbox_process(data, port=handle.port)
    try:
        client = MongoClient(handle.uri)
        from pymongo.errors import OperationFailure

        with pytest.raises(OperationFailure) as info:
            with client["app"]["t"].watch(resume_after=events[0]["_id"]) as s:
                s.try_next()
        assert info.value.code == 286
        client.close()
    finally:
        handle.stop()
