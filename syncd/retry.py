"""The retry policy: one :func:`classify`, one :func:`delay`, used by every loop.

Every loop that talks to something that can fail -- the writer's batches and
single calls, the MongoDB write-back, the change stream, the backfill scan, the
admin fixes -- asks :func:`classify` what an error means, and waits
:func:`delay` (or what the server said) before trying again:

* ``RETRY``   -- transient (no answer, a timeout, 408, 502/503/504 and other 5xx
  outside ``applyWrites``, a MongoDB network error or failover): try the same
  thing again after :func:`delay`;
* ``WAIT``    -- rate limited (429): try again after the time the server named
  (at least 0.5 s, at most an hour);
* ``REFUSED`` -- the request itself cannot succeed as sent (a 4xx; a 500 from
  ``applyWrites``, which is how the PDS refuses a batch with a create on an
  existing key or an update/delete of a missing one; per-document MongoDB write
  errors): the caller changes what it sends (single idempotent calls, a dead
  letter) instead of repeating it;
* ``ACCOUNT`` -- the account cannot write now (bad credentials, deactivated,
  taken down): its documents wait, other accounts carry on.

**"Forever"** means: a ``RETRY`` or ``WAIT`` error is retried until it succeeds
or syncd shuts down (:class:`Abandoned`), never dropped after N attempts --
the change stays unconfirmed and the saved position stays before it, so a
restart replays it. The one bounded loop is the image fetch (a few attempts per
change, so a slow image store cannot hold a painting's queue), whose failure is a
*retryable* dead letter that the daemon retries by itself every
``pipeline.dead_letter_retry_seconds``: forever too, at a slower pace.
"""

from __future__ import annotations

import asyncio
import enum
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import structlog
from pymongo.errors import (
    AutoReconnect,
    BulkWriteError,
    ConnectionFailure,
    ExecutionTimeout,
    OperationFailure,
    PyMongoError,
    ServerSelectionTimeoutError,
    WTimeoutError,
)

from syncd.pds.errors import AccountUnavailableError, AuthError, RateLimitedError, XrpcError

T = TypeVar("T")
log = structlog.get_logger("syncd.retry")

APPLY_WRITES = "com.atproto.repo.applyWrites"
#: Bounds on a server-named wait (a 429's reset).
MIN_WAIT, MAX_WAIT = 0.5, 3600.0
#: MongoDB error labels that mean "the same operation may succeed if tried again".
_RETRYABLE_LABELS = (
    "RetryableWriteError",
    "ResumableChangeStreamError",
    "TransientTransactionError",
)


class Kind(enum.Enum):
    RETRY = "retry"
    WAIT = "wait"
    REFUSED = "refused"
    ACCOUNT = "account"


@dataclass(frozen=True)
class Verdict:
    kind: Kind
    reason: str  # a bounded label (metrics, logs)
    wait: float | None = None  # WAIT: seconds the server asked for


class Abandoned(Exception):
    """Shutdown was requested while waiting to retry."""


class TooLong(Exception):
    """The server asked for a wait longer than the caller accepts (``max_wait``)."""

    def __init__(self, wait: float, error: BaseException) -> None:
        super().__init__(f"asked to wait {wait:.0f}s: {error}")
        self.wait = wait
        self.error = error


def classify(exc: BaseException) -> Verdict:
    """What ``exc`` means for the loop that got it (see the module doc)."""
    if isinstance(exc, RateLimitedError):
        return Verdict(Kind.WAIT, "rate_limited", min(max(exc.retry_after, MIN_WAIT), MAX_WAIT))
    if isinstance(exc, AuthError | AccountUnavailableError):
        return Verdict(Kind.ACCOUNT, exc.error or "auth")
    if isinstance(exc, XrpcError):
        if exc.status == 0:
            return Verdict(Kind.RETRY, exc.reason)
        if exc.status == 408:
            return Verdict(Kind.RETRY, "timeout")
        if exc.status >= 500:
            if exc.method == APPLY_WRITES and exc.status not in (502, 503, 504):
                # The whole batch is refused and the answer names no write: repeating the
                # same batch can never pass (pds-facts: the all-or-nothing 500).
                return Verdict(Kind.REFUSED, "batch_refused")
            return Verdict(Kind.RETRY, "server_error")
        return Verdict(Kind.REFUSED, "rejected")
    if isinstance(exc, BulkWriteError):
        details = exc.details or {}
        if details.get("writeErrors") and not details.get("writeConcernErrors"):
            return Verdict(Kind.REFUSED, "write_error")  # per-document: permanent as sent
        return Verdict(Kind.RETRY, "mongo_write_concern")
    if isinstance(exc, ConnectionFailure | AutoReconnect | ServerSelectionTimeoutError):
        return Verdict(Kind.RETRY, "mongo_unavailable")
    if isinstance(exc, ExecutionTimeout | WTimeoutError):
        return Verdict(Kind.RETRY, "mongo_timeout")
    if isinstance(exc, OperationFailure):
        if any(exc.has_error_label(label) for label in _RETRYABLE_LABELS):
            return Verdict(Kind.RETRY, "mongo_retryable")
        return Verdict(Kind.REFUSED, f"mongo_{exc.code}")
    if isinstance(exc, PyMongoError):
        return Verdict(Kind.RETRY, "mongo_error")
    if isinstance(exc, TimeoutError | ConnectionError):
        return Verdict(Kind.RETRY, "timeout" if isinstance(exc, TimeoutError) else "connection")
    return Verdict(Kind.REFUSED, type(exc).__name__)


def delay(
    attempt: int, *, base: float = 0.25, cap: float = 60.0, rng: random.Random | None = None
) -> float:
    """Exponential backoff with full jitter: uniform in [0, min(cap, base * 2**attempt)],
    at least 50 ms (``rng``: a seeded source for tests)."""
    bound = min(cap, base * (2 ** min(attempt, 20)))
    return min(bound, max(0.05, (rng or random).uniform(0, bound)))


def pause_for(verdict: Verdict, attempt: int, *, cap: float = 60.0) -> float:
    """How long to wait before trying again after ``verdict`` (``attempt`` counts from 0)."""
    if verdict.kind is Kind.WAIT and verdict.wait is not None:
        return verdict.wait + random.uniform(0, 1.0)  # spread the accounts' returns
    return delay(attempt, cap=cap)


async def sleep_or_stop(seconds: float, stop: asyncio.Event | None) -> None:
    """Sleep, or raise :class:`Abandoned` as soon as ``stop`` is set."""
    if stop is None:
        await asyncio.sleep(seconds)
        return
    try:
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    except TimeoutError:
        return
    raise Abandoned()


async def retrying(
    call: Callable[[], Awaitable[T]],
    *,
    stop: asyncio.Event | None,
    cap: float = 60.0,
    on_error: Callable[[BaseException, Verdict], None] | None = None,
    what: str = "call",
    max_wait: float | None = None,
) -> T:
    """Run ``call`` until it succeeds: ``RETRY``/``WAIT`` errors forever (until ``stop``);
    ``REFUSED`` and ``ACCOUNT`` errors are raised for the caller to decide, and so is a
    ``WAIT`` longer than ``max_wait`` (:class:`TooLong`)."""
    attempt = 0
    while True:
        if stop is not None and stop.is_set():
            raise Abandoned()
        try:
            return await call()
        except (PyMongoError, XrpcError, TimeoutError, ConnectionError) as exc:
            verdict = classify(exc)
            if verdict.kind in (Kind.REFUSED, Kind.ACCOUNT):
                raise
            if on_error is not None:
                on_error(exc, verdict)
            if max_wait is not None and verdict.wait is not None and verdict.wait > max_wait:
                raise TooLong(verdict.wait, exc) from None
            wait = pause_for(verdict, attempt, cap=cap)
            attempt += 1
            log.warning(
                "retrying",
                what=getattr(exc, "method", what),
                reason=verdict.reason,
                retry_in=round(wait, 2),
                attempt=attempt,
            )
            await sleep_or_stop(wait, stop)


async def with_retries(
    call: Callable[[], Awaitable[T]],
    *,
    stop: asyncio.Event | None,
    cap: float = 60.0,
    on_error: Callable[[XrpcError], None] | None = None,
) -> T:
    def count(exc: BaseException, verdict: Verdict) -> None:
        if on_error is not None and isinstance(exc, XrpcError):
            on_error(exc)

    return await retrying(call, stop=stop, cap=cap, on_error=count)
