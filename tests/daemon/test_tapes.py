"""Tapes end to end on the real PDS (platform-facts §3, §5, §7): the MP4 streamed to a
``video`` blob that reads back byte for byte, guest tapes on ``art``, published once
converted, the limits named in dead letters, foreign hosts never contacted.

The world decides what must be true (``syncd_sandbox.platform``, the invariant); the
MP4s are made here and served by the world's object store.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pymongo import MongoClient

from syncd_sandbox import tokens
from syncd_sandbox.images import ImageServer
from syncd_sandbox.mongo_server import ChildMongo
from syncd_sandbox.pds import PdsProcess
from syncd_sandbox.platform import NSIDS
from syncd_sandbox.seed import Mp4File, make_mood, make_tape, store_url, write_tape_file
from syncd_sandbox.syncd_process import SyncdProcess, run_cli
from syncd_sandbox.testing import SandboxWorld

from .mirror import assert_mirrored

pytestmark = pytest.mark.slow

TAPE = NSIDS["tapes"]
MB = 1024 * 1024


def add_tape(
    world: SandboxWorld, who: str | None, size: int, *, seed: int = 0, **kw: Any
) -> tuple[dict[str, Any], Mp4File]:
    """A converted tape whose MP4 (``size`` bytes) is in the world's object store."""
    sub = world.sub(who)
    doc = make_tape(sub, **kw)
    obj, mp4 = write_tape_file(world.image_dir, sub, doc["slug"], size, seed)
    doc.setdefault("mp4", store_url(obj, world.image_base_url))
    world.insert("tapes", doc)
    return doc, mp4


def blob_sha256(world: SandboxWorld, who: str | None, cid: str) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    url = f"{world.pds.url}/xrpc/com.atproto.sync.getBlob"
    with world.api.http.stream("GET", url, params={"did": world.did(who), "cid": cid}) as r:
        assert r.status_code == 200, r.status_code
        for chunk in r.iter_bytes(MB):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def status(world: SandboxWorld) -> dict[str, Any]:
    return dict(json.loads(run_cli(world.config_path, "status", "--json").stdout))


def dead_letters(world: SandboxWorld) -> dict[str, dict[str, Any]]:
    return {d["id"]: d for d in status(world)["dead_letters"]["recent"]}


def test_a_30mb_tape_becomes_a_record_whose_video_is_the_mp4(
    world: SandboxWorld, syncd: SyncdProcess
) -> None:
    """§7: the MP4 is the video blob; streamed, so syncd's memory stays far below it. A
    guest tape lands on `art`; a tape still processing is published once complete."""
    world.insert("moods", make_mood(world.sub("alice"), "before the tapes"))
    syncd.start()
    syncd.wait_ready()
    syncd.wait_idle()
    before = peak_rss_mb(syncd.pid)  # started, logged in, one record written
    big, mp4 = add_tape(world, "alice", 30 * MB, seed=30)
    guest, guest_mp4 = add_tape(world, None, 200_000, seed=1)
    pending = make_tape(world.sub("bob"), mp4_status="processing")
    world.insert("tapes", pending)
    rec = syncd.wait_until(lambda: world.records_by_ref("alice", TAPE).get(str(big["_id"])), 120)
    syncd.wait_idle(120)
    rss = peak_rss_mb(syncd.pid)
    video = rec["value"]["video"]
    assert video["mimeType"] == "video/mp4" and video["size"] == mp4.size == 30 * MB
    assert blob_sha256(world, "alice", video["ref"]["$link"]) == (mp4.sha256, mp4.size)
    assert rec["value"]["acUrl"] == f"https://aesthetic.computer/!{big['code']}"
    # The back-reference is written to `at`, not `atproto`.
    stored = world.db.tapes.find_one({"_id": big["_id"]})
    assert stored["at"]["rkey"] == rec["uri"].rsplit("/", 1)[1] and "atproto" not in stored
    metrics = syncd.metrics()
    uploaded = metrics["syncd_blob_bytes_uploaded_total"]
    print(
        f"\n30 MB tape: syncd peak RSS {rss:.1f} MB ({before:.1f} MB before the tapes); "
        f"blob bytes uploaded {uploaded:,.0f}, "
        f"sent {metrics['syncd_blob_bytes_sent_total']:,.0f}"
    )
    assert uploaded == mp4.size + guest_mp4.size  # each MP4 once
    assert rss < 150, f"peak RSS {rss:.1f} MB"
    # The guest tape is on the shared `art` account; the processing one is skipped.
    assert str(guest["_id"]) in world.records_by_ref("art", TAPE)
    assert str(pending["_id"]) not in world.records_by_ref("bob", TAPE)
    report = status(world)
    assert report["skipped"]["tapes"] == {"mp4_not_ready": 1}
    assert report["tapes"] == {
        "mirrored": True,
        "published": 2,
        "waiting_for_mp4": 1,
        "dead_letters": {},
        "pds_upload_limit": None,
    }
    assert_mirrored(world, ("tapes",))
    # processing -> complete: published then.
    obj, done = write_tape_file(world.image_dir, world.sub("bob"), pending["slug"], 70_000, 7)
    world.db.tapes.update_one(
        {"_id": pending["_id"]},
        {"$set": {"mp4Status": "complete", "mp4": store_url(obj, world.image_base_url)}},
    )
    rec = syncd.wait_until(lambda: world.records_by_ref("bob", TAPE).get(str(pending["_id"])), 60)
    assert rec["value"]["video"]["size"] == done.size
    syncd.wait_idle()
    assert status(world)["skipped"].get("tapes", {}) == {}
    assert_mirrored(world, ("tapes",))


def test_limits_and_hosts_are_dead_letters_that_say_why(
    world: SandboxWorld, syncd: SyncdProcess, tmp_path: Path
) -> None:
    """A 60 MB MP4 is over the lexicon's 52,428,800 bytes (and the sandbox PDS's limit):
    refused by its Content-Length, never downloaded or uploaded. A redirect to a foreign
    host is refused without contacting it. A changed mp4 uploads the new video."""
    huge, _ = add_tape(world, "alice", 60 * MB, seed=60)
    with ImageServer(tmp_path / "foreign") as foreign:
        (tmp_path / "foreign" / "b").mkdir(parents=True)
        (tmp_path / "foreign" / "b" / "x.mp4").write_bytes(b"\0\0\0\x18ftypisom" + bytes(100))
        moved, _ = add_tape(world, "alice", 10_000, seed=2)
        bucket, key = moved["mp4"].removeprefix(world.image_base_url + "/").split("/", 1)
        world.images.redirect(bucket, key, foreign.url("b", "x.mp4"))
        changed, first = add_tape(world, "bob", 40_000, seed=3)
        syncd.start()
        syncd.wait_ready()
        syncd.wait_until(lambda: str(changed["_id"]) in world.records_by_ref("bob", TAPE), 60)
        syncd.wait_idle()
        letters = dead_letters(world)
        assert foreign.hits("b", "x.mp4") == 0  # never contacted
    too_large = letters[str(huge["_id"])]
    assert too_large["reason"] == "tape_too_large"
    assert "62,914,560 bytes" in too_large["detail"] and "52,428,800" in too_large["detail"]
    assert letters[str(moved["_id"])]["reason"] == "mp4_redirect_disallowed_host"
    assert not world.records_by_ref("alice", TAPE)
    text = run_cli(world.config_path, "status").stdout
    assert (
        "tapes: 1 published, 0 waiting for their MP4 (mp4Status not complete), dead letters: "
        "mp4_redirect_disallowed_host 1, tape_too_large 1" in text
    ), text
    metrics = syncd.metrics()
    assert metrics["syncd_blob_bytes_sent_total"] == first.size  # nothing of the 60 MB
    syncd.wait_metric("syncd_dead_letters", 2, collection="tapes")
    # A changed mp4: the new video is uploaded and the same record updated.
    before = world.records_by_ref("bob", TAPE)[str(changed["_id"])]
    obj, second = write_tape_file(world.image_dir, world.sub("bob"), "v2", 50_000, 4)
    world.db.tapes.update_one(
        {"_id": changed["_id"]}, {"$set": {"mp4": store_url(obj, world.image_base_url)}}
    )
    rec = syncd.wait_until(
        lambda: (
            (r := world.records_by_ref("bob", TAPE)[str(changed["_id"])])["value"]["video"]["size"]
            == second.size
            and r
        ),
        60,
    )
    assert rec["uri"] == before["uri"]
    assert blob_sha256(world, "bob", rec["value"]["video"]["ref"]["$link"])[0] == second.sha256
    syncd.wait_idle()
    assert_mirrored(world, ("tapes",))


# -- a PDS with the reference PDS's default-sized limit: the limit learned from its 413 ----

SMALL_LIMIT = 1_000_000


@pytest.fixture(scope="module")
def small_limit_pds(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PdsProcess]:
    base = tmp_path_factory.mktemp("small-limit-pds")
    proc = PdsProcess(base / "pds", blob_upload_limit=SMALL_LIMIT, log_path=base / "pds.log")
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture
def small_world(
    small_limit_pds: PdsProcess,
    tmp_path: Path,
    sandbox_mongo: ChildMongo,
    sandbox_mongo_client: MongoClient[Any],
) -> Iterator[SandboxWorld]:
    w = SandboxWorld(
        tmp=tmp_path / "world",
        pds_process=small_limit_pds,
        mongo=sandbox_mongo,
        client=sandbox_mongo_client,
        database=f"tapes_limit_{tokens.token_hex(3)}",
    )
    try:
        w.add_guest()
        w.add_user("alice")
        w.write_config({"mongo": {"max_await_ms": 100}})
        yield w
    finally:
        w.close()


def test_the_pds_upload_limit_is_learned_from_its_413_and_named(
    small_world: SandboxWorld,
) -> None:
    """A PDS whose PDS_BLOB_UPLOAD_LIMIT is below the lexicon's (the reference PDS's own
    default is 5 MiB) refuses larger MP4s with 413, which does not say the limit: the dead
    letter names it as the answers pin it, and a larger MP4 is then refused before it is
    downloaded."""
    world = small_world
    assert world.pds.blob_upload_limit == SMALL_LIMIT
    fits, _ = add_tape(world, "alice", 600_000, seed=1)
    syncd = SyncdProcess(world.config_path, log_path=world.tmp / "syncd.log")
    try:
        syncd.start()
        syncd.wait_ready()
        syncd.wait_until(lambda: str(fits["_id"]) in world.records_by_ref("alice", TAPE), 60)
        over, _ = add_tape(world, "alice", 1_500_000, seed=2)
        syncd.wait_until(lambda: str(over["_id"]) in dead_letters(world), 60)
        sent = syncd.metrics()["syncd_blob_bytes_sent_total"]
        bigger, _ = add_tape(world, "alice", 3_000_000, seed=3)
        syncd.wait_until(lambda: str(bigger["_id"]) in dead_letters(world), 60)
        syncd.wait_idle()
        metrics = syncd.metrics()
    finally:
        syncd.terminate()
    letters = dead_letters(world)
    first = letters[str(over["_id"])]
    assert first["reason"] == "blob_over_pds_limit" and not first["retryable"]
    assert "PDS_BLOB_UPLOAD_LIMIT" in first["detail"]
    assert "at least 600,000 and below 1,500,000 bytes" in first["detail"], first["detail"]
    learned = letters[str(bigger["_id"])]
    assert learned["reason"] == "tape_too_large"
    assert "below 1,500,000 bytes" in learned["detail"], learned["detail"]
    # The 3 MB MP4 was never sent: refused by its Content-Length against the learned bound.
    assert metrics["syncd_blob_bytes_sent_total"] == sent
    assert metrics["syncd_blob_bytes_uploaded_total"] == 600_000
    report = world.check_invariant(collections=("tapes",))
    assert report.ok, report.summary()


def test_malformed_tapes_are_dead_letters_and_the_stream_goes_on(
    world: SandboxWorld, syncd: SyncdProcess
) -> None:
    """Bad tape documents are recorded with their reason and skipped; a good tape inserted
    after them is published; no record for any bad one (the world's own verdict)."""
    sub = world.sub("alice")
    png = world.image_dir / "user-aesthetic-computer" / "not-a-video.mp4"
    png.parent.mkdir(parents=True, exist_ok=True)
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(200))
    bad = {
        "bad_mp4": make_tape(sub, mp4=5),
        "mp4_disallowed_host": make_tape(sub, mp4="https://evil.example/x.mp4"),
        "not_mp4": make_tape(
            sub, mp4=f"{world.image_base_url}/user-aesthetic-computer/not-a-video.mp4"
        ),
        "mp4_not_found": make_tape(
            sub, mp4=f"{world.image_base_url}/user-aesthetic-computer/no.mp4"
        ),
        "missing_code": make_tape(sub, mp4=f"{world.image_base_url}/x/y.mp4"),
        "bad_when": make_tape(sub, mp4=f"{world.image_base_url}/x/y.mp4"),
    }
    bad["missing_code"].pop("code")
    bad["bad_when"]["when"] = "yesterday"
    odd_status = make_tape(sub, mp4_status={"x": 1})  # not complete: waits, no error
    world.insert("tapes", *bad.values(), odd_status)
    syncd.start()
    syncd.wait_ready()
    good, _ = add_tape(world, "alice", 30_000)
    syncd.wait_until(lambda: str(good["_id"]) in world.records_by_ref("alice", TAPE), 60)
    syncd.wait_idle()
    letters = dead_letters(world)
    assert {reason: letters[str(doc["_id"])]["reason"] for reason, doc in bad.items()} == {
        r: r for r in bad
    }
    assert str(odd_status["_id"]) not in letters
    assert list(world.records_by_ref("alice", TAPE)) == [str(good["_id"])]
    assert syncd.alive
    assert_mirrored(world, ("tapes",))
