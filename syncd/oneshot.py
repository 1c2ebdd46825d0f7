"""One-shot passes (``syncd backfill``): the daemon's engine, without the stream."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import structlog

from syncd import metrics
from syncd.config import Config
from syncd.engine import Engine
from syncd.ownership import owner_filter
from syncd.source.backfill import Backfill

log = structlog.get_logger("syncd.oneshot")


WRITE_METHODS = (
    "com.atproto.repo.applyWrites",
    "com.atproto.repo.putRecord",
    "com.atproto.repo.deleteRecord",
    "com.atproto.repo.uploadBlob",
)


def pds_write_calls() -> dict[str, int]:
    """Write requests this process sent to the PDS, by XRPC method (from its own metrics)."""
    out = dict.fromkeys(WRITE_METHODS, 0)
    for family in metrics.PDS_REQUESTS.collect():
        for sample in family.samples:
            method = sample.labels.get("method", "")
            if sample.name.endswith("_total") and method in out:
                out[method] += int(sample.value)
    return out


async def account_filter(engine: Engine, account: str | None) -> dict[str, Any] | None:
    """A MongoDB filter for the documents an ATProto account owns (None: all)."""
    if account is None:
        return None
    acct = await engine.accounts.by_handle_or_did(account)
    if acct is None:
        raise LookupError(f"--account: no user with ATProto handle or DID {account!r}")
    return owner_filter(acct)


async def run_backfill(
    config: Config, *, collections: list[str] | None, account: str | None
) -> int:
    engine = Engine(config)
    ticker = asyncio.create_task(engine.checkpoint_loop())
    try:
        try:
            flt = await account_filter(engine, account)
        except LookupError as exc:
            print(f"syncd: {exc}")
            return 2
        backfill = Backfill(engine.sources)
        total = 0
        for coll in collections or list(config.mongo.collections):
            total += await backfill.scan(coll, persist=False, extra_filter=flt)
        await engine.positions.drained()
        await engine.save_checkpoints()
        counts = engine.store.dead_letter_counts()
        calls = pds_write_calls()
        log.info("backfill_pass_done", scanned=total, dead_letters=sum(counts.values()), **calls)
        detail = ", ".join(f"{k.rsplit('.', 1)[1]} {v}" for k, v in calls.items())
        print(
            f"backfill: scanned {total} documents; writes {sum(calls.values())} ({detail}); "
            f"dead letters now {sum(counts.values())}"
        )
        return 0
    finally:
        ticker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await ticker
        await engine.aclose()
