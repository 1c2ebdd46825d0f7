"""Collection mappings: one small module per source collection."""

from __future__ import annotations

from syncd.mappings.base import (
    SKIP_REASONS,
    CollectionMapping,
    Draft,
    MappingContext,
    MappingError,
    StreamedBlob,
    not_public_reason,
)
from syncd.mappings.kidlisp import Kidlisp
from syncd.mappings.moods import Moods
from syncd.mappings.paintings import Paintings
from syncd.mappings.pieces import Pieces
from syncd.mappings.tapes import Tapes

MAPPINGS: dict[str, CollectionMapping] = {
    m.collection: m for m in (Paintings(), Moods(), Pieces(), Kidlisp(), Tapes())
}
BY_NSID: dict[str, CollectionMapping] = {m.nsid: m for m in MAPPINGS.values()}


def backref_field(collection: str) -> str:
    """The document field of ``collection`` that holds the back-reference to its record."""
    return MAPPINGS[collection].backref


__all__ = [
    "BY_NSID",
    "MAPPINGS",
    "SKIP_REASONS",
    "CollectionMapping",
    "Draft",
    "MappingContext",
    "MappingError",
    "StreamedBlob",
    "backref_field",
    "not_public_reason",
]
