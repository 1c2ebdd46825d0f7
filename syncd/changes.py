"""What flows through syncd: a source change, and one account's share of it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from syncd.checkpoint import Ticket
from syncd.mappings import Draft
from syncd.pds.sessions import Account
from syncd.state import LedgerEntry


@dataclass(slots=True)
class Change:
    """A document's current state. ``doc`` is None when the document is gone.

    Every change carries the *whole current document* (insert, replace, an update
    looked up with ``updateLookup``, a backfill read), so applying it makes the
    PDS match the document as it is now: replaying a change is harmless.
    """

    collection: str
    doc_id: Any
    key: str
    doc: dict[str, Any] | None
    operation: str
    ticket: Ticket
    cluster_time: int | None = None


@dataclass(slots=True)
class Problem:
    """Why a document is not published: a skip (normal) or a dead letter (bad data)."""

    kind: str  # "skip" | "dead" | "hidden"
    reason: str
    detail: str = ""
    retryable: bool = False


@dataclass(slots=True)
class Op:
    """One account writer's share of a change."""

    change: Change
    desired: Account | None  # the account the record should live in (None: nowhere)
    draft: Draft | None
    problem: Problem | None
    holder_hint: LedgerEntry | None = None  # where the record lived when routed
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. owner_did for adopted keys
