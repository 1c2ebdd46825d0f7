"""Planning, table-driven: what one repository must do for one change (no I/O)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from bson import ObjectId

from syncd.changes import Change, Op, Problem
from syncd.checkpoint import Checkpointer, Ticket
from syncd.mappings import MAPPINGS, MappingContext
from syncd.pds.sessions import Account
from syncd.planner import (
    CHECK,
    CREATE,
    DELETE,
    DELETE_UNCERTAIN,
    FOREIGN,
    FREE,
    NONE,
    OURS,
    UPDATE,
    UPSERT,
    KeyCheck,
    plan,
)
from syncd.rkey import derive_rkey
from syncd.state import LedgerEntry

DID = "did:plc:alice"
OTHER = "did:plc:bob"
WHEN = datetime(2025, 3, 1, 12, 0, 0, 123000, tzinfo=UTC)
OID = ObjectId("65a1b2c3d4e5f60718293a4b")
KEY = str(OID)
DERIVED = derive_rkey(WHEN, OID)
SYNCD_KEY = "3kabcdefghij2"  # a record syncd wrote earlier
NAMED = "3lzyxwvutsrq2"  # the key the platform picked and wrote back
ALICE = Account(sub="auth0|alice", did=DID, handle="alice.test", password="pw")
NSID = "computer.aesthetic.mood"


def _op(*, public: bool = True, rkey: str | None = None, owner_did: str = DID) -> Op:
    doc: dict[str, Any] = {"_id": OID, "user": "auth0|alice", "mood": "calm", "when": WHEN}
    if rkey is not None:
        doc["atproto"] = {"rkey": rkey}
    ticket = Ticket(Checkpointer(10), None, 0.0)
    change = Change("moods", OID, KEY, doc, "update", ticket)
    draft = MAPPINGS["moods"].draft(doc, MappingContext()) if public else None
    return Op(
        change=change,
        desired=ALICE if public else None,
        draft=draft,
        problem=None if public else Problem("hidden", "deleted"),
        extra={"owner_did": owner_did},
    )


def _row(
    rkey: str, *, did: str = DID, pending: bool = False, fp: str | None = "old"
) -> LedgerEntry:
    return LedgerEntry("moods", KEY, did, NSID, rkey, "cid", fp, None, pending, 0.0)


def _fp() -> str:
    op = _op()
    assert op.draft is not None
    return op.draft.fingerprint


def test_new_document_is_created_at_its_derived_key() -> None:
    p = plan(_op(), DID, None)
    assert (p.action, p.rkey, p.retire, p.writeback) == (CREATE, DERIVED, None, "set")


def test_pending_row_from_a_crash_is_an_upsert() -> None:
    p = plan(_op(), DID, _row(DERIVED, pending=True, fp=None))
    assert (p.action, p.rkey) == (UPSERT, DERIVED)


def test_unchanged_document_costs_nothing_but_a_missing_backref() -> None:
    row = _row(SYNCD_KEY, fp=_fp())
    assert plan(_op(rkey=SYNCD_KEY), DID, row).action == NONE
    assert plan(_op(rkey=SYNCD_KEY), DID, row).writeback is None
    p = plan(_op(), DID, row)
    assert (p.action, p.writeback) == (NONE, "set")


def test_changed_document_updates_its_record() -> None:
    p = plan(_op(rkey=SYNCD_KEY), DID, _row(SYNCD_KEY))
    assert (p.action, p.rkey, p.retire) == (UPDATE, SYNCD_KEY, None)


# (ledger row, what a look at the named key found) -> (action, rkey, retire, certain, refused)
NAMED_CASES = [
    pytest.param(None, OURS, (UPDATE, NAMED, None, False, False), id="adopt-platform-record"),
    pytest.param(None, FREE, (CREATE, NAMED, None, False, False), id="adopt-free-key"),
    pytest.param(None, FOREIGN, (CREATE, DERIVED, None, False, True), id="refuse-foreign-key"),
    pytest.param(
        _row(SYNCD_KEY), OURS, (UPDATE, NAMED, SYNCD_KEY, True, False), id="move-onto-platform"
    ),
    pytest.param(_row(SYNCD_KEY), FREE, (CREATE, NAMED, SYNCD_KEY, True, False), id="move-free"),
    pytest.param(
        _row(SYNCD_KEY, pending=True),
        OURS,
        (UPSERT, NAMED, SYNCD_KEY, False, False),
        id="move-after-crash",
    ),
    pytest.param(
        _row(SYNCD_KEY), FOREIGN, (UPDATE, SYNCD_KEY, None, False, True), id="keep-own-key"
    ),
]


@pytest.mark.parametrize(("row", "state", "want"), NAMED_CASES)
def test_the_key_the_document_names_wins_once_it_is_checked(
    row: LedgerEntry | None, state: str, want: tuple[Any, ...]
) -> None:
    op = _op(rkey=NAMED)
    first = plan(op, DID, row)
    assert (first.action, first.rkey) == (CHECK, NAMED)  # never trusted unseen
    p = plan(op, DID, row, {NAMED: KeyCheck(NAMED, state)})  # type: ignore[arg-type]
    got = (p.action, p.rkey, p.retire, p.retire_certain, p.refused_key is not None)
    assert got == want
    assert p.writeback == "set"


def test_a_refused_key_is_overwritten_by_the_records_own() -> None:
    op = _op(rkey=NAMED)
    p = plan(op, DID, _row(SYNCD_KEY, fp=_fp()), {NAMED: KeyCheck(NAMED, FOREIGN)})
    assert (p.action, p.writeback, p.rkey) == (NONE, "set", SYNCD_KEY)
    assert p.seen_rkey == NAMED  # the write-back is conditional on what was read


def test_hidden_document_deletes_syncds_record() -> None:
    p = plan(_op(public=False), DID, _row(SYNCD_KEY))
    assert (p.action, p.rkey, p.retire) == (DELETE, SYNCD_KEY, None)
    assert plan(_op(public=False), DID, _row(SYNCD_KEY, pending=True)).action == DELETE_UNCERTAIN


@pytest.mark.parametrize(
    ("state", "want"),
    [(OURS, (DELETE, NAMED)), (FREE, (NONE, "")), (FOREIGN, (NONE, ""))],
)
def test_hidden_document_deletes_a_named_record_only_if_it_is_its_own(
    state: str, want: tuple[str, str]
) -> None:
    op = _op(public=False, rkey=NAMED)
    assert plan(op, DID, None).action == CHECK
    p = plan(op, DID, None, {NAMED: KeyCheck(NAMED, state)})  # type: ignore[arg-type]
    assert (p.action, p.rkey) == want
    assert p.owns_ledger is False
    assert p.writeback == "unset"
    assert (p.refused_key is not None) == (state == FOREIGN)


def test_hidden_document_with_both_records_deletes_both() -> None:
    op = _op(public=False, rkey=NAMED)
    p = plan(op, DID, _row(SYNCD_KEY), {NAMED: KeyCheck(NAMED, OURS)})
    assert (p.action, p.rkey, p.retire, p.retire_certain) == (DELETE, SYNCD_KEY, NAMED, True)


def test_a_named_key_in_another_owners_repository_is_not_looked_at() -> None:
    # The document's owner is bob: alice's repository only drops what its ledger holds.
    op = _op(public=False, rkey=NAMED, owner_did=OTHER)
    assert plan(op, DID, None).action == NONE
    p = plan(op, DID, _row(SYNCD_KEY))
    assert (p.action, p.rkey, p.retire) == (DELETE, SYNCD_KEY, None)


def test_record_moves_out_of_a_former_owners_repository() -> None:
    op = _op()
    p = plan(op, OTHER, _row(SYNCD_KEY, did=DID))
    assert p.action == NONE  # bob's repository never held it
    hinted = Op(op.change, op.desired, op.draft, op.problem, holder_hint=_row(SYNCD_KEY, did=OTHER))
    p = plan(hinted, OTHER, _row(SYNCD_KEY, did=DID))
    assert (p.action, p.owns_ledger) == (DELETE_UNCERTAIN, False)
