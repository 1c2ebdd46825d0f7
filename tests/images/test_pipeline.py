"""prepare_painting_blob end to end against the loopback server, with real workers."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import replace

import pytest

from syncd.images.cid import blob_cid
from syncd.images.errors import (
    DisallowedHostError,
    ImageHTTPError,
    NotAnImageError,
    ThumbnailError,
    TransientImageError,
    UnsafeSlugError,
)
from syncd.images.fetch import ImageFetcher
from syncd.images.pipeline import PreparedImage, prepare_painting_blob
from syncd.images.settings import ImageSettings
from syncd.images.thumbnail import ThumbnailPool

from .helpers import assert_valid_thumbnail, encode, gradient
from .server import LoopbackServer, Reply

#: Starts processes (the PDS, the MongoDB sandbox, image workers, promtool, ...).
pytestmark = pytest.mark.slow

BIG = encode(gradient(1600, 1200))
USER = "/user-aesthetic-computer/auth0%7Cabc"
NEW = f"{USER}/painting/2024.1.1"  # where uploads go (platform-facts §1)
OLD = f"{USER}/2024.1.1"  # where the oldest objects sit
DOC = {"_id": "x", "user": "auth0|abc", "slug": "2024.1.1", "code": "abc"}


def requests(server: LoopbackServer) -> list[tuple[str, str]]:
    return [(e.method, e.path) for e in server.log]


async def test_the_first_candidate_costs_one_get(
    server: LoopbackServer,
    image_settings: ImageSettings,
    fetcher: ImageFetcher,
    shared_pool: ThumbnailPool,
) -> None:
    server.route(f"{NEW}.png", Reply(200, BIG))
    server.route(f"{NEW}.zip", Reply(200, b"zip"))
    prepared = await prepare_painting_blob(DOC, image_settings, fetcher, shared_pool)
    assert isinstance(prepared, PreparedImage) and not prepared.missing
    assert prepared.image_url == server.url(f"{NEW}.png")
    assert prepared.recording_exists is True
    assert prepared.recording_url == server.url(f"{NEW}.zip")
    assert prepared.thumbnail is not None
    assert prepared.cid == blob_cid(prepared.thumbnail.data)
    assert_valid_thumbnail(prepared.thumbnail, (1600, 1200))
    assert sorted(requests(server)) == [("GET", f"{NEW}.png"), ("HEAD", f"{NEW}.zip")]


async def test_an_old_object_is_found_at_the_second_candidate(
    server: LoopbackServer,
    image_settings: ImageSettings,
    fetcher: ImageFetcher,
    shared_pool: ThumbnailPool,
) -> None:
    server.route(f"{OLD}.png", Reply(200, BIG))
    server.route(f"{OLD}.zip", Reply(200, b"zip"))
    prepared = await prepare_painting_blob(DOC, image_settings, fetcher, shared_pool)
    assert prepared.image_url == server.url(f"{OLD}.png")
    assert prepared.recording_url == server.url(f"{OLD}.zip")
    gets = [r for r in requests(server) if r[0] == "GET"]
    assert gets == [("GET", f"{NEW}.png"), ("GET", f"{OLD}.png")]
    # The recording next to the image is probed first: one HEAD.
    assert [r for r in requests(server) if r[0] == "HEAD"] == [("HEAD", f"{OLD}.zip")]


async def test_a_prefixed_slug_tries_the_same_candidates(
    server: LoopbackServer,
    image_settings: ImageSettings,
    fetcher: ImageFetcher,
    shared_pool: ThumbnailPool,
) -> None:
    server.route(f"{OLD}.png", Reply(200, BIG))
    doc = {**DOC, "slug": "auth0|abc/painting/2024.1.1"}
    prepared = await prepare_painting_blob(doc, image_settings, fetcher, shared_pool)
    assert prepared.image_url == server.url(f"{OLD}.png")
    assert [r for r in requests(server) if r[0] == "GET"] == [
        ("GET", f"{NEW}.png"),
        ("GET", f"{OLD}.png"),
    ]


async def test_missing_everywhere_is_a_result_not_an_error(
    server: LoopbackServer,
    image_settings: ImageSettings,
    fetcher: ImageFetcher,
    shared_pool: ThumbnailPool,
) -> None:
    server.route(f"{NEW}.png", Reply(404))
    server.route(f"{OLD}.png", Reply(410))
    server.route(f"{OLD}.zip", Reply(200, b"zip"))
    prepared = await prepare_painting_blob(DOC, image_settings, fetcher, shared_pool)
    assert prepared.missing
    assert (prepared.thumbnail, prepared.cid, prepared.image_url) == (None, None, None)
    assert prepared.recording_exists and prepared.recording_url == server.url(f"{OLD}.zip")
    assert [r for r in requests(server) if r[0] == "GET"] == [
        ("GET", f"{NEW}.png"),
        ("GET", f"{OLD}.png"),
    ]


async def test_missing_without_a_recording(
    server: LoopbackServer,
    image_settings: ImageSettings,
    fetcher: ImageFetcher,
    shared_pool: ThumbnailPool,
) -> None:
    prepared = await prepare_painting_blob(
        {"slug": "gone", "code": "q"}, image_settings, fetcher, shared_pool
    )
    assert prepared.missing and not prepared.recording_exists
    assert requests(server) == [
        ("GET", "/art-aesthetic-computer/gone.png"),
        ("HEAD", "/art-aesthetic-computer/gone.zip"),
    ]


@pytest.mark.parametrize("status", [403, 400, 451])
async def test_another_4xx_on_a_candidate_is_permanent_not_missing(
    server: LoopbackServer,
    image_settings: ImageSettings,
    fetcher: ImageFetcher,
    shared_pool: ThumbnailPool,
    status: int,
) -> None:
    server.route(f"{NEW}.png", Reply(status))
    server.route(f"{OLD}.png", Reply(200, BIG))
    with pytest.raises(ImageHTTPError) as info:
        await prepare_painting_blob(DOC, image_settings, fetcher, shared_pool)
    assert info.value.permanent and info.value.status == status
    assert [r for r in requests(server) if r[0] == "GET"] == [("GET", f"{NEW}.png")]


async def test_a_transient_failure_is_retried_from_the_candidate_that_failed(
    server: LoopbackServer,
    image_settings: ImageSettings,
    fetcher: ImageFetcher,
    shared_pool: ThumbnailPool,
    sleeps: list[float],
) -> None:
    server.route(f"{NEW}.png", Reply(404))
    server.route(f"{OLD}.png", lambda n: Reply(503) if n <= 2 else Reply(200, BIG))
    prepared = await prepare_painting_blob(DOC, image_settings, fetcher, shared_pool)
    assert prepared.image_url == server.url(f"{OLD}.png")
    assert len(sleeps) == 2
    gets = [p for m, p in requests(server) if m == "GET"]
    assert gets == [f"{NEW}.png", f"{OLD}.png", f"{OLD}.png", f"{OLD}.png"]


async def test_transient_failures_run_out_as_a_transient_error(
    server: LoopbackServer,
    image_settings: ImageSettings,
    fetcher: ImageFetcher,
    shared_pool: ThumbnailPool,
    sleeps: list[float],
) -> None:
    server.route(f"{NEW}.png", Reply(500))
    with pytest.raises(TransientImageError) as info:
        await prepare_painting_blob(DOC, image_settings, fetcher, shared_pool)
    assert not info.value.permanent and info.value.reason == "image_http_5xx"
    assert len(sleeps) == image_settings.retries


async def test_admission_is_not_held_while_waiting_to_retry(
    server: LoopbackServer,
    image_settings: ImageSettings,
    client: object,
) -> None:
    """One admission slot; a painting whose store answers 503 waits to retry, and a
    second painting is fetched and shrunk meanwhile, in that slot."""
    retrying = asyncio.Event()
    release = asyncio.Event()

    async def slow_sleep(delay: float) -> None:
        retrying.set()
        await release.wait()

    server.route(
        "/art-aesthetic-computer/flaky.png", lambda n: Reply(503) if n == 1 else Reply(200, BIG)
    )
    server.route("/art-aesthetic-computer/fine.png", Reply(200, BIG))
    fetcher = ImageFetcher(client, image_settings, sleep=slow_sleep)  # type: ignore[arg-type]
    with ThumbnailPool(1, max_jobs=1) as pool:
        flaky = asyncio.create_task(
            prepare_painting_blob({"slug": "flaky"}, image_settings, fetcher, pool)
        )
        await asyncio.wait_for(retrying.wait(), 10)
        fine = await asyncio.wait_for(
            prepare_painting_blob({"slug": "fine"}, image_settings, fetcher, pool), 20
        )
        assert not fine.missing and not flaky.done()
        release.set()
        assert not (await asyncio.wait_for(flaky, 20)).missing


async def test_unsafe_slug_makes_no_request(
    server: LoopbackServer,
    image_settings: ImageSettings,
    fetcher: ImageFetcher,
    shared_pool: ThumbnailPool,
) -> None:
    with pytest.raises(UnsafeSlugError):
        await prepare_painting_blob(
            {"user": "u", "slug": "../../etc/passwd"}, image_settings, fetcher, shared_pool
        )
    assert server.log == []


async def test_a_foreign_bucket_host_makes_no_request(
    server: LoopbackServer,
    image_settings: ImageSettings,
    fetcher: ImageFetcher,
    shared_pool: ThumbnailPool,
) -> None:
    settings = replace(image_settings, url_template="https://{bucket}.evil.example/{key}")
    with pytest.raises(DisallowedHostError):
        await prepare_painting_blob(DOC, settings, fetcher, shared_pool)
    assert server.log == []


async def test_a_permanent_failure_cancels_the_recording_probe(
    server: LoopbackServer,
    image_settings: ImageSettings,
    fetcher: ImageFetcher,
    shared_pool: ThumbnailPool,
) -> None:
    release = threading.Event()
    server.route("/art-aesthetic-computer/bad.png", Reply(200, b"\x89PNG\r\n\x1a\n" + b"x" * 50))
    server.route("/art-aesthetic-computer/bad.zip", lambda n: (release.wait(5), Reply(200))[1])
    try:
        with pytest.raises(ThumbnailError) as info:
            await prepare_painting_blob({"slug": "bad"}, image_settings, fetcher, shared_pool)
        assert info.value.reason == "not_an_image"  # found in the worker, not on the loop
        await asyncio.sleep(0)
        pending = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        assert pending == []
    finally:
        release.set()


async def test_a_non_image_body_is_refused_by_the_fetcher(
    server: LoopbackServer,
    image_settings: ImageSettings,
    fetcher: ImageFetcher,
    shared_pool: ThumbnailPool,
) -> None:
    server.route("/art-aesthetic-computer/t.png", Reply(200, b"<html>AccessDenied</html>"))
    with pytest.raises(NotAnImageError) as info:
        await prepare_painting_blob({"slug": "t"}, image_settings, fetcher, shared_pool)
    assert info.value.permanent


async def test_undecodable_image_is_a_permanent_thumbnail_error(
    server: LoopbackServer,
    image_settings: ImageSettings,
    fetcher: ImageFetcher,
    shared_pool: ThumbnailPool,
) -> None:
    server.route("/art-aesthetic-computer/t.png", Reply(200, BIG[: len(BIG) // 2]))
    with pytest.raises(ThumbnailError) as info:
        await prepare_painting_blob({"slug": "t"}, image_settings, fetcher, shared_pool)
    assert info.value.permanent and info.value.reason == "image_corrupt"


async def test_pool_makes_conforming_thumbnails_concurrently(shared_pool: ThumbnailPool) -> None:
    from .helpers import noise_rgb

    datas = [encode(noise_rgb(900, 700, seed)) for seed in range(4)] + [BIG]
    thumbs = await asyncio.gather(*(shared_pool.make(d) for d in datas))
    with pytest.raises(ThumbnailError) as info:
        await shared_pool.make(b"not an image")
    assert info.value.reason == "not_an_image"
    for t, size in zip(thumbs, [(900, 700)] * 4 + [(1600, 1200)], strict=True):
        assert_valid_thumbnail(t, size)


async def test_pool_limits_override_and_close() -> None:
    pool = ThumbnailPool(1, max_bytes=50_000)
    t = await pool.make(BIG)
    assert len(t.data) <= 50_000
    t = await pool.make(BIG, side=64)
    assert (t.width, t.height) == (64, 64)
    pool.close()
    with pytest.raises(TransientImageError) as info:
        await pool.make(BIG)
    assert info.value.reason == "image_pool_closed"


def test_pool_sizes_to_the_machine() -> None:
    import os

    pool = ThumbnailPool()
    try:
        assert pool.workers == (os.cpu_count() or 1)
        assert pool.max_jobs == 4 * pool.workers
    finally:
        pool.close()
