"""The account lifecycle's decisions, without servers: what a ``users`` event is, how the
router holds a DID conflict and never targets a gone account, how groups keep their turn,
and how the parking hands a refusal over.

The whole flow (the real daemon, PDS and Mongo sandbox) is in
``tests/daemon/test_account_lifecycle.py``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import pytest

from syncd.accounts import DID_CONFLICT, NO_ACCOUNT
from syncd.changes import Change, Op
from syncd.parking import Blocked, Parking
from syncd.source.users import Change as Kind
from syncd.source.users import account_fields, classify
from syncd.state import KnownAccount, StateStore
from syncd.state.aio import StateCalls
from tests.unit.routing import ALICE, FakeResolver, Harness, mood

# -- what a users event is ------------------------------------------------------------------


def test_account_fields_need_a_did_and_hide_the_password() -> None:
    assert account_fields(None) is None
    assert account_fields({"_id": "u"}) is None
    assert account_fields({"atproto": {"did": ""}}) is None
    assert account_fields({"atproto": "did:plc:x"}) is None
    seen = account_fields({"atproto": {"did": "did:plc:x", "handle": "x.test", "password": "s3"}})
    assert seen is not None and (seen.did, seen.handle, seen.password) == (
        "did:plc:x",
        "x.test",
        "s3",
    )
    assert "s3" not in repr(seen)
    # No password: not an account syncd can write for (the invariant checker agrees).
    assert account_fields({"atproto": {"did": "did:plc:x", "handle": "x.test"}}) is None
    bare = account_fields({"atproto": {"did": "did:plc:x", "password": "p"}})
    assert bare is not None and bare.handle == ""


@pytest.mark.parametrize(
    ("before", "now", "kind"),
    [
        (None, None, Kind.UNCHANGED),
        (None, "did:plc:a", Kind.APPEARED),
        ("did:plc:a", None, Kind.GONE),
        ("did:plc:a", "did:plc:b", Kind.RECREATED),
        ("did:plc:a", "did:plc:a", Kind.SAME),
    ],
)
def test_classify(before: str | None, now: str | None, kind: Kind) -> None:
    known = None if before is None else KnownAccount("u", before, "h")
    seen = account_fields(None if now is None else {"atproto": {"did": now, "password": "p"}})
    assert classify(known, seen) is kind


# -- the router -------------------------------------------------------------------------------


async def test_a_did_conflict_is_held_without_any_writer(tmp_path: Path) -> None:
    """Neither user's document is written, nor is the record the DID holds deleted: a
    retryable did_conflict dead letter that names both users, no writer involved."""
    h = Harness(tmp_path, FakeResolver({"auth0|alice": (None, DID_CONFLICT)}), set())
    h.router.writer(ALICE)  # a writer for the DID exists already
    doc = mood("auth0|alice", private=True)  # even a document made private is held
    h.store.ledger_put(
        "moods", str(doc["_id"]), did=ALICE.did, nsid="n", rkey="r", cid=None,
        fingerprint=None, blob_cid=None, pending=False,
    )  # fmt: skip
    change = await h.change(doc)
    await h.router.route(change)
    assert h.submitted == [] and change.ticket.done
    (letter,) = h.store.dead_letters()
    assert letter.reason == DID_CONFLICT and letter.retryable and "auth0|erin" in letter.detail
    assert h.store.ledger_get("moods", str(doc["_id"])) is not None  # the record stays


async def test_a_gone_account_is_never_a_target(tmp_path: Path) -> None:
    """The ledger says the record lives in a gone account: nothing is sent there (its
    repository is not there); the document is a skip."""
    h = Harness(tmp_path, FakeResolver({}), {ALICE.did})
    h.router.writer(ALICE)
    doc = mood("auth0|alice")
    h.store.ledger_put(
        "moods", str(doc["_id"]), did=ALICE.did, nsid="n", rkey="r", cid=None,
        fingerprint=None, blob_cid=None, pending=False,
    )  # fmt: skip
    change = await h.change(doc)
    await h.router.route(change)
    assert h.store.skipped_counts() == [("moods", NO_ACCOUNT, 1)]
    deleted = await h.change(None, doc_id=doc["_id"], op="delete")
    await h.router.route(deleted)
    assert h.submitted == [] and change.ticket.done and deleted.ticket.done
    assert h.store.ledger_get("moods", str(doc["_id"])) is not None  # kept, flagged


async def test_groups_are_routed_in_the_order_they_begin(tmp_path: Path) -> None:
    """A group whose lookups are slow keeps its turn: a later group of the same document
    reaches the writer after it, never before (latest state wins in the writer's queue)."""
    resolver = FakeResolver({"auth0|alice": (ALICE, "")})
    h = Harness(tmp_path, resolver, set())
    doc = mood("auth0|alice", "older")
    gate = resolver.gate = asyncio.Event()
    first = asyncio.create_task(h.router.route_many([await h.change(doc)]))
    await asyncio.sleep(0.01)
    newer = dict(doc, mood="newer")
    second = asyncio.create_task(h.router.route_many([await h.change(newer)]))
    await asyncio.sleep(0.01)
    assert h.submitted == []  # the newer group waits for the older one's turn
    gate.set()
    await asyncio.gather(first, second)
    assert [op.change.doc["mood"] for _, op in h.submitted if op.change.doc] == ["older", "newer"]


async def test_admit_leaves_out_what_another_source_routed_since(tmp_path: Path) -> None:
    """The account backfill's use of ``admit``/``observers``: a document someone else
    routed after the backfill read it is left out of the backfill's group (completed)."""
    h = Harness(tmp_path, FakeResolver({"auth0|alice": (ALICE, "")}), set())
    seen: set[str] = set()

    def observe(changes: Sequence[Change]) -> None:
        seen.update(c.key for c in changes if c.operation != "account_backfill")

    h.router.observers.append(observe)
    a, b = mood("auth0|alice", "a"), mood("auth0|alice", "b")
    read = [await h.change(a, op="account_backfill"), await h.change(b, op="account_backfill")]
    await h.router.route_many([await h.change(dict(b, mood="b newer"))])  # the stream
    await h.router.route_many(read, admit=lambda c: c.key not in seen)
    moods = [op.change.doc["mood"] for _, op in h.submitted if op.change.doc]
    assert moods == ["b newer", "a"] and read[1].ticket.done


# -- the parking hands refusals over ----------------------------------------------------------


class FakeGone:
    def __init__(self) -> None:
        self.gone: set[str] = set()
        self.handed: list[tuple[str, str, int]] = []

    def is_gone(self, did: str) -> bool:
        return did in self.gone

    async def refused(self, did: str, reason: str, ops: Sequence[Op]) -> None:
        self.gone.add(did)
        self.handed.append((did, reason, len(ops)))


async def test_a_refusal_makes_the_account_gone_not_parked(tmp_path: Path) -> None:
    store = StateStore(tmp_path)

    async def reroute(keys: Sequence[tuple[str, str]]) -> None:
        pass

    parking = Parking(StateCalls(store, offload=False), reroute)
    gone = FakeGone()
    parking.gone = gone
    h = Harness(tmp_path / "h", FakeResolver({}), set())
    change = await h.change(mood("auth0|alice"))
    ops = [Op(change=change, desired=ALICE, draft=None, problem=None)]
    await parking.park(ALICE.did, Blocked("refused: AccountTakedown", 0.0), ops)
    assert gone.handed == [(ALICE.did, "refused: AccountTakedown", 1)]
    assert store.parked_accounts() == [] and not parking.accounts()
    assert parking.is_parked(ALICE.did)  # its writer gives way while it is gone
    await parking.park(ALICE.did, Blocked("parked", 0.0), ops)  # what the writer drains
    assert gone.handed[-1] == (ALICE.did, "parked", 1) and store.parked_accounts() == []
    await parking.park("did:plc:bob", Blocked("auth: AuthenticationRequired", 1e12), ops)
    assert [a.did for a in store.parked_accounts()] == ["did:plc:bob"]  # auth still parks
