"""The invariant checker as an independent witness, tested without syncd.

A tiny world is built by writing records straight to the PDS; the records and
thumbnails are spelled out here by hand from platform-facts.md (not with the
world's own builders), then broken one way at a time: each violation kind must
be found, and the correct state must pass.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
from bson import ObjectId
from PIL import Image

from syncd_sandbox.invariant import EXEMPT, HIDDEN, INVALID, PUBLISH, InvariantReport
from syncd_sandbox.pds import new_tid
from syncd_sandbox.seed import make_kidlisp, make_mood, make_piece, pixel_art_png_bytes, png_bytes
from syncd_sandbox.testing import SandboxWorld

pytestmark = pytest.mark.slow

PAINTING = "computer.aesthetic.painting"
MOOD = "computer.aesthetic.mood"
PIECE = "computer.aesthetic.piece"
KIDLISP = "computer.aesthetic.kidlisp"
SITE = "https://aesthetic.computer"


def when(doc: dict[str, Any]) -> str:
    w = doc["when"]
    return w.strftime("%Y-%m-%dT%H:%M:%S.") + f"{w.microsecond // 1000:03d}Z"


def png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def nearest_512(src: bytes) -> bytes:
    """By hand: a square source scaled up to 512x512 with nearest-neighbour."""
    return png(
        Image.open(io.BytesIO(src)).convert("RGB").resize((512, 512), Image.Resampling.NEAREST)
    )


def letterboxed(src: bytes, ground: tuple[int, int, int] = (0, 0, 0)) -> bytes:
    """By hand: a 1024x512 source fitted into 512x256, centred on ``ground``."""
    fitted = Image.open(io.BytesIO(src)).convert("RGB").resize((512, 256), Image.Resampling.LANCZOS)
    canvas = Image.new("RGB", (512, 512), ground)
    canvas.paste(fitted, (0, 128))
    return png(canvas)


@dataclass
class Tiny:
    w: SandboxWorld
    docs: dict[str, dict[str, Any]] = field(default_factory=dict)
    uris: dict[str, str] = field(default_factory=dict)
    sources: dict[str, bytes] = field(default_factory=dict)

    def token(self, who: str) -> str:
        return self.w.session_token(who)

    def put(self, who: str, nsid: str, value: dict[str, Any], rkey: str | None = None) -> str:
        out = self.w.api.procedure(
            "com.atproto.repo.putRecord",
            {
                "repo": self.w.did(None if who == "art" else who),
                "collection": nsid,
                "rkey": rkey or new_tid(),
                "record": value,
            },
            token=self.token(who),
        )
        return str(out["uri"])

    def delete(self, uri: str) -> None:
        did, nsid, rkey = uri.removeprefix("at://").split("/")
        who = self.w.account(did).name
        self.w.api.procedure(
            "com.atproto.repo.deleteRecord",
            {"repo": did, "collection": nsid, "rkey": rkey},
            token=self.token(who),
        )

    def blob(self, who: str, data: bytes) -> dict[str, Any]:
        return self.w.api.upload_blob(self.token(who), data, "image/png")

    def publish(self, name: str, who: str, nsid: str, value: dict[str, Any], coll: str) -> str:
        """Write the record and its back-reference, as a correct writer does."""
        uri = self.put(who, nsid, value)
        doc = self.docs[name]
        self.w.db[coll].update_one(
            {"_id": doc["_id"]},
            {"$set": {"atproto": {"rkey": uri.rsplit("/", 1)[-1], "uri": uri}}},
        )
        self.uris[name] = uri
        return uri

    def value(self, name: str) -> dict[str, Any]:
        did, nsid, rkey = self.uris[name].removeprefix("at://").split("/")
        rec = self.w.api.get_record(did, nsid, rkey)
        assert rec is not None
        return dict(rec["value"])

    def check(self) -> InvariantReport:
        return self.w.check_invariant()


def painting_value(doc: dict[str, Any], **extra: Any) -> dict[str, Any]:
    code = doc["code"]
    return {
        "$type": PAINTING,
        "slug": doc["slug"],
        "code": code,
        "imageUrl": f"{SITE}/media/paintings/{code}",
        "acUrl": f"{SITE}/#{code}",
        "when": when(doc),
        "ref": str(doc["_id"]),
        **extra,
    }


@pytest.fixture
def tiny(world: SandboxWorld) -> Tiny:
    t = Tiny(world)
    alice, bob = world.sub("alice"), world.sub("bob")
    # P1: 32x32 pixel art at {sub}/painting/{slug}.png with a recording zip.
    src = pixel_art_png_bytes(32, 32, seed=7)
    t.docs["p1"] = world.add_painting("alice", data=src, recording=True)
    t.sources["p1"] = src
    # P2: a guest 1024x512 painting, slug image:recording, no zip stored.
    src = png_bytes(1024, 512, seed=8)
    t.docs["p2"] = world.add_painting(None, "pic-2:rec-2", data=src)
    t.sources["p2"] = src
    # P3: its image is missing from storage.
    t.docs["p3"] = world.add_painting("alice", image=False)
    # P4: one of the oldest objects, at {sub}/{slug}.png.
    src = pixel_art_png_bytes(64, 64, seed=9)
    t.docs["p4"] = world.add_painting("alice", data=src, layout="old")
    t.sources["p4"] = src
    # P5: work in progress.
    t.docs["p5"] = world.add_painting("alice", "wip/abc123", status="wip")
    t.docs["m1"] = world.insert("moods", make_mood(alice or "", "a" * 3000))[0]
    t.docs["m2"] = world.insert("moods", make_mood(alice or "", "b" * 5001))[0]
    t.docs["piece"] = world.insert("pieces", make_piece(bob, "starfield", code="sf1", source="x"))[
        0
    ]
    t.docs["nuked"] = world.insert("pieces", make_piece(bob, "gone", nuked=True))[0]
    t.docs["kid"] = world.insert("kidlisp", make_kidlisp(None, "k1", "(wipe red)"))[0]

    d = t.docs
    t.publish(
        "p1",
        "alice",
        PAINTING,
        painting_value(
            d["p1"],
            recordingUrl=f"{SITE}/media/paintings/{d['p1']['code']}.zip",
            thumbnail=t.blob("alice", nearest_512(t.sources["p1"])),
        ),
        "paintings",
    )
    t.publish(
        "p2",
        "art",
        PAINTING,
        painting_value(d["p2"], thumbnail=t.blob("art", letterboxed(t.sources["p2"]))),
        "paintings",
    )
    t.publish("p3", "alice", PAINTING, painting_value(d["p3"]), "paintings")
    t.publish(
        "p4",
        "alice",
        PAINTING,
        painting_value(d["p4"], thumbnail=t.blob("alice", nearest_512(t.sources["p4"]))),
        "paintings",
    )
    t.publish(
        "m1",
        "alice",
        MOOD,
        {"$type": MOOD, "mood": "a" * 3000, "when": when(d["m1"]), "ref": str(d["m1"]["_id"])},
        "moods",
    )
    t.publish(
        "piece",
        "bob",
        PIECE,
        {
            "$type": PIECE,
            "slug": "starfield",
            "when": when(d["piece"]),
            "ref": str(d["piece"]["_id"]),
        },
        "pieces",
    )
    t.publish(
        "kid",
        "art",
        KIDLISP,
        {
            "$type": KIDLISP,
            "code": "k1",
            "source": "(wipe red)",
            "acUrl": f"{SITE}/$k1",
            "when": when(d["kid"]),
            "ref": str(d["kid"]["_id"]),
        },
        "kidlisp",
    )
    return t


def kinds(report: InvariantReport) -> dict[str, int]:
    return report.by_kind()


def key(t: Tiny, name: str) -> str:
    return str(t.docs[name]["_id"])


def only(report: InvariantReport, kind: str, name: str, t: Tiny) -> str:
    """The report has exactly one violation, of ``kind``, for document ``name``; its detail."""
    assert kinds(report) == {kind: 1}, report.summary()
    v = report.violations[0]
    assert v.doc == key(t, name), report.summary()
    return v.detail


def test_a_correct_world_passes(tiny: Tiny) -> None:
    report = tiny.check()
    assert report.ok, report.summary()
    assert report.expected_records == 7
    assert report.records_checked == 7
    assert report.blobs_checked == 3
    states = {name: report.expectations[(c, key(tiny, name))].state for name, c in [
        ("p1", "paintings"), ("p3", "paintings"), ("p5", "paintings"), ("m1", "moods"),
        ("m2", "moods"), ("nuked", "pieces"), ("kid", "kidlisp"),
    ]}  # fmt: skip
    assert states == {
        "p1": PUBLISH,
        "p3": PUBLISH,  # published without a thumbnail
        "p5": HIDDEN,  # status wip
        "m1": PUBLISH,  # 3,000 characters are within the published 5,000
        "m2": INVALID,  # 5,001 are not
        "nuked": HIDDEN,
        "kid": PUBLISH,
    }
    p4 = report.expectations[("paintings", key(tiny, "p4"))]
    assert p4.image_url is not None and p4.image_url.endswith(f"/{tiny.docs['p4']['slug']}.png")
    assert "/painting/" not in p4.image_url  # found at the oldest key
    # A syncd config works as before (the world's syncd.toml, read for its image template).
    assert tiny.w.check_invariant(config=tiny.w.config, image_url_template=None).ok


def test_missing(tiny: Tiny) -> None:
    tiny.delete(tiny.uris["piece"])
    tiny.w.db.pieces.update_one({"_id": tiny.docs["piece"]["_id"]}, {"$unset": {"atproto": 1}})
    only(tiny.check(), "missing", "piece", tiny)


def test_duplicate(tiny: Tiny) -> None:
    tiny.put("alice", MOOD, tiny.value("m1"))
    only(tiny.check(), "duplicate", "m1", tiny)


def test_orphans(tiny: Tiny) -> None:
    gone = str(ObjectId())
    tiny.put(
        "bob", PIECE, {"$type": PIECE, "slug": "x", "when": "2025-01-01T00:00:00.000Z", "ref": gone}
    )
    report = tiny.check()
    assert kinds(report) == {"orphan": 1} and report.violations[0].doc == gone, report.summary()
    # A document over a published limit must have no record.
    m2 = tiny.docs["m2"]
    tiny.put(
        "alice", MOOD, {"$type": MOOD, "mood": m2["mood"], "when": when(m2), "ref": str(m2["_id"])}
    )
    assert kinds(tiny.check()) == {"orphan": 2}


def test_wrong_repo(tiny: Tiny) -> None:
    tiny.put("bob", MOOD, tiny.value("m1"))
    report = tiny.check()
    assert kinds(report) == {"wrong_repo": 1}, report.summary()
    assert report.violations[0].did == tiny.w.did("bob")


def test_piece_with_code_is_stale(tiny: Tiny) -> None:
    """The published piece lexicon has no code, extension or acUrl."""
    tiny.put(
        "bob", PIECE, {**tiny.value("piece"), "code": "sf1"}, tiny.uris["piece"].rsplit("/", 1)[1]
    )
    assert "code" in only(tiny.check(), "stale", "piece", tiny)


def test_mood_when_a_few_ms_off_is_stale(tiny: Tiny) -> None:
    """What the platform's inline writer leaves behind: a fresh `when`."""
    m1 = tiny.docs["m1"]
    off = dict(m1, when=m1["when"] + timedelta(milliseconds=7))
    tiny.put(
        "alice", MOOD, {**tiny.value("m1"), "when": when(off)}, tiny.uris["m1"].rsplit("/", 1)[1]
    )
    assert "when" in only(tiny.check(), "stale", "m1", tiny)


def test_nonpublic_published(tiny: Tiny) -> None:
    p5 = tiny.docs["p5"]
    tiny.put("alice", PAINTING, painting_value(p5))
    assert "wip" in only(tiny.check(), "nonpublic_published", "p5", tiny)


def test_bad_backrefs(tiny: Tiny) -> None:
    tiny.w.db.kidlisp.update_one(
        {"_id": tiny.docs["kid"]["_id"]}, {"$set": {"atproto.rkey": new_tid()}}
    )
    only(tiny.check(), "bad_backref", "kid", tiny)
    tiny.w.db.kidlisp.update_one(
        {"_id": tiny.docs["kid"]["_id"]},
        {"$set": {"atproto.rkey": tiny.uris["kid"].rsplit("/", 1)[1], "atproto.uri": "at://x/y/z"}},
    )
    only(tiny.check(), "bad_backref", "kid", tiny)
    tiny.w.db.kidlisp.update_one(
        {"_id": tiny.docs["kid"]["_id"]}, {"$set": {"atproto.uri": tiny.uris["kid"]}}
    )
    # A document that must have no record carries no (TID) back-reference; garbage is left alone.
    tiny.w.db.paintings.update_one(
        {"_id": tiny.docs["p5"]["_id"]}, {"$set": {"atproto.rkey": new_tid()}}
    )
    only(tiny.check(), "bad_backref", "p5", tiny)
    tiny.w.db.paintings.update_one({"_id": tiny.docs["p5"]["_id"]}, {"$set": {"atproto.rkey": 5}})
    assert tiny.check().ok


def test_bad_rkey(tiny: Tiny) -> None:
    tiny.delete(tiny.uris["kid"])
    kid = tiny.docs["kid"]
    uri = tiny.put(
        "art",
        KIDLISP,
        {"$type": KIDLISP, "code": "k1", "source": "(wipe red)", "acUrl": f"{SITE}/$k1",
         "when": when(kid), "ref": str(kid["_id"])},
        rkey="not-a-tid",
    )  # fmt: skip
    tiny.w.db.kidlisp.update_one(
        {"_id": kid["_id"]}, {"$set": {"atproto": {"rkey": "not-a-tid", "uri": uri}}}
    )
    only(tiny.check(), "bad_rkey", "kid", tiny)


def test_old_style_small_thumbnail_is_stale(tiny: Tiny) -> None:
    value = tiny.value("p1")
    value["thumbnail"] = tiny.blob("alice", tiny.sources["p1"])  # the 32x32 source itself
    tiny.put("alice", PAINTING, value, tiny.uris["p1"].rsplit("/", 1)[1])
    assert "32x32" in only(tiny.check(), "stale", "p1", tiny)


def test_white_letterbox_is_stale(tiny: Tiny) -> None:
    value = tiny.value("p2")
    value["thumbnail"] = tiny.blob("art", letterboxed(tiny.sources["p2"], (255, 255, 255)))
    tiny.put("art", PAINTING, value, tiny.uris["p2"].rsplit("/", 1)[1])
    assert "letterbox" in only(tiny.check(), "stale", "p2", tiny)


def test_thumbnail_exactly_when_the_image_exists(tiny: Tiny) -> None:
    value = tiny.value("p3")  # image missing: no thumbnail allowed
    value["thumbnail"] = tiny.blob("alice", nearest_512(tiny.sources["p1"]))
    tiny.put("alice", PAINTING, value, tiny.uris["p3"].rsplit("/", 1)[1])
    assert "image missing" in only(tiny.check(), "stale", "p3", tiny)
    value.pop("thumbnail")
    tiny.put("alice", PAINTING, value, tiny.uris["p3"].rsplit("/", 1)[1])
    value = tiny.value("p4")  # image exists: a thumbnail is required
    value.pop("thumbnail")
    tiny.put("alice", PAINTING, value, tiny.uris["p4"].rsplit("/", 1)[1])
    assert "no thumbnail" in only(tiny.check(), "stale", "p4", tiny)


def test_the_first_candidate_key_wins(tiny: Tiny) -> None:
    """An image at {sub}/painting/{slug}.png is the painting, even if the oldest key has one."""
    tiny.w.write_image("alice", tiny.docs["p4"]["slug"], data=pixel_art_png_bytes(64, 64, seed=99))
    assert "nearest" in only(tiny.check(), "stale", "p4", tiny)


def test_recording_url_exactly_when_the_zip_exists(tiny: Tiny) -> None:
    value = tiny.value("p1")
    value.pop("recordingUrl")
    tiny.put("alice", PAINTING, value, tiny.uris["p1"].rsplit("/", 1)[1])
    assert "recordingUrl" in only(tiny.check(), "stale", "p1", tiny)
    # The zip turns up (for the guest painting: the part after ':' names it).
    tiny.w.write_image(None, tiny.docs["p2"]["slug"], data=tiny.sources["p2"], recording=True)
    report = tiny.check()
    assert kinds(report) == {"stale": 2}, report.summary()


def test_unverifiable_image_store(tiny: Tiny) -> None:
    tiny.w.images.fail_next(503, count=1000)
    report = tiny.check()
    assert set(kinds(report)) == {"unverifiable"}, report.summary()


def test_legacy_mongo_id_records(tiny: Tiny) -> None:
    """Early moods' records carry mongoId instead of ref: the document's record, but stale."""
    alice = tiny.w.sub("alice") or ""
    legacy = tiny.w.insert("moods", make_mood(alice, "an early mood"))[0]
    value = {
        "$type": MOOD,
        "mood": "an early mood",
        "when": when(legacy),
        "mongoId": str(legacy["_id"]),
    }
    uri = tiny.put("alice", MOOD, value)
    tiny.w.db.moods.update_one(
        {"_id": legacy["_id"]}, {"$set": {"atproto.rkey": uri.rsplit("/", 1)[1]}}
    )
    report = tiny.check()
    assert kinds(report) == {"stale": 1}, report.summary()  # not an orphan, not missing
    assert report.violations[0].doc == str(legacy["_id"])
    # A ref record beside the legacy one: two records for one document.
    tiny.put(
        "alice",
        MOOD,
        {**{k: v for k, v in value.items() if k != "mongoId"}, "ref": str(legacy["_id"])},
    )
    assert kinds(tiny.check()) == {"duplicate": 1}
    # A legacy record whose document is gone is an orphan.
    tiny.w.db.moods.delete_one({"_id": legacy["_id"]})
    assert kinds(tiny.check()) == {"orphan": 2}


def test_exempt_accounts_are_not_checked(tiny: Tiny) -> None:
    tiny.delete(tiny.uris["piece"])
    report = tiny.w.check_invariant(exempt_dids=[tiny.w.did("bob")])
    assert report.ok, report.summary()
    assert report.expectations[("pieces", key(tiny, "piece"))].state == EXEMPT
