"""Handles for ``syncd status``: saved once per change, through the state calls."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from syncd.handles import Handles
from syncd.state import StateStore
from syncd.state.aio import StateCalls


class CountingStore:
    """The two calls :class:`Handles` makes, counted with the thread they ran on (a stand-in
    for the MongoDB state, whose calls :class:`StateCalls` offloads)."""

    def __init__(self) -> None:
        self.meta: dict[str, str] = {}
        self.sets: list[tuple[str, str, str]] = []

    def get_meta(self, key: str) -> str | None:
        return self.meta.get(key)

    def set_meta(self, key: str, value: str) -> None:
        self.sets.append((key, value, threading.current_thread().name))
        self.meta[key] = value


def test_a_handle_is_saved_once_and_a_new_one_again() -> None:
    store = CountingStore()
    calls = StateCalls(store, offload=True)  # type: ignore[arg-type]
    handles = Handles(calls)

    async def run() -> None:
        handles.note("did:plc:a", "alice.test")
        handles.note("did:plc:a", "alice.test")  # noted already: nothing to do
        await handles.save("did:plc:a", "alice.test")
        handles.note("did:plc:a", None)  # no handle: nothing to remember
        await handles.flush()
        await handles.save("did:plc:a", "alice2.test")

    asyncio.run(run())
    calls.close()
    assert [(k, v) for k, v, _ in store.sets] == [
        ("handle:did:plc:a", "alice.test"),
        ("handle:did:plc:a", "alice2.test"),
    ]
    # On an offloading store the write never ran on the event loop's thread.
    assert all(t.startswith("state") for _, _, t in store.sets)
    assert store.get_meta("handle:did:plc:a") == "alice2.test"


def test_a_handle_already_stored_is_not_written_again(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    store.set_meta("handle:did:plc:b", "bob.test")
    handles = Handles(StateCalls(store, offload=False))
    asyncio.run(handles.save("did:plc:b", "bob.test"))
    asyncio.run(handles.save("did:plc:c", "carol.test"))
    assert store.get_meta("handle:did:plc:b") == "bob.test"
    assert store.get_meta("handle:did:plc:c") == "carol.test"
    store.close()
