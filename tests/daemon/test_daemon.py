"""The daemon end to end: real PDS, Mongo sandbox, the real `syncd run` process."""

from __future__ import annotations

import json
import os
import random
import signal
import time
from typing import Any

from bson import ObjectId

from syncd_sandbox.seed import make_kidlisp, make_mood, make_piece
from syncd_sandbox.syncd_process import SyncdProcess, metric_sum, run_cli
from syncd_sandbox.testing import SandboxWorld

from .mirror import NSIDS, assert_mirrored

MOOD = NSIDS["moods"]


def seed_mix(world: SandboxWorld, n: int = 6) -> None:
    alice, bob = world.sub("alice"), world.sub("bob")
    assert alice and bob
    world.insert("moods", *[make_mood(alice, f"alice mood {i}") for i in range(n)])
    world.insert("moods", *[make_mood(bob, f"bob mood {i}") for i in range(n)])
    world.insert(
        "moods",
        make_mood(alice, "deleted mood", deleted=True),
        make_mood(bob, "private mood", private=True),
        make_mood(alice, "unlisted", visibility="unlisted"),
    )
    world.insert(
        "kidlisp",
        make_kidlisp(None, source="(wipe red)"),
        make_kidlisp(alice, source="(ink blue)"),
        make_kidlisp(None, source="(nuked)", nuked=True),
    )
    world.insert(
        "pieces",
        make_piece(alice, "hello"),
        make_piece(None, "guest-piece"),
        make_piece(bob, "drafty", draft=True),
        make_piece(bob, "hidden", hidden=True),
    )


def repo_rev(world: SandboxWorld, who: str) -> str:
    data = world.api.query("com.atproto.sync.getLatestCommit", {"did": world.did(who)})
    return str(data["rev"])


def writes(proc: SyncdProcess) -> float:
    m = proc.metrics()
    return sum(
        metric_sum(m, "syncd_pds_requests_total", method=method)
        for method in (
            "com.atproto.repo.applyWrites",
            "com.atproto.repo.putRecord",
            "com.atproto.repo.deleteRecord",
            "com.atproto.repo.uploadBlob",
        )
    )


def test_backfill_publishes_exactly_the_public_documents(
    world: SandboxWorld, syncd: SyncdProcess
) -> None:
    seed_mix(world)
    world.add_painting("alice")
    world.add_painting(None)
    syncd.start()
    syncd.wait_ready()
    syncd.wait_idle()
    checked = assert_mirrored(world)
    assert checked == 6 + 6 + 2 + 2 + 2  # moods, kidlisp, pieces, paintings
    # Guest content lives in the shared art account.
    assert {r["value"]["source"] for r in world.list_records("art", NSIDS["kidlisp"])} == {
        "(wipe red)"
    }
    code, seconds = syncd.terminate()
    assert code == 0 and seconds < 10
    status = json.loads(run_cli(world.config_path, "status", "--json").stdout)
    assert status["records_total"] == checked and status["position"] is not None


def test_live_changes_are_mirrored(world: SandboxWorld, syncd: SyncdProcess) -> None:
    alice = world.sub("alice")
    assert alice
    syncd.start()
    syncd.wait_ready()
    doc = make_mood(alice, "first")
    world.insert("moods", doc)
    ref = str(doc["_id"])

    def record() -> dict[str, Any] | None:
        return world.records_by_ref("alice", MOOD).get(ref)

    rec = syncd.wait_until(record, 20)
    assert rec["value"]["mood"] == "first"
    rkey = rec["uri"].rsplit("/", 1)[1]
    syncd.wait_until(
        lambda: world.db.moods.find_one({"_id": doc["_id"]}).get("atproto", {}).get("rkey") == rkey,
        10,
    )

    world.db.moods.update_one({"_id": doc["_id"]}, {"$set": {"mood": "edited"}})
    syncd.wait_until(lambda: (r := record()) and r["value"]["mood"] == "edited", 20)
    assert record()["uri"].endswith(rkey)  # an update keeps the key

    world.db.moods.update_one({"_id": doc["_id"]}, {"$set": {"deleted": True}})
    syncd.wait_until(lambda: record() is None, 20)
    syncd.wait_until(
        lambda: "rkey" not in world.db.moods.find_one({"_id": doc["_id"]}).get("atproto", {}), 10
    )

    world.db.moods.update_one({"_id": doc["_id"]}, {"$unset": {"deleted": ""}})
    rec = syncd.wait_until(record, 20)
    assert rec["uri"].endswith(rkey) and rec["value"]["mood"] == "edited"  # same key again

    world.db.moods.update_one({"_id": doc["_id"]}, {"$set": {"private": True}})
    syncd.wait_until(lambda: record() is None, 20)
    world.db.moods.update_one({"_id": doc["_id"]}, {"$set": {"private": False}})
    syncd.wait_until(record, 20)

    world.db.moods.delete_one({"_id": doc["_id"]})
    syncd.wait_until(lambda: record() is None, 20)
    syncd.wait_idle()
    assert_mirrored(world, ("moods",))


def test_noop_updates_and_writeback_cause_no_pds_write(
    world: SandboxWorld, syncd: SyncdProcess
) -> None:
    alice = world.sub("alice")
    assert alice
    docs = [make_mood(alice, f"m{i}") for i in range(5)]
    world.insert("moods", *docs)
    syncd.start()
    syncd.wait_ready()
    syncd.wait_idle()
    assert_mirrored(world, ("moods",))
    rev, before = repo_rev(world, "alice"), writes(syncd)
    events_before = metric_sum(syncd.metrics(), "syncd_events_total", collection="moods")
    for d in docs:  # fields nothing mirrors, and a rewrite of the same content
        world.db.moods.update_one({"_id": d["_id"]}, {"$set": {"views": 3, "mood": d["mood"]}})
    world.db.moods.update_one({"_id": docs[0]["_id"]}, {"$set": {"atproto.note": "ui"}})
    syncd.wait_until(
        lambda: (
            metric_sum(syncd.metrics(), "syncd_events_total", collection="moods")
            >= events_before + 6
        ),
        20,
    )
    syncd.wait_idle()
    assert writes(syncd) == before
    assert repo_rev(world, "alice") == rev


def test_sigterm_mid_stream_then_restart_loses_and_duplicates_nothing(
    world: SandboxWorld, syncd: SyncdProcess
) -> None:
    alice, bob = world.sub("alice"), world.sub("bob")
    assert alice and bob
    syncd.start()
    syncd.wait_ready()
    world.insert(
        "moods", *[make_mood(random.choice([alice, bob]), f"burst {i}") for i in range(300)]
    )
    time.sleep(0.3)  # events in flight
    code, seconds = syncd.terminate()
    assert code == 0 and seconds < 10
    world.insert("moods", *[make_mood(alice, f"while down {i}") for i in range(20)])
    victim = world.db.moods.find_one({"mood": "burst 0"})
    world.db.moods.delete_one({"_id": victim["_id"]})
    syncd.start()
    syncd.wait_ready()
    syncd.wait_idle()
    assert assert_mirrored(world, ("moods",)) == 319
    assert not syncd.events("backfill_started")  # resumed from the saved position


def test_kill_minus_nine_during_backfill_and_live_traffic(
    world: SandboxWorld, syncd: SyncdProcess
) -> None:
    rng = random.Random(1234)
    alice, bob = world.sub("alice"), world.sub("bob")
    assert alice and bob
    world.insert("moods", *[make_mood(rng.choice([alice, bob]), f"seed {i}") for i in range(1500)])
    world.write_config({"mongo": {"scan_batch_size": 100, "max_await_ms": 100}})
    for round_ in range(4):
        syncd.start()
        time.sleep(rng.uniform(0.8, 2.0))
        # Live traffic while it runs: inserts, edits, deletes.
        ids = (
            [d["_id"] for d in world.db.moods.aggregate([{"$sample": {"size": 20}}])]
            if round_
            else []
        )
        world.insert(
            "moods",
            *[make_mood(rng.choice([alice, bob]), f"round {round_} #{i}") for i in range(40)],
        )
        for i in ids[:10]:
            world.db.moods.update_one({"_id": i}, {"$set": {"mood": f"edited in round {round_}"}})
        for i in ids[10:15]:
            world.db.moods.delete_one({"_id": i})
        time.sleep(rng.uniform(0.0, 0.5))
        syncd.kill()
    syncd.start()
    syncd.wait_ready(90)
    syncd.wait_idle(90)
    assert assert_mirrored(world, ("moods",)) == world.db.moods.count_documents({})


def test_interrupted_backfill_resumes_where_it_stopped(
    world: SandboxWorld, syncd: SyncdProcess
) -> None:
    alice = world.sub("alice")
    assert alice
    world.insert("pieces", *[make_piece(alice, f"p{i}") for i in range(30)])
    world.insert("moods", *[make_mood(alice, f"m{i}") for i in range(2000)])
    world.write_config(
        {"mongo": {"scan_batch_size": 100, "max_await_ms": 100}, "pipeline": {"queue_size": 200}}
    )
    syncd.start()

    def moods_progress() -> bool:
        status = json.loads(run_cli(world.config_path, "status", "--json").stdout)
        moods = status["backfill"]["collections"].get("moods", {})
        return bool(status["backfill"]["in_progress"]) and 300 <= moods.get("scanned", 0) < 2000

    syncd.wait_until(moods_progress, 60, interval=0.05)
    syncd.kill()
    syncd.start()
    syncd.wait_ready(90)
    syncd.wait_idle()
    done = {e["collection"] for e in syncd.events("backfill_collection_already_done")}
    assert "paintings" in done  # scanned before moods (config order): not rescanned
    resumed = [e for e in syncd.events("backfill_collection") if e["collection"] == "moods"]
    assert resumed and resumed[0]["resumed_after"] and resumed[0]["remaining"] < 2000
    assert assert_mirrored(world, ("moods", "pieces")) == 2030


def test_history_lost_while_down_recovers_and_says_so(
    world: SandboxWorld, syncd: SyncdProcess
) -> None:
    alice = world.sub("alice")
    assert alice
    docs = [make_mood(alice, f"m{i}") for i in range(10)]
    world.insert("moods", *docs)
    syncd.start()
    syncd.wait_ready()
    syncd.wait_idle()
    syncd.terminate()
    # While syncd is down: changes, then the oplog loses them.
    world.db.moods.delete_one({"_id": docs[0]["_id"]})
    world.db.moods.update_one({"_id": docs[1]["_id"]}, {"$set": {"mood": "changed while down"}})
    world.db.moods.update_one({"_id": docs[2]["_id"]}, {"$set": {"private": True}})
    world.insert("moods", make_mood(alice, "new while down"))
    # Like a real capped oplog rolling over: everything but the newest entry is gone.
    world.fault("truncateOplog", keep=1)
    syncd.start()
    syncd.wait_ready(60)
    syncd.wait_idle()
    assert syncd.events("history_lost")
    assert metric_sum(syncd.metrics(), "syncd_history_lost_total") == 1
    assert assert_mirrored(world, ("moods",)) == 9  # 10 - deleted - private + new


def test_bad_documents_are_dead_lettered_and_the_stream_goes_on(
    world: SandboxWorld, syncd: SyncdProcess
) -> None:
    alice = world.sub("alice")
    assert alice
    syncd.start()
    syncd.wait_ready()
    bad = [
        {"_id": ObjectId(), "user": alice, "when": make_mood(alice, "x")["when"]},  # no mood
        {"_id": ObjectId(), "user": alice, "mood": 42, "when": make_mood(alice, "x")["when"]},
        {"_id": ObjectId(), "user": alice, "mood": "no when"},
        {
            "_id": ObjectId(),
            "user": alice,
            "mood": "x" * 6000,
            "when": make_mood(alice, "x")["when"],
        },
        {
            "_id": "a-string-id",
            "user": alice,
            "mood": "odd id",
            "when": make_mood(alice, "x")["when"],
        },
        {
            "_id": ObjectId(),
            "user": "auth0|nobody",
            "mood": "unknown user",
            "when": make_mood(alice, "x")["when"],
        },
    ]
    world.insert("moods", *bad)
    good = make_mood(alice, "after the bad ones")
    world.insert("moods", good)
    syncd.wait_until(lambda: str(good["_id"]) in world.records_by_ref("alice", MOOD), 20)
    syncd.wait_idle()
    status = json.loads(run_cli(world.config_path, "status", "--json").stdout)
    reasons = {d["reason"] for d in status["dead_letters"]["recent"]}
    assert {
        "missing_mood",
        "bad_mood",
        "missing_when",
        "lexicon_invalid",
        "unsupported_id",
    } <= reasons
    assert status["dead_letters"]["counts"]["moods"] == 5
    assert status["skipped"]["moods"] == {"unknown_user": 1}
    syncd.wait_metric("syncd_dead_letters", 5, collection="moods")
    assert syncd.alive
    assert_mirrored(world, ("moods",))


def test_rerunning_backfill_changes_nothing(world: SandboxWorld) -> None:
    seed_mix(world)
    world.add_painting("alice")
    first = run_cli(world.config_path, "backfill")
    assert first.returncode == 0, first.stderr
    assert_mirrored(world)
    revs = {who: repo_rev(world, who) for who in ("alice", "bob", "art")}
    for _ in range(3):
        again = run_cli(world.config_path, "backfill")
        assert again.returncode == 0, again.stderr
        assert "writes 0" in again.stdout, again.stdout
    assert {who: repo_rev(world, who) for who in ("alice", "bob", "art")} == revs
    assert_mirrored(world)


def test_old_script_keys_are_adopted_not_duplicated(
    world: SandboxWorld, syncd: SyncdProcess
) -> None:
    alice = world.sub("alice")
    assert alice
    doc = make_mood(alice, "made by the old scripts")
    # The old scripts created the record with a PDS-chosen key and wrote it back.
    token = world.access_token("alice")
    old = world.api.procedure(
        "com.atproto.repo.createRecord",
        {
            "repo": world.did("alice"),
            "collection": MOOD,
            "record": {
                "$type": MOOD,
                "mood": "old content",
                "when": "2020-01-01T00:00:00.000Z",
                "ref": str(doc["_id"]),
            },
        },
        token=token,
    )
    rkey = old["uri"].rsplit("/", 1)[1]
    doc["atproto"] = {"rkey": rkey}
    world.insert("moods", doc)
    syncd.start()
    syncd.wait_ready()
    syncd.wait_idle()
    recs = world.list_records("alice", MOOD)
    assert [r["uri"].rsplit("/", 1)[1] for r in recs] == [rkey]
    assert recs[0]["value"]["mood"] == "made by the old scripts"
    assert_mirrored(world, ("moods",))


def test_an_idle_daemon_stays_live(world: SandboxWorld, syncd: SyncdProcess) -> None:
    """Regression: idle writers and a finished backfill once counted as stuck loops."""
    alice = world.sub("alice")
    assert alice
    world.insert("moods", make_mood(alice, "one"))
    world.write_config({"mongo": {"max_await_ms": 100}, "metrics": {"liveness_stale_seconds": 1.5}})
    syncd.start()
    syncd.wait_ready()
    syncd.wait_idle()
    time.sleep(4)  # well past the stale threshold with nothing to do
    reply = syncd.get("/healthz")
    assert reply.status_code == 200, reply.text
    assert syncd.get("/readyz").status_code == 200
    # Asked what it waits on (syncd.dump), it answers in its log and goes on.
    os.kill(syncd.pid, signal.SIGUSR1)
    syncd.wait_until(lambda: syncd.events("tasks_dump"), timeout=10)
    (dumped,) = syncd.events("tasks_dump")
    names = {t["task"] for t in dumped["tasks"]}
    assert {"work", "redrive", "lifecycle"} <= names, names
    work = next(t for t in dumped["tasks"] if t["task"] == "work")
    assert work["at"] and all(".py:" in line for line in work["at"]), work
    os.kill(syncd.pid, signal.SIGUSR2)
    assert syncd.wait_for_log("Current thread", timeout=10), syncd.tail()
    assert syncd.alive and syncd.get("/healthz").status_code == 200
    assert syncd.stop() == 0


def test_documents_sharing_an_old_script_key_each_get_a_record(
    world: SandboxWorld, syncd: SyncdProcess
) -> None:
    """Regression: an adopted atproto.rkey was used without checking it was free."""
    alice = world.sub("alice")
    assert alice
    a = make_mood(alice, "first holder", atproto={"rkey": "3k2abcdefgh22"})
    b = make_mood(alice, "second holder", atproto={"rkey": "3k2abcdefgh22"})
    world.insert("moods", a)
    syncd.start()
    syncd.wait_ready()
    syncd.wait_idle()
    world.insert("moods", b)
    syncd.wait_until(lambda: len(world.list_records("alice", MOOD)) == 2, 20)
    syncd.wait_idle()
    recs = world.records_by_ref("alice", MOOD)
    assert recs[str(a["_id"])]["uri"].endswith("3k2abcdefgh22")
    assert not recs[str(b["_id"])]["uri"].endswith("3k2abcdefgh22")
    assert_mirrored(world, ("moods",))


def test_a_skip_clears_an_old_dead_letter(world: SandboxWorld, syncd: SyncdProcess) -> None:
    """Regression: a fixed document whose owner has no account stayed dead-lettered."""
    alice = world.sub("alice")
    assert alice
    doc = {"_id": ObjectId(), "user": alice, "when": make_mood(alice, "x")["when"]}
    world.insert("moods", doc)
    syncd.start()
    syncd.wait_ready()
    syncd.wait_until(
        lambda: json.loads(run_cli(world.config_path, "status", "--json").stdout)["dead_letters"][
            "counts"
        ],
        20,
    )
    world.db.moods.update_one(
        {"_id": doc["_id"]}, {"$set": {"mood": "fixed", "user": "auth0|no-account"}}
    )
    syncd.wait_until(
        lambda: (
            not json.loads(run_cli(world.config_path, "status", "--json").stdout)["dead_letters"][
                "counts"
            ]
        ),
        20,
    )
