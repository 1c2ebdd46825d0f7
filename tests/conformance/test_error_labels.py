"""Error labels exactly as a 4.4+ server attaches them (issue 16, point 1 and 2).

The same fail points on the sandbox and (with ``SYNCD_TEST_MONGODB_URI``) a real replica
set. What a server does (``src/mongo/db/error_labels.cpp``, categories from
``src/mongo/base/error_codes.yml``; the table is in docs/mongo-sandbox.md):

* a ``failCommand`` with ``errorLabels`` returns exactly those labels, also at the top
  level of a reply carrying a ``writeConcernError``;
* without them, the server computes labels. ``ResumableChangeStreamError`` needs the
  server to *know* the command is a change stream's: an ``aggregate`` with
  ``$changeStream`` does, a ``getMore`` failed by ``failCommand`` does not (the fail point
  fires before the cursor is checked out), one failed by
  ``failGetMoreAfterCursorCheckout`` does;
* 280 and 286 are ``NonResumableChangeStreamError`` on any command.
"""

from __future__ import annotations

from typing import Any

import pytest
from pymongo import MongoClient, monitoring
from pymongo.database import Database
from pymongo.errors import OperationFailure, WriteConcernError

from .test_change_streams import AWAIT_MS, _ids, assert_no_more, next_events

Doc = dict[str, Any]


def fail(client: MongoClient[Doc], point: str, times: int = 1, **data: Any) -> None:
    client.admin.command("configureFailPoint", point, mode={"times": times}, data=data)


def open_raw_stream(db: Database[Doc], coll: str) -> int:
    """A change stream opened with a plain ``aggregate``; returns its cursor id."""
    reply = db.command("aggregate", coll, pipeline=[{"$changeStream": {}}], cursor={})
    cursor_id = int(reply["cursor"]["id"])
    assert cursor_id != 0
    return cursor_id


def raw_get_more(db: Database[Doc], coll: str, cursor_id: int) -> OperationFailure:
    with pytest.raises(OperationFailure) as info:
        db.command("getMore", cursor_id, collection=coll, maxTimeMS=AWAIT_MS)
    return info.value


def labels(exc: OperationFailure) -> list[str]:
    return list((exc.details or {}).get("errorLabels", []))


def test_fail_command_on_getmore_without_labels_gets_none(
    client: MongoClient[Doc], db: Database[Doc]
) -> None:
    db["c"].insert_one({"_id": 0})
    cursor_id = open_raw_stream(db, "c")
    fail(client, "failCommand", failCommands=["getMore"], errorCode=6)
    exc = raw_get_more(db, "c", cursor_id)
    assert exc.code == 6
    assert labels(exc) == []


def test_fail_command_labels_are_exactly_the_named_ones(
    client: MongoClient[Doc], db: Database[Doc]
) -> None:
    db["c"].insert_one({"_id": 0})
    cursor_id = open_raw_stream(db, "c")
    fail(client, "failCommand", failCommands=["getMore"], errorCode=280, errorLabels=["Custom"])
    assert labels(raw_get_more(db, "c", cursor_id)) == ["Custom"]
    cursor_id = open_raw_stream(db, "c")
    fail(client, "failCommand", failCommands=["getMore"], errorCode=6, errorLabels=[])
    assert labels(raw_get_more(db, "c", cursor_id)) == []


def test_getmore_failed_after_cursor_checkout_is_labelled_resumable(
    client: MongoClient[Doc], db: Database[Doc]
) -> None:
    db["c"].insert_one({"_id": 0})
    cursor_id = open_raw_stream(db, "c")
    fail(client, "failGetMoreAfterCursorCheckout", errorCode=6)
    exc = raw_get_more(db, "c", cursor_id)
    assert exc.code == 6
    assert labels(exc) == ["ResumableChangeStreamError"]


def test_aggregate_of_a_change_stream_is_labelled_resumable(
    client: MongoClient[Doc], db: Database[Doc]
) -> None:
    db["c"].insert_one({"_id": 0})
    fail(client, "failCommand", failCommands=["aggregate"], errorCode=6)
    with pytest.raises(OperationFailure) as info:
        db.command("aggregate", "c", pipeline=[{"$changeStream": {}}], cursor={})
    assert labels(info.value) == ["ResumableChangeStreamError"]
    # An ordinary aggregate is no change stream: no label.
    fail(client, "failCommand", failCommands=["aggregate"], errorCode=6)
    with pytest.raises(OperationFailure) as info:
        db.command("aggregate", "c", pipeline=[], cursor={})
    assert labels(info.value) == []


@pytest.mark.parametrize("code", [280, 286])
def test_fatal_change_stream_codes_are_labelled_non_resumable(
    client: MongoClient[Doc], db: Database[Doc], code: int
) -> None:
    db["c"].insert_one({"_id": 0})
    cursor_id = open_raw_stream(db, "c")
    fail(client, "failCommand", failCommands=["getMore"], errorCode=code)
    assert labels(raw_get_more(db, "c", cursor_id)) == ["NonResumableChangeStreamError"]
    cursor_id = open_raw_stream(db, "c")
    fail(client, "failGetMoreAfterCursorCheckout", errorCode=code)
    assert labels(raw_get_more(db, "c", cursor_id)) == ["NonResumableChangeStreamError"]
    fail(client, "failCommand", failCommands=["find"], errorCode=code)
    with pytest.raises(OperationFailure) as info:
        db["c"].find_one({})
    assert labels(info.value) == ["NonResumableChangeStreamError"]


def test_non_resumable_getmore_error_reaches_the_consumer(
    client: MongoClient[Doc], db: Database[Doc]
) -> None:
    """Without a label pymongo must not resume: the consumer's own error path runs."""
    coll = db["fatal"]
    with coll.watch(max_await_time_ms=AWAIT_MS) as stream:
        coll.insert_one({"_id": 0})
        assert _ids(next_events(stream, 1)) == [0]
        fail(client, "failCommand", failCommands=["getMore"], errorCode=6)
        coll.insert_one({"_id": 1})
        with pytest.raises(OperationFailure) as info:
            for _ in range(3):
                stream.try_next()
    assert info.value.code == 6
    assert not info.value.has_error_label("ResumableChangeStreamError")


def test_fail_get_more_after_cursor_checkout_is_resumed_without_gap(
    client: MongoClient[Doc], db: Database[Doc]
) -> None:
    coll = db["checkout"]
    with coll.watch(max_await_time_ms=AWAIT_MS) as stream:
        coll.insert_one({"_id": 0})
        first = next_events(stream, 1)
        fail(client, "failGetMoreAfterCursorCheckout", errorCode=6)
        coll.insert_many([{"_id": 1}, {"_id": 2}])
        rest = next_events(stream, 2)
        assert_no_more(stream)
    assert _ids(first + rest) == [0, 1, 2]


class InsertCounter(monitoring.CommandListener):
    def __init__(self) -> None:
        self.inserts = 0

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command_name == "insert":
            self.inserts += 1

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


def wce(code: int) -> dict[str, Any]:
    return {"code": code, "errmsg": "injected write concern error"}


@pytest.mark.parametrize(
    ("code", "named", "retried"),
    [
        (64, ["RetryableWriteError"], True),  # WriteConcernTimeout: retried for the label
        (262, None, True),  # ExceededTimeLimit is retriable: the server labels it
        (64, None, False),  # not retriable: no label
        (262, [], False),  # the fail point's (empty) labels win
    ],
)
def test_write_concern_error_labels_decide_the_driver_retry(
    backend: Any, code: int, named: list[str] | None, retried: bool
) -> None:
    listener = InsertCounter()
    client: MongoClient[Doc] = backend.client(event_listeners=[listener], retryWrites=True)
    name = f"conf_wce_{code}_{named is None}"
    try:
        data: dict[str, Any] = {"failCommands": ["insert"], "writeConcernError": wce(code)}
        if named is not None:
            data["errorLabels"] = named
        fail(client, "failCommand", **data)
        if retried:
            client[name]["c"].insert_one({"_id": 1})
            assert listener.inserts == 2  # the first reply's label made pymongo retry once
        else:
            with pytest.raises(WriteConcernError) as info:
                client[name]["c"].insert_one({"_id": 1})
            assert info.value.code == code
            assert listener.inserts == 1
        assert list(client[name]["c"].find()) == [{"_id": 1}]  # written exactly once
    finally:
        client.admin.command("configureFailPoint", "failCommand", mode="off")
        client.drop_database(name)
        client.close()
