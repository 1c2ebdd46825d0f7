"""A tape's MP4: fetched from allowed origins only, type and size checked, spooled to disk
while its CID is computed (against a real HTTP server on 127.0.0.1)."""

from __future__ import annotations

import asyncio
import hashlib
import tracemalloc
from collections.abc import Iterator

import pytest

from syncd.images.cid import blob_cid
from syncd.images.errors import ImageError, TransientImageError
from syncd.images.fetch import ImageFetcher, make_client
from syncd.images.settings import ImageSettings
from syncd.mappings.base import StreamedBlob
from syncd.media.fetch import FetchLimits, fetch_once, fetch_to_spool, mp4_problem
from syncd.media.spool import Spool
from syncd_sandbox.seed import mp4_bytes, mp4_chunks, mp4_header
from tests.images.server import LoopbackServer, Reply

LEXICON = 52_428_800
WHY = f"the lexicon's maxSize of {LEXICON:,} bytes"


@pytest.fixture
def server() -> Iterator[LoopbackServer]:
    srv = LoopbackServer().start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def foreign() -> Iterator[LoopbackServer]:
    """Another origin (another port): never allowed."""
    srv = LoopbackServer().start()
    try:
        yield srv
    finally:
        srv.stop()


def fetcher_for(server: LoopbackServer, sleeps: list[float]) -> ImageFetcher:
    settings = ImageSettings(
        allowed_hosts=(f"http://127.0.0.1:{server.port}",), timeout_seconds=2.0, retries=2
    )

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    return ImageFetcher(make_client(settings), settings, sleep=sleep)


def blob(url: str) -> StreamedBlob:
    return StreamedBlob("video", url, ("video/mp4",), LEXICON)


MP4 = {"Content-Type": "video/mp4"}


async def test_the_mp4_is_spooled_and_its_cid_computed_while_streaming(
    server: LoopbackServer,
) -> None:
    data = mp4_bytes(3 * 1024 * 1024 + 17, seed=3)
    server.route("/t/a.mp4", Reply(200, headers=MP4, chunks=lambda: iter([data])))
    spool = await fetch_once(fetcher_for(server, []), blob(server.url("/t/a.mp4")), lims())
    try:
        assert spool.size == len(data)
        assert spool.cid == blob_cid(data)  # the PDS's CID, without the bytes in memory
        assert spool.sha256 == hashlib.sha256(data).hexdigest()
        assert b"".join([c async for c in spool.chunks(1000)]) == data
        again = b"".join([c async for c in spool.chunks()])  # every attempt reads anew
        assert again == data
    finally:
        spool.close()
    assert spool.closed


def lims(max_bytes: int = LEXICON, why: str = WHY) -> FetchLimits:
    return FetchLimits(max_bytes, why)


async def test_a_large_mp4_is_never_held_in_memory(server: LoopbackServer) -> None:
    size = 24 * 1024 * 1024
    server.route("/t/big.mp4", Reply(200, headers=MP4, chunks=lambda: mp4_chunks(size, 5)))
    fetcher = fetcher_for(server, [])
    tracemalloc.start()
    try:
        spool = await fetch_once(fetcher, blob(server.url("/t/big.mp4")), lims())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    spool.close()
    assert spool.size == size
    assert peak < 8 * 1024 * 1024, f"peak Python allocations {peak / 2**20:.1f} MiB"


async def test_a_redirect_to_a_foreign_host_is_refused_without_contacting_it(
    server: LoopbackServer, foreign: LoopbackServer
) -> None:
    foreign.route("/x.mp4", Reply(200, mp4_bytes(), MP4))
    server.route("/t/a.mp4", Reply(302, headers={"Location": foreign.url("/x.mp4")}))
    with pytest.raises(ImageError) as info:
        await fetch_once(fetcher_for(server, []), blob(server.url("/t/a.mp4")), lims())
    assert info.value.reason == "mp4_redirect_disallowed_host" and info.value.permanent
    assert foreign.paths() == []  # never contacted


async def test_a_redirect_within_the_allowed_origin_is_followed(server: LoopbackServer) -> None:
    data = mp4_bytes(5000)
    server.route("/t/a.mp4", Reply(301, headers={"Location": "/t/b.mp4"}))
    server.route("/t/b.mp4", Reply(200, data, MP4))
    spool = await fetch_once(fetcher_for(server, []), blob(server.url("/t/a.mp4")), lims())
    spool.close()
    assert spool.size == 5000 and server.paths() == ["/t/a.mp4", "/t/b.mp4"]


async def test_an_mp4_over_the_limit_is_refused_by_its_content_length(
    server: LoopbackServer,
) -> None:
    def forever() -> Iterator[bytes]:
        yield mp4_header(70_000_000)
        while True:
            yield bytes(65536)

    # Declared: refused before the body is read.
    server.route("/t/big.mp4", Reply(200, headers={**MP4, "Content-Length": "62914560"}))
    with pytest.raises(ImageError) as info:
        await fetch_once(fetcher_for(server, []), blob(server.url("/t/big.mp4")), lims())
    assert info.value.reason == "tape_too_large" and info.value.permanent
    assert "62,914,560 bytes" in str(info.value) and "52,428,800" in str(info.value)
    # Not declared: the read stops at the first chunk past the limit.
    server.route("/t/endless.mp4", Reply(200, headers=MP4, chunks=forever))
    with pytest.raises(ImageError) as info:
        await fetch_once(fetcher_for(server, []), blob(server.url("/t/endless.mp4")), lims())
    assert info.value.reason == "tape_too_large"


async def test_the_limit_named_is_the_pds_when_it_is_lower(server: LoopbackServer) -> None:
    server.route("/t/a.mp4", Reply(200, mp4_bytes(9000), MP4))
    why = "the PDS's upload limit of 8,000 bytes (pds.blob_upload_limit)"
    with pytest.raises(ImageError) as info:
        await fetch_once(fetcher_for(server, []), blob(server.url("/t/a.mp4")), lims(8000, why))
    assert info.value.reason == "tape_too_large" and why in str(info.value)


@pytest.mark.parametrize(
    ("body", "headers", "reason"),
    [
        (b"<html>not found</html>" * 10, {"Content-Type": "text/html"}, "mp4_wrong_type"),
        (b"\x89PNG\r\n\x1a\n" + bytes(100), {"Content-Type": "video/mp4"}, "not_mp4"),
        (mp4_bytes(4096, brand=b"qt  "), MP4, "not_mp4"),
        (mp4_bytes(4096, brand=b"M4A "), {"Content-Type": "application/octet-stream"}, "not_mp4"),
        (b"tiny", MP4, "not_mp4"),
    ],
)
async def test_the_content_must_be_an_mp4(
    server: LoopbackServer, body: bytes, headers: dict[str, str], reason: str
) -> None:
    server.route("/t/a.mp4", Reply(200, body, headers))
    with pytest.raises(ImageError) as info:
        await fetch_once(fetcher_for(server, []), blob(server.url("/t/a.mp4")), lims())
    assert info.value.reason == reason and info.value.permanent


def test_mp4_brands_as_the_pds_reads_them() -> None:
    assert mp4_problem(mp4_header(1000)) is None
    assert mp4_problem(mp4_header(1000, b"mp42")) is None
    assert "brand 'qt'" in str(mp4_problem(mp4_header(1000, b"qt  ")))
    assert mp4_problem(b"\x00\x00\x00\x18moov") is not None


async def test_404_is_a_permanent_mp4_not_found_and_5xx_is_retried(
    server: LoopbackServer,
) -> None:
    sleeps: list[float] = []
    with pytest.raises(ImageError) as info:
        await fetch_to_spool(
            fetcher_for(server, sleeps), blob(server.url("/t/none.mp4")), lims(), retries=2
        )
    assert info.value.reason == "mp4_not_found" and info.value.permanent and sleeps == []
    data = mp4_bytes(2000)
    server.route("/t/flaky.mp4", lambda n: Reply(503) if n <= 2 else Reply(200, data, MP4))
    spool = await fetch_to_spool(
        fetcher_for(server, sleeps), blob(server.url("/t/flaky.mp4")), lims(), retries=2
    )
    spool.close()
    assert spool.size == 2000 and len(sleeps) == 2
    server.route("/t/down.mp4", Reply(503))
    with pytest.raises(TransientImageError) as transient:
        await fetch_to_spool(
            fetcher_for(server, []), blob(server.url("/t/down.mp4")), lims(), retries=1
        )
    assert transient.value.reason == "mp4_http_5xx" and not transient.value.permanent


def test_a_spool_refuses_writes_once_finished() -> None:
    spool = Spool()
    spool.write(b"abc")
    assert spool.finish() == blob_cid(b"abc") == spool.cid
    with pytest.raises(ValueError):
        spool.write(b"d")
    spool.close()


async def test_a_paced_spool_reads_back_no_faster_than_its_rate() -> None:
    data = mp4_bytes(600_000, seed=4)
    spool = Spool()
    spool.write(data)
    spool.finish()
    started = asyncio.get_running_loop().time()
    got = b"".join([c async for c in spool.paced(2_000_000).chunks()])
    elapsed = asyncio.get_running_loop().time() - started
    assert got == data and spool.paced(0).size == len(data)
    assert elapsed >= 0.25  # 600 kB at 2 MB/s: at least 0.3 s, less the first chunk's
    assert b"".join([c async for c in spool.paced(0).chunks()]) == data
    spool.close()
