"""The platform as ``platform-facts.md`` describes it, written down for the sandbox world.

This module is the world's own reading of the facts -- visibility, ownership,
the record each document must have, the published lexicon limits, record keys
-- and imports nothing from ``syncd``: the invariant checker and the platform
hooks use it, so a mistake syncd makes cannot hide behind a mistake the world
copies from it.

Decisions where the facts are silent (each one the conservative reading):

* a visibility flag hides a document when it is *truthy* (``nuked: 1`` hides);
* a ``user`` that is ``null`` is a guest document like a missing one (a
  JavaScript ``doc.user`` check reads both the same); any other non-string
  ``user`` is invalid; moods always have a ``user``;
* a required text field must be a non-empty string; lengths are UTF-8 bytes
  (the lexicon language's ``maxLength``); a string that held invalid UTF-8 in
  MongoDB (read here with ``surrogateescape``) is invalid;
* ``uri`` fields must be a scheme followed by non-space characters;
* a tape is public once converted: ``mp4Status == "complete"`` and ``mp4`` set
  (platform-facts §7), the flags as elsewhere; its MP4 is the video blob, so an MP4
  the PDS would not read as ``video/mp4`` (its ``ftyp`` brand, as the PDS sniffs it),
  over the lexicon's 52,428,800 bytes or over the PDS's upload limit cannot make a
  record; the MP4 is read from the platform's object store only.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import bson
from bson import ObjectId

PAINTING = "computer.aesthetic.painting"
MOOD = "computer.aesthetic.mood"
PIECE = "computer.aesthetic.piece"
KIDLISP = "computer.aesthetic.kidlisp"
TAPE = "computer.aesthetic.tape"

NSIDS: dict[str, str] = {
    "paintings": PAINTING,
    "moods": MOOD,
    "pieces": PIECE,
    "kidlisp": KIDLISP,
    "tapes": TAPE,
}
COLLECTIONS = tuple(NSIDS)
USERS = "users"
GUEST_USER_ID = "art-guest"
SITE = "https://aesthetic.computer"

# The published lexicons' limits (platform-facts.md §3), in UTF-8 bytes. A document whose
# record would break one must have no record.
LIMITS: dict[str, dict[str, int]] = {
    PAINTING: {"slug": 128, "code": 10, "imageUrl": 512, "recordingUrl": 512, "ref": 24},
    MOOD: {"mood": 5000, "ref": 24},
    PIECE: {"slug": 100, "ref": 24},
    KIDLISP: {"source": 50_000, "code": 10, "ref": 24},
    TAPE: {},  # the published tape lexicon sets no string limits
}
# Fields a published lexicon types as ``format: uri`` (``acUrl`` is in no lexicon: the
# platform writes it as it builds it, platform-facts §3).
URI_FIELDS: dict[str, tuple[str, ...]] = {PAINTING: ("imageUrl", "recordingUrl")}
# The tape lexicon's video blob (platform-facts §3, §7).
VIDEO_MAX_BYTES = 52_428_800
VIDEO_MIME_TYPE = "video/mp4"
# platform-facts §5: the back-reference field; tapes keep theirs in `at`.
BACKREF_FIELDS = {"tapes": "at"}
THUMBNAIL_MAX_BYTES = 1_048_576
THUMBNAIL_SIDE = 512
THUMBNAIL_MIME_TYPES = ("image/png", "image/jpeg")

# Flags that hide a document. platform-facts.md §4: `nuked` everywhere, `deleted` on
# moods, `status: "wip"` on paintings; `private`, `draft`, `hidden`, `deleted` elsewhere and
# a `visibility` other than "public" are honoured too (harmless, source-system.md).
EXTRA_HIDING_FLAGS = ("private", "draft", "hidden", "deleted")

_TID_RE = re.compile(r"^[234567abcdefghij][234567abcdefghijklmnopqrstuvwxyz]{12}$")
_URI_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:\S+$")


class Invalid(ValueError):
    """A document that cannot have a record; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def is_tid(value: object) -> bool:
    """A record key in ATProto's TID syntax (13 base32-sortable characters, top bit 0)."""
    return isinstance(value, str) and bool(_TID_RE.match(value))


def doc_key(doc_id: Any) -> str:
    """The key the checker's report uses for a document: the ObjectId's hex, otherwise
    ``bson:`` + the URL-safe base64 of the BSON-encoded ``{"v": _id}``.

    The same format as syncd's state store keys on purpose (tests join the report with
    syncd's dead letters); it decides nothing about what must be published.
    """
    if isinstance(doc_id, ObjectId):
        return str(doc_id)
    try:
        raw = bson.encode({"v": doc_id})
    except (bson.errors.InvalidStringData, UnicodeEncodeError):
        raw = bson.encode({"v": str(doc_id).encode("utf-8", "replace").decode("utf-8")})
    return "bson:" + base64.urlsafe_b64encode(raw).decode("ascii")


def not_public_reason(collection: str, doc: Mapping[str, Any]) -> str | None:
    """Why a document is not public (platform-facts.md §4), or None when it is."""
    if doc.get("nuked"):
        return "nuked"
    if collection == "paintings" and doc.get("status") == "wip":
        return "wip"
    for flag in EXTRA_HIDING_FLAGS:  # includes moods' `deleted`
        if doc.get(flag):
            return flag
    visibility = doc.get("visibility")
    if visibility is not None and visibility != "public":
        return "visibility"
    if collection == "tapes" and (doc.get("mp4Status") != "complete" or not doc.get("mp4")):
        return "mp4 not converted yet"
    return None


def backref_field(collection: str) -> str:
    """Where a document keeps the back-reference to its record (platform-facts §5)."""
    return BACKREF_FIELDS.get(collection, "atproto")


# The PDS decides a blob's type by sniffing its first bytes (file-type): an ISO base
# media file (`ftyp` box at offset 4, a printable major brand) is video/mp4 unless its
# brand names something else (QuickTime, M4V/M4A/M4B, HEIF/AVIF images, Canon raw).
_NOT_VIDEO_MP4_BRANDS = frozenset(
    "qt M4V M4VH M4VP M4A M4B F4A F4B avif mif1 msf1 heic heix hevc hevx crx".split()
)


def sniffed_as_mp4(head: bytes) -> bool:
    """Whether the PDS records a blob starting with ``head`` as video/mp4."""
    if len(head) < 12 or head[4:8] != b"ftyp" or not head[8] & 0x60:
        return False
    brand = head[8:12].decode("latin-1").replace("\0", " ").strip()
    return brand not in _NOT_VIDEO_MP4_BRANDS


def is_public(collection: str, doc: Mapping[str, Any]) -> bool:
    return not_public_reason(collection, doc) is None


def owner_of(collection: str, doc: Mapping[str, Any]) -> str | None:
    """The owner's user sub, or None for guest content (no ``user``). Raises :class:`Invalid`."""
    user = doc.get("user")
    if user is None:
        if collection == "moods":
            raise Invalid("mood without user")
        return None
    if not isinstance(user, str) or not user:
        raise Invalid(f"user is a {type(user).__name__}, not a sub")
    return user


def account_of(user_doc: Mapping[str, Any] | None) -> tuple[str, str] | None:
    """(did, password) of a ``users`` document with a usable ATProto account."""
    if user_doc is None:
        return None
    at = user_doc.get("atproto")
    if not isinstance(at, Mapping):
        return None
    did, password = at.get("did"), at.get("password")
    if isinstance(did, str) and did and isinstance(password, str) and password:
        return did, password
    return None


def when_string(value: Any) -> str:
    """A BSON date as the record's ``when``: RFC 3339, UTC, milliseconds, ``Z``."""
    if not isinstance(value, datetime):
        raise Invalid(f"when is a {type(value).__name__}, not a date")
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    text = value.astimezone(UTC).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")


def ref_of(doc: Mapping[str, Any]) -> str:
    doc_id = doc.get("_id")
    if not isinstance(doc_id, ObjectId):
        raise Invalid(f"_id is a {type(doc_id).__name__}, not an ObjectId")
    return str(doc_id)


def _text(doc: Mapping[str, Any], field: str) -> str:
    value = doc.get(field)
    if not isinstance(value, str):
        raise Invalid(f"{field} is a {type(value).__name__}, not a string")
    if not value:
        raise Invalid(f"{field} is empty")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise Invalid(f"{field} is not valid UTF-8 in MongoDB") from None
    return value


def check_limits(nsid: str, record: Mapping[str, Any]) -> None:
    """Raise :class:`Invalid` when a field breaks the published lexicon's limits."""
    for field, limit in LIMITS[nsid].items():
        value = record.get(field)
        if isinstance(value, str) and len(value.encode("utf-8")) > limit:
            raise Invalid(f"{field} over {limit} bytes")
    for field in URI_FIELDS.get(nsid, ()):
        value = record.get(field)
        if isinstance(value, str) and not _URI_RE.match(value):
            raise Invalid(f"{field} is not a URI")


def painting_image_url(code: str) -> str:
    return f"{SITE}/media/paintings/{code}"


def painting_recording_url(code: str) -> str:
    return f"{SITE}/media/paintings/{code}.zip"


def record_for(collection: str, doc: Mapping[str, Any]) -> dict[str, Any]:
    """The record a public document must have (platform-facts §3, source-system shapes).

    Paintings: without ``thumbnail`` and ``recordingUrl``, which depend on the stored files;
    tapes: without ``video`` (the MP4 at ``mp4``).
    Raises :class:`Invalid` for a document that cannot have one.
    """
    nsid = NSIDS[collection]
    ref = ref_of(doc)
    when = when_string(doc.get("when"))
    record: dict[str, Any]
    if collection == "paintings":
        code = _text(doc, "code")
        record = {
            "$type": nsid,
            "slug": _text(doc, "slug"),
            "code": code,
            "imageUrl": painting_image_url(code),
            "acUrl": f"{SITE}/#{code}",
            "when": when,
            "ref": ref,
        }
    elif collection == "moods":
        record = {"$type": nsid, "mood": _text(doc, "mood"), "when": when, "ref": ref}
    elif collection == "pieces":
        record = {"$type": nsid, "slug": _text(doc, "slug"), "when": when, "ref": ref}
    elif collection == "kidlisp":
        code = _text(doc, "code")
        record = {
            "$type": nsid,
            "code": code,
            "source": _text(doc, "source"),
            "acUrl": f"{SITE}/${code}",
            "when": when,
            "ref": ref,
        }
    elif collection == "tapes":
        code = _text(doc, "code")
        _text(doc, "mp4")  # the MP4's URL: a string, or the platform cannot fetch it
        record = {
            "$type": nsid,
            "slug": _text(doc, "slug"),
            "code": code,
            "acUrl": f"{SITE}/!{code}",
            "when": when,
            "ref": ref,
        }
    else:
        raise KeyError(collection)
    check_limits(nsid, record)
    return record


def record_identity(value: Mapping[str, Any]) -> str | None:
    """Which document a record belongs to: its ``ref``, or a legacy record's ``mongoId``."""
    ref = value.get("ref")
    if isinstance(ref, str):
        return ref
    legacy = value.get("mongoId")
    if isinstance(legacy, str):
        return legacy
    return None
