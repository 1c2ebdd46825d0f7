import asyncio

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
