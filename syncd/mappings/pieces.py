"""pieces → computer.aesthetic.piece: exactly ``slug``, ``when``, ``ref``.

The published piece lexicon has no ``code``, ``extension`` or ``acUrl``
(platform-facts §3), and the platform writes none of them, so neither does syncd,
whatever else the document carries.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from syncd.mappings.base import CollectionMapping, MappingContext, ref_of, rfc3339, text, when_of


class Pieces(CollectionMapping):
    collection = "pieces"
    nsid = "computer.aesthetic.piece"
    #: 2: the record lost ``code`` and ``extension`` (the published lexicon's shape).
    version: ClassVar[int] = 2

    def fields(self, doc: Mapping[str, Any], ctx: MappingContext) -> dict[str, Any]:
        return {
            "slug": text(doc, "slug"),
            "when": rfc3339(when_of(doc)),
            "ref": ref_of(doc),
        }
