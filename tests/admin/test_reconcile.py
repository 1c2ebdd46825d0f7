"""``syncd reconcile`` against the old scripts' mess, in the sandbox world (real PDS, real CLI)."""

from __future__ import annotations

from typing import Any

from bson import ObjectId

from syncd_sandbox.pds import new_tid
from syncd_sandbox.seed import make_kidlisp, make_mood, make_piece
from syncd_sandbox.testing import SandboxWorld
from tests.admin.helpers import NSIDS, OldScripts, assert_converged, snapshot, syncd, syncd_json

MOOD, PAINTING, KIDLISP, PIECE = (NSIDS[c] for c in ("moods", "paintings", "kidlisp", "pieces"))


def _mood_value(doc: dict[str, Any]) -> dict[str, Any]:
    when = doc["when"].strftime("%Y-%m-%dT%H:%M:%S.") + f"{doc['when'].microsecond // 1000:03d}Z"
    return {"mood": doc["mood"], "when": when, "ref": str(doc["_id"])}


def seed_mess(world: SandboxWorld) -> dict[str, Any]:
    """A clean syncd baseline, then everything the old scripts left behind."""
    alice, bob = world.sub("alice"), world.sub("bob")
    p_ok = world.add_painting("alice")
    p_nothumb = world.add_painting("alice")
    world.add_painting(None)
    m_dup = make_mood(alice, "duplicated mood")
    m_gone = make_mood(alice, "this document will be deleted")
    m_fine = make_mood(bob, "bob is fine")
    k_guest = make_kidlisp(None, source="(wipe green)")
    world.insert("moods", m_dup, m_gone, m_fine)
    world.insert("kidlisp", k_guest)
    world.insert("pieces", make_piece(bob, "line"))
    syncd(world, "backfill")
    old = OldScripts(world)

    # 1. duplicates: the old scripts re-ran and created the same mood twice more.
    old.create("alice", MOOD, _mood_value(m_dup))
    old.create("alice", MOOD, _mood_value(m_dup))
    # 2. a record for a deleted document (and one for a document that never existed).
    world.db.moods.delete_one({"_id": m_gone["_id"]})
    old.create(
        "alice", MOOD, {"mood": "ghost", "when": "2024-01-01T00:00:00.000Z", "ref": str(ObjectId())}
    )
    # 3. stale content: the moods bug (`text`, not `mood`), adopted through atproto.rkey.
    m_text = make_mood(alice, "the real text")
    world.insert("moods", m_text)
    bad = {k: v for k, v in _mood_value(m_text).items() if k != "mood"} | {"text": "the real text"}
    rkey = old.create("alice", MOOD, bad)
    world.db.moods.update_one({"_id": m_text["_id"]}, {"$set": {"atproto.rkey": rkey}})
    #    ... and a painting whose slug changed since it was published.
    world.db.paintings.update_one(
        {"_id": p_ok["_id"]}, {"$set": {"slug": p_ok["slug"] + "-renamed"}}
    )
    world.write_image("alice", p_ok["slug"] + "-renamed")
    # 4. a document whose atproto.rkey points nowhere (and one with a garbage key).
    m_nowhere = make_mood(alice, "my record was lost", atproto={"rkey": new_tid()})
    m_garbage = make_mood(alice, "garbage key", atproto={"rkey": "not-a-tid"})
    world.insert("moods", m_nowhere, m_garbage)
    # 5. a painting record without its thumbnail (the blob upload failed).
    rec = world.records_by_ref("alice", PAINTING)[str(p_nothumb["_id"])]
    value = {k: v for k, v in rec["value"].items() if k not in ("$type", "thumbnail")}
    old.put("alice", PAINTING, rec["uri"].rsplit("/", 1)[-1], value)
    # 6. a guest kidlisp that was nuked after publishing (its record must go).
    world.db.kidlisp.update_one({"_id": k_guest["_id"]}, {"$set": {"nuked": True}})
    return {"m_nowhere": m_nowhere, "m_dup": m_dup, "m_text": m_text, "text_rkey": rkey}


def test_reconcile_reports_then_fixes_the_old_scripts_mess(world: SandboxWorld) -> None:
    seeded = seed_mess(world)
    before = snapshot(world)
    docs_before = {c: list(world.db[c].find()) for c in NSIDS}

    report = syncd_json(world, "reconcile")
    assert report["apply"] is False
    counts = report["counts"]
    assert counts["duplicate"] == 2
    assert counts["orphan"] == 3  # deleted doc, never-existing doc, nuked guest kidlisp
    assert counts["stale"] == 2  # `text` mood, renamed painting
    assert counts["blob"] == 1
    assert counts["missing"] == 2  # the two moods without records
    # The dry run changed nothing: the PDS, the documents.
    assert snapshot(world) == before
    assert {c: list(world.db[c].find()) for c in NSIDS} == docs_before
    # The text report names each kind.
    text = syncd(world, "reconcile").stdout
    for kind in ("duplicate", "orphan", "stale", "blob", "missing"):
        assert kind in text
    assert "Dry run: nothing changed" in text
    # --check turns differences into exit code 1.
    syncd(world, "reconcile", "--check", expect=1)

    applied = syncd_json(world, "reconcile", "--apply")
    assert applied["applied"]["failed"] == []
    assert_converged(world)
    # Keys: the old scripts' adopted key is kept, the lost one is recreated where it pointed.
    moods = world.records_by_ref("alice", MOOD)
    assert moods[str(seeded["m_text"]["_id"])]["uri"].endswith(seeded["text_rkey"])
    assert moods[str(seeded["m_nowhere"]["_id"])]["uri"].endswith(
        seeded["m_nowhere"]["atproto"]["rkey"]
    )
    # Of the three duplicates the one at syncd's own key stayed.
    dup = world.db.moods.find_one({"_id": seeded["m_dup"]["_id"]})
    assert moods[str(seeded["m_dup"]["_id"])]["uri"].endswith(dup["atproto"]["rkey"])

    again = syncd_json(world, "reconcile")
    assert again["differences"] == 0, again["counts"]
    syncd(world, "reconcile", "--check")
    # Bob's records were never touched by the fixes (nothing differed there).
    after = snapshot(world, ["bob"])
    assert after == {k: v for k, v in before.items() if k.startswith("bob ")}


def test_reconcile_one_account_and_collection(world: SandboxWorld) -> None:
    seed_mess(world)
    out = syncd_json(
        world,
        "reconcile",
        "--account",
        world.accounts["alice"].handle or "",
        "--collections",
        "moods",
    )
    assert [a["did"] for a in out["accounts"]] == [world.did("alice")]
    assert [c["collection"] for c in out["accounts"][0]["collections"]] == ["moods"]
    syncd_json(
        world, "reconcile", "--account", world.did("alice"), "--collections", "moods", "--apply"
    )
    left = syncd_json(world, "reconcile")
    # Only alice's paintings and the guest's kidlisp are left.
    by = {
        (a["did"], c["collection"]): c["total"] for a in left["accounts"] for c in a["collections"]
    }
    assert by[(world.did("alice"), "moods")] == 0
    # stale slug; missing thumbnail (and so the document's atproto.cid is outdated)
    assert by[(world.did("alice"), "paintings")] == 3
    # the nuked document's record, its ledger row, its back-reference
    assert by[(world.did("art"), "kidlisp")] == 3
    guest = syncd_json(world, "reconcile", "--account", "art", "--apply")
    assert guest["accounts"][0]["guest"] is True
    syncd(world, "reconcile", "--account", "nobody.test", expect=2)
