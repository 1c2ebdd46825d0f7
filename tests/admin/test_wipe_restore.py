"""``syncd wipe`` then ``syncd restore`` gives the repository back: same keys, same content."""

from __future__ import annotations

from typing import Any

from syncd_sandbox.seed import make_kidlisp, make_mood, make_piece
from syncd_sandbox.testing import SandboxWorld
from tests.admin.helpers import NSIDS, OldScripts, assert_converged, snapshot, syncd, syncd_json

MOOD = NSIDS["moods"]


def _seed(world: SandboxWorld) -> dict[str, Any]:
    alice, bob = world.sub("alice"), world.sub("bob")
    world.add_painting("alice", recording=True)
    world.add_painting("alice")
    world.add_painting("bob")
    world.add_painting(None)
    world.insert(
        "moods",
        make_mood(alice, "one"),
        make_mood(alice, "two"),
        make_mood(alice, "hidden", deleted=True),
        make_mood(bob, "bob's"),
    )
    world.insert("pieces", make_piece(alice, "wipe"), make_piece(None, "guest-piece"))
    world.insert("kidlisp", make_kidlisp(alice), make_kidlisp(None))
    # An old-script record (PDS-assigned key, adopted through atproto.rkey), content right.
    adopted = make_mood(alice, "published by the old scripts")
    world.insert("moods", adopted)
    when = (
        adopted["when"].strftime("%Y-%m-%dT%H:%M:%S.")
        + f"{adopted['when'].microsecond // 1000:03d}Z"
    )
    rkey = OldScripts(world).create(
        "alice", MOOD, {"mood": adopted["mood"], "when": when, "ref": str(adopted["_id"])}
    )
    world.db.moods.update_one({"_id": adopted["_id"]}, {"$set": {"atproto.rkey": rkey}})
    syncd(world, "backfill")
    return {"adopted": adopted, "adopted_rkey": rkey}


def test_wipe_then_restore_gives_back_the_same_records(world: SandboxWorld) -> None:
    seeded = _seed(world)
    assert syncd_json(world, "reconcile")["differences"] == 0
    before = snapshot(world)
    others = {k: v for k, v in before.items() if not k.startswith("alice ")}
    alice = world.accounts["alice"].handle or ""
    assert sum(len(v) for k, v in before.items() if k.startswith("alice ")) == 7

    # Dry run: says what it would delete, deletes nothing.
    dry = syncd_json(world, "wipe", "--account", alice)
    assert dry["apply"] is False and dry["records"] == 7 and dry["deleted"] == 0
    assert snapshot(world) == before
    assert "would delete" in syncd(world, "wipe", "--account", alice).stdout

    wiped = syncd_json(world, "wipe", "--account", alice, "--apply")
    assert wiped["deleted"] == 7 and wiped["failed"] == 0
    after_wipe = snapshot(world)
    assert all(not v for k, v in after_wipe.items() if k.startswith("alice "))
    assert {k: v for k, v in after_wipe.items() if not k.startswith("alice ")} == others
    for coll in NSIDS:
        for doc in world.db[coll].find({"user": world.sub("alice")}):
            assert "rkey" not in (doc.get("atproto") or {}), (coll, doc)
    # Wiping again finds nothing (idempotent).
    assert syncd_json(world, "wipe", "--account", alice, "--apply")["records"] == 0

    # Restore, dry run first: lists the 7 records it would publish.
    dry = syncd_json(world, "restore", "--account", alice)
    assert dry["counts"]["missing"] == 7 and dry["differences"] == 7
    assert snapshot(world) == after_wipe
    restored = syncd_json(world, "restore", "--account", alice, "--apply")
    assert restored["applied"]["published"] == 7 and restored["applied"]["failed"] == []

    # Same keys, same content (the record CIDs are equal), other accounts untouched.
    assert snapshot(world) == before
    adopted = world.db.moods.find_one({"_id": seeded["adopted"]["_id"]})
    assert adopted["atproto"]["rkey"] == seeded["adopted_rkey"]
    assert_converged(world)
    assert syncd_json(world, "restore", "--account", alice, "--apply")["differences"] == 0
    assert syncd_json(world, "reconcile")["differences"] == 0


def test_wipe_one_collection_and_the_guest_account(world: SandboxWorld) -> None:
    _seed(world)
    before = snapshot(world)
    syncd(world, "wipe", "--account", "art", "--collections", "kidlisp", "--apply")
    after = snapshot(world)
    changed = {k for k in before if before[k] != after[k]}
    assert changed == {f"art {NSIDS['kidlisp']}"}
    syncd(world, "restore", "--account", "art", "--apply")
    assert snapshot(world) == before
    syncd(world, "wipe", "--account", "nobody.test", expect=2)
