"""Retry policy for transient failures: exponential backoff with full jitter, forever.

"Forever" is right for a daemon whose job is to eventually deliver: a PDS outage
must stall the account (and, through bounded queues, the stream), never drop a
write. Shutdown interrupts the wait (:class:`Abandoned`).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

import structlog

from syncd.pds.errors import RateLimitedError, XrpcError

T = TypeVar("T")
log = structlog.get_logger("syncd.retry")


class Abandoned(Exception):
    """Shutdown was requested while waiting to retry."""


def backoff_delay(attempt: int, *, base: float = 0.25, cap: float = 60.0) -> float:
    """Full jitter: uniform in [0, min(cap, base * 2**attempt)], at least 50 ms."""
    return max(0.05, random.uniform(0, min(cap, base * (2 ** min(attempt, 20)))))


async def sleep_or_stop(seconds: float, stop: asyncio.Event | None) -> None:
    if stop is None:
        await asyncio.sleep(seconds)
        return
    try:
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    except TimeoutError:
        return
    raise Abandoned()


async def with_retries(
    call: Callable[[], Awaitable[T]],
    *,
    stop: asyncio.Event | None,
    cap: float = 60.0,
    on_error: Callable[[XrpcError], None] | None = None,
) -> T:
    """Run ``call`` until it succeeds or fails permanently (non-transient errors raise)."""
    attempt = 0
    while True:
        if stop is not None and stop.is_set():
            raise Abandoned()
        try:
            return await call()
        except RateLimitedError as exc:
            if on_error:
                on_error(exc)
            wait = min(max(exc.retry_after, 0.5), 3600.0) + random.uniform(0, 1.0)
            log.warning(
                "rate_limited", method=exc.method, wait_seconds=round(wait, 1), policy=exc.policy
            )
            await sleep_or_stop(wait, stop)
        except XrpcError as exc:
            if not exc.transient:
                raise
            if on_error:
                on_error(exc)
            delay = backoff_delay(attempt, cap=cap)
            attempt += 1
            log.warning(
                "pds_transient_error",
                method=exc.method,
                reason=exc.reason,
                retry_in=round(delay, 2),
                attempt=attempt,
            )
            await sleep_or_stop(delay, stop)
