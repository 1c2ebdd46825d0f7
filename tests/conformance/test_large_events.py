"""Change events over 16 MiB (issue 16, point 3), on the sandbox and a real server.

An event is built by the server, so its limit is ``BSONObjMaxInternalSize`` (16 MiB +
16 KiB). An update of a large document watched with ``updateLookup`` carries the whole
document *and* its ``updateDescription``: over the limit, the ``getMore`` fails with
10334 ``BSONObjectTooLarge`` and no label (so pymongo does not resume). Projecting
``updateDescription`` away avoids it; from 7.0 (and 6.0.9) a final
``$changeStreamSplitLargeEvent`` splits such an event into fragments, each with its own
resume token and ``splitEvent: {fragment, of}``.
"""

from __future__ import annotations

from typing import Any

import pytest
from pymongo import MongoClient
from pymongo.change_stream import ChangeStream
from pymongo.database import Database
from pymongo.errors import OperationFailure
from pymongo.read_concern import ReadConcern

from .test_change_streams import AWAIT_MS, assert_no_more, next_events

Doc = dict[str, Any]
MiB = 1024 * 1024
SPLIT = [{"$changeStreamSplitLargeEvent": {}}]


def big_update(db: Database[Doc], name: str = "big") -> None:
    """A document near 16 MiB and an update whose event is ~24 MiB with updateLookup."""
    coll = db[name]
    coll.update_one({"_id": 1}, {"$set": {"b": "y" * (8 * MiB - 1000)}})


def setup_big(db: Database[Doc], name: str = "big") -> None:
    db[name].insert_one({"_id": 1, "a": "x" * (8 * MiB)})


def watch(db: Database[Doc], pipeline: list[Doc] | None = None, **kw: Any) -> ChangeStream[Doc]:
    return db["big"].watch(
        pipeline or [], full_document="updateLookup", max_await_time_ms=AWAIT_MS, **kw
    )


def test_oversized_event_fails_the_getmore_without_label(db: Database[Doc]) -> None:
    setup_big(db)
    with watch(db) as stream:
        big_update(db)
        db["big"].insert_one({"_id": 2})
        with pytest.raises(OperationFailure) as info:
            for _ in range(20):
                stream.try_next()
    assert info.value.code == 10334
    assert "BSONObj size" in str(info.value)
    assert not info.value.has_error_label("ResumableChangeStreamError")


def test_projecting_update_description_away_delivers_the_event(db: Database[Doc]) -> None:
    setup_big(db)
    with watch(db, [{"$project": {"updateDescription": 0}}]) as stream:
        big_update(db)
        db["big"].insert_one({"_id": 2})
        upd, ins = next_events(stream, 2)
    assert upd["operationType"] == "update"
    assert "updateDescription" not in upd
    assert len(upd["fullDocument"]["a"]) == 8 * MiB
    assert len(upd["fullDocument"]["b"]) == 8 * MiB - 1000
    assert ins["documentKey"] == {"_id": 2}


def test_split_large_event_fragments_and_their_tokens(db: Database[Doc]) -> None:
    setup_big(db)
    with watch(db, SPLIT) as stream:
        big_update(db)
        db["big"].insert_one({"_id": 2})
        first, second, after = next_events(stream, 3)
    assert first["splitEvent"] == {"fragment": 1, "of": 2}
    assert second["splitEvent"] == {"fragment": 2, "of": 2}
    assert len({first["_id"]["_data"], second["_id"]["_data"], after["_id"]["_data"]}) == 3
    # The smallest fields come first; the document itself needs a fragment of its own.
    assert first["operationType"] == "update" and first["documentKey"] == {"_id": 1}
    assert first["updateDescription"]["updatedFields"]["b"] == "y" * (8 * MiB - 1000)
    assert set(second) == {"_id", "splitEvent", "fullDocument"}
    merged = {k: v for f in (first, second) for k, v in f.items() if k not in ("_id", "splitEvent")}
    assert set(merged) >= {"operationType", "ns", "documentKey", "clusterTime", "fullDocument"}
    assert len(merged["fullDocument"]["a"]) == 8 * MiB
    assert after["operationType"] == "insert" and after["documentKey"] == {"_id": 2}

    # Resuming from a fragment's token returns the rest of that event, then what follows.
    with watch(db, SPLIT, resume_after=first["_id"]) as resumed:
        rest = next_events(resumed, 2)
        assert_no_more(resumed, 1)
    assert [e.get("splitEvent") for e in rest] == [{"fragment": 2, "of": 2}, None]
    assert rest[0]["_id"] == second["_id"] and rest[1]["_id"] == after["_id"]
    with watch(db, SPLIT, start_after=second["_id"]) as resumed:
        (only,) = next_events(resumed, 1)
    assert only["_id"] == after["_id"]

    # Without the split stage a fragment's token cannot be resumed from.
    with pytest.raises(OperationFailure) as info:
        with watch(db, resume_after=first["_id"]) as bad:
            bad.try_next()
    assert info.value.code == 280


def test_split_stage_must_be_last(db: Database[Doc]) -> None:
    db["big"].insert_one({"_id": 0})
    with pytest.raises(OperationFailure) as info:
        with watch(db, [*SPLIT, {"$match": {"operationType": "insert"}}]) as s:
            s.try_next()
    assert info.value.code == 7182802


def test_small_events_are_not_split(db: Database[Doc]) -> None:
    with watch(db, SPLIT) as stream:
        db["big"].insert_one({"_id": 1, "a": "x" * (15 * MiB)})
        (ev,) = next_events(stream, 1)
    assert "splitEvent" not in ev and len(ev["fullDocument"]["a"]) == 15 * MiB


def test_a_batch_holds_at_most_16_mib(client: MongoClient[Doc], db: Database[Doc]) -> None:
    reply = db.command("aggregate", "batch", pipeline=[{"$changeStream": {}}], cursor={})
    cursor_id = reply["cursor"]["id"]
    db["batch"].insert_many([{"_id": i, "s": "z" * (6 * MiB)} for i in range(3)])
    got: list[list[Any]] = []
    while sum(len(b) for b in got) < 3:
        more = db.command("getMore", cursor_id, collection="batch", maxTimeMS=AWAIT_MS)
        batch = more["cursor"]["nextBatch"]
        if batch:
            got.append([e["documentKey"]["_id"] for e in batch])
    assert got == [[0, 1], [2]]
    db.command("killCursors", "batch", cursors=[cursor_id])


def test_read_concern_other_than_majority_is_refused(db: Database[Doc]) -> None:
    coll = db.get_collection("rc", read_concern=ReadConcern("local"))
    with pytest.raises(OperationFailure) as info:
        with coll.watch(max_await_time_ms=AWAIT_MS) as s:
            s.try_next()
    assert info.value.code == 72
    with db.get_collection("rc", read_concern=ReadConcern("majority")).watch(
        max_await_time_ms=AWAIT_MS
    ) as ok:
        db["rc"].insert_one({"_id": 1})
        assert next_events(ok, 1)[0]["documentKey"] == {"_id": 1}
