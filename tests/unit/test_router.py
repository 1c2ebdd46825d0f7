"""Routing, table-driven: which account writers a change reaches, with what, and what
happens to a change no writer needs (a skip, a dead letter, nothing at all).

The rules (README "How it works", ``syncd/ownership.py``): a public, valid document
goes to its owner's writer with a draft; wherever the ledger says its record lives now
gets the change too (to delete it there); a document that is not public, or is gone,
reaches only the writer that holds its record; a document no account can take is a
skip, a malformed one a dead letter -- except that a problem document naming a key
still reaches its owner's writer, so the platform's own record of it is removed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from syncd.accounts import NO_ACCOUNT
from syncd.pds.sessions import Account
from tests.unit.routing import ALICE, FakeResolver, Harness, mood

BOB = Account(sub="auth0|bob", did="did:plc:bob", handle="bob.test", password="pw")
ACCOUNTS: dict[str | None, tuple[Account | None, str]] = {
    ALICE.sub: (ALICE, ""),
    BOB.sub: (BOB, ""),
}


@dataclass
class Case:
    doc: dict[str, Any] | None  # None: the document is gone (a hard delete)
    ledger: str | None = None  # the DID whose repository holds the record now
    #: did -> whether that writer's op is to write the record there (the account it belongs
    #: in, with a draft) or not (remove what it holds)
    writers: dict[str, bool] = field(default_factory=dict)
    skip: str | None = None
    dead: str | None = None


CASES: dict[str, Case] = {
    "public, owner has an account": Case(mood(ALICE.sub), writers={ALICE.did: True}),
    "public, record already there": Case(
        mood(ALICE.sub), ledger=ALICE.did, writers={ALICE.did: True}
    ),
    "public, record in the previous owner's repository": Case(
        mood(ALICE.sub), ledger=BOB.did, writers={ALICE.did: True, BOB.did: False}
    ),
    "private, never published": Case(mood(ALICE.sub, private=True)),
    "private, published before": Case(
        mood(ALICE.sub, private=True), ledger=ALICE.did, writers={ALICE.did: False}
    ),
    "nuked, published before": Case(
        mood(ALICE.sub, nuked=True), ledger=ALICE.did, writers={ALICE.did: False}
    ),
    "deleted from MongoDB, published before": Case(
        None, ledger=ALICE.did, writers={ALICE.did: False}
    ),
    "deleted from MongoDB, never published": Case(None),
    "owner without an account": Case(mood("auth0|nobody"), skip=NO_ACCOUNT),
    "mood without a user": Case(mood(None), dead="missing_owner"),
    "user is not a string": Case({**mood(None), "user": 42}, dead="bad_owner"),
    "no mood text, nothing published": Case(mood(ALICE.sub, text=""), dead="missing_mood"),
    "no mood text, names a key the platform wrote": Case(
        mood(ALICE.sub, text="", atproto={"rkey": "3kabcdefghij2"}),
        writers={ALICE.did: False},
        dead="missing_mood",
    ),
}


@pytest.mark.parametrize("name", list(CASES))
async def test_routing(name: str, tmp_path: Path) -> None:
    case = CASES[name]
    h = Harness(tmp_path, FakeResolver(ACCOUNTS), set())
    doc = case.doc
    doc_id = doc["_id"] if doc is not None else mood(ALICE.sub)["_id"]
    if case.ledger is not None:
        h.store.ledger_put(
            "moods", str(doc_id), did=case.ledger, nsid="computer.aesthetic.mood",
            rkey="3kabcdefghij2", cid=None, fingerprint=None, blob_cid=None, pending=False,
        )  # fmt: skip
    change = await h.change(doc, doc_id=doc_id, op="insert" if doc is not None else "delete")
    await h.router.route(change)

    got = {
        did: op.draft is not None and op.desired is not None and op.desired.did == did
        for did, op in h.submitted
    }
    assert got == case.writers
    assert all(op.change is change for _, op in h.submitted)
    skipped = {reason for _, reason, _ in h.store.skipped_counts()}
    assert skipped == ({case.skip} if case.skip else set())
    dead = {d.reason for d in h.store.dead_letters()}
    if case.writers and case.dead:
        # The owner's writer settles it (removing the platform's record first).
        op = h.submitted[0][1]
        assert op.problem is not None and op.problem.reason == case.dead
    else:
        assert dead == ({case.dead} if case.dead else set())
    if not case.writers:
        assert change.ticket.done  # nothing in flight: the position can pass it
