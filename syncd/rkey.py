"""Record keys: the one place that decides which key a document's record has.

Used alike by the daemon (:mod:`syncd.planner`, the writer) and the admin
commands (:mod:`syncd.admin.diff`):

* :func:`named_key` -- the key the document itself names in its back-reference
  (``atproto.rkey``; ``at.rkey`` on tapes: the mapping's ``backref`` field),
  written back by syncd, the platform's inline writers or the old scripts;
  it wins once it is known to be this document's record;
* :func:`derive_rkey` -- otherwise a TID derived from the document;
* :func:`free_key` -- the derived key, re-derived with a salt while another
  document holds it (two documents in the same millisecond);
* :func:`preferred_keys` -- the order in which the known keys are tried:
  named, ledger, wiped (``syncd wipe`` remembered it), derived.

A TID is 13 characters of base32-sortable encoding of a 64-bit integer: a zero
top bit, 53 bits of microseconds since the Unix epoch, 10 bits of "clock id".
syncd derives both parts from the document (``when`` and ``_id``), so every
retry, restart or rerun computes the same key and can never create a second
record for one document. Two documents with the same millisecond ``when`` still
get different keys: the sub-millisecond microseconds and the clock id come from
a hash of the ``_id``.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from bson import ObjectId

from syncd.ids import doc_key

_ALPHABET = "234567abcdefghijklmnopqrstuvwxyz"
_TID_RE = re.compile(r"^[234567abcdefghij][234567abcdefghijklmnopqrstuvwxyz]{12}$")
_MAX_MICROS = (1 << 53) - 1


class RkeyError(ValueError):
    """The document's ``when`` cannot form a TID."""


def encode_tid(value: int) -> str:
    if not 0 <= value < (1 << 63):
        raise RkeyError(f"TID integer out of range: {value}")
    out = []
    for _ in range(13):
        out.append(_ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(out))


def decode_tid(tid: str) -> int:
    if not is_tid(tid):
        raise RkeyError(f"not a TID: {tid!r}")
    value = 0
    for ch in tid:
        value = (value << 5) | _ALPHABET.index(ch)
    return value


def is_tid(value: str) -> bool:
    return bool(_TID_RE.match(value))


def derive_rkey(when: datetime, doc_id: object, salt: int = 0) -> str:
    """The TID for a document: ``when`` (ms precision) plus hash-derived low bits.

    About 2^20 keys share one millisecond, so documents with identical ``when``
    values can collide; the writer checks the ledger and re-derives with the
    next ``salt`` (the chosen key is then remembered in the ledger and written
    back to the document, so it stays stable).
    """
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    millis = int(when.timestamp() * 1000)
    seed = doc_key(doc_id) if salt == 0 else f"{doc_key(doc_id)}#{salt}"
    digest = hashlib.sha256(seed.encode()).digest()
    h = int.from_bytes(digest[:8], "big")
    micros = millis * 1000 + (h % 1000)
    if not 0 <= micros <= _MAX_MICROS:
        # A TID cannot say a date before 1970 or after 2255: such a document (the
        # platform publishes it all the same) is keyed by when its _id was made.
        if not isinstance(doc_id, ObjectId):
            raise RkeyError(f"when {when.isoformat()} cannot form a TID, nor can the _id")
        micros = int(doc_id.generation_time.timestamp()) * 1_000_000 + (h % 1_000_000)
    clock_id = (h >> 10) & 0x3FF
    return encode_tid((micros << 10) | clock_id)


def backref_rkey(at: Any) -> str | None:
    """The record key a back-reference value (``{rkey, uri, cid}``) names, if a valid TID."""
    if isinstance(at, Mapping):
        rkey = at.get("rkey")
        if isinstance(rkey, str) and is_tid(rkey):
            return rkey
    return None


def named_key(doc: Mapping[str, Any] | None, field: str) -> str | None:
    """The record key ``doc`` names in its back-reference ``field`` (the mapping's
    ``backref``: ``atproto``, or ``at`` on tapes), if it is a valid TID."""
    return backref_rkey(doc.get(field)) if doc else None


def free_key(when: datetime, doc_id: object, taken: Callable[[str], bool]) -> str:
    """:func:`derive_rkey`, with the next salt while ``taken(key)`` says another
    document holds the key."""
    salt = 0
    key = derive_rkey(when, doc_id)
    while taken(key):
        salt += 1
        key = derive_rkey(when, doc_id, salt)
    return key


def preferred_keys(
    *, named: str | None, ledger: str | None, wiped: str | None, derived: str | None
) -> list[str]:
    """The keys a document's record may have, most preferred first, without repeats."""
    out: list[str] = []
    for key in (named, ledger, wiped, derived):
        if key and key not in out:
            out.append(key)
    return out
