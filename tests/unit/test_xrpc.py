import time

import httpx
import pytest

from syncd import metrics
from syncd.pds.errors import AuthError, RateLimitedError, TransportError, XrpcError
from syncd.pds.xrpc import XrpcClient
from syncd.retry import Kind, classify


def client(handler) -> XrpcClient:  # type: ignore[no-untyped-def]
    return XrpcClient("http://pds.invalid", transport=httpx.MockTransport(handler))


async def test_rate_limit_headers_become_a_wait() -> None:
    reset = int(time.time()) + 120

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            429,
            json={"error": "RateLimitExceeded", "message": "slow down"},
            headers={
                "ratelimit-reset": str(reset),
                "ratelimit-remaining": "7",
                "ratelimit-limit": "5000",
                "ratelimit-policy": "5000;w=3600",
            },
        )

    before = metrics.RATE_LIMITED._value.get()
    with pytest.raises(RateLimitedError) as info:
        await client(handler).procedure("com.atproto.repo.applyWrites", {})
    assert 100 < info.value.retry_after <= 121
    assert info.value.remaining == 7 and info.value.policy == "5000;w=3600"
    assert metrics.RATE_LIMITED._value.get() == before + 1


async def test_retry_after_header_wins() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            429, json={"error": "RateLimitExceeded"}, headers={"retry-after": "3"}
        )

    with pytest.raises(RateLimitedError) as info:
        await client(handler).procedure("x.y.z", {})
    assert info.value.retry_after == 3


@pytest.mark.parametrize(
    ("status", "error", "cls", "transient"),
    [
        (500, "InternalServerError", XrpcError, True),
        (502, "BadGateway", XrpcError, True),
        (400, "InvalidRequest", XrpcError, False),
        (400, "ExpiredToken", AuthError, False),
        (401, "AuthRequired", AuthError, False),
    ],
)
async def test_errors_are_classified(status: int, error: str, cls: type, transient: bool) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, json={"error": error, "message": "m"})

    with pytest.raises(cls) as info:
        await client(handler).procedure("com.atproto.repo.putRecord", {})
    assert (classify(info.value).kind is Kind.RETRY) is transient
    if error == "ExpiredToken":
        assert info.value.expired


async def test_transport_errors_are_transient() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused")

    with pytest.raises(TransportError) as info:
        await client(handler).query("com.atproto.repo.listRecords")
    assert classify(info.value).kind is Kind.RETRY and info.value.status == 0


async def test_requests_are_counted_by_method_and_status() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.headers["authorization"] == "Bearer tok"
        return httpx.Response(200, json={"ok": 1})

    c = metrics.PDS_REQUESTS.labels(method="com.example.ping", status="200")
    before = c._value.get()
    assert await client(handler).query("com.example.ping", token="tok") == {"ok": 1}
    assert c._value.get() == before + 1
