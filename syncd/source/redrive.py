"""Retry retryable dead letters by themselves (transient image failures, an account
that could not log in), so a bad hour upstream needs no operator.

Every ``pipeline.dead_letter_retry_seconds`` the daemon re-reads those documents
and routes their current state through the normal publish path; a success
clears the dead letter, a failure records it again (``attempts`` grows).
Permanent dead letters (bad data) wait for ``syncd dead-letters retry``.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

import structlog

if TYPE_CHECKING:
    from syncd.source.deps import SourceDeps

log = structlog.get_logger("syncd.redrive")


async def redrive_once(deps: SourceDeps, *, older_than: float, page: int = 500) -> int:
    """Route every retryable dead letter last seen more than ``older_than`` seconds ago,
    a page at a time (read off the event loop, never the whole table at once)."""
    cutoff = time.time() - older_than
    total = 0
    after: tuple[str, str] | None = None
    while letters := await deps.calls.read(deps.calls.store.dead_letters_due, cutoff, page, after):
        after = (letters[-1].collection, letters[-1].doc_key)
        keys = [
            (d.collection, d.doc_key) for d in letters if d.collection in deps.mongo.collections
        ]
        total += await deps.publisher.republish(keys, operation="redrive", wait=False)
    if total:
        log.info("dead_letters_redriven", count=total)
    return total


async def redrive_loop(deps: SourceDeps) -> None:
    interval = deps.dead_letter_retry_seconds
    if interval <= 0:
        return
    while not deps.stopping.is_set():
        await asyncio.sleep(interval)
        try:
            await redrive_once(deps, older_than=interval)
        except Exception as exc:  # never take the daemon down over a retry pass
            log.warning("redrive_failed", error=f"{type(exc).__name__}: {exc}"[:300])
