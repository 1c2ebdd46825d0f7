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

from syncd.ids import parse_doc_key
from syncd.source.publish import emit, fetch_documents

if TYPE_CHECKING:
    from syncd.engine import Engine

log = structlog.get_logger("syncd.redrive")


async def redrive_once(engine: Engine, *, older_than: float) -> int:
    """Route every retryable dead letter last seen more than ``older_than`` seconds ago."""
    cutoff = time.time() - older_than
    due: dict[str, list[str]] = {}
    for letter in engine.store.dead_letters():
        if letter.retryable and letter.last_seen <= cutoff:
            due.setdefault(letter.collection, []).append(letter.doc_key)
    total = 0
    for collection, keys in due.items():
        if collection not in engine.config.mongo.collections:
            continue
        ids = [parse_doc_key(k) for k in keys]
        docs = await fetch_documents(engine, collection, ids)
        for key, doc_id in zip(keys, ids, strict=True):
            await emit(engine, collection, doc_id, docs.get(key), operation="redrive")
            total += 1
    if total:
        log.info("dead_letters_redriven", count=total)
    return total


async def redrive_loop(engine: Engine) -> None:
    interval = engine.config.pipeline.dead_letter_retry_seconds
    if interval <= 0:
        return
    while not engine.stopping.is_set():
        await asyncio.sleep(interval)
        try:
            await redrive_once(engine, older_than=interval)
        except Exception as exc:  # never take the daemon down over a retry pass
            log.warning("redrive_failed", error=f"{type(exc).__name__}: {exc}"[:300])
