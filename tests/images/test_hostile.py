"""Hostile images (syncd_sandbox/hostile_images.py) through the real thumbnail pool.

Each one is refused with its reason by the structural check in a worker, with a
CPU limit of 2 s per image: had the check been slow, the reason would be
``image_cpu_limit``. The test process (the daemon's side) sends the bytes and
its peak memory hardly moves (these files took the daemon to 1.27 GB before).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Iterator

import pytest

from syncd.images.errors import ImageError
from syncd.images.structure import StructureLimits, inspect_image
from syncd.images.thumbnail import ThumbnailPool
from syncd_sandbox import hostile_images as hostile

from . import workerjobs
from .helpers import assert_valid_thumbnail

#: Starts processes (the PDS, the MongoDB sandbox, image workers, promtool, ...).
pytestmark = pytest.mark.slow

CASES: list[tuple[str, Callable[[], bytes], str]] = [
    ("gif_comment_flood", hostile.gif_comment_flood, "image_too_many_blocks"),
    ("gif_frame_flood", hostile.gif_frame_flood, "image_too_many_frames"),
    ("jpeg_marker_flood", hostile.jpeg_marker_flood, "image_too_many_markers"),
    ("jpeg_app_flood", lambda: hostile.jpeg_marker_flood(marker=0xE1), "image_too_many_markers"),
    ("progressive_scan_bomb", hostile.progressive_scan_bomb, "image_too_many_scans"),
    ("png_chunk_flood", hostile.png_chunk_flood, "image_too_many_chunks"),
    ("png_text_flood", lambda: hostile.png_chunk_flood(kind=b"tEXt"), "image_too_many_chunks"),
    ("png_dimension_bomb", hostile.png_dimension_bomb, "decompression_bomb"),
    ("palette_png_bomb_over_limit", lambda: hostile.palette_png_bomb(8000), "decompression_bomb"),
]


def _peak_kib() -> int:
    with open("/proc/self/status") as f:
        found = re.search(r"VmHWM:\s+(\d+)", f.read())
    assert found is not None
    return int(found.group(1))


def _reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as f:  # "5": reset the peak RSS to the current
        f.write("5")


@pytest.fixture(scope="module")
def pool() -> Iterator[ThumbnailPool]:
    with ThumbnailPool(2, cpu_seconds=2) as p:
        yield p


@pytest.mark.parametrize(("name", "make", "reason"), CASES, ids=[c[0] for c in CASES])
def test_each_hostile_image_is_refused_with_its_reason(
    pool: ThumbnailPool, name: str, make: Callable[[], bytes], reason: str
) -> None:
    data = make()
    _reset_peak()
    before = _peak_kib()
    with pytest.raises(ImageError) as info:
        asyncio.run(pool.make(data))
    grown = _peak_kib() - before
    assert info.value.reason == reason, info.value
    assert info.value.permanent
    assert grown < 32 * 1024, f"{name}: the sending side grew by {grown} KiB"


def test_the_generators_make_what_they_say() -> None:
    assert 25_000_000 < len(hostile.gif_comment_flood()) <= 25 * 1024 * 1024
    assert 2_000_000 < len(hostile.progressive_scan_bomb()) <= 2_500_000
    assert len(hostile.jpeg_marker_flood()) > 2_400_000
    assert len(hostile.png_chunk_flood()) > 2_400_000
    assert len(hostile.palette_png_bomb()) < 60_000
    lifted = StructureLimits(
        max_pixels=10**10,
        max_chunks=10**7,
        max_frames=10**7,
        gif_max_blocks=10**8,
        jpeg_max_markers=10**7,
        jpeg_max_scans=10**7,
    )
    # With every limit lifted the files are well-formed containers of what they claim.
    # (Smaller instances: the walk's cost is linear, the limits are what keep it short.)
    assert inspect_image(hostile.gif_frame_flood(1000), lifted).frames == 1000
    bomb = inspect_image(hostile.progressive_scan_bomb(200_000), lifted)
    assert bomb.progressive and bomb.scans > 5_000 and (bomb.width, bomb.height) == (1024, 1024)
    assert inspect_image(hostile.jpeg_marker_flood(50_000), lifted).chunks > 50_000
    assert inspect_image(hostile.png_chunk_flood(20_000), lifted).chunks == 20_003
    palette = inspect_image(hostile.palette_png_bomb(), lifted)
    assert (palette.width, palette.height) == (6300, 6300)
    assert inspect_image(hostile.gif_comment_flood(400_000), lifted).chunks > 199_000


def test_a_palette_bomb_under_the_pixel_limit_is_a_thumbnail_made_in_little_memory() -> None:
    """39.7 M pixels in 40 KB: 342 MB (up to 850 MB for some palettes) in the daemon
    before. Now in a worker, a strip at a time: the decoded palette image (40 MB) plus
    a few MB over the worker's own ~35 MB."""
    data = hostile.palette_png_bomb()
    with ThumbnailPool(1, memory_mb=256).worker_pool as workers:
        thumb, peak = workers.call(workerjobs.thumbnail_and_peak, data, {})
    print(f"palette bomb: worker peak RSS {peak / 2**20:.0f} MB")
    out = assert_valid_thumbnail(thumb, (6300, 6300))
    assert out.getextrema() == ((0, 0), (0, 0), (0, 0))  # transparent -> black
    assert peak < 120 * 2**20
