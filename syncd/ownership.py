"""Whose a document is and whether it may be published: decided here, for everyone.

The router (daemon), the admin inventory (``reconcile``, ``wipe``, ``restore``)
and ``syncd backfill --account`` all ask these functions, so the daemon and the
admin commands can never disagree about which documents an account owns or which
are public.

* :func:`standing` -- what the document's own fields say: its owner (a user sub,
  or ``None`` for guest content), why it is not public (the mapping's
  visibility rules), and whether its owner field is malformed;
* :func:`verdict` -- the problem, if any, once the owner's account is resolved:
  a dead letter (bad owner field; a DID two users name: retryable, it is held
  until the conflict is resolved), a skip (not public *yet*, no account, an
  account that is gone), or plain privacy (``hidden``); ``None`` means publish;
* :func:`owner_filter` / :func:`documents_of` -- the MongoDB filter of the documents an
  account (a user) owns.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from syncd.accounts import DID_CONFLICT
from syncd.changes import Problem
from syncd.mappings import MAPPINGS, SKIP_REASONS, MappingError
from syncd.pds.sessions import Account


@dataclass(frozen=True)
class Standing:
    owner: str | None  # the owner's sub; None: guest content (no `user`)
    hidden: str | None  # why the document is not public; None: public
    invalid: MappingError | None = None  # the owner field cannot be read

    @property
    def public(self) -> bool:
        return self.hidden is None and self.invalid is None


def standing(collection: str, doc: Mapping[str, Any]) -> Standing:
    mapping = MAPPINGS[collection]
    hidden = mapping.not_public_reason(doc)
    try:
        owner = mapping.owner(doc)
    except MappingError as exc:
        return Standing(None, hidden, exc)
    return Standing(owner, hidden)


def verdict(
    s: Standing, account: Account | None, no_account_reason: str, detail: str = ""
) -> Problem | None:
    """Why the document is not published in ``account`` (resolved from ``s.owner``;
    ``detail`` says more about ``no_account_reason``)."""
    if no_account_reason == DID_CONFLICT and s.invalid is None:
        # Held, whatever the document says: no writer may act for a DID two users name.
        return Problem("dead", DID_CONFLICT, detail, retryable=True)
    if s.invalid is not None:
        return Problem("dead", s.invalid.reason, s.invalid.detail)
    if s.hidden in SKIP_REASONS:
        # Not public *yet* (a WIP painting): a skip with its reason; a record it had goes.
        return Problem("skip", s.hidden)
    if s.hidden is not None:
        return Problem("hidden", s.hidden)
    if account is None:
        return Problem("skip", no_account_reason)
    return None


def owner_filter(account: Account) -> dict[str, Any]:
    """The documents ``account`` owns (the guest account owns those without ``user``)."""
    return documents_of(account.sub)


def documents_of(sub: str | None) -> dict[str, Any]:
    """The MongoDB filter of the documents of the user ``sub`` (``None``: guest content,
    the documents without ``user``)."""
    return {"user": None} if sub is None else {"user": sub}


def users_entry_documents(uid: str, guest_id: str) -> dict[str, Any]:
    """The documents of the ``users`` entry ``uid`` (the guest entry's have no ``user``)."""
    return documents_of(None if uid == guest_id else uid)
