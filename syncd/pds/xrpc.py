"""A thin XRPC client over httpx: one method per call shape, errors classified.

Why not the ``atproto`` SDK's client for writes: syncd needs each response's
rate-limit headers, per-request metrics and the exact HTTP status of failures
(the PDS answers a bad ``applyWrites`` batch with a 500), which the SDK's
generated methods hide behind models. The SDK is still used where it does a job
well (JWT payload decoding in :mod:`syncd.pds.sessions`).

The ``transport`` argument is the seam tests use to put a fault proxy or a
``httpx.MockTransport`` under the client.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterable, Callable, Mapping
from typing import Any

import httpx

from syncd import metrics
from syncd.pds.errors import (
    AccountUnavailableError,
    AuthError,
    RateLimitedError,
    TransportError,
    XrpcError,
)

_AUTH_ERRORS = {"ExpiredToken", "InvalidToken", "AuthRequired", "AuthenticationRequired"}
#: The account cannot write at all: deactivated, taken down, or deleted (``AccountNotFound``
#: answers a write made with a session of an account deleted since).
_ACCOUNT_ERRORS = {
    "AccountDeactivated",
    "AccountTakedown",
    "RepoDeactivated",
    "RepoTakendown",
    "AccountNotFound",
}


def _int_header(headers: httpx.Headers, name: str) -> int | None:
    raw = headers.get(name)
    try:
        return int(float(raw)) if raw is not None else None
    except ValueError:
        return None


def retry_after_seconds(headers: httpx.Headers, now: float | None = None) -> float:
    """Seconds to wait after a 429: ``Retry-After``, else ``ratelimit-reset`` (Unix time)."""
    now = time.time() if now is None else now
    ra = headers.get("retry-after")
    if ra is not None:
        try:
            return max(0.0, float(ra))
        except ValueError:
            pass
    reset = _int_header(headers, "ratelimit-reset")
    if reset is not None:
        return max(0.0, reset - now)
    return 1.0


class XrpcClient:
    """Calls ``{base_url}/xrpc/{method}``. Not tied to an account: tokens are per call."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float = 15.0,
        transport: httpx.AsyncBaseTransport | None = None,
        max_connections: int = 32,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 5.0)),
            transport=transport,
            limits=httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            ),
            trust_env=False,
            follow_redirects=False,
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def query(
        self, method: str, params: Mapping[str, Any] | None = None, *, token: str | None = None
    ) -> dict[str, Any]:
        return await self._call("GET", method, params=params, token=token)

    async def query_bytes(self, method: str, params: Mapping[str, Any]) -> bytes:
        """GET ``method`` whose answer is bytes, not JSON (``com.atproto.sync.getBlob``)."""
        started = time.perf_counter()
        try:
            response = await self._http.get(f"/xrpc/{method}", params=dict(params))
        except httpx.TimeoutException as exc:
            self._observe(method, "timeout", started)
            raise TransportError(method, "timeout", type(exc).__name__) from None
        except httpx.TransportError as exc:
            self._observe(method, "transport_error", started)
            raise TransportError(method, "transport_error", type(exc).__name__) from None
        self._observe(method, str(response.status_code), started)
        if response.status_code != 200:
            raise self._error(method, response)
        return response.content

    async def procedure(
        self,
        method: str,
        body: Mapping[str, Any] | None = None,
        *,
        token: str | None = None,
        content: bytes | AsyncIterable[bytes] | None = None,
        content_type: str | None = None,
        content_length: int | None = None,
        on_headers: Callable[[httpx.Headers], None] | None = None,
    ) -> dict[str, Any]:
        """POST ``method``; ``on_headers`` sees a successful response's headers (the
        rate-limit budget they carry, :mod:`syncd.pds.ratelimit`). ``content`` may be an
        async byte stream of ``content_length`` bytes: sent as it is read (with its
        ``Content-Length``, so a PDS refuses a blob over its limit before the body)."""
        return await self._call(
            "POST",
            method,
            json_body=body,
            token=token,
            content=content,
            content_type=content_type,
            content_length=content_length,
            on_headers=on_headers,
        )

    async def _call(
        self,
        http_method: str,
        method: str,
        *,
        params: Mapping[str, Any] | None = None,
        json_body: Mapping[str, Any] | None = None,
        token: str | None = None,
        content: bytes | AsyncIterable[bytes] | None = None,
        content_type: str | None = None,
        content_length: int | None = None,
        on_headers: Callable[[httpx.Headers], None] | None = None,
    ) -> dict[str, Any]:
        headers: dict[str, str] = {}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        if content_type:
            headers["Content-Type"] = content_type
        if content_length is not None:
            headers["Content-Length"] = str(content_length)
        started = time.perf_counter()
        try:
            response = await self._http.request(
                http_method,
                f"/xrpc/{method}",
                params=dict(params) if params else None,
                json=json_body if content is None else None,
                content=content,
                headers=headers,
            )
        except httpx.TimeoutException as exc:
            self._observe(method, "timeout", started)
            raise TransportError(method, "timeout", type(exc).__name__) from None
        except httpx.TransportError as exc:
            self._observe(method, "transport_error", started)
            raise TransportError(method, "transport_error", type(exc).__name__) from None
        self._observe(method, str(response.status_code), started)
        if response.status_code == 200:
            if on_headers is not None:
                on_headers(response.headers)
            if not response.content:
                return {}
            try:
                data = response.json()
            except ValueError:
                raise XrpcError(method, 200, "BadResponse", "response is not JSON") from None
            return data if isinstance(data, dict) else {"value": data}
        raise self._error(method, response)

    @staticmethod
    def _observe(method: str, status: str, started: float) -> None:
        metrics.PDS_REQUESTS.labels(method=method, status=status).inc()
        metrics.PDS_REQUEST_SECONDS.labels(method=method).observe(time.perf_counter() - started)

    @staticmethod
    def _error(method: str, response: httpx.Response) -> XrpcError:
        error, message = "Unknown", ""
        try:
            body = response.json()
            if isinstance(body, dict):
                error = str(body.get("error") or error)
                message = str(body.get("message") or "")
        except ValueError:
            message = response.text[:200]
        status = response.status_code
        if status == 429:
            metrics.RATE_LIMITED.inc()
            return RateLimitedError(
                method,
                message,
                retry_after=retry_after_seconds(response.headers),
                remaining=_int_header(response.headers, "ratelimit-remaining"),
                limit=_int_header(response.headers, "ratelimit-limit"),
                policy=response.headers.get("ratelimit-policy"),
            )
        if error in _ACCOUNT_ERRORS:
            return AccountUnavailableError(method, status, error, message)
        if status == 401 or error in _AUTH_ERRORS:
            return AuthError(method, status, error, message)
        return XrpcError(method, status, error, message)
