"""Change events near and over MongoDB's 16 MiB limit, through the real ``syncd run``.

Each test runs syncd against its own MongoDB sandbox (one that reports 7.0, with
``$changeStreamSplitLargeEvent``, or 6.0.8, without it) and the session PDS:

* a kidlisp document near 16 MiB and a large update: with ``updateLookup`` the update's
  event would carry the document *and* its ``updateDescription`` (~24 MiB, a getMore
  failing with 10334 on every retry); syncd projects ``updateDescription`` away, so the
  event arrives and the record follows the document;
* an event over the limit even so (a 20 KiB ``_id`` in ``documentKey`` next to a
  ~16 MiB document): on 7.0 it arrives split and syncd reassembles it; on 6.0.8 the
  server cannot send it and syncd reads past it with the document fetched by ``_id``.
  Either way the document gets its outcome (here a dead letter: such an ``_id`` cannot
  form a record) and the changes after it are mirrored: no stall, no silent skip.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import bson
import pytest
from pymongo import MongoClient

from syncd_sandbox.mongo_server import ChildMongo
from syncd_sandbox.pds import PdsProcess
from syncd_sandbox.seed import make_kidlisp, make_mood
from syncd_sandbox.syncd_process import SyncdProcess, metric_sum, run_cli
from syncd_sandbox.testing import SandboxWorld

from .mirror import NSIDS, assert_mirrored

pytestmark = pytest.mark.slow

MiB = 1024 * 1024
KIDLISP, MOOD = NSIDS["kidlisp"], NSIDS["moods"]


@contextmanager
def world_on_own_mongo(
    tmp_path: Path, pds_process: PdsProcess, max_wire_version: int
) -> Iterator[SandboxWorld]:
    """A world on a MongoDB sandbox of its own (these documents are large)."""
    mongo = ChildMongo(tmp_path / "mongo", max_wire_version=max_wire_version)
    mongo.start()
    client: MongoClient[Any] = MongoClient(mongo.uri, tz_aware=True)
    (tmp_path / "world").mkdir()
    world = SandboxWorld(
        tmp=tmp_path / "world",
        pds_process=pds_process,
        mongo=mongo,
        client=client,
        database="oversized",
    )
    try:
        world.add_guest()
        world.add_user("alice")
        world.write_config({"mongo": {"max_await_ms": 100}})
        yield world
    finally:
        world.close()
        client.close()
        mongo.stop()


@pytest.fixture(params=[21, 17], ids=["mongo-7.0", "mongo-6.0.8"])
def big_world(
    request: pytest.FixtureRequest, tmp_path: Path, sandbox_pds_process: PdsProcess
) -> Iterator[SandboxWorld]:
    with world_on_own_mongo(tmp_path, sandbox_pds_process, request.param) as world:
        yield world


@pytest.fixture
def world_60(tmp_path: Path, sandbox_pds_process: PdsProcess) -> Iterator[SandboxWorld]:
    """MongoDB 6.0.8: no ``$changeStreamSplitLargeEvent``."""
    with world_on_own_mongo(tmp_path, sandbox_pds_process, 17) as world:
        yield world


@pytest.fixture
def daemon(big_world: SandboxWorld) -> Iterator[SyncdProcess]:
    proc = SyncdProcess(big_world.config_path, log_path=big_world.tmp / "syncd.log")
    try:
        yield proc
    finally:
        if proc.alive:
            proc.kill()


def huge_with_odd_id(alice: str) -> dict[str, Any]:
    """documentKey (20 KiB) + fullDocument (~16 MiB) > 16 MiB + 16 KiB: over the limit."""
    huge = make_kidlisp(alice, source="(wipe green)")
    huge["_id"] = "k" * (20 * 1024)
    huge["blob"] = ""
    huge["blob"] = "z" * (16 * MiB - len(bson.encode(huge)) - 512)
    return huge


def record(world: SandboxWorld, nsid: str, doc: dict[str, Any]) -> dict[str, Any] | None:
    return world.records_by_ref("alice", nsid).get(str(doc["_id"]))


def status(world: SandboxWorld) -> dict[str, Any]:
    out = run_cli(world.config_path, "status", "--json")
    assert out.returncode == 0, out.stderr
    parsed: dict[str, Any] = json.loads(out.stdout)
    return parsed


def test_large_update_of_a_near_16_mib_document_is_mirrored(
    big_world: SandboxWorld, daemon: SyncdProcess
) -> None:
    world = big_world
    alice = world.sub("alice")
    assert alice
    daemon.start()
    daemon.wait_ready()
    big = make_kidlisp(alice, source="(wipe blue)", blob="x" * (8 * MiB))
    world.insert("kidlisp", big)
    daemon.wait_until(lambda: record(world, KIDLISP, big), 60)
    # The document grows to just under 16 MiB; the update event with updateLookup and its
    # updateDescription would be ~24 MiB.
    world.db.kidlisp.update_one(
        {"_id": big["_id"]},
        {"$set": {"source": "(ink red)", "more": "y" * (8 * MiB - 4096)}},
    )
    daemon.wait_until(
        lambda: (r := record(world, KIDLISP, big)) and r["value"]["source"] == "(ink red)", 60
    )
    after = make_mood(alice, "after the big one")
    world.insert("moods", after)
    daemon.wait_until(lambda: record(world, MOOD, after), 30)
    daemon.wait_idle()
    assert not [e for e in daemon.events("stream_failed") if e.get("code") == 10334]
    assert metric_sum(daemon.metrics(), "syncd_oversized_events_total") == 0
    assert_mirrored(world, ("kidlisp", "moods"))


def test_event_over_the_limit_gets_its_outcome_and_the_stream_goes_on(
    big_world: SandboxWorld, daemon: SyncdProcess
) -> None:
    world = big_world
    alice = world.sub("alice")
    assert alice
    splits = world.client.admin.command("buildInfo")["version"] >= "7"
    daemon.start()
    daemon.wait_ready()
    before = make_mood(alice, "before")
    world.insert("moods", before)
    daemon.wait_until(lambda: record(world, MOOD, before), 30)

    huge = huge_with_odd_id(alice)
    world.insert("kidlisp", huge)
    after = make_mood(alice, "after")
    world.insert("moods", after)
    world.db.moods.update_one({"_id": before["_id"]}, {"$set": {"mood": "before, edited"}})

    daemon.wait_until(lambda: record(world, MOOD, after), 60)
    daemon.wait_until(
        lambda: (r := record(world, MOOD, before)) and r["value"]["mood"] == "before, edited", 30
    )
    daemon.wait_idle()
    handling = "split" if splits else "read_directly"
    metrics = daemon.metrics()
    assert metric_sum(metrics, "syncd_oversized_events_total", handling=handling) == 1
    assert metric_sum(metrics, "syncd_oversized_events_total") == 1
    assert metric_sum(metrics, "syncd_events_total", collection="kidlisp", operation="insert") == 1
    # Its outcome is recorded with a reason (an _id that is no ObjectId cannot form a record).
    report = status(world)
    assert report["dead_letters"]["counts"].get("kidlisp") == 1
    assert [d["reason"] for d in report["dead_letters"]["recent"]] == ["unsupported_id"]
    assert daemon.alive
    assert_mirrored(world, ("kidlisp", "moods"))

    # The saved position is past the big event: a restart does not meet it again.
    code, _seconds = daemon.terminate()
    assert code == 0
    daemon.start()
    daemon.wait_ready()
    last = make_mood(alice, "after the restart")
    world.insert("moods", last)
    daemon.wait_until(lambda: record(world, MOOD, last), 30)
    daemon.wait_idle()
    assert metric_sum(daemon.metrics(), "syncd_oversized_events_total") == 0
    assert status(world)["dead_letters"]["counts"].get("kidlisp") == 1


def test_a_document_that_cannot_be_read_either_is_dead_lettered(
    world_60: SandboxWorld,
) -> None:
    """6.0.8 cannot send the event; the read by _id fails too (a fail point): the
    document is dead-lettered as oversized_event, and the stream moves past it."""
    world = world_60
    alice = world.sub("alice")
    assert alice
    daemon = SyncdProcess(world.config_path, log_path=world.tmp / "syncd.log")
    try:
        daemon.start()
        daemon.wait_ready()
        before = make_mood(alice, "before")
        world.insert("moods", before)
        daemon.wait_until(lambda: record(world, MOOD, before), 30)
        daemon.wait_idle()
        world.client.admin.command(
            "configureFailPoint",
            "failCommand",
            mode={"times": 1},
            data={"failCommands": ["find"], "errorCode": 10334, "appName": "syncd"},
        )
        huge = huge_with_odd_id(alice)
        world.insert("kidlisp", huge)
        after = make_mood(alice, "after")
        world.insert("moods", after)
        daemon.wait_until(lambda: record(world, MOOD, after), 60)
        daemon.wait_idle()
        metrics = daemon.metrics()
        assert metric_sum(metrics, "syncd_oversized_events_total", handling="dead_letter") == 1
        letters = status(world)["dead_letters"]["recent"]
        assert [(d["collection"], d["reason"]) for d in letters] == [("kidlisp", "oversized_event")]
        assert "16793600" in letters[0]["detail"] and "10334" in letters[0]["detail"]
        assert_mirrored(world, ("moods",))
    finally:
        world.client.admin.command("configureFailPoint", "failCommand", mode="off")
        if daemon.alive:
            daemon.kill()
