"""Hand a document's current state to the router: the one way any source publishes.

Backfill scans, the sweep, dead-letter redrives and the admin commands all end
here, so a document becomes a record through exactly the path the change
stream uses.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from syncd.changes import Change
from syncd.ids import doc_key

if TYPE_CHECKING:
    from syncd.engine import Engine


async def emit(
    engine: Engine,
    collection: str,
    doc_id: Any,
    doc: dict[str, Any] | None,
    *,
    operation: str,
) -> None:
    """Route one document (its current state; None: gone). Waits for in-flight capacity."""
    ticket = await engine.positions.open(None, started=time.time())
    await engine.router.route(
        Change(
            collection=collection,
            doc_id=doc_id,
            key=doc_key(doc_id),
            doc=doc,
            operation=operation,
            ticket=ticket,
        )
    )


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
