"""Change-stream behaviour syncd relies on, checked against the sandbox and a real server.

Only plain pymongo is used here, so the same tests run against a real replica set
(``SYNCD_TEST_MONGODB_URI``) and against ``syncd_sandbox.mongo``.
"""

from __future__ import annotations

import datetime
import time
import uuid
from typing import Any

import pytest
from bson.timestamp import Timestamp
from pymongo import AsyncMongoClient, MongoClient
from pymongo.change_stream import ChangeStream
from pymongo.database import Database
from pymongo.errors import OperationFailure

from syncd_sandbox.mongo.faults import send_fault

from .conftest import Backend

Doc = dict[str, Any]
AWAIT_MS = 100


def next_events(stream: ChangeStream[Doc], n: int, timeout: float = 10.0) -> list[Doc]:
    """Read exactly ``n`` events (fails if they do not arrive within ``timeout``)."""
    out: list[Doc] = []
    deadline = time.monotonic() + timeout
    while len(out) < n:
        assert time.monotonic() < deadline, f"got {len(out)} of {n} events: {out}"
        ev = stream.try_next()
        if ev is not None:
            out.append(ev)
    return out


def assert_no_more(stream: ChangeStream[Doc], tries: int = 2) -> None:
    for _ in range(tries):
        ev = stream.try_next()
        assert ev is None, f"unexpected extra event {ev}"


def fail_point(client: MongoClient[Doc], times: int, **data: Any) -> None:
    client.admin.command(
        "configureFailPoint", "failCommand", mode={"times": times}, data=dict(data)
    )


def test_watch_sees_every_change_in_order(db: Database[Doc]) -> None:
    coll = db["items"]
    with coll.watch(max_await_time_ms=AWAIT_MS) as stream:
        coll.insert_one({"_id": 1, "name": "a", "meta": {"n": 1, "keep": True}, "gone": 0})
        coll.update_one({"_id": 1}, {"$set": {"name": "b", "meta.n": 2}, "$unset": {"gone": ""}})
        coll.replace_one({"_id": 1}, {"name": "c"})
        coll.delete_one({"_id": 1})
        events = next_events(stream, 4)
        assert_no_more(stream, 1)

    assert [e["operationType"] for e in events] == ["insert", "update", "replace", "delete"]
    for ev in events:
        assert isinstance(ev["_id"]["_data"], str)
        assert isinstance(ev["clusterTime"], Timestamp)
        assert isinstance(ev["wallTime"], datetime.datetime)
        assert ev["ns"] == {"db": db.name, "coll": "items"}
        assert ev["documentKey"] == {"_id": 1}
    times = [e["clusterTime"] for e in events]
    assert times == sorted(times) and len(set(times)) == 4
    assert len({e["_id"]["_data"] for e in events}) == 4

    ins, upd, rep, dele = events
    assert ins["fullDocument"] == {"_id": 1, "name": "a", "meta": {"n": 1, "keep": True}, "gone": 0}
    desc = upd["updateDescription"]
    assert desc["updatedFields"] == {"name": "b", "meta.n": 2}
    assert desc["removedFields"] == ["gone"]
    assert desc.get("truncatedArrays", []) == []
    assert upd.get("fullDocument") is None
    assert rep["fullDocument"] == {"_id": 1, "name": "c"}
    assert "fullDocument" not in dele or dele["fullDocument"] is None


def _write_five(db: Database[Doc], stream: ChangeStream[Doc]) -> list[Doc]:
    db["r"].insert_many([{"_id": i} for i in range(5)])
    return next_events(stream, 5)


def test_resume_after_returns_exactly_the_later_events(db: Database[Doc]) -> None:
    coll = db["r"]
    with coll.watch(max_await_time_ms=AWAIT_MS) as stream:
        events = _write_five(db, stream)
    token = events[1]["_id"]
    coll.insert_one({"_id": 5})
    with coll.watch(resume_after=token, max_await_time_ms=AWAIT_MS) as resumed:
        got = next_events(resumed, 4)
        assert_no_more(resumed)
    assert [e["documentKey"]["_id"] for e in got] == [2, 3, 4, 5]


def test_start_after_returns_exactly_the_later_events(db: Database[Doc]) -> None:
    coll = db["r"]
    with coll.watch(max_await_time_ms=AWAIT_MS) as stream:
        events = _write_five(db, stream)
    with coll.watch(start_after=events[3]["_id"], max_await_time_ms=AWAIT_MS) as resumed:
        got = next_events(resumed, 1)
        assert_no_more(resumed)
    assert [e["documentKey"]["_id"] for e in got] == [4]


def test_start_at_operation_time_is_inclusive(db: Database[Doc]) -> None:
    coll = db["r"]
    with coll.watch(max_await_time_ms=AWAIT_MS) as stream:
        events = _write_five(db, stream)
    at = events[2]["clusterTime"]
    with coll.watch(start_at_operation_time=at, max_await_time_ms=AWAIT_MS) as resumed:
        got = next_events(resumed, 3)
        assert_no_more(resumed)
    assert [e["documentKey"]["_id"] for e in got] == [2, 3, 4]
    assert [e["_id"] for e in got] == [e["_id"] for e in events[2:]]


def test_start_after_works_after_invalidate_but_resume_after_does_not(
    db: Database[Doc],
) -> None:
    coll = db["inv"]
    coll.insert_one({"_id": "before"})
    with coll.watch(max_await_time_ms=AWAIT_MS) as stream:
        coll.insert_one({"_id": 1})
        coll.drop()
        events = next_events(stream, 3)
        assert [e["operationType"] for e in events] == ["insert", "drop", "invalidate"]
        assert stream.try_next() is None
        assert not stream.alive
    invalidate_token = events[2]["_id"]

    with pytest.raises(OperationFailure):
        with coll.watch(resume_after=invalidate_token, max_await_time_ms=AWAIT_MS) as bad:
            bad.try_next()

    with coll.watch(start_after=invalidate_token, max_await_time_ms=AWAIT_MS) as after:
        coll.insert_one({"_id": 2})
        got = next_events(after, 1)
    assert got[0]["operationType"] == "insert"
    assert got[0]["documentKey"] == {"_id": 2}


def _ids(events: list[Doc]) -> list[Any]:
    return [e["documentKey"]["_id"] for e in events]


def test_connection_closed_during_watch_is_resumed_without_gap(
    client: MongoClient[Doc], db: Database[Doc]
) -> None:
    coll = db["net"]
    with coll.watch(max_await_time_ms=AWAIT_MS) as stream:
        coll.insert_many([{"_id": i} for i in range(3)])
        first = next_events(stream, 2)
        fail_point(client, 1, failCommands=["getMore"], closeConnection=True)
        coll.insert_many([{"_id": i} for i in range(3, 6)])
        rest = next_events(stream, 4)
        assert_no_more(stream)
    assert _ids(first + rest) == list(range(6))


def test_resumable_getmore_error_is_resumed(client: MongoClient[Doc], db: Database[Doc]) -> None:
    coll = db["resumable"]
    with coll.watch(max_await_time_ms=AWAIT_MS) as stream:
        coll.insert_one({"_id": 0})
        first = next_events(stream, 1)
        fail_point(
            client,
            1,
            failCommands=["getMore"],
            errorCode=6,
            errorLabels=["ResumableChangeStreamError"],
        )
        coll.insert_many([{"_id": 1}, {"_id": 2}])
        rest = next_events(stream, 2)
        assert_no_more(stream)
    assert _ids(first + rest) == [0, 1, 2]


def test_non_resumable_getmore_error_surfaces(client: MongoClient[Doc], db: Database[Doc]) -> None:
    coll = db["fatal"]
    with coll.watch(max_await_time_ms=AWAIT_MS) as stream:
        fail_point(client, 1, failCommands=["getMore"], errorCode=280)
        with pytest.raises(OperationFailure) as info:
            for _ in range(3):
                stream.try_next()
    assert info.value.code == 280


def test_resume_point_older_than_oplog_is_history_lost(db: Database[Doc]) -> None:
    db["h"].insert_one({"_id": 1})
    with pytest.raises(OperationFailure) as info:
        with db["h"].watch(start_at_operation_time=Timestamp(1, 1)) as stream:
            stream.try_next()
    assert info.value.code == 286
    assert not info.value.has_error_label("ResumableChangeStreamError")


def test_update_lookup_returns_current_document_or_none(db: Database[Doc]) -> None:
    coll = db["lookup"]
    with coll.watch(full_document="updateLookup", max_await_time_ms=AWAIT_MS) as stream:
        coll.insert_one({"_id": 1, "v": 1})
        coll.update_one({"_id": 1}, {"$set": {"v": 2}})
        coll.update_one({"_id": 1}, {"$set": {"v": 3}})
        coll.insert_one({"_id": 2, "v": 1})
        coll.update_one({"_id": 2}, {"$set": {"v": 2}})
        coll.delete_one({"_id": 2})
        events = next_events(stream, 6)
    kinds = [(e["operationType"], e["documentKey"]["_id"]) for e in events]
    assert kinds == [
        ("insert", 1),
        ("update", 1),
        ("update", 1),
        ("insert", 2),
        ("update", 2),
        ("delete", 2),
    ]
    assert events[1]["fullDocument"] == {"_id": 1, "v": 3}
    assert events[2]["fullDocument"] == {"_id": 1, "v": 3}
    assert events[4]["fullDocument"] is None


@pytest.mark.parametrize("how", ["create", "collMod"])
def test_pre_images_when_enabled(db: Database[Doc], how: str) -> None:
    name = f"pre_{how}"
    if how == "create":
        db.create_collection(name, changeStreamPreAndPostImages={"enabled": True})
    else:
        db.create_collection(name)
        db.command("collMod", name, changeStreamPreAndPostImages={"enabled": True})
    coll = db[name]
    coll.insert_one({"_id": 1, "v": 1})
    with coll.watch(
        full_document="whenAvailable",
        full_document_before_change="whenAvailable",
        max_await_time_ms=AWAIT_MS,
    ) as stream:
        coll.update_one({"_id": 1}, {"$set": {"v": 2}})
        coll.replace_one({"_id": 1}, {"v": 3})
        coll.delete_one({"_id": 1})
        upd, rep, dele = next_events(stream, 3)
    assert upd["fullDocumentBeforeChange"] == {"_id": 1, "v": 1}
    assert upd["fullDocument"] == {"_id": 1, "v": 2}
    assert rep["fullDocumentBeforeChange"] == {"_id": 1, "v": 2}
    assert dele["fullDocumentBeforeChange"] == {"_id": 1, "v": 3}


def test_pre_images_absent_when_not_enabled(db: Database[Doc]) -> None:
    coll = db["nopre"]
    coll.insert_one({"_id": 1, "v": 1})
    with coll.watch(
        full_document_before_change="whenAvailable", max_await_time_ms=AWAIT_MS
    ) as stream:
        coll.delete_one({"_id": 1})
        (dele,) = next_events(stream, 1)
    assert dele["operationType"] == "delete"
    assert dele.get("fullDocumentBeforeChange") is None


def test_post_batch_resume_token_advances_while_idle(db: Database[Doc]) -> None:
    quiet, busy = db["quiet"], db["busy"]
    quiet.insert_one({"_id": 0})
    with quiet.watch(max_await_time_ms=AWAIT_MS) as stream:
        assert stream.try_next() is None
        before = stream.resume_token
        assert before is not None
        busy.insert_many([{"i": i} for i in range(3)])
        after = before
        deadline = time.monotonic() + 10
        while after == before and time.monotonic() < deadline:
            assert stream.try_next() is None
            after = stream.resume_token
        assert after != before
    # The advanced token is a valid resume point: later events on the quiet
    # collection arrive, none from before.
    quiet.insert_one({"_id": 1})
    with quiet.watch(resume_after=after, max_await_time_ms=AWAIT_MS) as resumed:
        got = next_events(resumed, 1)
        assert_no_more(resumed, 1)
    assert _ids(got) == [1]


def test_database_watch_with_ns_match_sees_one_total_order(db: Database[Doc]) -> None:
    pipeline = [{"$match": {"ns.coll": {"$in": ["a", "b"]}}}]
    with db.watch(pipeline, max_await_time_ms=AWAIT_MS) as stream:
        db["a"].insert_one({"_id": "a1"})
        db["c"].insert_one({"_id": "c1"})
        db["b"].insert_one({"_id": "b1"})
        db["a"].insert_one({"_id": "a2"})
        db["c"].delete_one({"_id": "c1"})
        db["b"].update_one({"_id": "b1"}, {"$set": {"x": 1}})
        events = next_events(stream, 4)
        assert_no_more(stream)
    assert [(e["ns"]["coll"], e["documentKey"]["_id"]) for e in events] == [
        ("a", "a1"),
        ("b", "b1"),
        ("a", "a2"),
        ("b", "b1"),
    ]
    times = [e["clusterTime"] for e in events]
    assert times == sorted(times)


async def test_async_client_watch_and_max_await_time(backend: Backend) -> None:
    client: AsyncMongoClient[Doc] = AsyncMongoClient(backend.uri, serverSelectionTimeoutMS=10_000)
    name = f"conf_{uuid.uuid4().hex[:12]}"
    try:
        coll = client[name]["async"]
        await coll.insert_one({"_id": 0})
        stream = await coll.watch(max_await_time_ms=400)
        try:
            t0 = time.monotonic()
            assert await stream.try_next() is None
            waited = time.monotonic() - t0
            assert 0.3 <= waited <= 2.0, waited
            await coll.insert_one({"_id": 1})
            ev = None
            deadline = time.monotonic() + 10
            while ev is None and time.monotonic() < deadline:
                ev = await stream.try_next()
            assert ev is not None
            assert ev["operationType"] == "insert"
            assert ev["fullDocument"] == {"_id": 1}
        finally:
            await stream.close()
    finally:
        await client.drop_database(name)
        await client.close()


# -- sandbox-only fault kinds (the same behaviour, triggered the sandbox's way) ------------


def test_sandbox_drop_connections_resumes_without_gap(sandbox: Backend) -> None:
    client = sandbox.client()
    name = f"conf_{uuid.uuid4().hex[:12]}"
    try:
        coll = client[name]["drop"]
        with coll.watch(max_await_time_ms=AWAIT_MS) as stream:
            coll.insert_many([{"_id": i} for i in range(3)])
            first = next_events(stream, 3)
            reply = send_fault(sandbox.uri, "dropConnections")
            assert reply["dropped"] >= 1
            coll.insert_many([{"_id": i} for i in range(3, 6)])
            rest = next_events(stream, 3)
            assert_no_more(stream)
        assert _ids(first + rest) == list(range(6))
    finally:
        client.drop_database(name)
        client.close()


def test_sandbox_fail_getmore_is_resumed(sandbox: Backend) -> None:
    client = sandbox.client()
    name = f"conf_{uuid.uuid4().hex[:12]}"
    try:
        coll = client[name]["fg"]
        with coll.watch(max_await_time_ms=AWAIT_MS) as stream:
            coll.insert_one({"_id": 0})
            first = next_events(stream, 1)
            send_fault(sandbox.uri, "failGetMore", n=1, code=91)
            coll.insert_many([{"_id": 1}, {"_id": 2}])
            rest = next_events(stream, 2)
            assert_no_more(stream)
        assert _ids(first + rest) == [0, 1, 2]
    finally:
        client.drop_database(name)
        client.close()


def test_sandbox_truncated_oplog_rejects_old_token() -> None:
    from syncd_sandbox.mongo.process import start_sandbox_process

    handle = start_sandbox_process(oplog_size=1000)
    try:
        client: MongoClient[Doc] = MongoClient(handle.uri)
        coll = client["t"]["c"]
        with coll.watch(max_await_time_ms=AWAIT_MS) as stream:
            coll.insert_many([{"_id": i} for i in range(5)])
            events = next_events(stream, 5)
        old_token = events[1]["_id"]
        status = send_fault(handle.uri, "truncateOplog", keep=2)
        assert status["oplogEntries"] == 2
        # Still inside the retained window: fine.
        with coll.watch(resume_after=events[2]["_id"], max_await_time_ms=AWAIT_MS) as ok:
            assert _ids(next_events(ok, 2)) == [3, 4]
        for kwargs in (
            {"resume_after": old_token},
            {"start_after": old_token},
            {"start_at_operation_time": events[0]["clusterTime"]},
            {"start_at_operation_time": Timestamp(1, 1)},
        ):
            with pytest.raises(OperationFailure) as info:
                with coll.watch(max_await_time_ms=AWAIT_MS, **kwargs) as s:
                    s.try_next()
            assert info.value.code == 286, kwargs
            assert info.value.details.get("codeName") == "ChangeStreamHistoryLost"
        # An empty oplog still rejects tokens from before the truncation.
        send_fault(handle.uri, "truncateOplog")
        assert send_fault(handle.uri, "status")["oplogEntries"] == 0
        with pytest.raises(OperationFailure) as info:
            with coll.watch(resume_after=events[3]["_id"]) as s:
                s.try_next()
        assert info.value.code == 286
        client.close()
    finally:
        handle.stop()


def test_only_account_changes_of_users_pass_syncds_match(db: Database[Doc]) -> None:
    """syncd's ``$match`` (syncd.source.users): every event of a mirrored collection, and a
    ``users`` event only when it can change an account -- an insert, a replacement, a
    delete, or an update setting or removing ``atproto`` or a field inside it. An email or
    a profile field never leaves the server."""
    from syncd.source.users import users_match

    users, moods = db["users"], db["moods"]
    pipeline = [
        {"$match": {"$or": [{"ns.coll": {"$in": ["moods"]}}, users_match("users")]}},
        {"$project": dict.fromkeys(["operationType", "ns", "documentKey", "fullDocument"], 1)},
    ]
    account = {"did": "did:plc:1", "handle": "u.test", "password": "p"}
    with db.watch(pipeline, full_document="updateLookup", max_await_time_ms=AWAIT_MS) as stream:
        users.insert_one({"_id": "u1", "email": "a@x"})  # passes (insert)
        users.update_one({"_id": "u1"}, {"$set": {"email": "b@x", "profile.bio": "hi"}})
        users.update_one({"_id": "u1"}, {"$set": {"atproto": account}})
        users.update_one({"_id": "u1"}, {"$set": {"atprotoX": 1, "name": "n"}})  # not atproto
        users.update_one({"_id": "u1"}, {"$set": {"atproto.password": "q"}})
        events = next_events(stream, 3)
        assert events[2]["fullDocument"]["atproto"]["password"] == "q"
        users.update_one(
            {"_id": "u1"}, {"$set": {"email": "c@x"}, "$unset": {"atproto.handle": ""}}
        )
        users.update_one({"_id": "u1"}, {"$unset": {"atproto": ""}})
        moods.insert_one({"_id": 7, "mood": "m"})
        users.replace_one({"_id": "u1"}, {"email": "d@x"})
        users.delete_one({"_id": "u1"})
        events += next_events(stream, 5)
        assert_no_more(stream)
    seen = [(e["ns"]["coll"], e["operationType"]) for e in events]
    assert seen == [
        ("users", "insert"),
        ("users", "update"),  # atproto set
        ("users", "update"),  # atproto.password
        ("users", "update"),  # $unset of atproto.handle (with an email change)
        ("users", "update"),  # atproto removed
        ("moods", "insert"),
        ("users", "replace"),
        ("users", "delete"),
    ]
    assert all("updateDescription" not in e for e in events)  # read by $match, not sent
