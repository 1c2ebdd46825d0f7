"""prepare_painting_blob end to end against the loopback server, and ThumbnailPool."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest

from syncd.images.cid import blob_cid
from syncd.images.errors import ImageNotFoundError, ThumbnailError, UnsafeSlugError
from syncd.images.fetch import ImageFetcher
from syncd.images.pipeline import PreparedImage, prepare_painting_blob
from syncd.images.settings import ImageSettings
from syncd.images.thumbnail import ThumbnailPool

from .helpers import assert_valid_thumbnail, encode, gradient, noise_rgb
from .server import LoopbackServer, Reply

BIG = encode(gradient(1600, 1200))


@pytest.fixture
def pool(image_settings: ImageSettings) -> Iterator[ThumbnailPool]:
    p = ThumbnailPool.from_settings(image_settings)
    yield p
    p.close()


async def test_user_painting_with_recording(
    server: LoopbackServer,
    image_settings: ImageSettings,
    fetcher: ImageFetcher,
    pool: ThumbnailPool,
) -> None:
    server.route("/user-aesthetic-computer/auth0%7Cabc/2024.1.1.png", Reply(200, BIG))
    server.route("/user-aesthetic-computer/auth0%7Cabc/2024.1.1.zip", Reply(200, b"zip"))
    doc = {"_id": "x", "user": "auth0|abc", "slug": "2024.1.1", "code": "abc"}
    prepared = await prepare_painting_blob(doc, image_settings, fetcher, pool)
    assert isinstance(prepared, PreparedImage)
    assert prepared.recording_exists is True
    assert prepared.image_url == server.url("/user-aesthetic-computer/auth0%7Cabc/2024.1.1.png")
    assert prepared.cid == blob_cid(prepared.thumbnail.data)
    assert_valid_thumbnail(prepared.thumbnail, (1600, 1200))
    assert (prepared.thumbnail.width, prepared.thumbnail.height) == (512, 384)
    methods = sorted((e.method, e.path.rsplit(".", 1)[1]) for e in server.log)
    assert methods == [("GET", "png"), ("HEAD", "zip")]


async def test_guest_painting_without_recording(
    server: LoopbackServer,
    image_settings: ImageSettings,
    fetcher: ImageFetcher,
    pool: ThumbnailPool,
) -> None:
    server.route("/art-aesthetic-computer/img.png", Reply(200, BIG))
    prepared = await prepare_painting_blob(
        {"slug": "img:rec", "code": "q"}, image_settings, fetcher, pool
    )
    assert prepared.recording_exists is False
    assert [e.path for e in server.log if e.method == "HEAD"] == ["/art-aesthetic-computer/rec.zip"]


async def test_unsafe_slug_makes_no_request(
    server: LoopbackServer,
    image_settings: ImageSettings,
    fetcher: ImageFetcher,
    pool: ThumbnailPool,
) -> None:
    with pytest.raises(UnsafeSlugError):
        await prepare_painting_blob(
            {"user": "u", "slug": "../../etc/passwd"}, image_settings, fetcher, pool
        )
    assert server.log == []


async def test_missing_image_cancels_the_recording_probe(
    server: LoopbackServer,
    image_settings: ImageSettings,
    fetcher: ImageFetcher,
    pool: ThumbnailPool,
) -> None:
    release = threading.Event()
    server.route("/art-aesthetic-computer/gone.zip", lambda n: (release.wait(5), Reply(200))[1])
    try:
        with pytest.raises(ImageNotFoundError):
            await prepare_painting_blob({"slug": "gone"}, image_settings, fetcher, pool)
        await asyncio.sleep(0)
        pending = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        assert pending == []
    finally:
        release.set()


async def test_undecodable_image_is_a_permanent_thumbnail_error(
    server: LoopbackServer,
    image_settings: ImageSettings,
    fetcher: ImageFetcher,
    pool: ThumbnailPool,
) -> None:
    server.route("/art-aesthetic-computer/t.png", Reply(200, BIG[: len(BIG) // 2]))
    with pytest.raises(ThumbnailError) as info:
        await prepare_painting_blob({"slug": "t"}, image_settings, fetcher, pool)
    assert info.value.permanent and info.value.reason == "image_corrupt"


@pytest.mark.parametrize("kind", ["thread", "process"])
async def test_pool_kinds_make_conforming_thumbnails_concurrently(kind: str) -> None:
    datas = [encode(noise_rgb(900, 700, seed)) for seed in range(4)] + [BIG]
    with ThumbnailPool(2, kind=kind) as pool:  # type: ignore[arg-type]
        thumbs = await asyncio.gather(*(pool.make(d) for d in datas))
        with pytest.raises(ThumbnailError) as info:
            await pool.make(b"not an image")
        assert info.value.reason == "not_an_image"
    for t, size in zip(thumbs, [(900, 700)] * 4 + [(1600, 1200)], strict=True):
        assert_valid_thumbnail(t, size)


async def test_pool_limits_override_and_close() -> None:
    pool = ThumbnailPool(1, max_side=64)
    t = await pool.make(BIG)
    assert max(t.width, t.height) == 64
    t = await pool.make(BIG, max_side=100)
    assert max(t.width, t.height) == 100
    pool.close()
    with pytest.raises(RuntimeError):
        await pool.make(BIG)


def test_pool_sizes_to_the_machine() -> None:
    import os

    pool = ThumbnailPool()
    try:
        assert pool.workers == (os.cpu_count() or 1)
    finally:
        pool.close()
    with pytest.raises(ValueError):
        ThumbnailPool(1, kind="fiber")  # type: ignore[arg-type]
