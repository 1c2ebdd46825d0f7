"""MongoDB faults under load: dropped connections, resumable getMore errors, NotWritablePrimary,
a failCommand fail point, a 30-second outage with data kept, and history lost while syncd was down."""

from __future__ import annotations

import time

from syncd_sandbox import tally
from syncd_sandbox.load import LoadGenerator
from syncd_sandbox.rig import Rig
from syncd_sandbox.seed import make_kidlisp, make_mood, make_piece


def _seed(rig: Rig, n: int = 20) -> list[str | None]:
    w = rig.world
    w.add_user("carol", with_atproto=False)
    owners = rig.owners(["alice", "bob", "carol", None])
    w.insert("moods", *(make_mood(w.sub("alice"), f"m{i}") for i in range(n)))
    w.insert("kidlisp", *(make_kidlisp(owners[i % 4]) for i in range(n)))
    w.insert("pieces", *(make_piece(owners[i % 4], f"p{i}") for i in range(n)))
    w.add_painting("bob", width=640, height=480)
    return owners


def test_stream_faults_under_load(rig: Rig) -> None:
    owners = _seed(rig)
    w = rig.world
    rig.syncd.start()
    rig.wait_quiet(30)
    load = LoadGenerator(rig.load_db(), w.image_dir, owners, seed=7).start(rate=25)
    faults = [
        ("dropConnections", {}),
        ("failGetMore", {"n": 2}),
        ("notWritablePrimary", {"n": 3}),
        ("dropConnections", {}),
        ("failGetMore", {"n": 1, "code": 91}),  # ShutdownInProgress: resumable
        ("notWritablePrimary", {"n": 2}),
        ("pause", {"seconds": 1.5}),
    ]
    try:
        for kind, params in faults:
            time.sleep(0.7)
            w.fault(kind, **params)
            tally.count("mongo_faults")
        # The real test command: a resumable error on the stream's next getMore.
        w.client.admin.command(
            {
                "configureFailPoint": "failCommand",
                "mode": {"times": 2},
                "data": {
                    "failCommands": ["getMore"],
                    "errorCode": 10107,
                    "errorLabels": ["ResumableChangeStreamError"],
                },
            }
        )
        tally.count("mongo_faults")
        time.sleep(1.5)
    finally:
        load.stop()
    tally.count("load_ops", load.total)
    rig.wait_quiet(60)
    assert rig.syncd.exited_unexpectedly() is None, rig.syncd.tail()
    assert rig.syncd.stop() == 0


def test_mongo_down_30s_under_load(rig: Rig) -> None:
    """The Mongo sandbox stopped for 30 s and restarted with its data; load before and after."""
    owners = _seed(rig, 10)
    w = rig.world
    rig.syncd.start()
    rig.wait_quiet(30)
    load = LoadGenerator(rig.load_db(), w.image_dir, owners, seed=11).start(rate=20)
    try:
        time.sleep(1.0)
        w.restart_mongo(pause_seconds=30.0)
        tally.count("mongo_faults")
        back = time.monotonic()
        time.sleep(1.0)
    finally:
        load.stop()
    tally.count("load_ops", load.total)
    rig.wait_quiet(60)
    recovery = time.monotonic() - back
    print(f"\ncaught up {recovery:.1f}s after MongoDB came back (incl. 1 s of load)")
    assert rig.syncd.exited_unexpectedly() is None, rig.syncd.tail()
    assert rig.syncd.stop() == 0


def test_history_lost_while_down(rig: Rig) -> None:
    """Deletes, privacy flips and inserts made while syncd was down, then the oplog truncated:
    the restart rescans, publishes what is new, and removes what is gone or private."""
    _seed(rig, 10)
    w = rig.world
    rig.syncd.start()
    rig.wait_quiet(30)
    assert rig.syncd.stop() == 0
    w.db.moods.delete_many({"mood": {"$in": ["m1", "m2", "m3"]}})
    w.db.kidlisp.update_many({}, {"$set": {"private": True}})
    w.db.pieces.delete_many({})
    w.insert("moods", make_mood(w.sub("bob"), "written while syncd was down"))
    w.fault("truncateOplog", keep=0)
    tally.count("mongo_faults")
    rig.syncd.start()
    rig.wait_quiet(60)
    assert "history_lost" in rig.syncd.log_text()
    assert rig.syncd.stop() == 0
