"""Decide what one account's repository must do for one change. Pure: no I/O.

Inputs are the change (the document as it is now), the router's verdict (which
account the record belongs in, the draft, or why it is not published) and the
ledger row. Output is a :class:`Plan`: nothing, create, update, upsert (when it
is uncertain whether the record exists: adopted keys, crash recovery) or delete.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from syncd.changes import Op, Problem
from syncd.mappings import MAPPINGS
from syncd.mappings.base import when_of
from syncd.rkey import derive_rkey, is_tid
from syncd.state import LedgerEntry

NONE, CREATE, UPDATE, UPSERT, DELETE, DELETE_UNCERTAIN = (
    "none",
    "create",
    "update",
    "upsert",
    "delete",
    "delete_uncertain",
)
BATCHABLE = frozenset({CREATE, UPDATE, DELETE})
WRITES = frozenset({CREATE, UPDATE, UPSERT})


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
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def collection(self) -> str:
        return self.op.change.collection

    @property
    def key(self) -> str:
        return self.op.change.key


def adopted_rkey(doc: dict[str, Any] | None) -> str | None:
    """A record key the old scripts wrote back (``atproto.rkey``), if it is a valid TID."""
    if not doc:
        return None
    at = doc.get("atproto")
    if isinstance(at, dict):
        rkey = at.get("rkey")
        if isinstance(rkey, str) and is_tid(rkey):
            return rkey
    return None


def backref(doc: dict[str, Any] | None) -> dict[str, Any]:
    if not doc:
        return {}
    at = doc.get("atproto")
    return at if isinstance(at, dict) else {}


def plan(op: Op, did: str, entry: LedgerEntry | None) -> Plan:
    """What repository ``did`` must do for ``op``, given the ledger row ``entry``."""
    change = op.change
    doc = change.doc
    mine = entry if entry is not None and entry.did == did else None
    mapping = MAPPINGS[change.collection]

    if op.desired is not None and op.desired.did == did and op.draft is not None:
        draft = op.draft
        if mine is not None and not mine.pending and mine.fingerprint == draft.fingerprint:
            p = Plan(op, NONE, nsid=mine.nsid, rkey=mine.rkey, uri=None, cid=mine.cid)
            if backref(doc).get("rkey") != mine.rkey:
                p.writeback = "set"
                p.uri = f"at://{did}/{mine.nsid}/{mine.rkey}"
            return p
        if mine is not None:
            action = UPSERT if mine.pending else UPDATE
            rkey = mine.rkey
            prev_blob = mine.blob_cid
        else:
            adopted = adopted_rkey(doc)
            assert doc is not None
            rkey = adopted or derive_rkey(when_of(doc), change.doc_id)
            # Adopted keys (old scripts) and rows pending from a crash may already exist.
            action = UPSERT if adopted or (entry is not None and entry.pending) else CREATE
            prev_blob = None
        return Plan(
            op,
            action,
            nsid=draft.nsid,
            rkey=rkey,
            fingerprint=draft.fingerprint,
            previous_blob_cid=prev_blob,
            writeback="set",
            problem=op.problem,
            extra={
                "existed": mine is not None and not mine.pending,
                "adopted": mine is None and adopted_rkey(doc) is not None,
            },
        )

    # The record must not live in this repository.
    unset = "unset" if op.desired is None and backref(doc).get("rkey") else None
    if mine is not None:
        return Plan(
            op,
            DELETE_UNCERTAIN if mine.pending else DELETE,
            nsid=mine.nsid,
            rkey=mine.rkey,
            previous_blob_cid=mine.blob_cid,
            writeback=unset,
            problem=op.problem,
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
        )
    adopted = adopted_rkey(doc)
    if adopted is not None and op.extra.get("owner_did") == did:
        # A record the old scripts made for a document that is no longer public.
        return Plan(
            op,
            DELETE_UNCERTAIN,
            nsid=mapping.nsid,
            rkey=adopted,
            owns_ledger=entry is None,
            writeback=unset,
            problem=op.problem,
        )
    return Plan(op, NONE, writeback=unset, problem=op.problem, owns_ledger=False)
