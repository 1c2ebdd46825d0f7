"""moods → computer.aesthetic.mood. The text lives in ``mood`` (not ``text``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from syncd.mappings.base import CollectionMapping, MappingContext, ref_of, rfc3339, text, when_of


class Moods(CollectionMapping):
    collection = "moods"
    nsid = "computer.aesthetic.mood"
    guest_allowed = False  # every mood has a `user`

    def fields(self, doc: Mapping[str, Any], ctx: MappingContext) -> dict[str, Any]:
        return {"mood": text(doc, "mood"), "when": rfc3339(when_of(doc)), "ref": ref_of(doc)}
