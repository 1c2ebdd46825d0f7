"""The stream source's handling of large events, without a server: the pipeline it sends,
which servers split events, and the reassembly of fragments (``syncd/source/stream.py``)."""

from __future__ import annotations

from typing import Any

import pytest

from syncd.source.stream import (
    EVENT_FIELDS,
    SPLIT_STAGE,
    FragmentGap,
    Reassembly,
    event_size,
    split_supported,
)


def fragment(n: int, of: int, **fields: Any) -> dict[str, Any]:
    return {"_id": {"_data": f"tok{n}"}, "splitEvent": {"fragment": n, "of": of}, **fields}


def test_fragments_reassemble_into_one_event_under_the_last_token() -> None:
    r = Reassembly()
    assert r.add(fragment(1, 3, operationType="update", ns={"coll": "kidlisp"})) is None
    assert r.pending
    assert r.add(fragment(2, 3, documentKey={"_id": 1})) is None
    whole = r.add(fragment(3, 3, fullDocument={"_id": 1, "big": "x"}))
    assert whole == {
        "_id": {"_data": "tok3"},
        "operationType": "update",
        "ns": {"coll": "kidlisp"},
        "documentKey": {"_id": 1},
        "fullDocument": {"_id": 1, "big": "x"},
    }
    assert not r.pending
    # a single-fragment event is whole at once
    assert r.add(fragment(1, 1, operationType="insert")) == {
        "_id": {"_data": "tok1"},
        "operationType": "insert",
    }


@pytest.mark.parametrize(
    "sequence",
    [
        [fragment(2, 2)],  # no head
        [fragment(1, 3), fragment(3, 3)],  # a fragment missing
        [fragment(1, 3), fragment(2, 2)],  # the count changed
        [fragment(1, 2), fragment(1, 2)],  # the head again
    ],
)
def test_a_gap_is_refused_and_forgets_the_partial_event(sequence: list[dict[str, Any]]) -> None:
    r = Reassembly()
    with pytest.raises(FragmentGap):
        for f in sequence:
            r.add(f)
    assert not r.pending
    assert r.add(fragment(1, 1, operationType="delete")) is not None


@pytest.mark.parametrize(
    ("info", "splits"),
    [
        ({"versionArray": [8, 0, 4, 0]}, True),
        ({"versionArray": [7, 0, 0, 0]}, True),
        ({"versionArray": [6, 0, 9, 0]}, True),
        ({"versionArray": [6, 0, 8, 0]}, False),
        ({"versionArray": [6, 3, 1, 0]}, False),
        ({"versionArray": [5, 0, 26, 0]}, False),
        ({"version": "7.0.14"}, True),
        ({"version": "6.0.2-rc1"}, False),
    ],
)
def test_which_servers_split_large_events(info: dict[str, Any], splits: bool) -> None:
    assert split_supported(info) is splits


def test_the_pipeline_keeps_only_what_syncd_reads() -> None:
    from syncd.source.stream import StreamSource

    class Deps:
        class mongo:
            collections = ("paintings", "kidlisp")

    source = StreamSource(Deps())  # type: ignore[arg-type]
    match, project = source.pipeline()
    assert match == {"$match": {"ns.coll": {"$in": ["paintings", "kidlisp"]}}}
    assert project == {"$project": dict.fromkeys(EVENT_FIELDS, 1)}
    assert "updateDescription" not in project["$project"]
    assert source.pipeline(split=True)[-1] == SPLIT_STAGE
    slim = source.pipeline(slim=True)
    assert "fullDocument" not in slim[1]["$project"] and len(slim) == 2


def test_event_size_counts_the_document() -> None:
    event = {"_id": {"_data": "t"}, "operationType": "insert", "documentKey": {"_id": 1}}
    assert event_size(event, {"_id": 1, "s": "x" * 1000}) - event_size(event, None) > 1000
