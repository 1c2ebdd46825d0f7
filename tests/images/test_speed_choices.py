"""The choices that make thumbnails and fetches cheap, pinned (docs/images.md).

No timings here: each test checks the behaviour that makes the work cheaper
(a box reduce for integer factors, no futile ``optimize`` encode, bounded
concurrency), not how fast it ran.
"""

from __future__ import annotations

import asyncio
import io

import httpx
import pytest
from PIL import Image, ImageDraw

from syncd.images import render
from syncd.images.fetch import ImageFetcher
from syncd.images.settings import ImageSettings
from syncd.images.thumbnail import ThumbnailPool, make_thumbnail

from .helpers import encode, fitted_box, gradient, noise_rgb


def painting_like(width: int, height: int) -> Image.Image:
    im = gradient(width, height)
    draw = ImageDraw.Draw(im)
    for i in range(12):
        draw.ellipse((i * 37, i * 23, i * 37 + 300, i * 23 + 200), fill=(i * 20, 255 - i * 20, 90))
    return im


def decoded(data: bytes) -> Image.Image:
    with Image.open(io.BytesIO(data)) as im:
        im.load()
        return im.copy()


def test_an_exact_halving_is_a_2x2_box_average() -> None:
    src = painting_like(1024, 768)
    t = make_thumbnail(encode(src))
    assert t.mime_type == "image/png"
    out = decoded(t.data)
    assert out.crop(fitted_box(src.size)).tobytes() == src.reduce(2).tobytes()


def test_a_non_integer_ratio_is_reduced_then_resampled_with_lanczos() -> None:
    src = painting_like(1500, 1000)
    t = make_thumbnail(encode(src))
    box = fitted_box(src.size)
    assert box == (0, 85, 512, 426)
    expected = src.reduce(2).resize((512, 341), Image.Resampling.LANCZOS)
    assert decoded(t.data).crop(box).tobytes() == expected.tobytes()


def test_a_large_image_is_reduced_a_strip_at_a_time_with_the_same_result(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    src = painting_like(1600, 1200)
    whole = make_thumbnail(encode(src))
    monkeypatch.setattr(render, "STRIP_BYTES", 64 * 1024)  # 10 rows at a time, not 1200
    crops: list[tuple[int, int, int, int]] = []
    real_crop = Image.Image.crop

    def counting_crop(
        self: Image.Image, box: tuple[int, int, int, int] | None = None
    ) -> Image.Image:
        if box is not None and self.size == src.size:
            crops.append(box)
        return real_crop(self, box)

    monkeypatch.setattr(Image.Image, "crop", counting_crop)
    strips = make_thumbnail(encode(src))
    assert len(crops) > 100
    assert strips.data == whole.data


def test_thumbnails_are_deterministic() -> None:
    data = encode(painting_like(1024, 1024))
    assert make_thumbnail(data).data == make_thumbnail(data).data


def test_optimize_is_tried_only_near_the_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[bool] = []
    real = render._encode_png

    def counting(im: Image.Image, *, optimize: bool = False) -> bytes:
        calls.append(optimize)
        return real(im, optimize=optimize)

    monkeypatch.setattr(render, "_encode_png", counting)
    t = make_thumbnail(encode(noise_rgb(1024, 1024)), max_bytes=300_000)  # ~770 KB: hopeless
    assert t.mime_type == "image/jpeg"
    assert calls == [False]

    calls.clear()
    png = real(render.letterbox(noise_rgb(512, 512), 512))
    t = make_thumbnail(encode(noise_rgb(512, 512)), max_bytes=len(png) - 1)  # just over
    assert calls == [False, True]


async def test_pool_admits_at_most_max_jobs_images() -> None:
    with ThumbnailPool(1, max_jobs=2) as pool:
        assert pool.max_jobs == 2
        inside = peak = 0

        async def job() -> None:
            nonlocal inside, peak
            async with pool.admit():
                inside += 1
                peak = max(peak, inside)
                await asyncio.sleep(0.01)
                inside -= 1

        await asyncio.gather(*(job() for _ in range(7)))
        assert peak == 2
    with ThumbnailPool(3) as pool:
        assert pool.max_jobs == 12


async def test_pool_admission_works_across_event_loops() -> None:
    pool = ThumbnailPool(1, max_jobs=1)
    try:

        async def once() -> None:
            async with pool.admit():
                await asyncio.sleep(0)

        await once()
        await asyncio.to_thread(asyncio.run, once())  # another loop, same pool
        await once()
    finally:
        pool.close()


async def test_fetcher_bounds_requests_in_flight() -> None:
    png = encode(gradient(32, 32))
    inside = peak = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal inside, peak
        inside += 1
        peak = max(peak, inside)
        await asyncio.sleep(0.005)
        inside -= 1
        if request.method == "HEAD":
            return httpx.Response(404)
        return httpx.Response(200, stream=httpx.ByteStream(png))

    settings = ImageSettings(allowed_hosts=("img.test",))  # https://img.test:443
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        fetcher = ImageFetcher(client, settings, max_concurrent=3)
        urls = [f"https://img.test/{i}.png" for i in range(20)]
        got = await asyncio.gather(
            *(fetcher.fetch_image(u) for u in urls), *(fetcher.recording_exists(u) for u in urls)
        )
    assert got[:20] == [png] * 20 and got[20:] == [False] * 20
    assert peak == 3
    with pytest.raises(ValueError):
        ImageFetcher(client, settings, max_concurrent=0)
