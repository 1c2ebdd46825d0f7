"""Ordering in one account's writer: per document in order, latest state wins, images ahead.

No PDS here: painting image work is replaced by futures the test resolves, and the
test looks at which ops are ready to be taken, in which order.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest
from bson import ObjectId

from syncd.changes import Change, Op
from syncd.checkpoint import Checkpointer, Ticket
from syncd.images.urls import PaintingSource
from syncd.mappings import Draft, MappingContext, StreamedBlob
from syncd.pds.sessions import Account
from syncd.state import LedgerEntry
from syncd.write import AccountWriter, WriterDeps
from syncd.write.images import ImageResult
from syncd.write.queue import DocumentQueue
from syncd.write.records import IMAGE, STREAMED

ACCOUNT = Account(sub="u1", did="did:plc:one", handle="one.test", password="pw")
OTHER = Account(sub="u2", did="did:plc:two", handle="two.test", password="pw")


def op(collection: str, key: str, *, painting: bool = False, desired: Account = ACCOUNT) -> Op:
    image = PaintingSource("http://img.test/a.png", None) if painting else None
    nsid = f"computer.aesthetic.{collection.rstrip('s')}"
    doc: dict[str, Any] = {"_id": ObjectId(), "when": datetime(2025, 1, 1, tzinfo=UTC)}
    change = Change(
        collection=collection,
        doc_id=doc["_id"],
        key=key,
        doc=doc,
        operation="update",
        ticket=Ticket(Checkpointer(10), None, 0.0),
    )
    draft = Draft(nsid=nsid, fields={}, fingerprint=key, image=image)
    return Op(change=change, desired=desired, draft=draft, problem=None)


# -- the queue alone ----------------------------------------------------------------


def test_queue_takes_ready_ops_oldest_first_one_per_document() -> None:
    done: list[Op] = []
    q = DocumentQueue(done.append)
    a, b, c = op("moods", "a"), op("moods", "b"), op("moods", "c")
    q.push(a)
    q.push(b, ready=False)
    q.push(c)
    assert [o.change.key for o in q.take(10)] == ["a", "c"] and q.ready == 0 and len(q) == 1
    assert q.mark_ready(b) and [o.change.key for o in q.take(10)] == ["b"]
    assert done == [] and len(q) == 0


@pytest.mark.parametrize("first_ready", [True, False])
def test_a_newer_op_supersedes_a_waiting_one_and_keeps_its_place(first_ready: bool) -> None:
    done: list[Op] = []
    q = DocumentQueue(done.append)
    old, other, new = op("moods", "a"), op("moods", "b"), op("moods", "a")
    q.push(old, ready=first_ready)
    q.push(other)
    q.push(new)
    assert done == [old]  # completed at once: the newer state covers it
    assert [o for o in q.take(10)] == [new, other]
    assert not q.mark_ready(old)  # a late image for the superseded op is ignored


def test_take_respects_the_limit() -> None:
    q = DocumentQueue(lambda _: None)
    for i in range(5):
        q.push(op("moods", f"k{i}"))
    assert len(q.take(2)) == 2 and q.ready == 3 and len(q.take(10)) == 3


# -- the writer's submit: images prepared ahead -------------------------------------------


class FakeImages:
    """Each painting's image work waits for the test to resolve its future."""

    def __init__(self) -> None:
        self.futures: dict[str, asyncio.Future[ImageResult]] = {}
        self.released = 0

    async def prepare(self, collection: str, doc: dict[str, Any], blobs: Any) -> ImageResult:
        key = str(len(self.futures))
        fut = asyncio.get_running_loop().create_future()
        self.futures[key] = fut
        return await fut

    def release(self, result: ImageResult) -> None:
        self.released += 1


def writer(images: FakeImages, done: list[Op]) -> AccountWriter:
    deps = WriterDeps(
        calls=None,  # type: ignore[arg-type]
        repo=None,  # type: ignore[arg-type]
        db=None,  # type: ignore[arg-type]
        images=images,  # type: ignore[arg-type]
        slots=asyncio.Semaphore(1),
        stopping=asyncio.Event(),
        mapping_ctx=MappingContext(),
        max_writes=200,
        retry_cap=1.0,
        parking=None,  # type: ignore[arg-type]
        on_done=lambda o, did: done.append(o),
    )
    return AccountWriter(ACCOUNT, deps)


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_text_is_ready_while_paintings_are_prepared() -> None:
    images, done = FakeImages(), []
    w = writer(images, done)
    p1, m1, p2, k1 = (
        op("paintings", "p1", painting=True),
        op("moods", "m1"),
        op("paintings", "p2", painting=True),
        op("kidlisp", "k1"),
    )
    for o in (p1, m1, p2, k1):
        w.submit(o)
    await settle()
    assert w.queue.ready == 2  # the text does not wait for either image
    images.futures["1"].set_result(ImageResult())  # p2's image first
    await settle()
    assert w.queue.take(10) == [m1, p2, k1]
    images.futures["0"].set_result(ImageResult())
    await settle()
    assert w.queue.take(10) == [p1] and done == []


async def test_rapid_edits_of_a_painting_cost_one_image() -> None:
    images, done = FakeImages(), []
    w = writer(images, done)
    first, second = op("paintings", "p1", painting=True), op("paintings", "p1", painting=True)
    w.submit(first)
    await settle()
    first_task = first.extra[IMAGE]
    w.submit(second)
    await settle()
    assert first_task.cancelled() and done == [first]  # the first image's work stops
    images.futures["1"].set_result(ImageResult())
    await settle()
    assert w.queue.take(10) == [second]


async def test_only_this_accounts_paintings_are_prepared_ahead() -> None:
    images, done = FakeImages(), []
    w = writer(images, done)
    w.submit(op("paintings", "p1", painting=True, desired=OTHER))  # a delete from this repo
    await settle()
    assert images.futures == {} and w.queue.ready == 1


# -- tapes: the MP4 streamed and uploaded ahead, outside the batch -----------------------


class FakeStreamed:
    """A tape's MP4 work (fetch + upload) waits for the test to resolve its future."""

    def __init__(self) -> None:
        self.futures: list[asyncio.Future[Any]] = []
        self.released: list[Any] = []

    async def prepare(self, collection: str, blob: Any, blobs: Any) -> Any:
        fut = asyncio.get_running_loop().create_future()
        self.futures.append(fut)
        return await fut

    def release(self, result: Any) -> None:
        self.released.append(result)


def tape_op(key: str) -> Op:
    o = op("tapes", key)
    assert o.draft is not None
    blob = StreamedBlob("video", "http://img.test/t.mp4", ("video/mp4",), 52_428_800)
    o.draft = Draft(nsid=o.draft.nsid, fields={}, fingerprint=key, blob=blob)
    return o


async def test_a_tape_uploading_holds_up_nothing_else_of_its_account() -> None:
    images, streamed, done = FakeImages(), FakeStreamed(), []
    w = writer(images, done)
    w.deps.streamed = streamed  # type: ignore[assignment]
    t1, m1, m2 = tape_op("t1"), op("moods", "m1"), op("moods", "m2")
    for o in (t1, m1, m2):
        w.submit(o)
    await settle()
    assert len(streamed.futures) == 1 and images.futures == {}
    assert w.queue.take(10) == [m1, m2]  # the moods go while the MP4 is fetched/uploaded
    result = object()
    streamed.futures[0].set_result(result)
    await settle()
    assert w.queue.take(10) == [t1]
    w._finish([t1])
    assert streamed.released == [result] and done == [t1]  # the spool goes with the op


async def test_a_superseded_tape_stops_its_upload() -> None:
    images, streamed, done = FakeImages(), FakeStreamed(), []
    w = writer(images, done)
    w.deps.streamed = streamed  # type: ignore[assignment]
    first, second = tape_op("t1"), tape_op("t1")
    w.submit(first)
    await settle()
    first_task = first.extra[STREAMED]
    w.submit(second)
    await settle()
    assert first_task.cancelled() and done == [first]
    assert len(streamed.futures) == 2


def test_drop_where_takes_the_picked_ops_and_keeps_the_others_in_place() -> None:
    q = DocumentQueue(lambda o: None)
    a, b, c, d = (op("moods", k) for k in "abcd")
    for o in (a, b, c):
        q.push(o)
    q.push(d, ready=False)
    assert q.drop_where(lambda o: o.change.key in "bd") == [b, d]
    assert len(q) == 2 and q.ready == 2
    assert q.take(10) == [a, c] and q.ready == 0


# -- a parked writer: what waits for the account, and what does not --------------------


class FakeParking:
    def __init__(self) -> None:
        self.parked: list[tuple[str, str, list[str]]] = []

    def is_parked(self, did: str) -> bool:
        return True

    def until(self, did: str) -> float:
        return 0.0

    def reason(self, did: str) -> str:
        return "rate_limited"

    async def park(self, did: str, blocked: Any, ops: list[Op]) -> None:
        self.parked.append((did, blocked.reason, [o.change.key for o in ops]))


def _ledger(o: Op, fingerprint: str) -> LedgerEntry:
    assert o.draft is not None
    return LedgerEntry(
        o.change.collection, o.change.key, ACCOUNT.did, o.draft.nsid, "3kabc", "bafy",
        fingerprint, None, False, 0.0,
    )  # fmt: skip


async def test_a_parked_writer_parks_only_what_would_write() -> None:
    """The echo of syncd's own write-back (the ledger says the record holds this content)
    needs no PDS call: it is not parked (re-read later for nothing, and counted as waiting)."""
    done: list[Op] = []
    w = writer(FakeImages(), done)
    parking = FakeParking()
    w.deps.parking = parking  # type: ignore[assignment]
    new, echo, changed = op("moods", "new"), op("moods", "echo"), op("moods", "changed")
    echo.holder_hint = _ledger(echo, fingerprint="echo")  # the draft's fingerprint is its key
    changed.holder_hint = _ledger(changed, fingerprint="older")
    for o in (new, echo, changed):
        w.submit(o)
    await w._park_writes()
    assert parking.parked == [(ACCOUNT.did, "rate_limited", ["new", "changed"])]
    assert done == [new, changed]  # their changes complete: the keys wait in the store
    assert w.queue.take(10) == [echo]  # settled through the normal path, no PDS write
