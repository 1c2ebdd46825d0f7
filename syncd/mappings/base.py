"""What every collection mapping shares: visibility rules, owner, ``when``, fingerprints.

A mapping turns one source document into a :class:`Draft`: the record's fields
(everything but a blob, which needs I/O: a painting's thumbnail, a tape's MP4 --
the draft says where the blob comes from), the NSID, and a
fingerprint of exactly the inputs that shape the record. The fingerprint is how
an update that touches nothing mirrored (including syncd's own ``atproto``
write-back) is recognised without any PDS request.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar

from bson import DatetimeMS

from syncd.ids import ref_for
from syncd.images.settings import ImageSettings
from syncd.images.urls import PaintingSource

GUEST = None  # owner value for documents without a `user` field

# Fields whose truthy value means "not public", on every collection. Moods use
# `deleted` as their soft delete; elsewhere it means the same thing.
HIDDEN_FLAGS = ("nuked", "deleted", "private", "draft", "hidden")
#: Not-public reasons that are a *skip* (recorded with the reason, counted) rather than
#: plain privacy: content the platform will publish later (a painting still WIP).
WIP = "wip"
#: A tape whose MP4 is not converted yet (``mp4Status`` not ``"complete"``, or no ``mp4``).
MP4_NOT_READY = "mp4_not_ready"
SKIP_REASONS = frozenset({WIP, MP4_NOT_READY})


class MappingError(ValueError):
    """A document that cannot become a valid record. ``reason`` is a short code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class MappingContext:
    public_base_url: str = "https://aesthetic.computer"
    images: ImageSettings = field(default_factory=ImageSettings)
    #: Origins a tape's MP4 may be fetched from (``tapes.allowed_hosts``); empty: the
    #: image store's (``images.allowed_hosts``).
    tape_hosts: tuple[str, ...] = ()

    @property
    def media_hosts(self) -> tuple[str, ...]:
        return self.tape_hosts or self.images.allowed_hosts


@dataclass(frozen=True)
class StreamedBlob:
    """A blob the record carries, fetched from ``url`` and streamed to the PDS (never held
    in memory): a tape's MP4. ``field`` is the record field; ``accept`` and ``max_bytes``
    are the lexicon's."""

    field: str
    url: str
    accept: tuple[str, ...]
    max_bytes: int


@dataclass(frozen=True)
class Draft:
    """A record waiting to be written. ``image`` is set for paintings (thumbnail to make);
    ``blob`` for tapes (the MP4 to stream)."""

    nsid: str
    fields: dict[str, Any]
    fingerprint: str
    image: PaintingSource | None = None
    blob: StreamedBlob | None = None


def not_public_reason(doc: Mapping[str, Any]) -> str | None:
    """Why a document must not be published, or None when it is public.

    Privacy wins every doubt: any truthy flag hides the document, and any
    ``visibility`` other than ``"public"`` does too.
    """
    for flag in HIDDEN_FLAGS:
        if doc.get(flag):
            return flag
    visibility = doc.get("visibility")
    if visibility is not None and visibility != "public":
        return f"visibility={visibility!s:.20}"
    return None


def owner_of(doc: Mapping[str, Any], *, guest_allowed: bool = True) -> str | None:
    """The owner's user sub, or None (guest) when the document has no ``user``."""
    if "user" not in doc or doc["user"] is None:
        if not guest_allowed:
            raise MappingError("missing_owner", "document has no `user` field")
        return GUEST
    user = doc["user"]
    if not isinstance(user, str) or not user:
        raise MappingError(
            "bad_owner", f"`user` must be a non-empty string, got {type(user).__name__}"
        )
    return user


def when_of(doc: Mapping[str, Any]) -> datetime:
    when = doc.get("when")
    if when is None:
        raise MappingError("missing_when", "document has no `when`")
    if isinstance(when, DatetimeMS):
        raise MappingError(
            "when_out_of_range", f"`when` is outside the representable range ({when})"
        )
    if not isinstance(when, datetime):
        raise MappingError("bad_when", f"`when` must be a date, got {type(when).__name__}")
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when  # any date the platform could store: the record takes it as it is


def rfc3339(when: datetime) -> str:
    """RFC 3339 with milliseconds and ``Z``, as the platform writes ``when`` (four-digit
    years, also before 1000)."""
    text = when.astimezone(UTC).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")


def ref_of(doc: Mapping[str, Any]) -> str:
    ref = ref_for(doc.get("_id"))
    if ref is None:
        raise MappingError(
            "unsupported_id", f"`_id` must be an ObjectId, got {type(doc.get('_id')).__name__}"
        )
    return ref


def text(doc: Mapping[str, Any], name: str, *, required: bool = True) -> str | None:
    value = doc.get(name)
    if value is None:
        if required:
            raise MappingError(f"missing_{name}", f"document has no `{name}`")
        return None
    if not isinstance(value, str):
        raise MappingError(f"bad_{name}", f"`{name}` must be a string, got {type(value).__name__}")
    if required and not value:
        # Only empty: a mood of spaces is text the platform publishes as it is.
        raise MappingError(f"missing_{name}", f"`{name}` is empty")
    return value


def fingerprint(version: int, *parts: Any) -> str:
    blob = json.dumps([version, *parts], sort_keys=True, default=str, ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8", "surrogatepass")).hexdigest()[:32]


class CollectionMapping:
    """One collection's rules. Subclasses set the class attributes and ``fields``."""

    collection: ClassVar[str]
    nsid: ClassVar[str]
    guest_allowed: ClassVar[bool] = True
    version: ClassVar[int] = 1
    #: The document field holding the back-reference ``{rkey, uri, cid}`` to the record
    #: (platform-facts §5): ``atproto``, except on tapes (``at``). Everything that reads or
    #: writes a back-reference asks the mapping.
    backref: ClassVar[str] = "atproto"

    def owner(self, doc: Mapping[str, Any]) -> str | None:
        return owner_of(doc, guest_allowed=self.guest_allowed)

    def not_public_reason(self, doc: Mapping[str, Any]) -> str | None:
        """Why this collection's document must not be published, or None (public)."""
        return not_public_reason(doc)

    def fields(self, doc: Mapping[str, Any], ctx: MappingContext) -> dict[str, Any]:
        raise NotImplementedError

    def image(self, doc: Mapping[str, Any], ctx: MappingContext) -> PaintingSource | None:
        return None

    def blob(self, doc: Mapping[str, Any], ctx: MappingContext) -> StreamedBlob | None:
        """Where the record's streamed blob comes from (tapes), or None."""
        return None

    def draft(self, doc: Mapping[str, Any], ctx: MappingContext) -> Draft:
        """The record this public document should have. Raises :class:`MappingError`."""
        fields = self.fields(doc, ctx)
        image = self.image(doc, ctx)
        blob = self.blob(doc, ctx)
        owner = self.owner(doc)
        parts: list[Any] = [fields, image and image.image_url]
        if blob is not None:
            parts.append(blob.url)  # a changed source URL means the blob is fetched again
        fp = fingerprint(self.version, self.nsid, owner, *parts)
        return Draft(nsid=self.nsid, fields=fields, fingerprint=fp, image=image, blob=blob)
