"""The container walk before any decode (syncd/images/structure.py)."""

from __future__ import annotations

import struct
import zlib

import pytest
from PIL import Image

from syncd.images.errors import ThumbnailError
from syncd.images.render import make_thumbnail
from syncd.images.structure import StructureLimits, inspect_image, is_platform_thumbnail
from syncd_sandbox import hostile_images as hostile

from .helpers import encode, gradient, noise_rgb

LOOSE = StructureLimits(max_pixels=10**9)


def reason(data: bytes, limits: StructureLimits | None = None) -> str:
    with pytest.raises(ThumbnailError) as info:
        inspect_image(data, limits)
    return info.value.reason


@pytest.mark.parametrize(
    ("fmt", "params", "expected"),
    [
        ("PNG", {}, ("png", 1)),
        ("JPEG", {"quality": 80}, ("jpeg", 1)),
        ("JPEG", {"progressive": True}, ("jpeg", 1)),
        ("GIF", {}, ("gif", 1)),
        ("WEBP", {"lossless": True}, ("webp", 1)),
        ("WEBP", {"quality": 70}, ("webp", 1)),
    ],
)
def test_what_each_format_claims(
    fmt: str, params: dict[str, object], expected: tuple[str, int]
) -> None:
    info = inspect_image(encode(gradient(333, 222), fmt, **params))
    assert (info.format, info.frames) == expected
    assert (info.width, info.height) == (333, 222)


def test_progressive_jpeg_scans_are_counted() -> None:
    base = inspect_image(encode(gradient(64, 64), "JPEG"))
    progressive = inspect_image(encode(gradient(64, 64), "JPEG", progressive=True))
    assert (base.progressive, base.scans) == (False, 1)
    assert progressive.progressive and progressive.scans > 3


def test_restart_markers_and_stuffed_bytes_are_not_markers() -> None:
    data = encode(noise_rgb(256, 256), "JPEG", quality=95, restart_marker_blocks=1)
    info = inspect_image(data)
    assert b"\xff\xd0" in data and info.scans == 1 and info.chunks < 20


def test_animations_count_frames() -> None:
    rgb = [Image.new("RGB", (40, 30), (60 * i, 255 - 60 * i, 9)) for i in range(4)]
    gif = encode(rgb[0], "GIF", save_all=True, append_images=rgb[1:])
    assert inspect_image(gif).frames == 4
    assert inspect_image(encode(rgb[0], "PNG", save_all=True, append_images=rgb[1:])).frames == 4
    webp = encode(rgb[0], "WEBP", save_all=True, append_images=rgb[1:], lossless=True)
    assert inspect_image(webp).frames == 4
    assert reason(gif, StructureLimits(max_frames=3)) == "image_too_many_frames"


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "WEBP"])
def test_the_pixel_limit_holds_for_every_format(fmt: str) -> None:
    data = encode(gradient(300, 200).convert("P" if fmt == "GIF" else "RGB"), fmt)
    assert inspect_image(data, StructureLimits(max_pixels=60_000)).width == 300
    assert reason(data, StructureLimits(max_pixels=59_999)) == "decompression_bomb"


def test_a_gif_frame_larger_than_its_screen_counts_at_its_extent() -> None:
    data = bytearray(encode(Image.new("P", (10, 10)), "GIF"))
    at = data.index(b"\x2c")
    data[at + 5 : at + 9] = struct.pack("<HH", 3000, 3000)  # the frame claims 3000x3000
    assert reason(bytes(data), StructureLimits(max_pixels=1_000_000)) == "decompression_bomb"


def test_palette_png_pixels_are_pixels() -> None:
    assert reason(hostile.palette_png_bomb(7000)) == "decompression_bomb"
    assert inspect_image(hostile.palette_png_bomb(300)).width == 300


@pytest.mark.parametrize(
    ("data", "limits", "expected"),
    [
        (hostile.png_chunk_flood(101), StructureLimits(max_chunks=100), "image_too_many_chunks"),
        (hostile.gif_frame_flood(11), StructureLimits(max_frames=10), "image_too_many_frames"),
        (
            hostile.gif_comment_flood(3000),
            StructureLimits(gif_max_blocks=1000),
            "image_too_many_blocks",
        ),
        (
            hostile.jpeg_marker_flood(101),
            StructureLimits(jpeg_max_markers=100),
            "image_too_many_markers",
        ),
        (
            hostile.progressive_scan_bomb(20_000, size=64),
            StructureLimits(jpeg_max_scans=20),
            "image_too_many_scans",
        ),
    ],
)
def test_each_limit_has_its_reason(data: bytes, limits: StructureLimits, expected: str) -> None:
    assert reason(data, limits) == expected


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"", "not_an_image"),
        (b"<html>", "not_an_image"),
        (b"\x89PNG\r\n\x1a\n" + b"garbage" * 5, "not_an_image"),
        (b"\xff\xd8\xff\xe0\x00\x02" + b"garbage", "not_an_image"),
        (b"\xff\xd8\xff\xd9", "image_corrupt"),  # no frame header
        (b"GIF89a", "not_an_image"),
        (b"GIF89a" + struct.pack("<HHBBB", 0, 5, 0, 0, 0) + b"\x3b", "image_corrupt"),
        (b"GIF89a" + struct.pack("<HHBBB", 5, 5, 0, 0, 0) + b"\x3b", "image_corrupt"),
        (b"GIF89a" + struct.pack("<HHBBB", 5, 5, 0, 0, 0) + b"\x99", "image_corrupt"),
        (b"RIFF\0\0\0\0WEBPJUNK\0\0\0\0", "not_an_image"),
    ],
)
def test_garbage(data: bytes, expected: str) -> None:
    assert reason(data) == expected


def test_a_png_ihdr_of_the_wrong_kind_is_corrupt() -> None:
    data = bytearray(encode(Image.new("L", (8, 8))))
    data[24:26] = bytes((3, 3))  # bit depth 3: no such PNG
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    assert reason(bytes(data)) == "image_corrupt"


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF"])
def test_truncated_files_are_left_to_the_decoder(fmt: str) -> None:
    data = encode(noise_rgb(200, 200).convert("P" if fmt == "GIF" else "RGB"), fmt)
    assert inspect_image(data[: len(data) // 2]).width == 200


def test_is_platform_thumbnail() -> None:
    assert is_platform_thumbnail(make_thumbnail(encode(gradient(30, 70))).data)
    assert is_platform_thumbnail(
        make_thumbnail(encode(noise_rgb(600, 600)), max_bytes=200_000).data
    )
    assert is_platform_thumbnail(encode(gradient(512, 512), "JPEG"))
    # the old way: aspect kept, never upscaled
    assert not is_platform_thumbnail(encode(gradient(512, 384)))
    assert not is_platform_thumbnail(encode(gradient(100, 50)))
    assert not is_platform_thumbnail(encode(gradient(1024, 1024)))
    # 512x512 but not PNG/JPEG, or animated
    assert not is_platform_thumbnail(encode(gradient(512, 512).convert("P"), "GIF"))
    assert not is_platform_thumbnail(encode(gradient(512, 512), "WEBP"))
    frames = [gradient(512, 512), noise_rgb(512, 512)]
    assert not is_platform_thumbnail(
        encode(frames[0], "PNG", save_all=True, append_images=frames[1:])
    )
    assert not is_platform_thumbnail(b"")
    assert not is_platform_thumbnail(b"\x89PNG\r\n\x1a\n")
