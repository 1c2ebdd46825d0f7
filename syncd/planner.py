"""Decide what one account's repository must do for one change. Pure: no I/O.

Inputs are the change (the document as it is now), the router's verdict (which
account the record belongs in, the draft, or why it is not published), the
ledger row, and -- when the document names a record key syncd does not know as
its own -- what a look at that key found (:class:`KeyCheck`). Output is a
:class:`Plan`: nothing, create, update, upsert (when it is uncertain whether the
record exists: crash recovery) or delete; or ``check`` when the named key must
be looked at first (the writer looks, then plans again with the answer).

**The key the document names wins** (``atproto.rkey``, ``at.rkey`` on tapes: the
mapping's ``backref`` field; the platform's own inline
writers put the key the PDS picked there, and permalinks use it), but only once
it is known to be this document's: its record carries this document's ``ref``
(or the legacy ``mongoId``), or there is no record there and no other document
holds the key in the ledger. A key that names another document's record is
ignored and reported; syncd never overwrites or deletes a record it cannot
attribute to the document. When syncd's own record sits at another key, the
write *moves* it: the named record is written and syncd's old one deleted in the
same ``applyWrites`` (``retire``), so each document ends with exactly one record.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final, Literal

from syncd.changes import Op, Problem
from syncd.mappings import MAPPINGS, backref_field
from syncd.mappings.base import when_of
from syncd.rkey import derive_rkey, named_key
from syncd.state import LedgerEntry

NONE, CREATE, UPDATE, UPSERT, DELETE, DELETE_UNCERTAIN, CHECK = (
    "none",
    "create",
    "update",
    "upsert",
    "delete",
    "delete_uncertain",
    "check",
)
BATCHABLE = frozenset({CREATE, UPDATE, DELETE})
WRITES = frozenset({CREATE, UPDATE, UPSERT})

#: What a look at a named key found: the record there is this document's, there is
#: none (and no other document holds the key), or it belongs to another document.
KeyState = Literal["ours", "free", "foreign"]
OURS: Final = "ours"
FREE: Final = "free"
FOREIGN: Final = "foreign"


@dataclass(frozen=True)
class KeyCheck:
    rkey: str
    state: KeyState
    cid: str | None = None
    detail: str = ""


@dataclass
class Plan:
    op: Op
    action: str
    nsid: str = ""
    rkey: str = ""
    record: dict[str, Any] | None = None
    fingerprint: str | None = None
    blob_cid: str | None = None
    previous_blob_cid: str | None = None
    owns_ledger: bool = True  # False: deleting from a former repo whose row moved on
    writeback: str | None = None  # "set" | "unset"
    uri: str | None = None
    cid: str | None = None
    problem: Problem | None = None
    failed: Problem | None = None  # set when the write itself failed
    #: Another record of this document to delete with this write (syncd's own record
    #: when the document names another key; ``retire_certain``: it is known to exist).
    retire: str | None = None
    retire_certain: bool = False
    #: A key the document named that is another document's: ignored, and reported.
    refused_key: KeyCheck | None = None
    #: The account could not write (``syncd.parking.Blocked``): the op is parked, not sent.
    parked: Exception | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def collection(self) -> str:
        return self.op.change.collection

    @property
    def key(self) -> str:
        return self.op.change.key

    @property
    def seen_rkey(self) -> Any:
        """The back-reference as the document stood when planned (write-backs are
        conditional on it, so they never overwrite a key another writer set since)."""
        return backref(self.op.change.doc, backref_field(self.collection)).get("rkey")


def backref(doc: dict[str, Any] | None, field: str) -> dict[str, Any]:
    """The document's back-reference (``doc[field]``, the mapping's ``backref``), or {}."""
    if not doc:
        return {}
    at = doc.get(field)
    return at if isinstance(at, dict) else {}


def plan(
    op: Op, did: str, entry: LedgerEntry | None, checks: dict[str, KeyCheck] | None = None
) -> Plan:
    """What repository ``did`` must do for ``op``, given the ledger row ``entry`` and
    the answers ``checks`` (rkey -> :class:`KeyCheck`) for keys the document names."""
    checks = checks or {}
    mine = entry if entry is not None and entry.did == did else None
    if op.desired is not None and op.desired.did == did and op.draft is not None:
        return _publish(op, did, entry, mine, checks)
    return _remove(op, did, mine, checks)


def _publish(
    op: Op,
    did: str,
    entry: LedgerEntry | None,
    mine: LedgerEntry | None,
    checks: dict[str, KeyCheck],
) -> Plan:
    draft = op.draft
    assert draft is not None
    doc = op.change.doc
    assert doc is not None
    field = backref_field(op.change.collection)
    named = named_key(doc, field)
    refused: KeyCheck | None = None
    if named is not None and (mine is None or named != mine.rkey):
        check = checks.get(named)
        if check is None:
            return Plan(op, CHECK, nsid=draft.nsid, rkey=named)
        if check.state == FOREIGN:
            refused, named = check, None
    else:
        check = None

    if mine is not None and (named is None or named == mine.rkey):
        if not mine.pending and mine.fingerprint == draft.fingerprint:
            p = Plan(op, NONE, nsid=mine.nsid, rkey=mine.rkey, cid=mine.cid, refused_key=refused)
            if backref(doc, field).get("rkey") != mine.rkey:
                p.writeback = "set"
                p.uri = f"at://{did}/{mine.nsid}/{mine.rkey}"
            return p
        action, rkey, retire = (UPSERT if mine.pending else UPDATE), mine.rkey, None
    elif named is not None:
        assert check is not None
        # The document's own key: adopt it (and, if syncd's record sits elsewhere, move it).
        rkey = named
        if mine is not None and mine.pending:
            action = UPSERT  # a move that may have half happened before a crash
        else:
            action = UPDATE if check.state == OURS else CREATE
        retire = mine.rkey if mine is not None else None
    else:
        rkey = derive_rkey(when_of(doc), op.change.doc_id)
        # A row pending from a crash may already exist on the PDS.
        action = UPSERT if entry is not None and entry.pending and entry.did == did else CREATE
        retire = None
    return Plan(
        op,
        action,
        nsid=draft.nsid,
        rkey=rkey,
        fingerprint=draft.fingerprint,
        previous_blob_cid=mine.blob_cid if mine is not None else None,
        writeback="set",
        problem=op.problem,
        retire=retire,
        retire_certain=retire is not None and mine is not None and not mine.pending,
        refused_key=refused,
        extra={"existed": (mine is not None and not mine.pending) or action == UPDATE},
    )


def _remove(op: Op, did: str, mine: LedgerEntry | None, checks: dict[str, KeyCheck]) -> Plan:
    """The record must not live in this repository: delete what is this document's."""
    doc = op.change.doc
    mapping = MAPPINGS[op.change.collection]
    unset = "unset" if op.desired is None and backref(doc, mapping.backref).get("rkey") else None
    # A key the document names, in its owner's repository, is deleted only once it is
    # known to be this document's record (never trust the key alone).
    named = named_key(doc, mapping.backref) if op.extra.get("owner_did") == did else None
    if mine is not None and named == mine.rkey:
        named = None
    refused: KeyCheck | None = None
    other: str | None = None
    if named is not None:
        check = checks.get(named)
        if check is None:
            return Plan(op, CHECK, nsid=mapping.nsid, rkey=named)
        if check.state == OURS:
            other = named
        elif check.state == FOREIGN:
            refused = check
    if mine is not None:
        return Plan(
            op,
            DELETE_UNCERTAIN if mine.pending else DELETE,
            nsid=mine.nsid,
            rkey=mine.rkey,
            previous_blob_cid=mine.blob_cid,
            writeback=unset,
            problem=op.problem,
            retire=other,
            retire_certain=other is not None,
            refused_key=refused,
        )
    hint = op.holder_hint
    if hint is not None and hint.did == did:
        return Plan(
            op,
            DELETE_UNCERTAIN,
            nsid=hint.nsid,
            rkey=hint.rkey,
            owns_ledger=False,
            writeback=unset,
            problem=op.problem,
            retire=other,
            retire_certain=other is not None,
            refused_key=refused,
        )
    if other is not None:
        # A record another writer (the platform, the old scripts) made for a document
        # that is no longer public.
        return Plan(
            op,
            DELETE,
            nsid=mapping.nsid,
            rkey=other,
            owns_ledger=False,
            writeback=unset,
            problem=op.problem,
        )
    return Plan(
        op, NONE, writeback=unset, problem=op.problem, owns_ledger=False, refused_key=refused
    )


def after_failure(p: Plan, mine: LedgerEntry | None) -> None:
    """``p``'s document can no longer produce a valid record (a permanent failure while
    preparing it): turn ``p`` into the removal of its records here -- syncd's own
    (``mine``, this repository's ledger row), and the one it names when that was
    checked to be its own. The failure becomes the plan's problem (a dead letter)."""
    known = p.rkey if p.action == UPDATE else None  # a record checked to be this one's
    p.problem, p.failed, p.record = p.failed, None, None
    p.retire, p.retire_certain = None, False
    if mine is not None:
        p.action = DELETE_UNCERTAIN if mine.pending else DELETE
        p.nsid, p.rkey, p.writeback = mine.nsid, mine.rkey, "unset"
        p.previous_blob_cid = mine.blob_cid
        if known is not None and known != mine.rkey:
            p.retire, p.retire_certain = known, True
    elif known is not None:
        p.action, p.owns_ledger, p.writeback = DELETE, False, "unset"
    else:
        p.action, p.writeback = NONE, None
