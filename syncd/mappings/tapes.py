"""tapes → computer.aesthetic.tape: slug, code, acUrl (``/!code``), when, ref, and the
MP4 as the ``video`` blob (platform-facts §3, §7).

A tape is published once its MP4 exists: ``mp4Status == "complete"`` and ``mp4`` (the
MP4's full URL) set; before that it is skipped (``mp4_not_ready``), as a WIP painting
is. The usual flags (``nuked``...) hide it. Its back-reference is ``at: {rkey, uri,
cid}`` (§5), not ``atproto``. The ``video`` blob is added by the writer: the MP4 is
fetched from an allowed origin only, streamed to a spool file while its CID is
computed, and streamed to ``uploadBlob`` (:mod:`syncd.media`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from syncd import lexicon
from syncd.images.errors import DisallowedHostError
from syncd.images.urls import check_url
from syncd.mappings.base import (
    MP4_NOT_READY,
    CollectionMapping,
    MappingContext,
    MappingError,
    StreamedBlob,
    not_public_reason,
    ref_of,
    rfc3339,
    text,
    when_of,
)

NSID = "computer.aesthetic.tape"
VIDEO_FIELD = "video"
COMPLETE = "complete"
MAX_URL_LENGTH = 2048


def video_limits() -> tuple[tuple[str, ...], int]:
    """The lexicon's ``video`` blob: accepted MIME types and maxSize (52,428,800)."""
    schema = lexicon.load(NSID).record["properties"][VIDEO_FIELD]
    return tuple(schema["accept"]), int(schema["maxSize"])


class Tapes(CollectionMapping):
    collection = "tapes"
    nsid = NSID
    backref: ClassVar[str] = "at"

    def not_public_reason(self, doc: Mapping[str, Any]) -> str | None:
        hidden = not_public_reason(doc)
        if hidden is not None:
            return hidden
        if doc.get("mp4Status") != COMPLETE or doc.get("mp4") in (None, ""):
            return MP4_NOT_READY  # published once converted (platform-facts §7)
        return None

    def fields(self, doc: Mapping[str, Any], ctx: MappingContext) -> dict[str, Any]:
        code = text(doc, "code")
        assert code is not None
        return {
            "slug": text(doc, "slug"),
            "code": code,
            # As the platform writes it (platform-facts §3): the code as it is, like kidlisp's.
            "acUrl": f"{ctx.public_base_url}/!{code}",
            "when": rfc3339(when_of(doc)),
            "ref": ref_of(doc),
        }

    def blob(self, doc: Mapping[str, Any], ctx: MappingContext) -> StreamedBlob | None:
        url = doc.get("mp4")
        if not isinstance(url, str):
            raise MappingError("bad_mp4", f"`mp4` must be a URL string, got {type(url).__name__}")
        if len(url) > MAX_URL_LENGTH:
            raise MappingError("bad_mp4", f"`mp4` is longer than {MAX_URL_LENGTH} characters")
        try:
            check_url(url, ctx.media_hosts, reason="mp4_disallowed_host")
        except DisallowedHostError as exc:
            raise MappingError(exc.reason, str(exc)) from None
        accept, max_bytes = video_limits()
        return StreamedBlob(field=VIDEO_FIELD, url=url, accept=accept, max_bytes=max_bytes)
