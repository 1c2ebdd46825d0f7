"""ImageFetcher against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import replace

import httpx
import pytest

from syncd.images.errors import (
    DisallowedHostError,
    ImageHTTPError,
    ImageNotFoundError,
    ImageTooLargeError,
    NotAnImageError,
    TooManyRedirectsError,
    TransientImageError,
)
from syncd.images.fetch import ImageFetcher, make_client, sniff_image_type
from syncd.images.settings import ImageSettings

from .helpers import encode, gradient
from .server import LoopbackServer, Reply

PNG = encode(gradient(64, 32))


async def test_fetches_a_png(server: LoopbackServer, fetcher: ImageFetcher) -> None:
    server.route("/b/a.png", Reply(200, PNG, {"Content-Type": "image/png"}))
    assert await fetcher.fetch_image(server.url("/b/a.png")) == PNG
    assert server.paths() == ["/b/a.png"]


async def test_percent_encoded_key_reaches_the_server_unchanged(
    server: LoopbackServer, fetcher: ImageFetcher
) -> None:
    server.route("/user-aesthetic-computer/auth0%7Cabc/x.png", Reply(200, PNG))
    await fetcher.fetch_image(server.url("/user-aesthetic-computer/auth0%7Cabc/x.png"))
    assert server.paths() == ["/user-aesthetic-computer/auth0%7Cabc/x.png"]


async def test_404_is_permanent_not_found(
    server: LoopbackServer, fetcher: ImageFetcher, sleeps: list[float]
) -> None:
    with pytest.raises(ImageNotFoundError) as info:
        await fetcher.fetch_image(server.url("/nope.png"))
    assert info.value.reason == "image_not_found"
    assert info.value.permanent and info.value.status == 404
    assert server.paths() == ["/nope.png"]  # no retries
    assert sleeps == []


async def test_410_is_not_found(server: LoopbackServer, fetcher: ImageFetcher) -> None:
    server.route("/gone.png", Reply(410))
    with pytest.raises(ImageNotFoundError):
        await fetcher.fetch_image(server.url("/gone.png"))


@pytest.mark.parametrize("status", [400, 401, 403])
async def test_other_4xx_is_permanent(
    server: LoopbackServer, fetcher: ImageFetcher, status: int
) -> None:
    server.route("/x.png", Reply(status))
    with pytest.raises(ImageHTTPError) as info:
        await fetcher.fetch_image(server.url("/x.png"))
    assert info.value.reason == "image_http_4xx"
    assert info.value.permanent
    assert server.paths() == ["/x.png"]


async def test_500_then_200_is_retried(
    server: LoopbackServer, fetcher: ImageFetcher, sleeps: list[float]
) -> None:
    server.route("/f.png", lambda n: Reply(500) if n <= 2 else Reply(200, PNG))
    assert await fetcher.fetch_image(server.url("/f.png")) == PNG
    assert server.paths() == ["/f.png"] * 3
    assert len(sleeps) == 2
    assert 0 <= sleeps[0] <= 0.5 and 0 <= sleeps[1] <= 1.0  # exponential caps, jittered


async def test_persistent_5xx_gives_up_with_a_transient_error(
    server: LoopbackServer, fetcher: ImageFetcher, sleeps: list[float]
) -> None:
    server.route("/down.png", Reply(503))
    with pytest.raises(TransientImageError) as info:
        await fetcher.fetch_image(server.url("/down.png"))
    assert info.value.reason == "image_http_5xx"
    assert not info.value.permanent
    assert len(server.paths()) == 4  # 1 + retries(3)
    assert len(sleeps) == 3


async def test_429_honours_retry_after(
    server: LoopbackServer, fetcher: ImageFetcher, sleeps: list[float]
) -> None:
    server.route(
        "/r.png", lambda n: Reply(429, headers={"Retry-After": "7"}) if n == 1 else Reply(200, PNG)
    )
    assert await fetcher.fetch_image(server.url("/r.png")) == PNG
    assert sleeps == [7.0]


async def test_slow_response_times_out_and_is_transient(
    server: LoopbackServer, image_settings: ImageSettings, client: httpx.AsyncClient
) -> None:
    server.route("/slow.png", Reply(200, PNG, delay=2.0))
    no_retry = ImageSettings(**{**image_settings.__dict__, "retries": 0})
    fetcher = ImageFetcher(client, no_retry)
    started = time.monotonic()
    with pytest.raises(TransientImageError) as info:
        await fetcher.fetch_image(server.url("/slow.png"))
    assert time.monotonic() - started < 1.5
    assert info.value.reason == "image_timeout"
    assert not info.value.permanent


async def test_trickling_body_is_cut_by_the_total_deadline(
    server: LoopbackServer, image_settings: ImageSettings, client: httpx.AsyncClient
) -> None:
    def trickle() -> Iterator[bytes]:
        yield PNG[:16]
        for _ in range(100):
            time.sleep(0.1)  # each read is well inside the 0.5 s read timeout
            yield b"\0"

    server.route("/trickle.png", Reply(200, chunks=trickle))
    no_retry = ImageSettings(**{**image_settings.__dict__, "retries": 0})
    fetcher = ImageFetcher(client, no_retry, total_timeout=1.0)
    started = time.monotonic()
    with pytest.raises(TransientImageError) as info:
        await fetcher.fetch_image(server.url("/trickle.png"))
    assert time.monotonic() - started < 2.5
    assert info.value.reason == "image_timeout"


async def test_connection_refused_is_transient(
    image_settings: ImageSettings, client: httpx.AsyncClient, sleeps: list[float]
) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = replace(image_settings, allowed_hosts=(f"http://127.0.0.1:{port}",))
    fetcher = ImageFetcher(client, settings, sleep=lambda d: _record(sleeps, d))
    with pytest.raises(TransientImageError) as info:
        await fetcher.fetch_image(f"http://127.0.0.1:{port}/x.png")
    assert info.value.reason == "image_connection_error"
    assert len(sleeps) == 3


async def _record(sleeps: list[float], delay: float) -> None:
    sleeps.append(delay)


async def test_non_image_body(server: LoopbackServer, fetcher: ImageFetcher) -> None:
    server.route("/t.png", Reply(200, b"<html>AccessDenied</html>", {"Content-Type": "image/png"}))
    with pytest.raises(NotAnImageError) as info:
        await fetcher.fetch_image(server.url("/t.png"))
    assert info.value.reason == "not_an_image" and info.value.permanent


async def test_a_non_image_is_refused_after_its_first_bytes(
    server: LoopbackServer, fetcher: ImageFetcher
) -> None:
    total = 40 * 1024 * 1024  # far more than loopback's socket buffers

    def chunks() -> Iterator[bytes]:
        for _ in range(total // 65536):
            yield b"<html>" + b"x" * 65530

    server.route("/html.png", Reply(200, chunks=chunks))
    with pytest.raises(NotAnImageError):
        await fetcher.fetch_image(server.url("/html.png"))
    for _ in range(50):
        entry = server.log[-1]
        if entry.aborted:
            break
        await asyncio.sleep(0.1)
    assert entry.aborted and entry.bytes_sent < total // 2


async def test_the_fetcher_checks_magic_only_and_parses_nothing(
    server: LoopbackServer, fetcher: ImageFetcher
) -> None:
    # Headers and pixels are parsed in the worker processes (test_pipeline, test_hostile),
    # never on the event loop: a PNG signature followed by garbage passes the fetch.
    garbage = b"\x89PNG\r\n\x1a\n" + b"garbage" * 20
    server.route("/g.png", Reply(200, garbage))
    assert await fetcher.fetch_image(server.url("/g.png")) == garbage


async def test_a_large_body_is_spooled_to_a_file_not_held(
    server: LoopbackServer, fetcher: ImageFetcher
) -> None:
    big = PNG + bytes(900_000) * 1  # under the fixture's max_bytes (1,000,000)
    server.route("/big.png", Reply(200, big))
    body = await fetcher.fetch_once(server.url("/big.png"))
    try:
        assert body.size == len(big) and body.head == big[:16]
        assert body.getvalue() == big
        assert max(len(c) for c in body.chunks(100_000)) == 100_000
    finally:
        body.close()
    assert body.closed


async def test_oversized_streamed_body_is_cut(
    server: LoopbackServer, fetcher: ImageFetcher
) -> None:
    total = 20 * 1024 * 1024

    def chunks() -> Iterator[bytes]:
        yield PNG[:16]
        for _ in range(total // 65536):
            yield b"\0" * 65536

    server.route("/big.png", Reply(200, chunks=chunks))
    with pytest.raises(ImageTooLargeError) as info:
        await fetcher.fetch_image(server.url("/big.png"))
    assert info.value.reason == "image_too_large" and info.value.permanent
    for _ in range(50):  # the handler thread notices the closed socket shortly after
        entry = server.log[-1]
        if entry.aborted:
            break
        await asyncio.sleep(0.1)
    assert entry.aborted
    assert entry.bytes_sent < total // 2


async def test_declared_oversized_body_is_refused_before_reading(
    server: LoopbackServer, fetcher: ImageFetcher
) -> None:
    server.route("/decl.png", Reply(200, PNG, {"Content-Length": str(5_000_000)}))
    with pytest.raises(ImageTooLargeError):
        await fetcher.fetch_image(server.url("/decl.png"))


async def test_redirect_to_an_allowed_path_is_followed(
    server: LoopbackServer, fetcher: ImageFetcher
) -> None:
    server.route("/old.png", Reply(302, headers={"Location": "/new.png"}))
    server.route("/new.png", Reply(301, headers={"Location": server.url("/newest.png")}))
    server.route("/newest.png", Reply(200, PNG))
    assert await fetcher.fetch_image(server.url("/old.png")) == PNG
    assert server.paths() == ["/old.png", "/new.png", "/newest.png"]


async def test_redirect_to_a_foreign_host_is_never_requested(
    server: LoopbackServer, image_settings: ImageSettings
) -> None:
    attempted: list[str] = []

    async def log_request(request: httpx.Request) -> None:
        attempted.append(str(request.url))

    server.route("/evil.png", Reply(302, headers={"Location": "http://evil.example/steal.png"}))
    # "localhost" resolves to this very server, so following it would show up in the log.
    server.route("/sneaky.png", Reply(307, headers={"Location": server.url("/s.png", "localhost")}))
    server.route("/s.png", Reply(200, PNG))
    async with make_client(image_settings) as client:
        client.event_hooks["request"] = [log_request]
        fetcher = ImageFetcher(client, image_settings)
        for path in ("/evil.png", "/sneaky.png"):
            with pytest.raises(DisallowedHostError) as info:
                await fetcher.fetch_image(server.url(path))
            assert info.value.reason == "redirect_disallowed_host"
            assert info.value.permanent
    assert server.paths() == ["/evil.png", "/sneaky.png"]
    assert all(e.host.startswith("127.0.0.1") for e in server.log)
    assert not [u for u in attempted if "evil.example" in u or "localhost" in u]


async def test_redirect_to_another_scheme_is_refused(
    server: LoopbackServer, fetcher: ImageFetcher
) -> None:
    server.route("/ftp.png", Reply(302, headers={"Location": "file:///etc/passwd"}))
    with pytest.raises(DisallowedHostError):
        await fetcher.fetch_image(server.url("/ftp.png"))


async def test_redirect_to_another_port_of_an_allowed_host_is_never_requested(
    server: LoopbackServer, image_settings: ImageSettings
) -> None:
    other = LoopbackServer().start()  # the same host, 127.0.0.1, another port
    try:
        other.route("/s.png", Reply(200, PNG))
        server.route("/p.png", Reply(302, headers={"Location": other.url("/s.png")}))
        async with make_client(image_settings) as client:
            fetcher = ImageFetcher(client, image_settings)
            with pytest.raises(DisallowedHostError) as info:
                await fetcher.fetch_image(server.url("/p.png"))
        assert info.value.reason == "redirect_disallowed_host" and info.value.permanent
        assert other.log == []
    finally:
        other.stop()


async def test_https_to_http_redirect_is_refused() -> None:
    """An allowed https host redirecting to http on the same host (and the default
    port of each): the http URL is another origin, never requested."""
    seen: list[str] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return httpx.Response(302, headers={"Location": "http://img.test/a.png"})

    settings = ImageSettings(allowed_hosts=("img.test",))
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        fetcher = ImageFetcher(client, settings)
        with pytest.raises(DisallowedHostError) as info:
            await fetcher.fetch_image("https://img.test/a.png")
    assert info.value.reason == "redirect_disallowed_host"
    assert seen == ["https://img.test/a.png"]


@pytest.mark.parametrize(
    "location",
    [
        "http://user:pw@127.0.0.1:{port}/s.png",
        "http://127.0.0.1:{port}@evil.example/s.png",
        "http://127.0.0.1:{port}\\@evil.example/s.png",
    ],
)
async def test_redirect_with_userinfo_is_refused(
    server: LoopbackServer, fetcher: ImageFetcher, location: str
) -> None:
    server.route("/u.png", Reply(302, headers={"Location": location.format(port=server.port)}))
    server.route("/s.png", Reply(200, PNG))
    with pytest.raises(DisallowedHostError):
        await fetcher.fetch_image(server.url("/u.png"))
    assert server.paths() == ["/u.png"]


async def test_userinfo_in_the_first_url_is_refused_without_a_request(
    server: LoopbackServer, fetcher: ImageFetcher
) -> None:
    with pytest.raises(DisallowedHostError):
        await fetcher.fetch_image(f"http://user@127.0.0.1:{server.port}/a.png")
    assert server.log == []


async def test_redirect_loop_stops_after_three(
    server: LoopbackServer, fetcher: ImageFetcher
) -> None:
    server.route("/loop.png", Reply(302, headers={"Location": "/loop.png"}))
    with pytest.raises(TooManyRedirectsError) as info:
        await fetcher.fetch_image(server.url("/loop.png"))
    assert info.value.reason == "too_many_redirects"
    assert server.paths() == ["/loop.png"] * 4


async def test_initial_disallowed_host_is_refused_without_a_request(
    server: LoopbackServer, fetcher: ImageFetcher
) -> None:
    with pytest.raises(DisallowedHostError) as info:
        await fetcher.fetch_image(server.url("/a.png", "localhost"))
    assert info.value.reason == "disallowed_host"
    assert server.log == []


@pytest.mark.parametrize(("status", "expected"), [(200, True), (404, False), (403, False)])
async def test_recording_head(
    server: LoopbackServer, fetcher: ImageFetcher, status: int, expected: bool
) -> None:
    server.route("/r.zip", Reply(status, b"x" * 100))
    assert await fetcher.recording_exists(server.url("/r.zip")) is expected
    assert [(e.method, e.path) for e in server.log] == [("HEAD", "/r.zip")]
    assert server.log[0].bytes_sent == 0


async def test_recording_head_5xx_is_transient(
    server: LoopbackServer, fetcher: ImageFetcher
) -> None:
    server.route("/r.zip", Reply(502))
    with pytest.raises(TransientImageError):
        await fetcher.recording_exists(server.url("/r.zip"))
    assert len(server.log) == 4


async def test_recording_head_follows_allowed_redirects(
    server: LoopbackServer, fetcher: ImageFetcher
) -> None:
    server.route("/a.zip", Reply(302, headers={"Location": "/b.zip"}))
    server.route("/b.zip", Reply(200))
    assert await fetcher.recording_exists(server.url("/a.zip")) is True


async def test_backoff_grows_exponentially_within_caps(
    server: LoopbackServer, image_settings: ImageSettings, client: httpx.AsyncClient
) -> None:
    import random

    sleeps: list[float] = []
    settings = replace(image_settings, retries=6)
    fetcher = ImageFetcher(
        client,
        settings,
        backoff_base=1.0,
        backoff_max=10.0,
        sleep=lambda d: _record(sleeps, d),
        rng=random.Random(3),
    )
    server.route("/d.png", Reply(500))
    with pytest.raises(TransientImageError):
        await fetcher.fetch_image(server.url("/d.png"))
    caps = [min(10.0, 2.0**n) for n in range(6)]
    assert len(sleeps) == 6
    assert all(0 <= s <= c for s, c in zip(sleeps, caps, strict=True))


def test_sniff() -> None:
    assert sniff_image_type(PNG) == "png"
    assert sniff_image_type(b"\xff\xd8\xff\xe0") == "jpeg"
    assert sniff_image_type(b"GIF89a....") == "gif"
    assert sniff_image_type(b"RIFF\0\0\0\0WEBPVP8 ") == "webp"
    assert sniff_image_type(b"RIFF\0\0\0\0WAVE") is None
    assert sniff_image_type(b"") is None


async def test_a_big_body_never_sits_in_the_daemons_memory(
    server: LoopbackServer, image_settings: ImageSettings, client: httpx.AsyncClient
) -> None:
    block = bytes(65536)

    def chunks() -> Iterator[bytes]:
        yield PNG[:16] + block[16:]
        for _ in range(20 * 1024 * 1024 // 65536 - 1):
            yield block

    server.route("/huge.png", Reply(200, chunks=chunks))
    fetcher = ImageFetcher(client, replace(image_settings, max_bytes=25 * 1024 * 1024))
    _reset_peak()
    before = _peak_kib()
    body = await fetcher.fetch_once(server.url("/huge.png"))
    try:
        assert body.size == 20 * 1024 * 1024 and body.head == PNG[:16]
        assert _peak_kib() - before < 8 * 1024  # 1 MiB in memory, the rest in a file
    finally:
        body.close()


def _reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak RSS to the current


def _peak_kib() -> int:
    import re

    with open("/proc/self/status") as f:
        found = re.search(r"VmHWM:\s+(\d+)", f.read())
    assert found is not None
    return int(found.group(1))
