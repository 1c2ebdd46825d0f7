"""The admin commands on tapes (back-reference in ``at``, the MP4 as the video blob):
the platform's own tape records adopted, wipe then restore gives the same records back,
reconcile repairs a wrong ``at``. Checked by the world's independent invariant."""

from __future__ import annotations

from typing import Any

import pytest

from syncd_sandbox.images import key_path
from syncd_sandbox.platform import NSIDS, when_string
from syncd_sandbox.seed import make_tape, store_url, write_tape_file
from syncd_sandbox.testing import SandboxWorld
from tests.admin.helpers import OldScripts, snapshot, syncd, syncd_json

pytestmark = pytest.mark.slow

TAPE = NSIDS["tapes"]


def tape(world: SandboxWorld, who: str | None, size: int, seed: int, **kw: Any) -> dict[str, Any]:
    sub = world.sub(who)
    doc = make_tape(sub, **kw)
    obj, _ = write_tape_file(world.image_dir, sub, doc["slug"], size, seed)
    doc["mp4"] = store_url(obj, world.image_base_url)
    world.insert("tapes", doc)
    return doc


def platform_writes(world: SandboxWorld, old: OldScripts, who: str, doc: dict[str, Any]) -> str:
    """What the platform's own tape code does: upload the MP4, createRecord (the PDS picks
    the key), then ``at: {rkey, uri, cid}`` on the document."""
    bucket, key = doc["mp4"].removeprefix(world.image_base_url + "/").split("/", 1)
    data = key_path(world.image_dir, bucket, key).read_bytes()
    blob = world.api.upload_blob(old.token(who), data, "video/mp4")
    value = {
        "slug": doc["slug"],
        "code": doc["code"],
        "acUrl": f"https://aesthetic.computer/!{doc['code']}",
        "when": when_string(doc["when"]),
        "video": blob,
        "ref": str(doc["_id"]),
    }
    rkey = old.create(who, TAPE, value)
    uri = f"at://{world.did(who)}/{TAPE}/{rkey}"
    world.db.tapes.update_one({"_id": doc["_id"]}, {"$set": {"at": {"rkey": rkey, "uri": uri}}})
    return rkey


def mirrored(world: SandboxWorld) -> None:
    report = world.check_invariant(collections=("tapes",))
    assert report.ok, report.summary()


def test_tapes_adopted_wiped_restored_and_reconciled(world: SandboxWorld) -> None:
    old = OldScripts(world)
    adopted = tape(world, "alice", 120_000, 1)
    adopted_rkey = platform_writes(world, old, "alice", adopted)
    fresh = tape(world, "alice", 80_000, 2)
    guest = tape(world, None, 50_000, 3)
    nuked = tape(world, "bob", 40_000, 4)
    platform_writes(world, old, "bob", nuked)
    world.db.tapes.update_one({"_id": nuked["_id"]}, {"$set": {"nuked": True}})

    syncd(world, "backfill")
    mirrored(world)
    doc = world.db.tapes.find_one({"_id": adopted["_id"]})
    assert doc["at"]["rkey"] == adopted_rkey  # the platform's key is kept
    assert not (world.db.tapes.find_one({"_id": nuked["_id"]}).get("at") or {}).get("rkey")
    assert not world.records_by_ref("bob", TAPE)  # nuking deletes the record
    assert str(guest["_id"]) in world.records_by_ref("art", TAPE)
    assert syncd_json(world, "reconcile", "--collections", "tapes")["differences"] == 0

    before = snapshot(world, ["alice"])
    alice = world.accounts["alice"].handle or ""
    wiped = syncd_json(world, "wipe", "--account", alice, "--collections", "tapes", "--apply")
    assert wiped["deleted"] == 2 and wiped["failed"] == 0
    for d in world.db.tapes.find({"user": world.sub("alice")}):
        assert not (d.get("at") or {}).get("rkey"), d
    restored = syncd_json(world, "restore", "--account", alice, "--collections", "tapes", "--apply")
    assert restored["applied"]["published"] == 2 and restored["applied"]["failed"] == []
    assert snapshot(world, ["alice"]) == before  # same keys, same records (same CIDs)
    mirrored(world)

    # A wrong back-reference in `at` is found and repaired without a PDS write.
    world.db.tapes.update_one({"_id": fresh["_id"]}, {"$set": {"at.uri": "at://wrong"}})
    check = syncd_json(world, "reconcile", "--collections", "tapes", expect=None)
    assert check["counts"]["backref"] == 1, check
    applied = syncd_json(world, "reconcile", "--collections", "tapes", "--apply")
    assert applied["applied"]["backrefs_fixed"] == 1
    assert snapshot(world, ["alice"]) == before
    mirrored(world)
