"""Shared helpers for image tests: deterministic image builders and thumbnail checks."""

from __future__ import annotations

import io
import random

from PIL import Image

from syncd.images.thumbnail import Thumbnail

LIMIT = 1_048_576  # the published lexicon's maxSize for the thumbnail blob
SIDE = 512


def encode(im: Image.Image, fmt: str = "PNG", **params: object) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **params)
    return buf.getvalue()


def noise_rgb(width: int, height: int, seed: int = 1) -> Image.Image:
    rng = random.Random(seed)
    return Image.frombytes("RGB", (width, height), rng.randbytes(width * height * 3))


def gradient(width: int, height: int, mode: str = "RGB") -> Image.Image:
    im = Image.linear_gradient("L").resize((width, height))
    if mode == "RGB":
        return Image.merge("RGB", (im, im.transpose(Image.Transpose.ROTATE_90).resize(im.size), im))
    return im.convert(mode)


def decode(data: bytes) -> Image.Image:
    with Image.open(io.BytesIO(data)) as im:
        im.load()
        return im.copy()


def fitted_box(src_size: tuple[int, int], side: int = SIDE) -> tuple[int, int, int, int]:
    """Where the platform puts a ``src_size`` image in its thumbnail: contain, centred.
    Computed here from the platform's rule, not with syncd's helpers."""
    w, h = src_size
    scale = min(side / w, side / h)
    fw, fh = max(1, min(side, round(w * scale))), max(1, min(side, round(h * scale)))
    left, top = (side - fw) // 2, (side - fh) // 2
    return left, top, left + fw, top + fh


def assert_valid_thumbnail(
    thumb: Thumbnail, src_size: tuple[int, int], *, max_bytes: int = LIMIT
) -> Image.Image:
    """The platform's shape: a 512x512 PNG (or JPEG when the PNG would be too large),
    within ``max_bytes``, the image fitted inside and centred, the rest black.
    Returns the decoded thumbnail (RGB or L)."""
    assert isinstance(thumb.data, bytes)
    assert len(thumb.data) <= max_bytes
    out = decode(thumb.data)
    fmt = "PNG" if thumb.data.startswith(b"\x89PNG\r\n\x1a\n") else "JPEG"
    assert {"PNG": "image/png", "JPEG": "image/jpeg"}[fmt] == thumb.mime_type
    if fmt == "JPEG":
        assert thumb.data.startswith(b"\xff\xd8\xff")
    assert out.size == (thumb.width, thumb.height) == (SIDE, SIDE)
    assert out.mode in ("L", "RGB"), "no alpha: transparency is composited onto black"
    left, top, right, bottom = fitted_box(src_size)
    bars = [(0, 0, SIDE, top), (0, bottom, SIDE, SIDE), (0, 0, left, SIDE), (right, 0, SIDE, SIDE)]
    tolerance = 0 if fmt == "PNG" else 40  # JPEG blurs the edge of the letterbox a little
    for box in bars:
        if box[2] > box[0] and box[3] > box[1]:
            bar = out.crop(box).convert("L")
            hi = bar.getextrema()[1]
            assert isinstance(hi, int)
            if fmt == "PNG":
                assert hi == 0, f"letterbox {box} is not black"
            else:
                inner = bar.crop((2, 2, max(3, bar.width - 2), max(3, bar.height - 2)))
                assert inner.getextrema()[1] <= tolerance  # type: ignore[operator]
    return out
