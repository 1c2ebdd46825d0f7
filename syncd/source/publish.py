"""Hand a document's current state to the router: the one way any source publishes.

Backfill scans, the sweep, dead-letter redrives, unparked accounts and the admin
commands all end here, so a document becomes a record through exactly the path
the change stream uses. :class:`Publisher` is given what it uses (the source
database, the positions, the router's ``route_many``); it holds no engine.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from syncd.changes import Change
from syncd.ids import doc_key, parse_doc_key
from syncd.positions import Positions

#: Documents a source routes at once (one ledger read for them).
ROUTE_GROUP = 200
Docs = Sequence[tuple[Any, dict[str, Any] | None]]


@dataclass(frozen=True)
class Publisher:
    db: AsyncDatabase[dict[str, Any]]
    positions: Positions
    route_many: Callable[[Sequence[Change]], Awaitable[None]]
    capacity: int  # the in-flight window (pipeline.queue_size)

    @property
    def group(self) -> int:
        """How many documents a source routes at once: at most half the in-flight window
        (a group's changes are all registered before it is routed)."""
        return max(1, min(ROUTE_GROUP, self.capacity // 2))

    async def emit(
        self, collection: str, doc_id: Any, doc: dict[str, Any] | None, *, operation: str
    ) -> list[Change]:
        """Route one document (its current state; None: gone). Waits for in-flight capacity."""
        return await self.emit_many(collection, [(doc_id, doc)], operation=operation)

    async def emit_many(self, collection: str, docs: Docs, *, operation: str) -> list[Change]:
        """Route documents of one collection as a group (one state read for the group)."""
        changes: list[Change] = []
        for doc_id, doc in docs:
            ticket = await self.positions.open(None, started=time.time())
            changes.append(
                Change(
                    collection=collection,
                    doc_id=doc_id,
                    key=doc_key(doc_id),
                    doc=doc,
                    operation=operation,
                    ticket=ticket,
                )
            )
        await self.route_many(changes)
        return changes

    async def fetch(
        self, collection: str, ids: list[Any], *, page: int = 500
    ) -> dict[str, dict[str, Any]]:
        """Current documents by key (fresh reads, for the publish path); missing ones are absent."""
        out: dict[str, dict[str, Any]] = {}
        for i in range(0, len(ids), page):
            chunk = ids[i : i + page]
            async for doc in self.db[collection].find({"_id": {"$in": chunk}}):
                out[doc_key(doc["_id"])] = doc
        return out

    async def republish(
        self, keys: Sequence[tuple[str, str]], *, operation: str, wait: bool = True
    ) -> int:
        """Route documents again by key, as they are now (gone ones as deletions); with
        ``wait``, return once every one of their changes is applied."""
        by_collection: dict[str, list[str]] = {}
        for collection, key in keys:
            by_collection.setdefault(collection, []).append(key)
        changes: list[Change] = []
        for collection, ks in by_collection.items():
            ids = [parse_doc_key(k) for k in ks]
            docs = await self.fetch(collection, ids)
            group = [(i, docs.get(k)) for k, i in zip(ks, ids, strict=True)]
            changes += await self.emit_many(collection, group, operation=operation)
        if wait:
            for change in changes:
                await change.ticket.wait()
        return len(changes)
