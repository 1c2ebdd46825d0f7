"""The one retry policy: what each error means, how long to wait, and "forever"."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pymongo.errors import (
    AutoReconnect,
    BulkWriteError,
    CursorNotFound,
    NotPrimaryError,
    OperationFailure,
    ServerSelectionTimeoutError,
)

from syncd import retry
from syncd.pds.errors import (
    AccountUnavailableError,
    AuthError,
    RateLimitedError,
    TransportError,
    XrpcError,
)
from syncd.retry import Abandoned, Kind, classify, delay, retrying

APPLY = "com.atproto.repo.applyWrites"
PUT = "com.atproto.repo.putRecord"


def _rate_limited(after: float) -> RateLimitedError:
    return RateLimitedError(PUT, "", retry_after=after, remaining=0, limit=5000, policy=None)


def _labelled(code: int, label: str | None) -> OperationFailure:
    doc: dict[str, Any] = {"ok": 0, "code": code, "errmsg": "x"}
    if label:
        doc["errorLabels"] = [label]
    return OperationFailure("x", code, doc)


CASES = [
    (TransportError(PUT, "timeout"), Kind.RETRY),
    (XrpcError(PUT, 408, "RequestTimeout"), Kind.RETRY),
    (XrpcError(PUT, 500, "InternalServerError"), Kind.RETRY),
    (XrpcError(APPLY, 500, "InternalServerError"), Kind.REFUSED),  # the all-or-nothing 500
    (XrpcError(APPLY, 502, "BadGateway"), Kind.RETRY),
    (XrpcError(APPLY, 503, "Unavailable"), Kind.RETRY),
    (XrpcError(PUT, 400, "InvalidRequest"), Kind.REFUSED),
    (XrpcError(PUT, 413, "PayloadTooLarge"), Kind.REFUSED),
    (_rate_limited(12.0), Kind.WAIT),
    (AuthError(PUT, 401, "AuthRequired"), Kind.ACCOUNT),
    (AccountUnavailableError(PUT, 400, "AccountDeactivated"), Kind.ACCOUNT),
    (AutoReconnect("gone"), Kind.RETRY),
    (NotPrimaryError("stepped down"), Kind.RETRY),
    (ServerSelectionTimeoutError("no primary"), Kind.RETRY),
    (_labelled(91, "RetryableWriteError"), Kind.RETRY),
    (_labelled(2, None), Kind.REFUSED),
    (CursorNotFound("gone", 43), Kind.REFUSED),
    (BulkWriteError({"writeErrors": [{"code": 66}], "writeConcernErrors": []}), Kind.REFUSED),
    (BulkWriteError({"writeErrors": [], "writeConcernErrors": [{"code": 64}]}), Kind.RETRY),
    (TimeoutError(), Kind.RETRY),
    (ValueError("a bug"), Kind.REFUSED),
]


@pytest.mark.parametrize(("exc", "kind"), CASES, ids=[type(c[0]).__name__ for c in CASES])
def test_classify(exc: BaseException, kind: Kind) -> None:
    assert classify(exc).kind is kind


def test_a_server_named_wait_is_bounded() -> None:
    assert classify(_rate_limited(0.0)).wait == 0.5
    assert classify(_rate_limited(12.0)).wait == 12.0
    assert classify(_rate_limited(10**6)).wait == 3600.0


def test_delay_is_full_jitter_under_the_cap() -> None:
    for attempt in range(40):
        for _ in range(20):
            d = delay(attempt, cap=10.0)
            assert 0.05 <= d <= 10.0
    assert max(delay(0) for _ in range(200)) <= 0.25


async def test_retrying_retries_transient_errors_forever(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(retry, "delay", lambda attempt, **kw: 0.0)
    failures = [TransportError(PUT, "reset")] * 25 + [XrpcError(PUT, 503, "Unavailable")] * 25
    calls = 0

    async def call() -> str:
        nonlocal calls
        calls += 1
        if failures:
            raise failures.pop()
        return "ok"

    seen: list[Kind] = []
    got = await retrying(call, stop=None, on_error=lambda exc, v: seen.append(v.kind))
    assert got == "ok" and calls == 51 and seen == [Kind.RETRY] * 50  # no attempt limit


@pytest.mark.parametrize(
    "exc", [XrpcError(PUT, 400, "InvalidRequest"), AuthError(PUT, 401, "AuthRequired")]
)
async def test_retrying_hands_refusals_and_account_errors_back(exc: XrpcError) -> None:
    async def call() -> None:
        raise exc

    with pytest.raises(type(exc)):
        await retrying(call, stop=None)


async def test_shutdown_abandons_the_wait() -> None:
    stop = asyncio.Event()

    async def call() -> None:
        stop.set()
        raise _rate_limited(3000.0)

    with pytest.raises(Abandoned):
        await asyncio.wait_for(retrying(call, stop=stop), 2.0)
