"""Fault injection of the MongoDB sandbox (``sandboxFault`` and ``failCommand``)."""

from __future__ import annotations

import time
from typing import Any

import pytest
from pymongo import MongoClient
from pymongo.database import Database
from pymongo.errors import AutoReconnect, NotPrimaryError, OperationFailure

from syncd_sandbox.mongo.faults import send_fault
from syncd_sandbox.mongo.process import SandboxProcess

pytestmark = pytest.mark.slow  # every test here talks to a sandbox subprocess

Doc = dict[str, Any]


def test_not_writable_primary_retryable_write_succeeds_once(
    mongo: SandboxProcess, db: Database[Doc]
) -> None:
    coll = db["nwp"]
    coll.insert_one({"_id": 0})
    send_fault(mongo.uri, "notWritablePrimary", n=1)
    t0 = time.monotonic()
    coll.insert_one({"_id": 1})  # first attempt fails with 10107, pymongo retries once
    assert time.monotonic() - t0 < 5
    assert sorted(d["_id"] for d in coll.find()) == [0, 1]
    assert send_fault(mongo.uri, "status")["notWritablePrimary"] == 0


def test_not_writable_primary_without_retry_fails_then_recovers(mongo: SandboxProcess) -> None:
    client: MongoClient[Doc] = MongoClient(mongo.uri, retryWrites=False, retryReads=False)
    try:
        coll = client["sb_nwp2"]["c"]
        coll.insert_one({"_id": 0})
        send_fault(mongo.uri, "notWritablePrimary", n=1)
        with pytest.raises(NotPrimaryError) as info:
            coll.insert_one({"_id": 1})
        assert info.value.details is not None
        assert info.value.details.get("code") == 10107
        coll.insert_one({"_id": 2})  # the one after succeeds (the server is primary again)
        assert sorted(d["_id"] for d in coll.find()) == [0, 2]
        hello = client.admin.command("hello")
        assert hello["isWritablePrimary"] is True
        client.drop_database("sb_nwp2")
    finally:
        client.close()


def test_pause_delays_replies_without_losing_them(mongo: SandboxProcess, db: Database[Doc]) -> None:
    db["p"].insert_one({"_id": 0})
    reply = send_fault(mongo.uri, "pause", seconds=0.6)
    assert reply["pausedForSeconds"] == 0.6
    t0 = time.monotonic()
    db["p"].insert_one({"_id": 1})
    waited = time.monotonic() - t0
    assert waited >= 0.4
    assert db["p"].count_documents({}) == 2


def test_fail_command_error_code_and_times(client: MongoClient[Doc], db: Database[Doc]) -> None:
    db["fc"].insert_one({"_id": 0})
    client.admin.command(
        "configureFailPoint",
        "failCommand",
        mode={"times": 2},
        data={"failCommands": ["find"], "errorCode": 2},
    )
    for _ in range(2):
        with pytest.raises(OperationFailure) as info:
            db["fc"].find_one({})
        assert info.value.code == 2
    assert db["fc"].find_one({}) == {"_id": 0}


def test_fail_command_close_connection_is_a_network_error(mongo: SandboxProcess) -> None:
    client: MongoClient[Doc] = MongoClient(mongo.uri, retryReads=False)
    try:
        client.admin.command(
            "configureFailPoint",
            "failCommand",
            mode={"times": 1},
            data={"failCommands": ["count"], "closeConnection": True},
        )
        with pytest.raises(AutoReconnect):
            client["sb_fc"].command("count", "c")
        assert client["sb_fc"].command("count", "c")["n"] == 0
    finally:
        client.admin.command("configureFailPoint", "failCommand", mode="off")
        client.close()


def test_fail_command_block_connection(client: MongoClient[Doc], db: Database[Doc]) -> None:
    client.admin.command(
        "configureFailPoint",
        "failCommand",
        mode={"times": 1},
        data={"failCommands": ["insert"], "blockConnection": True, "blockTimeMS": 300},
    )
    t0 = time.monotonic()
    db["b"].insert_one({"_id": 1})
    assert time.monotonic() - t0 >= 0.25
    assert db["b"].count_documents({}) == 1


def test_status_and_truncate_keep(mongo: SandboxProcess, db: Database[Doc]) -> None:
    db["s"].insert_many([{"_id": i} for i in range(10)])
    status = send_fault(mongo.uri, "status")
    assert status["oplogEntries"] >= 10
    assert status["connections"] >= 1
    assert status["oplogLast"] is not None
    out = send_fault(mongo.uri, "truncateOplog", keep=3)
    assert out["oplogEntries"] == 3
    with pytest.raises(ValueError):
        send_fault(mongo.uri, "noSuchFault")
    with pytest.raises(OperationFailure):
        MongoClient(mongo.uri).admin.command({"sandboxFault": "noSuchFault"})


def test_stream_that_falls_behind_a_bounded_oplog_gets_history_lost() -> None:
    from syncd_sandbox.mongo.process import start_sandbox_process

    handle = start_sandbox_process(oplog_size=5)
    try:
        client: MongoClient[Doc] = MongoClient(handle.uri)
        coll = client["b"]["c"]
        with coll.watch(max_await_time_ms=50, batch_size=2) as stream:
            coll.insert_many([{"_id": i} for i in range(3)])
            assert stream.try_next() is not None
            coll.insert_many([{"_id": i} for i in range(3, 20)])
            with pytest.raises(OperationFailure) as info:
                for _ in range(20):
                    stream.try_next()
        assert info.value.code == 286
        client.close()
    finally:
        handle.stop()


def test_legacy_op_query_handshake(mongo: SandboxProcess) -> None:
    import socket
    import struct

    import bson

    query = bson.encode({"isMaster": 1, "client": {"application": {"name": "legacy"}}})
    body = struct.pack("<i", 0) + b"admin.$cmd\x00" + struct.pack("<ii", 0, -1) + query
    msg = struct.pack("<iiii", 16 + len(body), 7, 0, 2004) + body
    with socket.create_connection((mongo.host, mongo.port), timeout=5) as sock:
        sock.sendall(msg)
        header = sock.recv(16, socket.MSG_WAITALL)
        length, _req, response_to, op_code = struct.unpack("<iiii", header)
        rest = sock.recv(length - 16, socket.MSG_WAITALL)
    assert (response_to, op_code) == (7, 1)
    _flags, _cursor_id, _start, n = struct.unpack("<iqii", rest[:20])
    assert n == 1
    reply = bson.decode(rest[20:])
    assert reply["ismaster"] is True
    assert reply["setName"] == "rs0"
    assert reply["ok"] == 1.0
