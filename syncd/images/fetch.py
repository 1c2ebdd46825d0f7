"""Fetch painting images from object storage, defensively.

Every request: a timeout, ``Accept-Encoding: identity`` (no decompression
bombs), manual redirects restricted to ``allowed_hosts`` origins (at most 3),
a streamed body cut off past ``max_bytes`` and spooled to a temporary file past
1 MiB (:class:`~syncd.images.worker.Payload`), and a magic-byte check. Nothing
here parses an image: headers and pixels are the worker processes' business.

:meth:`ImageFetcher.fetch_once` is one attempt (the pipeline retries it, outside
the thumbnail pool's admission); :meth:`ImageFetcher.fetch_image` and
:meth:`ImageFetcher.recording_exists` retry transient failures (5xx, 408, 429,
timeouts, connection errors) ``retries`` times with exponential backoff and
full jitter before :class:`TransientImageError` is raised.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import TypeVar

import httpx

from syncd import retry
from syncd.images.errors import (
    ImageError,
    ImageHTTPError,
    ImageNotFoundError,
    ImageTooLargeError,
    NotAnImageError,
    TooManyRedirectsError,
    TransientImageError,
)
from syncd.images.settings import ImageSettings
from syncd.images.structure import sniff
from syncd.images.thumbnail import LoopSemaphore
from syncd.images.urls import check_url
from syncd.images.worker import Payload

MAX_REDIRECTS = 3
#: Requests one fetcher has in flight at once. More only queue inside httpx's pool,
#: whose request assignment is quadratic in the number waiting (200 paintings at once
#: spent a third of the event loop there), and fill memory with bodies not yet shrunk.
MAX_CONCURRENT_REQUESTS = 16
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
TRANSIENT_4XX = frozenset({408, 429})
_T = TypeVar("_T")

#: ``"png"``, ``"jpeg"``, ``"gif"`` or ``"webp"`` from the first bytes, else ``None``.
sniff_image_type = sniff


def check_magic(head: bytes, url: str | None = None) -> None:
    """Raise :class:`NotAnImageError` unless ``head`` starts like a PNG/JPEG/GIF/WebP.

    The structure and the pixels are checked in a worker process, not here.
    """
    if sniff(head[:16]) is None:
        raise NotAnImageError(
            f"body does not start with PNG/JPEG/GIF/WebP magic bytes ({head[:8]!r})", url=url
        )


def make_client(settings: ImageSettings, *, trust_env: bool = False) -> httpx.AsyncClient:
    """An ``httpx.AsyncClient`` suitable for :class:`ImageFetcher` (no auto-redirects)."""
    return httpx.AsyncClient(
        timeout=httpx.Timeout(settings.timeout_seconds),
        follow_redirects=False,
        trust_env=trust_env,
        headers={"User-Agent": "syncd-images/1", "Accept-Encoding": "identity"},
    )


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


class ImageFetcher:
    """Downloads images and probes recordings through an injected ``httpx.AsyncClient``.

    The client should not follow redirects itself (``make_client`` builds one);
    this class follows them, but only to ``allowed_hosts``. ``backoff_base`` and
    ``backoff_max`` (seconds) shape the retry delays; ``total_timeout`` bounds a
    whole attempt so a server trickling bytes cannot hold a worker (default
    ``6 * timeout_seconds``). At most ``max_concurrent`` requests are in flight;
    the others wait their turn here (not while backing off between retries).
    """

    def __init__(
        self,
        client: httpx.AsyncClient,
        settings: ImageSettings,
        *,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
        total_timeout: float | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
        max_concurrent: int = MAX_CONCURRENT_REQUESTS,
    ) -> None:
        if max_concurrent < 1:
            raise ValueError(f"max_concurrent must be >= 1, got {max_concurrent}")
        self._client = client
        self._requests = LoopSemaphore(max_concurrent)
        self._settings = settings
        self._timeout = httpx.Timeout(settings.timeout_seconds)
        self._total_timeout = total_timeout or 6 * settings.timeout_seconds
        self._backoff_base = backoff_base
        self._backoff_max = backoff_max
        self._sleep = sleep
        self._rng = rng or random.Random()

    # -- public API ---------------------------------------------------------

    async def fetch_once(self, url: str) -> Payload:
        """One GET of ``url`` (redirects followed): the body, whose first bytes are an
        image's magic. The caller closes it (or hands it to the thumbnail pool).

        Raises :class:`ImageNotFoundError` (404/410), :class:`ImageHTTPError`
        (other 4xx), :class:`ImageTooLargeError`, :class:`NotAnImageError`,
        :class:`DisallowedHostError`, :class:`TooManyRedirectsError` (all
        permanent) or :class:`TransientImageError` (retry after :meth:`backoff`).
        """
        async with self._requests:
            return await self._request(url, "GET", self._read_body)

    async def stream_once(
        self, url: str, read: Callable[[httpx.Response, str], Awaitable[_T]]
    ) -> _T:
        """One GET of ``url`` with the same defences (allowed origins checked before every
        request, redirects by hand, timeouts, no decompression), handing the 200 response
        and its final URL to ``read``, which consumes the body as it likes (a tape's MP4
        is streamed to disk). Errors as :meth:`fetch_once`."""
        async with self._requests:
            return await self._request(url, "GET", read)

    async def fetch_image(self, url: str) -> bytes:
        """GET ``url`` with retries and return the body (its magic checked). For tools
        and tests; the daemon streams bodies to the workers with :meth:`fetch_once`."""

        async def once() -> bytes:
            body = await self.fetch_once(url)
            try:
                return body.getvalue()
            finally:
                body.close()

        return await self._with_retries(once)

    async def recording_exists(self, url: str) -> bool:
        """HEAD ``url``: 200 → True; 403/404/410 → False (object stores answer 403 for a
        missing key when listing is private); 5xx/timeouts → :class:`TransientImageError`."""
        return await self._with_retries(lambda: self._head_once(url))

    async def first_recording(self, urls: Sequence[str]) -> str | None:
        """The first of ``urls`` whose recording exists (HEAD each in turn), or ``None``
        when every one is missing."""
        for url in urls:
            if await self.recording_exists(url):
                return url
        return None

    def backoff_delay(self, attempt: int, exc: TransientImageError) -> float:
        """Seconds to wait before retry ``attempt`` (0-based) after ``exc``: full jitter
        under ``min(backoff_max, backoff_base * 2**attempt)`` (:func:`syncd.retry.delay`, the
        one backoff every loop uses), at least the server's ``Retry-After`` (capped at
        ``backoff_max``)."""
        delay = retry.delay(attempt, base=self._backoff_base, cap=self._backoff_max, rng=self._rng)
        if exc.retry_after is not None:
            delay = min(self._backoff_max, max(delay, exc.retry_after))
        return delay

    async def backoff(self, attempt: int, exc: TransientImageError) -> None:
        """Sleep :meth:`backoff_delay` (with the injected ``sleep``)."""
        await self._sleep(self.backoff_delay(attempt, exc))

    # -- internals ----------------------------------------------------------

    async def _with_retries(self, attempt: Callable[[], Awaitable[_T]]) -> _T:
        retries = self._settings.retries
        for n in range(retries + 1):
            try:
                return await attempt()
            except TransientImageError as exc:
                if n >= retries:
                    raise
                await self.backoff(n, exc)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _head_once(self, url: str) -> bool:
        async def verdict(response: httpx.Response, final_url: str) -> bool:
            return True

        try:
            async with self._requests:
                return await self._request(url, "HEAD", verdict, missing_ok=True)
        except ImageNotFoundError:
            return False

    async def _request(
        self,
        url: str,
        method: str,
        on_ok: Callable[[httpx.Response, str], Awaitable[_T]],
        *,
        missing_ok: bool = False,
    ) -> _T:
        allowed = self._settings.allowed_hosts
        current = check_url(url, allowed)
        try:
            async with asyncio.timeout(self._total_timeout):
                for hop in range(MAX_REDIRECTS + 1):
                    async with self._client.stream(
                        method,
                        current,
                        timeout=self._timeout,
                        follow_redirects=False,
                        headers={"Accept-Encoding": "identity"},
                    ) as response:
                        status = response.status_code
                        if status in REDIRECT_STATUSES:
                            location = response.headers.get("Location")
                            if not location:
                                raise ImageHTTPError(
                                    f"{status} redirect without Location from {current}",
                                    reason="bad_redirect",
                                    url=current,
                                    status=status,
                                )
                            target = str(httpx.URL(current).join(location))
                            check_url(target, allowed, reason="redirect_disallowed_host")
                            if hop >= MAX_REDIRECTS:
                                raise TooManyRedirectsError(
                                    f"more than {MAX_REDIRECTS} redirects starting at {url}",
                                    url=url,
                                    status=status,
                                )
                            current = target
                            continue
                        if status == 200:
                            return await on_ok(response, current)
                        self._raise_for_status(response, current, missing_ok=missing_ok)
                raise AssertionError("unreachable")  # pragma: no cover
        except ImageError:
            raise
        except TimeoutError:
            raise TransientImageError(
                f"{method} {current} exceeded {self._total_timeout}s in total",
                reason="image_timeout",
                url=current,
            ) from None
        except httpx.TimeoutException as exc:
            raise TransientImageError(
                f"{method} {current} timed out ({type(exc).__name__})",
                reason="image_timeout",
                url=current,
            ) from None
        except httpx.TransportError as exc:
            raise TransientImageError(
                f"{method} {current} failed: {type(exc).__name__}: {exc}",
                reason="image_connection_error",
                url=current,
            ) from None

    @staticmethod
    def _raise_for_status(response: httpx.Response, url: str, *, missing_ok: bool) -> None:
        status = response.status_code
        if status in (404, 410) or (missing_ok and status == 403):
            raise ImageNotFoundError(f"{status} for {url}", url=url, status=status)
        if status in TRANSIENT_4XX or status >= 500:
            if status == 429:
                reason = "image_rate_limited"
            elif status >= 500:
                reason = "image_http_5xx"
            else:
                reason = "image_timeout"
            raise TransientImageError(
                f"HTTP {status} for {url}",
                reason=reason,
                url=url,
                status=status,
                retry_after=_retry_after(response),
            )
        if 400 <= status < 500:
            raise ImageHTTPError(f"HTTP {status} for {url}", url=url, status=status)
        raise ImageHTTPError(
            f"unexpected HTTP {status} for {url}",
            reason="image_http_unexpected",
            url=url,
            status=status,
        )

    async def _read_body(self, response: httpx.Response, url: str) -> Payload:
        limit = self._settings.max_bytes
        declared = response.headers.get("Content-Length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise ImageTooLargeError(
                f"{url} declares {declared} bytes, over the limit of {limit}", url=url
            )
        body = Payload()
        try:
            async for chunk in response.aiter_raw():
                body.write(chunk)
                if body.size > limit:
                    raise ImageTooLargeError(
                        f"{url} sent more than the limit of {limit} bytes", url=url
                    )
                if body.size - len(chunk) < 16 <= body.size:
                    check_magic(body.head, url)  # refuse a non-image before reading it all
            check_magic(body.head, url)
        except BaseException:
            body.close()
            raise
        return body
