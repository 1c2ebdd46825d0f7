"""The platform's own inline writers (platform-facts §6), run beside a world without syncd."""

from __future__ import annotations

import hashlib
import io

import pytest
from bson import ObjectId
from PIL import Image

from syncd_sandbox import platform
from syncd_sandbox.hooks import HookOptions, PlatformHooks
from syncd_sandbox.seed import (
    make_kidlisp,
    make_mood,
    make_piece,
    make_tape,
    store_url,
    write_tape_file,
)
from syncd_sandbox.testing import SandboxWorld

pytestmark = pytest.mark.slow

FAST = {"delay_ms": (5, 40), "writeback_delay_ms": (5, 40)}


def test_the_platform_writes_records_its_own_way(world: SandboxWorld) -> None:
    alice, bob = world.sub("alice") or "", world.sub("bob") or ""
    with world.hooks(seed=1, **FAST) as hooks:
        pixel = world.add_painting("alice", pixel_art=True, width=32, height=32, recording=True)
        world.add_painting("bob", image=False)  # no image in storage: no thumbnail
        world.add_painting(None, "gp:gr", width=1024, height=512)
        mood = world.insert("moods", make_mood(alice, "hello"))[0]
        world.insert("pieces", make_piece(bob, "wipe", code="w1", source="x"))
        world.insert("kidlisp", make_kidlisp(None))
        # Not public: the platform publishes neither.
        world.insert("pieces", make_piece(bob, "secret", private=True))
        world.add_painting("alice", "wip/1", status="wip")
        assert hooks.wait_idle(30)
        stats = hooks.stats
    assert stats["records_created"] == 6, stats
    assert stats["writebacks_written"] == 6 and stats.get("writebacks_lost", 0) == 0
    assert stats["skipped_not_public"] == 2
    assert stats["sessions_created"] == 3  # alice, bob and art: once each, then cached
    assert stats["thumbnails"] == 2 and stats["paintings_without_image"] == 1
    assert stats.get("errors", 0) == 0, stats

    # Keys picked by the PDS (TIDs), back-references written as the platform does.
    for rec in hooks.created:
        assert rec.writeback == "written"
        rkey = rec.uri.rsplit("/", 1)[1]
        assert platform.is_tid(rkey)
        coll_doc = world.db[rec.collection].find_one({"_id": ObjectId(rec.ref)})
        assert coll_doc is not None
        assert coll_doc["atproto"] == {"rkey": rkey, "uri": rec.uri}

    # The witness agrees with everything but the mood's fresh `when`.
    report = world.check_invariant()
    assert report.by_kind() == {"stale": 1}, report.summary()
    assert report.violations[0].doc == str(mood["_id"]) and "when" in report.violations[0].detail
    record = world.records_by_ref("alice", platform.MOOD)[str(mood["_id"])]["value"]
    assert record["when"] != platform.when_string(mood["when"])
    # The pixel-art thumbnail is the platform's: 512x512 crisp blocks (checked by the witness
    # above); look at it once more by hand.
    value = world.records_by_ref("alice", platform.PAINTING)[str(pixel["_id"])]["value"]
    blob = world.api.get_blob(world.did("alice"), value["thumbnail"]["ref"]["$link"])
    assert Image.open(io.BytesIO(blob)).size == (512, 512)
    assert value["recordingUrl"].endswith(f"/media/paintings/{pixel['code']}.zip")


def test_the_tape_webhook_uploads_the_mp4_and_writes_at_back(world: SandboxWorld) -> None:
    """§5, §7: a tape is published when its conversion completes, the MP4 as its
    ``video`` blob, and the back-reference is ``at: {rkey, uri, cid}``."""
    alice = world.sub("alice")
    converted = make_tape(None)  # a guest tape, converted when it is inserted
    later = make_tape(alice, mp4_status="processing")
    waiting = make_tape(alice, mp4_status="processing")
    mp4s = {}
    for doc in (converted, later, waiting):
        obj, mp4s[doc["_id"]] = write_tape_file(
            world.image_dir, doc.get("user"), doc["slug"], 300_000
        )
        doc["mp4"] = store_url(obj, world.image_base_url)
    with world.hooks(seed=3, **FAST) as hooks:
        world.insert("tapes", converted, later, waiting)
        world.db.tapes.update_one({"_id": later["_id"]}, {"$set": {"mp4Status": "complete"}})
        world.db.tapes.update_one({"_id": waiting["_id"]}, {"$set": {"bucket": "x"}})
        assert hooks.wait_idle(30)
        stats = hooks.stats
    assert stats["records_created.tapes"] == 2, stats
    assert stats["tapes_converted"] == 1 and stats["skipped_not_public"] == 2, stats
    for doc, who in ((converted, None), (later, "alice")):
        (rec,) = [r for r in hooks.created if r.ref == str(doc["_id"])]
        stored = world.db.tapes.find_one({"_id": doc["_id"]})
        assert stored is not None
        rkey = rec.uri.rsplit("/", 1)[1]
        assert platform.is_tid(rkey)
        record = world.get_record(world.did(who), platform.TAPE, rkey)
        assert record is not None
        assert stored["at"] == {"rkey": rkey, "uri": rec.uri, "cid": record["cid"]}
        assert "atproto" not in stored
        video = record["value"]["video"]
        assert video["mimeType"] == "video/mp4" and video["size"] == 300_000
        data = world.api.get_blob(world.did(who), video["ref"]["$link"])
        assert hashlib.sha256(data).hexdigest() == mp4s[doc["_id"]].sha256
    assert not world.records_by_ref("alice", platform.TAPE).get(str(waiting["_id"]))
    report = world.check_invariant()
    assert report.ok, report.summary()


def test_lost_writebacks(world: SandboxWorld) -> None:
    alice = world.sub("alice") or ""
    with world.hooks(lose_fraction=0.5, seed=7, **FAST) as hooks:
        world.insert("moods", *[make_mood(alice, f"m{i}") for i in range(16)])
        assert hooks.wait_idle(30)
    stats = hooks.stats
    assert stats["records_created"] == 16
    assert stats["writebacks_written"] + stats["writebacks_lost"] == 16
    assert stats["writebacks_lost"] >= 1 and stats["writebacks_written"] >= 1
    lost = {rec.ref for rec in hooks.created if rec.writeback == "lost"}
    assert len(lost) == stats["writebacks_lost"]
    for doc in world.db.moods.find():
        assert ("atproto" in doc) is (str(doc["_id"]) not in lost)
    # A record whose document never learnt its key: the witness reports the back-reference.
    report = world.check_invariant()
    assert len(report.of_kind("bad_backref")) == len(lost)


def test_only_inserts_from_now_on(world: SandboxWorld) -> None:
    alice = world.sub("alice") or ""
    before = world.insert("moods", make_mood(alice, "before"))[0]
    hooks = world.start_hooks(**FAST)
    world.db.moods.update_one({"_id": before["_id"]}, {"$set": {"mood": "edited"}})
    world.insert("moods", make_mood(alice, "after"))
    assert hooks.wait_idle(30)
    hooks.stop()
    assert hooks.stats["records_created"] == 1
    assert [r["value"]["mood"] for r in world.list_records("alice", platform.MOOD)] == ["after"]


def test_stop_drops_scheduled_work(world: SandboxWorld) -> None:
    alice = world.sub("alice") or ""
    hooks = PlatformHooks(
        world.mongo_uri,
        world.database,
        world.pds.url,
        world.images.url_template,
        HookOptions(delay_ms=(5, 10), writeback_delay_ms=(60_000, 60_000)),
    ).start()
    world.insert("moods", make_mood(alice, "slow write-back"))
    world.wait_for(lambda: hooks.stats.get("records_created") == 1)
    hooks.stop()
    assert hooks.stats["writebacks_cancelled"] == 1
    assert [r.writeback for r in hooks.created] == ["cancelled"]


def test_options_are_checked() -> None:
    with pytest.raises(ValueError):
        HookOptions(lose_fraction=1.5)
    with pytest.raises(ValueError):
        HookOptions(delay_ms=(50, 10))
    with pytest.raises(ValueError):
        HookOptions(collections=("users",))


def test_hooks_resume_after_mongo_restarts(world: SandboxWorld) -> None:
    alice = world.sub("alice") or ""
    with world.hooks(**FAST) as hooks:
        world.insert("moods", make_mood(alice, "before the restart"))
        assert hooks.wait_idle(30)
        world.restart_mongo(pause_seconds=0.5)
        world.insert("moods", make_mood(alice, "after the restart"))
        world.wait_for(lambda: hooks.stats.get("records_created") == 2, timeout=30)
        assert hooks.wait_idle(30)
    moods = sorted(r["value"]["mood"] for r in world.list_records("alice", platform.MOOD))
    assert moods == ["after the restart", "before the restart"]
    assert hooks.stats["writebacks_written"] == 2
