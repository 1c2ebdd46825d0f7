import asyncio
from pathlib import Path

from syncd.checkpoint import Checkpointer


async def test_watermark_waits_for_every_predecessor() -> None:
    cp = Checkpointer(capacity=10)
    a = await cp.open("a")
    b = await cp.open("b")
    c = await cp.open("c")
    c.complete()
    b.complete()
    assert cp.advance() == []  # "a" is still in flight: nothing after it is safe
    a.complete()
    assert cp.advance() == ["a", "b", "c"]


async def test_marks_pass_through_when_nothing_is_pending() -> None:
    cp = Checkpointer(capacity=10)
    cp.mark("idle-1")
    t = await cp.open(None)
    cp.mark("idle-2")
    assert cp.advance() == ["idle-1"]
    t.complete()
    assert cp.advance() == ["idle-2"]


async def test_fan_out_completes_when_every_part_does() -> None:
    cp = Checkpointer(capacity=10)
    t = await cp.open("x")
    t.add_part()
    t.complete()
    assert cp.advance() == []
    t.complete()
    assert cp.advance() == ["x"]


async def test_capacity_applies_backpressure() -> None:
    cp = Checkpointer(capacity=2)
    first = await cp.open(1)
    await cp.open(2)
    third = asyncio.create_task(cp.open(3))
    await asyncio.sleep(0.05)
    assert not third.done()
    first.complete()
    await asyncio.wait_for(third, 1)
    assert cp.outstanding == 2


async def test_drained() -> None:
    cp = Checkpointer(capacity=5)
    t = await cp.open(None)
    waiter = asyncio.create_task(cp.drained())
    await asyncio.sleep(0.01)
    assert not waiter.done()
    t.complete()
    await asyncio.wait_for(waiter, 1)


async def test_positions_received_safe_saved(tmp_path: Path) -> None:
    from syncd.positions import BackfillMark, Positions, StreamMark
    from syncd.state import StateStore
    from syncd.state.aio import StateCalls

    store = StateStore(tmp_path)
    store.begin_backfill((1, 0), ["moods"], reason="first_start")
    pos = Positions(store, capacity=10)
    calls = StateCalls(store, offload=False)
    a = await pos.open(StreamMark({"_data": "a"}, (1, 1)), started=1.0)
    b = await pos.open(StreamMark({"_data": "b"}, (1, 2)), started=2.0)
    pos.mark(BackfillMark("moods", "id-9", "objectid", 9, False))
    assert pos.received == StreamMark({"_data": "b"}, (1, 2))
    b.complete()  # out of order: nothing is safe while `a` is in flight
    assert await pos.save(calls) is False and pos.safe is None and store.load_position() is None
    assert pos.oldest_pending_started() == 1.0
    a.complete()
    assert await pos.save(calls) is True
    assert pos.safe == pos.saved == StreamMark({"_data": "b"}, (1, 2))
    saved = store.load_position()
    assert saved is not None and saved.token == {"_data": "b"} and saved.cluster_time == (1, 2)
    assert store.backfill_progress()["moods"].last_id == "id-9"
    assert await pos.save(calls) is False  # nothing new: no write
    pos.mark(StreamMark({"_data": "b"}, (1, 2)))  # an idle token equal to the saved one
    assert await pos.save(calls) is False
