"""Records as the platform writes them (platform-facts.md), end to end on the real PDS.

Each test states the platform's fact it checks, and reads the result back from the
PDS; the world (image keys, expectations) comes from ``syncd_sandbox``, never from
syncd's own code.
"""

from __future__ import annotations

import io
import json
import sqlite3
from typing import Any

from PIL import Image

from syncd_sandbox.platform import NSIDS
from syncd_sandbox.seed import make_mood, make_piece, pixel_art_png_bytes
from syncd_sandbox.syncd_process import SyncdProcess, run_cli
from syncd_sandbox.testing import SandboxWorld

from .mirror import assert_mirrored

PAINTING, MOOD, PIECE = NSIDS["paintings"], NSIDS["moods"], NSIDS["pieces"]


def thumbnail(world: SandboxWorld, who: str, record: dict[str, Any]) -> Image.Image:
    thumb = record["value"]["thumbnail"]
    data = world.api.get_blob(world.did(who), thumb["ref"]["$link"])
    assert len(data) == thumb["size"] <= 1_048_576
    image = Image.open(io.BytesIO(data))
    image.load()
    return image.convert("RGB")


def status(world: SandboxWorld) -> dict[str, Any]:
    return dict(json.loads(run_cli(world.config_path, "status", "--json").stdout))


def test_pixel_art_and_large_paintings_get_the_platforms_thumbnail(
    world: SandboxWorld, syncd: SyncdProcess
) -> None:
    """§2: 512x512 PNG, contain on black, nearest-neighbour for sources under 512."""
    art = pixel_art_png_bytes(32, 32, seed=7)
    small = world.add_painting("alice", width=32, height=32, data=art)
    wide = world.add_painting("alice", width=1024, height=512)
    old = world.add_painting("alice", width=64, height=64, layout="old")  # {sub}/{slug}.png
    prefixed = world.add_painting(
        "alice", slug=f"{world.sub('alice')}/painting/2025.01.02.03.04.05.678", width=48, height=48
    )
    syncd.start()
    syncd.wait_ready()
    syncd.wait_idle()
    assert_mirrored(world, ("paintings",))
    records = world.records_by_ref("alice", PAINTING)
    # A 32x32 painting: every 16x16 block of the thumbnail is one source pixel.
    thumb = thumbnail(world, "alice", records[str(small["_id"])])
    source = Image.open(io.BytesIO(art)).convert("RGB")
    assert thumb.size == (512, 512)
    for by in range(32):
        for bx in range(32):
            want = source.getpixel((bx, by))
            block = thumb.crop((bx * 16, by * 16, bx * 16 + 16, by * 16 + 16))
            assert block.getcolors() == [(256, want)], (bx, by)
    # A 1024x512 painting is letterboxed on black: 128 black rows above and below.
    thumb = thumbnail(world, "alice", records[str(wide["_id"])])
    assert thumb.size == (512, 512)
    for y in (0, 64, 127, 384, 511):
        assert thumb.crop((0, y, 512, y + 1)).getcolors() == [(512, (0, 0, 0))], y
    # The oldest key and the prefixed slug are found.
    for doc in (old, prefixed):
        assert thumbnail(world, "alice", records[str(doc["_id"])]).size == (512, 512)


def test_a_missing_image_gives_a_record_without_thumbnail_and_reconcile_attaches_it(
    world: SandboxWorld, syncd: SyncdProcess
) -> None:
    """§2: the platform creates the record without a thumbnail when the image is missing."""
    doc = world.add_painting("alice", image=False)
    syncd.start()
    syncd.wait_ready()
    rec = syncd.wait_until(lambda: world.records_by_ref("alice", PAINTING).get(str(doc["_id"])), 30)
    syncd.wait_idle()
    assert "thumbnail" not in rec["value"]
    first_uri = rec["uri"]
    assert status(world)["without_thumbnail"] == 1
    syncd.wait_metric("syncd_paintings_without_thumbnail", 1)
    assert status(world)["dead_letters"]["counts"] == {}  # missing is not an error
    # Nothing to do while the image is still missing...
    check = run_cli(
        world.config_path, "reconcile", "--account", world.account("alice").handle, "--check"
    )
    assert check.returncode == 0, check.stdout
    # ... and once it exists, reconcile reports it and --apply attaches it.
    world.write_image("alice", doc["slug"], width=100, height=50)
    check = run_cli(world.config_path, "reconcile", "--check")
    assert check.returncode == 1 and "the image exists now" in check.stdout, check.stdout
    fixed = run_cli(world.config_path, "reconcile", "--apply")
    assert fixed.returncode == 0, fixed.stdout
    rec = syncd.wait_until(
        lambda: (
            (r := world.records_by_ref("alice", PAINTING)[str(doc["_id"])])
            and "thumbnail" in r["value"]
            and r
        ),
        30,
    )
    assert thumbnail(world, "alice", rec).size == (512, 512)
    assert rec["uri"] == first_uri  # the same record: key and other fields unchanged
    syncd.wait_idle()
    assert_mirrored(world, ("paintings",))


def test_published_lexicons_moods_pieces_and_wip(world: SandboxWorld, syncd: SyncdProcess) -> None:
    """§3 and §4: no mood grapheme limit; piece records are exactly $type, slug, when, ref;
    a WIP painting is skipped until it is finished."""
    long_mood = make_mood(world.sub("alice"), "m" * 3000)
    too_long = make_mood(world.sub("alice"), "m" * 5001)
    piece = make_piece(world.sub("bob"), "wand", code="wnd", source="x", ext="mjs")
    world.insert("moods", long_mood, too_long)
    world.insert("pieces", piece)
    wip = world.add_painting("alice", slug="wip/abc123", status="wip")
    syncd.start()
    syncd.wait_ready()
    syncd.wait_idle()
    moods = world.records_by_ref("alice", MOOD)
    assert len(moods[str(long_mood["_id"])]["value"]["mood"]) == 3000
    assert str(too_long["_id"]) not in moods
    dead = {d["id"]: d for d in status(world)["dead_letters"]["recent"]}
    letter = dead[str(too_long["_id"])]
    assert letter["reason"] == "lexicon_invalid" and "mood" in letter["detail"]
    assert "5000" in letter["detail"]  # the reason names the field and the limit
    value = world.records_by_ref("bob", PIECE)[str(piece["_id"])]["value"]
    assert set(value) == {"$type", "slug", "when", "ref"}
    assert str(wip["_id"]) not in world.records_by_ref("alice", PAINTING)
    assert status(world)["skipped"]["paintings"] == {"wip": 1}
    assert str(wip["_id"]) not in dead
    # Finished: the platform gives it its final slug and publishes it.
    world.write_image("alice", "2025.06.01.10.00.00.000", width=64, height=64)
    world.db.paintings.update_one(
        {"_id": wip["_id"]}, {"$set": {"status": "done", "slug": "2025.06.01.10.00.00.000"}}
    )
    syncd.wait_until(lambda: str(wip["_id"]) in world.records_by_ref("alice", PAINTING), 30)
    syncd.wait_idle()
    assert status(world)["skipped"].get("paintings", {}) == {}
    assert_mirrored(world, ("paintings", "moods", "pieces"))


def test_old_way_thumbnails_are_reported_and_remade_by_reconcile_only(
    world: SandboxWorld, syncd: SyncdProcess
) -> None:
    """A record an earlier syncd made with the old thumbnail (aspect kept, never upscaled)
    is left alone by the daemon, reported by `reconcile`, and re-made by `--apply` under
    its key with its other fields unchanged."""
    doc = world.add_painting("alice", width=200, height=100)
    syncd.start()
    syncd.wait_ready()
    rec = syncd.wait_until(lambda: world.records_by_ref("alice", PAINTING).get(str(doc["_id"])), 30)
    syncd.wait_idle()
    syncd.terminate()
    # What the earlier syncd left: a 200x100 thumbnail, and a ledger row of its version.
    rkey = rec["uri"].rsplit("/", 1)[1]
    old = Image.new("RGB", (200, 100), (200, 30, 30))
    buf = io.BytesIO()
    old.save(buf, format="PNG")
    token = world.access_token("alice")
    blob = world.api.upload_blob(token, buf.getvalue())
    value = {**rec["value"], "thumbnail": blob}
    put = world.api.procedure(
        "com.atproto.repo.putRecord",
        {"repo": world.did("alice"), "collection": PAINTING, "rkey": rkey, "record": value},
        token=token,
    )
    db = sqlite3.connect(world.state_dir / "syncd.sqlite3")
    with db:
        db.execute(
            "UPDATE ledger SET fingerprint='v1', blob_cid=?, cid=? WHERE doc_key=?",
            (blob["ref"]["$link"], put["cid"], str(doc["_id"])),
        )
    db.close()
    syncd.start()
    syncd.wait_ready()
    syncd.wait_idle()
    rec = world.records_by_ref("alice", PAINTING)[str(doc["_id"])]
    assert thumbnail(world, "alice", rec).size == (200, 100)  # nothing behind the operator's back
    check = run_cli(world.config_path, "reconcile", "--check")
    assert check.returncode == 1 and "old way" in check.stdout, check.stdout
    assert run_cli(world.config_path, "reconcile", "--apply").returncode == 0
    syncd.wait_idle()
    after = world.records_by_ref("alice", PAINTING)[str(doc["_id"])]
    assert after["uri"] == rec["uri"]
    assert thumbnail(world, "alice", after).size == (512, 512)
    assert {k: v for k, v in after["value"].items() if k != "thumbnail"} == {
        k: v for k, v in rec["value"].items() if k != "thumbnail"
    }
    assert run_cli(world.config_path, "reconcile", "--check").returncode == 0
    assert_mirrored(world, ("paintings",))


def _platform_writes(world: SandboxWorld, who: str, nsid: str, record: dict[str, Any]) -> str:
    """The platform's inline writer: createRecord with a PDS-picked key, as it does for
    whatever a user saved (the PDS does not validate a lexicon it does not know)."""
    made = world.api.procedure(
        "com.atproto.repo.createRecord",
        {"repo": world.did(who), "collection": nsid, "record": {"$type": nsid, **record}},
        token=world.access_token(who),
    )
    return str(made["uri"]).rsplit("/", 1)[1]


def test_a_platform_record_of_an_unpublishable_document_is_removed_and_its_key_unset(
    world: SandboxWorld, syncd: SyncdProcess
) -> None:
    """Issue 13: over a published limit, or an image that is not an image, is a dead
    letter -- and a dead letter has no record, not even the one the platform's inline
    writer made for it; its ``atproto.rkey`` is unset. A record of another document at
    the same collection is never touched."""
    alice = world.sub("alice")
    too_long = make_mood(alice, "m" * 5001)
    painting = world.add_painting("alice", data=b"this is not a png at all")
    other = make_mood(alice, "fine")
    keys = {
        "moods": _platform_writes(
            world,
            "alice",
            MOOD,
            {
                "mood": too_long["mood"],
                "when": "2025-01-01T00:00:00.000Z",
                "ref": str(too_long["_id"]),
            },
        ),
        "paintings": _platform_writes(
            world,
            "alice",
            PAINTING,
            {
                "slug": painting["slug"],
                "when": "2025-01-01T00:00:00.000Z",
                "ref": str(painting["_id"]),
            },
        ),
    }
    stranger = _platform_writes(
        world,
        "alice",
        MOOD,
        {"mood": "fine", "when": "2025-01-01T00:00:00.000Z", "ref": str(other["_id"])},
    )
    too_long["atproto"] = {"rkey": keys["moods"]}
    other["atproto"] = {"rkey": stranger}
    world.insert("moods", too_long, other)
    world.db.paintings.update_one(
        {"_id": painting["_id"]}, {"$set": {"atproto": {"rkey": keys["paintings"]}}}
    )
    # Bob has nothing else syncd would write, and his mood is refused before any writer
    # sees it (``mood`` is a number): his writer exists only to remove this record.
    lonely = make_mood(world.sub("bob"), "b")
    lonely["mood"] = 12345
    lonely_key = _platform_writes(
        world,
        "bob",
        MOOD,
        {"mood": "12345", "when": "2025-01-01T00:00:00.000Z", "ref": str(lonely["_id"])},
    )
    lonely["atproto"] = {"rkey": lonely_key}
    world.insert("moods", lonely)
    assert world.get_record("bob", MOOD, lonely_key) is not None
    assert world.get_record("alice", PAINTING, keys["paintings"]) is not None
    syncd.start()
    syncd.wait_ready()
    syncd.wait_idle()
    assert world.get_record("bob", MOOD, lonely_key) is None
    assert world.get_record("alice", MOOD, keys["moods"]) is None
    assert world.get_record("alice", PAINTING, keys["paintings"]) is None
    assert world.get_record("alice", MOOD, stranger) is not None
    for coll, doc in (("moods", too_long), ("paintings", painting), ("moods", lonely)):
        now = world.db[coll].find_one({"_id": doc["_id"]}) or {}
        assert "rkey" not in (now.get("atproto") or {}), (coll, now.get("atproto"))
    dead = {d["id"]: d["reason"] for d in status(world)["dead_letters"]["recent"]}
    assert dead[str(too_long["_id"])] == "lexicon_invalid"
    assert str(painting["_id"]) in dead
    assert_mirrored(world, ("moods", "paintings"))
