from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from syncd.images.fetch import ImageFetcher, make_client
from syncd.images.settings import ImageSettings
from syncd.images.thumbnail import ThumbnailPool

from .server import LoopbackServer


@pytest.fixture
def server() -> Iterator[LoopbackServer]:
    srv = LoopbackServer().start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def image_settings(server: LoopbackServer) -> ImageSettings:
    return ImageSettings(
        url_template=f"http://127.0.0.1:{server.port}/{{bucket}}/{{key}}",
        recording_template=f"http://127.0.0.1:{server.port}/{{bucket}}/{{key}}",
        allowed_hosts=(f"http://127.0.0.1:{server.port}",),
        max_bytes=1_000_000,
        timeout_seconds=0.5,
        retries=3,
        workers=2,
    )


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
async def client(image_settings: ImageSettings) -> AsyncIterator[httpx.AsyncClient]:
    async with make_client(image_settings) as c:
        yield c


@pytest.fixture
def fetcher(
    client: httpx.AsyncClient, image_settings: ImageSettings, sleeps: list[float]
) -> ImageFetcher:
    async def fake_sleep(delay: float) -> None:
        sleeps.append(delay)

    return ImageFetcher(client, image_settings, sleep=fake_sleep)


@pytest.fixture(scope="session")
def shared_pool() -> Iterator[ThumbnailPool]:
    """Two boxed workers for the whole session (starting a worker costs ~0.3 s).
    Tests that kill workers or change limits make their own."""
    with ThumbnailPool(2) as pool:
        yield pool
