"""paintings → computer.aesthetic.painting. Where a painting becomes a record.

The thumbnail blob is added by the writer (it needs the image fetched, reduced
and uploaded); ``recordingUrl`` is added there too, only when the recording zip
exists. Everything decided from the document alone is decided here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from syncd.images.errors import ImageError
from syncd.images.urls import PaintingSource, painting_source_from_doc
from syncd.mappings.base import (
    WIP,
    CollectionMapping,
    MappingContext,
    MappingError,
    not_public_reason,
    ref_of,
    rfc3339,
    text,
    when_of,
)


class Paintings(CollectionMapping):
    collection = "paintings"
    nsid = "computer.aesthetic.painting"
    #: 2: thumbnails are the platform's 512x512 ``contain`` on black (platform-facts §2).
    version: ClassVar[int] = 2

    def not_public_reason(self, doc: Mapping[str, Any]) -> str | None:
        # A painting the platform has not finished (``status: "wip"``, slug ``wip/{id}``)
        # is published once it is done (platform-facts §4).
        return not_public_reason(doc) or (WIP if doc.get("status") == WIP else None)

    def fields(self, doc: Mapping[str, Any], ctx: MappingContext) -> dict[str, Any]:
        slug = text(doc, "slug")
        code = text(doc, "code")
        assert code is not None
        # The code as it is, as the platform writes these URLs (platform-facts §3).
        return {
            "slug": slug,
            "code": code,
            "imageUrl": f"{ctx.public_base_url}/media/paintings/{code}",
            "acUrl": f"{ctx.public_base_url}/#{code}",
            "when": rfc3339(when_of(doc)),
            "ref": ref_of(doc),
        }

    def image(self, doc: Mapping[str, Any], ctx: MappingContext) -> PaintingSource | None:
        bucket = doc.get("bucket")
        if bucket is not None and not isinstance(bucket, str):
            raise MappingError("bad_bucket", "`bucket` must be a string")
        try:
            return painting_source_from_doc(doc, ctx.images)
        except ImageError as exc:
            raise MappingError(exc.reason, str(exc)) from None

    @staticmethod
    def recording_url(fields: Mapping[str, Any], ctx: MappingContext) -> str:
        return f"{ctx.public_base_url}/media/paintings/{fields['code']}.zip"
