"""Document identity: the key syncd stores a document under, and the record's ``ref``.

The platform's documents have ObjectId ``_id``s; ``ref`` (lexicon: at most 24
characters) is that id as hex. Other ``_id`` types cannot form a ``ref`` and are
dead-lettered by the mappings, but still need a stable key in the state store (a
hard delete of such a document must still be recognisable), so :func:`doc_key`
covers every BSON type.
"""

from __future__ import annotations

import base64
from typing import Any

import bson
from bson import ObjectId


def doc_key(doc_id: Any) -> str:
    """A stable, reversible string key for any ``_id`` value."""
    if isinstance(doc_id, ObjectId):
        return str(doc_id)
    raw = bson.encode({"v": doc_id})
    return "bson:" + base64.urlsafe_b64encode(raw).decode("ascii")


def parse_doc_key(key: str) -> Any:
    """The ``_id`` value a :func:`doc_key` was made from."""
    if key.startswith("bson:"):
        return bson.decode(base64.urlsafe_b64decode(key[5:].encode("ascii")))["v"]
    return ObjectId(key)


def ref_for(doc_id: Any) -> str | None:
    """The record's ``ref``: the ObjectId as 24 hex characters, or None if not an ObjectId."""
    if isinstance(doc_id, ObjectId):
        return str(doc_id)
    return None
