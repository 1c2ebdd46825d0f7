"""Hand a document's current state to the router: the one way any source publishes.

Backfill scans, the sweep, dead-letter redrives and the admin commands all end
here, so a document becomes a record through exactly the path the change
stream uses.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from syncd.changes import Change
from syncd.ids import doc_key

if TYPE_CHECKING:
    from syncd.engine import Engine

#: Documents a scan routes at once (one ledger read for them).
ROUTE_GROUP = 200


async def emit(
    engine: Engine,
    collection: str,
    doc_id: Any,
    doc: dict[str, Any] | None,
    *,
    operation: str,
) -> None:
    """Route one document (its current state; None: gone). Waits for in-flight capacity."""
    await emit_many(engine, collection, [(doc_id, doc)], operation=operation)


async def emit_many(
    engine: Engine,
    collection: str,
    docs: Sequence[tuple[Any, dict[str, Any] | None]],
    *,
    operation: str,
) -> None:
    """Route documents of one collection as a group (one state read for the group)."""
    changes: list[Change] = []
    for doc_id, doc in docs:
        ticket = await engine.positions.open(None, started=time.time())
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
    await engine.router.route_many(changes)


def group_size(engine: Engine) -> int:
    """How many documents a source routes at once: at most half the in-flight capacity
    (a group's tickets are all open before it is routed)."""
    return max(1, min(ROUTE_GROUP, engine.config.pipeline.queue_size // 2))


async def fetch_documents(
    engine: Engine, collection: str, ids: list[Any], *, page: int = 500
) -> dict[str, dict[str, Any]]:
    """Current documents by key (fresh reads, for the publish path); missing ones are absent."""
    out: dict[str, dict[str, Any]] = {}
    for i in range(0, len(ids), page):
        chunk = ids[i : i + page]
        async for doc in engine.db[collection].find({"_id": {"$in": chunk}}):
            out[doc_key(doc["_id"])] = doc
    return out
