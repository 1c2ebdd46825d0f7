"""pieces → computer.aesthetic.piece: slug, when, ref, and code/extension when present."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from syncd.mappings.base import (
    CollectionMapping,
    MappingContext,
    MappingError,
    ref_of,
    rfc3339,
    text,
    when_of,
)


class Pieces(CollectionMapping):
    collection = "pieces"
    nsid = "computer.aesthetic.piece"

    def fields(self, doc: Mapping[str, Any], ctx: MappingContext) -> dict[str, Any]:
        out: dict[str, Any] = {
            "slug": text(doc, "slug"),
            "when": rfc3339(when_of(doc)),
            "ref": ref_of(doc),
        }
        code = text(doc, "code", required=False)
        if code:
            out["code"] = code
        ext = doc.get("extension", doc.get("ext"))
        if ext is not None:
            if not isinstance(ext, str):
                raise MappingError("bad_extension", "`extension` must be a string")
            if ext:
                out["extension"] = ext
        return out
