"""The platform's ``users`` collection as the change stream shows it: what is an account change.

syncd follows ``users`` on the same change stream as the mirrored collections
(one token, one order). Only account changes reach it: :func:`users_match` is
the ``$match`` clause that lets through a ``users`` event only when it can
change an account -- an insert, a replacement or a delete, or an update whose
``updateDescription`` sets or removes ``atproto`` or a field inside it
(``atproto.password``...). The server applies it, so an email or a profile
field costs nothing here; ``updateDescription`` is read by the ``$match`` only
and projected away afterwards (an update's ``fullDocument``, looked up as for
every event, is the user as it is now).

:func:`classify` compares a user's account as the stream showed it last
(:class:`~syncd.state.KnownAccount`, kept in the state store in stream order) with
what the event shows now, and says what happened: nothing, an account that
appeared, one re-created under a new DID, one that went away, new credentials,
a new handle.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from syncd.state import KnownAccount

#: The top-level names of the fields an update sets or removes (``atproto.password`` ->
#: ``atproto``), computed by the server from ``updateDescription``.
_TOP_LEVEL_NAMES: dict[str, Any] = {
    "$map": {
        "input": {
            "$concatArrays": [
                {
                    "$map": {
                        "input": {
                            "$objectToArray": {"$ifNull": ["$updateDescription.updatedFields", {}]}
                        },
                        "in": "$$this.k",
                    }
                },
                {"$ifNull": ["$updateDescription.removedFields", []]},
            ]
        },
        "in": {"$arrayElemAt": [{"$split": ["$$this", "."]}, 0]},
    }
}


def users_match(users_collection: str) -> dict[str, Any]:
    """The ``$match`` clause for the ``users`` events that can change an account."""
    return {
        "ns.coll": users_collection,
        "$or": [
            {"operationType": {"$in": ["insert", "replace", "delete"]}},
            {"$expr": {"$in": ["atproto", _TOP_LEVEL_NAMES]}},
        ],
    }


@dataclass(frozen=True)
class Seen:
    """The account fields of a ``users`` document (repr without the password)."""

    did: str
    handle: str
    password: str

    def __repr__(self) -> str:
        return f"Seen(did={self.did!r}, handle={self.handle!r})"


def account_fields(doc: Mapping[str, Any] | None) -> Seen | None:
    """``atproto.{did,handle,password}`` of a ``users`` document with an account syncd can
    write for: None without a DID or without a password (as the resolver sees it: the
    documents of such a user are skips, and a password arriving later is an account
    appearing)."""
    if doc is None:
        return None
    at = doc.get("atproto")
    if not isinstance(at, Mapping):
        return None
    did, password = at.get("did"), at.get("password")
    if not isinstance(did, str) or not did or not isinstance(password, str) or not password:
        return None
    return Seen(did=did, handle=str(at.get("handle") or ""), password=password)


class Change(enum.Enum):
    UNCHANGED = "unchanged"  # no account before or after, or the same one unchanged
    APPEARED = "appeared"  # a DID where there was none
    RECREATED = "recreated"  # a new DID: the account was made again
    GONE = "gone"  # the DID was removed (or the user deleted)
    SAME = "same"  # the same DID: credentials and handle are compared by the caller


def classify(before: KnownAccount | None, now: Seen | None) -> Change:
    if now is None:
        return Change.UNCHANGED if before is None else Change.GONE
    if before is None:
        return Change.APPEARED
    if before.did != now.did:
        return Change.RECREATED
    return Change.SAME
