from datetime import UTC, datetime
from typing import Any

import pytest
from bson import DatetimeMS, ObjectId

from syncd import lexicon
from syncd.images.settings import ImageSettings
from syncd.mappings import MAPPINGS, MappingContext, MappingError, not_public_reason

CTX = MappingContext(public_base_url="https://aesthetic.computer", images=ImageSettings())
WHEN = datetime(2023, 8, 21, 19, 42, 3, 43000, tzinfo=UTC)


def doc(**fields: Any) -> dict[str, Any]:
    return {"_id": ObjectId("65a1b2c3d4e5f60718293a4b"), "when": WHEN, **fields}


def test_mood_uses_the_mood_field_not_text() -> None:
    d = MAPPINGS["moods"].draft(doc(user="auth0|x", mood="calm", text="wrong"), CTX)
    assert d.fields == {
        "mood": "calm",
        "when": "2023-08-21T19:42:03.043Z",
        "ref": "65a1b2c3d4e5f60718293a4b",
    }
    lexicon.validate(d.nsid, {"$type": d.nsid, **d.fields})


def test_mood_without_user_is_malformed() -> None:
    with pytest.raises(MappingError) as info:
        MAPPINGS["moods"].owner(doc(mood="x"))
    assert info.value.reason == "missing_owner"


def test_painting_record_fields_and_image_source() -> None:
    d = MAPPINGS["paintings"].draft(
        doc(user="auth0|63effeeb", slug="2023.8.21.19.42.03.043", code="Xy1"), CTX
    )
    assert d.fields["imageUrl"] == "https://aesthetic.computer/media/paintings/Xy1"
    assert d.fields["acUrl"] == "https://aesthetic.computer/#Xy1"
    assert d.image is not None
    # platform-facts §1: where uploads go first, then where the oldest objects sit.
    assert d.image.image_urls == (
        "https://user-aesthetic-computer.sfo3.digitaloceanspaces.com/auth0%7C63effeeb/painting/2023.8.21.19.42.03.043.png",
        "https://user-aesthetic-computer.sfo3.digitaloceanspaces.com/auth0%7C63effeeb/2023.8.21.19.42.03.043.png",
    )


def test_guest_painting_goes_to_guest_bucket() -> None:
    m = MAPPINGS["paintings"]
    d = m.draft(doc(slug="abc:rec", code="q"), CTX)
    assert m.owner(doc(slug="abc:rec")) is None
    assert d.image is not None and "art-aesthetic-computer" in d.image.image_url


def test_painting_slug_with_dotdot_is_rejected() -> None:
    with pytest.raises(MappingError) as info:
        MAPPINGS["paintings"].draft(doc(user="u", slug="../etc/passwd", code="a"), CTX)
    assert info.value.reason == "unsafe_slug"


def test_kidlisp_and_piece() -> None:
    k = MAPPINGS["kidlisp"].draft(doc(code="cow", source="(wipe blue)"), CTX)
    assert k.fields["acUrl"] == "https://aesthetic.computer/$cow"
    # The published piece lexicon: exactly slug, when, ref -- whatever else the document has.
    p = MAPPINGS["pieces"].draft(
        doc(user="u", slug="hello", ext="mjs", extension="lisp", code="hx", source="(x)"), CTX
    )
    assert p.fields == {
        "slug": "hello",
        "when": "2023-08-21T19:42:03.043Z",
        "ref": "65a1b2c3d4e5f60718293a4b",
    }


def test_wip_paintings_are_not_public_until_finished() -> None:
    m = MAPPINGS["paintings"]
    assert m.not_public_reason(doc(user="u", slug="wip/abc", status="wip")) == "wip"
    assert m.not_public_reason(doc(user="u", slug="2025.1.1", status="done")) is None
    # The generic rules still come first, and `status` means nothing elsewhere.
    assert m.not_public_reason(doc(user="u", status="wip", nuked=True)) == "nuked"
    assert MAPPINGS["moods"].not_public_reason(doc(user="u", mood="x", status="wip")) is None


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"nuked": True}, "nuked"),
        ({"deleted": True}, "deleted"),
        ({"private": True}, "private"),
        ({"draft": 1}, "draft"),
        ({"hidden": "yes"}, "hidden"),
        ({"visibility": "unlisted"}, "visibility=unlisted"),
    ],
)
def test_visibility_rules(fields: dict[str, Any], reason: str) -> None:
    assert not_public_reason(doc(**fields)) == reason


def test_public_documents() -> None:
    assert not_public_reason(doc(nuked=False, visibility="public", private=None)) is None


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"mood": "x", "when": None}, "missing_when"),
        ({"mood": "x", "when": "2024-01-01"}, "bad_when"),
        ({"mood": "x", "when": DatetimeMS(-(10**15))}, "when_out_of_range"),
        ({"mood": 5}, "bad_mood"),
        ({"mood": ""}, "missing_mood"),
    ],
)
def test_bad_documents_have_reasons(fields: dict[str, Any], reason: str) -> None:
    d = doc(user="u", **fields)
    with pytest.raises(MappingError) as info:
        MAPPINGS["moods"].draft(d, CTX)
    assert info.value.reason == reason


def test_non_objectid_ids_cannot_form_a_ref() -> None:
    d = doc(user="u", mood="x")
    d["_id"] = "string-id"
    with pytest.raises(MappingError) as info:
        MAPPINGS["moods"].draft(d, CTX)
    assert info.value.reason == "unsupported_id"


def test_fingerprint_ignores_writeback_and_unmirrored_fields() -> None:
    m = MAPPINGS["moods"]
    base = m.draft(doc(user="u", mood="x"), CTX).fingerprint
    assert (
        m.draft(doc(user="u", mood="x", atproto={"rkey": "3k"}, views=10), CTX).fingerprint == base
    )
    assert m.draft(doc(user="u", mood="y"), CTX).fingerprint != base
    assert m.draft(doc(user="v", mood="x"), CTX).fingerprint != base


MP4 = "https://art-aesthetic-computer.sfo3.digitaloceanspaces.com/tapes/wand.mp4"


def tape(**fields: Any) -> dict[str, Any]:
    base = {"slug": "wand-1729177200000", "code": "a3x", "mp4Status": "complete", "mp4": MP4}
    return doc(**{**base, **fields})


def test_tape_record_is_the_platforms_and_its_video_is_streamed_from_mp4() -> None:
    """platform-facts §3/§7: slug, code, when, ref, acUrl /!code; the MP4 is the video blob."""
    d = MAPPINGS["tapes"].draft(tape(user="auth0|x"), CTX)
    assert d.nsid == "computer.aesthetic.tape"
    assert d.fields == {
        "slug": "wand-1729177200000",
        "code": "a3x",
        "acUrl": "https://aesthetic.computer/!a3x",
        "when": "2023-08-21T19:42:03.043Z",
        "ref": "65a1b2c3d4e5f60718293a4b",
    }
    assert d.blob is not None and d.image is None
    assert (d.blob.field, d.blob.url) == ("video", MP4)
    assert (d.blob.accept, d.blob.max_bytes) == (("video/mp4",), 52_428_800)
    assert MAPPINGS["tapes"].owner(tape()) is None  # a guest tape: the `art` account


def test_tapes_keep_their_back_reference_in_at() -> None:
    assert MAPPINGS["tapes"].backref == "at"
    assert {MAPPINGS[c].backref for c in ("paintings", "moods", "pieces", "kidlisp")} == {"atproto"}
    m = MAPPINGS["tapes"]
    base = m.draft(tape(), CTX).fingerprint
    assert m.draft(tape(at={"rkey": "3k", "uri": "at://x", "cid": "b"}), CTX).fingerprint == base


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"mp4Status": "processing"}, "mp4_not_ready"),
        ({"mp4Status": "pending", "mp4": None}, "mp4_not_ready"),
        ({"mp4": None}, "mp4_not_ready"),
        ({"mp4": ""}, "mp4_not_ready"),
        ({"nuked": True}, "nuked"),
        ({"nuked": True, "mp4Status": "processing"}, "nuked"),
    ],
)
def test_a_tape_is_public_only_once_its_mp4_is_complete(
    fields: dict[str, Any], reason: str
) -> None:
    assert MAPPINGS["tapes"].not_public_reason(tape(**fields)) == reason
    assert MAPPINGS["tapes"].not_public_reason(tape()) is None


@pytest.mark.parametrize(
    ("mp4", "reason"),
    [
        (12, "bad_mp4"),
        ("https://evil.example/x.mp4", "mp4_disallowed_host"),
        ("http://art-aesthetic-computer.sfo3.digitaloceanspaces.com/x.mp4", "mp4_disallowed_host"),
        ("file:///etc/passwd", "mp4_disallowed_host"),
        ("https://" + "a" * 3000, "bad_mp4"),
    ],
)
def test_an_mp4_url_outside_the_allowed_origins_is_a_dead_letter(mp4: Any, reason: str) -> None:
    with pytest.raises(MappingError) as info:
        MAPPINGS["tapes"].draft(tape(mp4=mp4), CTX)
    assert info.value.reason == reason


def test_tapes_allowed_hosts_override_the_image_stores() -> None:
    ctx = MappingContext(images=ImageSettings(), tape_hosts=("https://videos.example",))
    d = MAPPINGS["tapes"].draft(tape(mp4="https://videos.example/a.mp4"), ctx)
    assert d.blob is not None and d.blob.url == "https://videos.example/a.mp4"
    with pytest.raises(MappingError):
        MAPPINGS["tapes"].draft(tape(), ctx)


def test_a_changed_mp4_changes_the_fingerprint() -> None:
    """A new MP4 URL means the video is fetched (and, if its bytes differ, uploaded) again."""
    m = MAPPINGS["tapes"]
    other = "https://art-aesthetic-computer.sfo3.digitaloceanspaces.com/tapes/wand2.mp4"
    assert m.draft(tape(), CTX).fingerprint != m.draft(tape(mp4=other), CTX).fingerprint


def test_the_tape_lexicon_is_the_published_one() -> None:
    lex = lexicon.load("computer.aesthetic.tape")
    assert lex.record["required"] == ["slug", "code", "when", "video"]
    video = {"$type": "blob", "ref": {"$link": "bafk"}, "mimeType": "video/mp4", "size": 52_428_800}
    record = {
        "$type": "computer.aesthetic.tape",
        "slug": "s",
        "code": "c",
        "when": WHEN.isoformat(),
    }
    with pytest.raises(lexicon.LexiconError):
        lexicon.validate("computer.aesthetic.tape", record)  # no video
    lexicon.validate("computer.aesthetic.tape", {**record, "video": video})
    with pytest.raises(lexicon.LexiconError):
        lexicon.validate(
            "computer.aesthetic.tape", {**record, "video": {**video, "size": 52_428_801}}
        )
    with pytest.raises(lexicon.LexiconError):
        lexicon.validate(
            "computer.aesthetic.tape", {**record, "video": {**video, "mimeType": "video/quicktime"}}
        )


def test_the_platform_publishes_what_it_stores() -> None:
    # A mood of spaces, a `when` before 1970 or in a far year: text and dates as stored.
    m = MAPPINGS["moods"]
    assert m.draft(doc(user="u", mood="   "), CTX).fields["mood"] == "   "
    for year, text in ((1960, "1960-05-04T03:02:01.123Z"), (5, "0005-05-04T03:02:01.123Z")):
        when = datetime(year, 5, 4, 3, 2, 1, 123000, tzinfo=UTC)
        fields = m.draft(doc(user="u", mood="x", when=when), CTX).fields
        assert fields["when"] == text
        lexicon.validate("computer.aesthetic.mood", {"$type": "computer.aesthetic.mood", **fields})
