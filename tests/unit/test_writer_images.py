"""The writer prepares painting images ahead of their batch (syncd/writer.py).

No PDS here: the image work is replaced by futures the test resolves, and the
test looks at which ops are ready to be sent, in which order.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest
from bson import ObjectId

from syncd import writer as writer_module
from syncd.changes import Change, Op
from syncd.checkpoint import Checkpointer, Ticket
from syncd.images.urls import PaintingSource
from syncd.mappings import Draft
from syncd.pds.sessions import Account
from syncd.writer import AccountWriter, _Image

ACCOUNT = Account(sub="u1", did="did:plc:one", handle="one.test", password="pw")


class FakeStore:
    def ledger_get(self, collection: str, key: str) -> None:
        return None


def fake_engine() -> Any:
    return SimpleNamespace(store=FakeStore())


def op(collection: str, key: str, *, painting: bool) -> Op:
    image = PaintingSource("http://img.test/a.png", None) if painting else None
    nsid = f"computer.aesthetic.{collection.rstrip('s')}"
    doc = {"_id": ObjectId(), "when": None}
    change = Change(
        collection=collection,
        doc_id=doc["_id"],
        key=key,
        doc=doc,
        operation="insert",
        ticket=Ticket(Checkpointer(10), None, 0.0),
    )
    draft = Draft(nsid=nsid, fields={}, fingerprint=key, image=image)
    return Op(change=change, desired=ACCOUNT, draft=draft, problem=None)


@pytest.fixture
def gates(monkeypatch: pytest.MonkeyPatch) -> dict[str, asyncio.Future[_Image]]:
    """Each painting's image work waits for the test to resolve its future."""
    futures: dict[str, asyncio.Future[_Image]] = {}

    async def prepare(self: AccountWriter, op: Op) -> _Image:
        fut = futures.setdefault(op.change.key, asyncio.get_running_loop().create_future())
        return await fut

    monkeypatch.setattr(AccountWriter, "_prepare_image", prepare)
    monkeypatch.setattr(writer_module, "plan", lambda o, did, e: SimpleNamespace(action="create"))
    return futures


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def keys(w: AccountWriter) -> list[str]:
    return [o.change.key for o in w.queue]


async def test_text_is_ready_while_a_painting_is_prepared(
    gates: dict[str, asyncio.Future[_Image]],
) -> None:
    w = AccountWriter(fake_engine(), ACCOUNT)
    w.submit(op("paintings", "p1", painting=True))
    w.submit(op("moods", "m1", painting=False))
    w.submit(op("paintings", "p2", painting=True))
    w.submit(op("kidlisp", "k1", painting=False))
    await settle()
    assert keys(w) == ["m1", "k1"]  # the text does not wait for either image
    gates["p2"].set_result(_Image())
    await settle()
    assert keys(w) == ["m1", "k1", "p2"]  # ready in any order across documents
    gates["p1"].set_result(_Image())
    await settle()
    assert keys(w) == ["m1", "k1", "p2", "p1"]
    assert w._gated == {}


async def test_a_documents_later_ops_wait_behind_its_earlier_one(
    gates: dict[str, asyncio.Future[_Image]],
) -> None:
    w = AccountWriter(fake_engine(), ACCOUNT)
    first = op("paintings", "p1", painting=True)
    w.submit(first)
    await settle()
    gates["p1"] = asyncio.get_running_loop().create_future()  # the second op's own work
    second = op("paintings", "p1", painting=True)
    gate_first = first.extra[writer_module._IMAGE]
    w.submit(second)
    w.submit(op("moods", "m1", painting=False))
    await settle()
    assert keys(w) == ["m1"]
    # The second op's image is ready first; it still waits for the first op.
    gates["p1"].set_result(_Image())
    await settle()
    assert not gate_first.done() and keys(w) == ["m1"]
    assert [o is second for o in w._gated[("paintings", "p1")]] == [False, True]
    gate_first.cancel()  # the first op's image is done (here: by being cancelled)
    await settle()
    assert w.queue[-2] is first and w.queue[-1] is second
    assert w._gated == {}


async def test_only_this_accounts_new_paintings_are_prepared_ahead(
    gates: dict[str, asyncio.Future[_Image]], monkeypatch: pytest.MonkeyPatch
) -> None:
    w = AccountWriter(fake_engine(), ACCOUNT)
    elsewhere = op("paintings", "p1", painting=True)
    elsewhere.desired = Account(sub="u2", did="did:plc:two", handle="two.test", password="pw")
    w.submit(elsewhere)  # a delete from this repo: nothing to prepare
    monkeypatch.setattr(writer_module, "plan", lambda o, did, e: SimpleNamespace(action="none"))
    unchanged = op("paintings", "p2", painting=True)
    w.submit(unchanged)  # the ledger says the record is up to date
    await settle()
    assert keys(w) == ["p1", "p2"] and gates == {}
