"""The world's own reading of platform-facts.md: visibility, records, limits, TIDs, thumbnails.

No servers: these run in the fast tier. Expected values are written out by hand
from the facts, not computed with the code under test.
"""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta, timezone

import pytest
from bson import DatetimeMS, ObjectId
from PIL import Image

from syncd_sandbox import platform, thumbs
from syncd_sandbox.seed import pixel_art_png_bytes, png_bytes

OID = ObjectId("65f0c0ffee0123456789abcd")
WHEN = datetime(2025, 3, 1, 12, 0, 0, 123000, tzinfo=UTC)


def _png(img: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def meta(blob: bytes, mime: str = "image/png") -> dict[str, object]:
    return {"$type": "blob", "ref": {"$link": "x"}, "mimeType": mime, "size": len(blob)}


# -- visibility (§4) ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("collection", "extra", "public"),
    [
        ("paintings", {}, True),
        ("paintings", {"nuked": True}, False),
        ("paintings", {"status": "wip"}, False),
        ("paintings", {"status": "done"}, True),
        ("moods", {"deleted": True}, False),
        ("pieces", {"deleted": True}, False),
        ("kidlisp", {"private": True}, False),
        ("kidlisp", {"draft": True}, False),
        ("pieces", {"hidden": True}, False),
        ("kidlisp", {"visibility": "unlisted"}, False),
        ("kidlisp", {"visibility": "public"}, True),
        ("moods", {"nuked": False, "deleted": False}, True),
        ("pieces", {"status": "wip"}, True),  # WIP is a painting status
    ],
)
def test_visibility(collection: str, extra: dict[str, object], public: bool) -> None:
    assert platform.is_public(collection, {"_id": OID, **extra}) is public


def test_owner() -> None:
    assert platform.owner_of("paintings", {}) is None  # guest
    assert platform.owner_of("kidlisp", {"user": None}) is None
    assert platform.owner_of("pieces", {"user": "auth0|x"}) == "auth0|x"
    for bad in ({"user": 5}, {"user": ""}):
        with pytest.raises(platform.Invalid):
            platform.owner_of("paintings", bad)
    with pytest.raises(platform.Invalid):
        platform.owner_of("moods", {})  # every mood has a user
    assert platform.account_of({"atproto": {"did": "did:plc:a", "password": "p"}}) == (
        "did:plc:a",
        "p",
    )
    assert platform.account_of({"atproto": {"did": "did:plc:a"}}) is None
    assert platform.account_of({}) is None


# -- records (§3, source-system shapes) ------------------------------------------------


def test_painting_record() -> None:
    doc = {"_id": OID, "slug": "2025.03.01", "code": "abc12", "when": WHEN}
    assert platform.record_for("paintings", doc) == {
        "$type": "computer.aesthetic.painting",
        "slug": "2025.03.01",
        "code": "abc12",
        "imageUrl": "https://aesthetic.computer/media/paintings/abc12",
        "acUrl": "https://aesthetic.computer/#abc12",
        "when": "2025-03-01T12:00:00.123Z",
        "ref": "65f0c0ffee0123456789abcd",
    }
    assert platform.painting_recording_url("abc12") == (
        "https://aesthetic.computer/media/paintings/abc12.zip"
    )


def test_mood_piece_kidlisp_records() -> None:
    assert platform.record_for("moods", {"_id": OID, "mood": "hi", "when": WHEN}) == {
        "$type": "computer.aesthetic.mood",
        "mood": "hi",
        "when": "2025-03-01T12:00:00.123Z",
        "ref": "65f0c0ffee0123456789abcd",
    }
    piece = {"_id": OID, "slug": "wipe", "when": WHEN, "code": "w1", "source": "x", "ext": "mjs"}
    assert platform.record_for("pieces", piece) == {
        "$type": "computer.aesthetic.piece",
        "slug": "wipe",
        "when": "2025-03-01T12:00:00.123Z",
        "ref": "65f0c0ffee0123456789abcd",
    }
    kid = {"_id": OID, "code": "k9", "source": "(wipe red)", "when": WHEN}
    assert platform.record_for("kidlisp", kid) == {
        "$type": "computer.aesthetic.kidlisp",
        "code": "k9",
        "source": "(wipe red)",
        "acUrl": "https://aesthetic.computer/$k9",
        "when": "2025-03-01T12:00:00.123Z",
        "ref": "65f0c0ffee0123456789abcd",
    }


def test_when_is_utc_with_milliseconds() -> None:
    plus2 = timezone(timedelta(hours=2))
    assert platform.when_string(datetime(2025, 1, 1, 2, 0, 0, 5000, tzinfo=plus2)) == (
        "2025-01-01T00:00:00.005Z"
    )
    assert platform.when_string(datetime(2025, 1, 1)) == "2025-01-01T00:00:00.000Z"
    for bad in ("2025-01-01", 5, None, DatetimeMS(2**62)):
        with pytest.raises(platform.Invalid):
            platform.when_string(bad)


@pytest.mark.parametrize(
    ("collection", "field", "limit"),
    [
        ("moods", "mood", 5000),
        ("paintings", "slug", 128),
        ("paintings", "code", 10),
        ("pieces", "slug", 100),
        ("kidlisp", "source", 50_000),
        ("kidlisp", "code", 10),
    ],
)
def test_published_limits(collection: str, field: str, limit: int) -> None:
    base = {
        "paintings": {"slug": "s", "code": "c"},
        "moods": {"mood": "m"},
        "pieces": {"slug": "s"},
        "kidlisp": {"code": "c", "source": "s"},
    }[collection]
    doc = {"_id": OID, "when": WHEN, **base}
    assert platform.record_for(collection, {**doc, field: "x" * limit})[field] == "x" * limit
    with pytest.raises(platform.Invalid, match=field):
        platform.record_for(collection, {**doc, field: "x" * (limit + 1)})


def test_mood_limits_are_the_published_ones() -> None:
    doc = {"_id": OID, "when": WHEN, "user": "auth0|x"}
    # 3,000 characters: over the internal copy's 2,000 graphemes, within the published 5,000.
    assert len(platform.record_for("moods", {**doc, "mood": "a" * 3000})["mood"]) == 3000
    with pytest.raises(platform.Invalid):
        platform.record_for("moods", {**doc, "mood": "a" * 5001})
    # Lengths are UTF-8 bytes: 1,250 four-byte emoji fill 5,000 bytes.
    assert platform.record_for("moods", {**doc, "mood": "🌈" * 1250})
    with pytest.raises(platform.Invalid):
        platform.record_for("moods", {**doc, "mood": "🌈" * 1251})


@pytest.mark.parametrize(
    "doc",
    [
        {"_id": "not-an-oid", "mood": "m", "when": WHEN},
        {"_id": OID, "mood": "", "when": WHEN},
        {"_id": OID, "mood": 5, "when": WHEN},
        {"_id": OID, "mood": "bad \udced utf-8", "when": WHEN},
        {"_id": OID, "mood": "m", "when": "2025-01-01"},
        {"_id": OID, "mood": "m"},
    ],
)
def test_invalid_documents(doc: dict[str, object]) -> None:
    with pytest.raises(platform.Invalid):
        platform.record_for("moods", doc)


def test_code_must_make_a_uri() -> None:
    with pytest.raises(platform.Invalid, match="URI"):
        platform.record_for("paintings", {"_id": OID, "slug": "s", "code": "a b", "when": WHEN})


def test_tid_syntax() -> None:
    assert platform.is_tid("3m3vgntow732z")
    for bad in (
        "3m3vgntow732",
        "3m3vgntow732zz",
        "zm3vgntow732z",
        "3M3VGNTOW732Z",
        "3m3vgntow7321",
        5,
    ):
        assert not platform.is_tid(bad)


def test_record_identity() -> None:
    assert platform.record_identity({"ref": "a", "mongoId": "b"}) == "a"
    assert platform.record_identity({"mongoId": "b"}) == "b"
    assert platform.record_identity({}) is None


def test_doc_key() -> None:
    assert platform.doc_key(OID) == "65f0c0ffee0123456789abcd"
    assert platform.doc_key("x").startswith("bson:")
    assert platform.doc_key("x") != platform.doc_key(1)


# -- thumbnails (§2) --------------------------------------------------------------------


def test_pixel_art_gets_crisp_blocks() -> None:
    src = pixel_art_png_bytes(32, 32, seed=1)
    # By hand: every source pixel becomes a 16x16 block.
    expected = (
        Image.open(io.BytesIO(src)).convert("RGB").resize((512, 512), Image.Resampling.NEAREST)
    )
    good = _png(expected)
    assert thumbs.check_thumbnail(good, meta(good), src) is None
    made, mime = thumbs.make_thumbnail(src)
    assert mime == "image/png" and Image.open(io.BytesIO(made)).size == (512, 512)
    assert thumbs.check_thumbnail(made, meta(made), src) is None
    # The old style: the 32x32 source itself, or a smooth upscale.
    assert "32x32" in (thumbs.check_thumbnail(src, meta(src), src) or "")
    smooth = _png(
        Image.open(io.BytesIO(src)).convert("RGB").resize((512, 512), Image.Resampling.BILINEAR)
    )
    assert "nearest" in (thumbs.check_thumbnail(smooth, meta(smooth), src) or "")


def test_small_non_square_sources_are_letterboxed_nearest() -> None:
    src = pixel_art_png_bytes(64, 16, seed=2)
    block = Image.open(io.BytesIO(src)).convert("RGB").resize((512, 128), Image.Resampling.NEAREST)
    canvas = Image.new("RGB", (512, 512))
    canvas.paste(block, (0, 192))
    good = _png(canvas)
    assert thumbs.check_thumbnail(good, meta(good), src) is None
    shifted = Image.new("RGB", (512, 512))
    shifted.paste(block, (0, 0))  # not centred: content where the letterbox should be
    bad = _png(shifted)
    assert thumbs.check_thumbnail(bad, meta(bad), src) is not None


def test_large_sources_are_fitted_on_black() -> None:
    src = png_bytes(1024, 512, seed=4)
    fitted = Image.open(io.BytesIO(src)).convert("RGB").resize((512, 256), Image.Resampling.LANCZOS)
    black = Image.new("RGB", (512, 512), (0, 0, 0))
    black.paste(fitted, (0, 128))
    good = _png(black)
    assert thumbs.check_thumbnail(good, meta(good), src) is None
    white = Image.new("RGB", (512, 512), (255, 255, 255))
    white.paste(fitted, (0, 128))
    bad = _png(white)
    assert "letterbox" in (thumbs.check_thumbnail(bad, meta(bad), src) or "")
    stretched = _png(Image.open(io.BytesIO(src)).convert("RGB").resize((512, 512)))
    assert thumbs.check_thumbnail(stretched, meta(stretched), src) is not None
    transparent = Image.new("RGBA", (512, 512), (0, 0, 0, 0))
    transparent.paste(fitted, (0, 128))
    clear = _png(transparent)
    assert "transparent" in (thumbs.check_thumbnail(clear, meta(clear), src) or "")
    other = thumbs.make_thumbnail(png_bytes(1024, 512, seed=5))[0]
    assert "content" in (thumbs.check_thumbnail(other, meta(other), src) or "")


def test_blob_metadata_and_format() -> None:
    src = png_bytes(600, 600, seed=6)
    good, _ = thumbs.make_thumbnail(src)
    assert thumbs.check_thumbnail(good, meta(good), src) is None
    assert thumbs.check_thumbnail(None, meta(good), src) == "thumbnail blob not on the PDS"
    assert "size" in (thumbs.check_thumbnail(good, {**meta(good), "size": 1}, src) or "")
    assert "declared" in (thumbs.check_thumbnail(good, meta(good, "image/jpeg"), src) or "")
    jpeg = _png(Image.open(io.BytesIO(good)), "JPEG")
    assert "PNG fits" in (thumbs.check_thumbnail(jpeg, meta(jpeg, "image/jpeg"), src) or "")
    big = b"\x89PNG" + b"\0" * platform.THUMBNAIL_MAX_BYTES
    assert "bytes" in (thumbs.check_thumbnail(big, meta(big), src) or "")


def test_content_box() -> None:
    assert thumbs.content_box((1024, 512)) == thumbs.Box(0, 128, 512, 256)
    assert thumbs.content_box((32, 32)) == thumbs.Box(0, 0, 512, 512)
    assert thumbs.content_box((256, 512)) == thumbs.Box(128, 0, 256, 512)
    assert thumbs.uses_nearest((1024, 100)) and thumbs.uses_nearest((128, 128))
    assert not thumbs.uses_nearest((1024, 512))
