"""``syncd.dump``: a task's dump names the innermost line it waits at, not only its own
coroutine (which would say only "awaiting something")."""

from __future__ import annotations

import asyncio

from syncd.dump import FRAMES, await_chain, task_stacks


async def innermost(ready: asyncio.Event) -> None:
    ready.set()
    await asyncio.sleep(30)


async def middle(ready: asyncio.Event) -> None:
    await innermost(ready)


async def outer(ready: asyncio.Event) -> None:
    await middle(ready)


def test_the_dump_follows_the_await_chain_to_the_innermost_line() -> None:
    async def run() -> tuple[list[str], list[dict[str, object]]]:
        ready = asyncio.Event()
        task = asyncio.create_task(outer(ready), name="waiting")
        await ready.wait()
        try:
            return await_chain(task), task_stacks()
        finally:
            task.cancel()

    chain, stacks = asyncio.run(run())
    names = [line.rsplit(" ", 1)[1] for line in chain]
    assert names[:3] == ["outer", "middle", "innermost"], chain
    assert "sleep" in names[3:], chain  # asyncio.sleep, down to where it really waits
    assert chain[2].split(" ")[0].endswith("test_dump.py:13")  # the `await` line itself
    (dumped,) = [t for t in stacks if t["task"] == "waiting"]
    at = dumped["at"]
    assert isinstance(at, list) and 0 < len(at) <= FRAMES
    assert at[-1] == chain[-1]
