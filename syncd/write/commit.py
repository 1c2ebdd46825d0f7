"""A batch's state writes: the pending marks before sending, the results after.

Pure: each function turns plans into :mod:`syncd.state` operations, which the
writer applies in one call (one transaction, or one bulk write per MongoDB
collection). The rules:

* **Before sending**, every write is marked *pending* in the ledger, so a crash
  right after sending is recovered with idempotent calls. A new record's row is
  written pending at its key; a *move* keeps the old row (its key still the one
  to delete) pending until the commit; a delete marks its row pending.
* **After sending**: a write's row is put with the record's CID and fingerprint;
  a delete drops its row (only if it still names that record: the row may have
  moved to a new owner's repository meanwhile); a failure is a dead letter; every
  settled document's outcome clears or sets its dead letter and skip.
"""

from __future__ import annotations

from syncd.changes import Problem
from syncd.planner import DELETE, DELETE_UNCERTAIN, UPDATE, WRITES, Plan
from syncd.state import (
    BlobAdd,
    BlobForget,
    LedgerDelete,
    LedgerPending,
    LedgerPut,
    Outcome,
    StateOp,
)
from syncd.state.model import OutcomeKind


def pending_ops(plans: list[Plan], did: str) -> list[StateOp]:
    ops: list[StateOp] = []
    for p in plans:
        if p.action in WRITES and p.retire is None:
            ops.append(
                LedgerPut(
                    p.collection,
                    p.key,
                    did,
                    p.nsid,
                    p.rkey,
                    None,
                    None,
                    p.previous_blob_cid,
                    True,
                )
            )
        elif p.owns_ledger:
            ops.append(LedgerPending(p.collection, p.key))
    return ops


def outcome_of(collection: str, key: str, problem: Problem | None) -> Outcome:
    """What the store remembers about a settled document: published (``problem`` None),
    hidden, skipped or dead (with the reason)."""
    if problem is None:
        return Outcome(collection, key, "published")
    kind: OutcomeKind = problem.kind  # type: ignore[assignment]
    return Outcome(collection, key, kind, problem.reason, problem.detail, problem.retryable)


def outcome(p: Plan) -> Outcome:
    """``p``'s document's outcome: its failure, else its problem."""
    return outcome_of(p.collection, p.key, p.failed if p.failed is not None else p.problem)


def commit_ops(plans: list[Plan], did: str) -> tuple[list[StateOp], list[str]]:
    """The batch's results as state operations, and the blob CIDs no record of syncd's
    references any more (the caller forgets them in memory too)."""
    ops: list[StateOp] = []
    forgotten: list[str] = []
    for p in plans:
        if p.failed is None:
            if p.action in WRITES:
                ops.append(
                    LedgerPut(
                        p.collection,
                        p.key,
                        did,
                        p.nsid,
                        p.rkey,
                        p.cid,
                        p.fingerprint,
                        p.blob_cid,
                        False,
                    )
                )
                if p.blob_cid:
                    ops.append(BlobAdd(did, p.blob_cid))
                if p.previous_blob_cid and p.previous_blob_cid != p.blob_cid:
                    forgotten.append(p.previous_blob_cid)
            elif p.action in (DELETE, DELETE_UNCERTAIN):
                if p.owns_ledger:
                    # Only our row: it may have moved to the new owner's repo meanwhile.
                    ops.append(LedgerDelete(p.collection, p.key, did=did, rkey=p.rkey))
                if p.previous_blob_cid:
                    forgotten.append(p.previous_blob_cid)
        ops.append(outcome(p))
    ops.extend(BlobForget(did, cid) for cid in forgotten)
    return ops, forgotten


def action_label(p: Plan) -> str:
    """``syncd_records_written_total{action}`` for a successful plan."""
    if p.action in (DELETE, DELETE_UNCERTAIN):
        return "delete"
    return "update" if p.action == UPDATE or p.extra.get("existed") else "create"
