"""Shared helpers for image tests: deterministic image builders and blob checks."""

from __future__ import annotations

import io
import random

from PIL import Image

from syncd.images.thumbnail import Thumbnail

LIMIT = 102_400
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


def assert_valid_thumbnail(
    thumb: Thumbnail, src_size: tuple[int, int], *, max_side: int = SIDE, max_bytes: int = LIMIT
) -> Image.Image:
    """The invariants every produced blob must satisfy; returns the decoded image."""
    assert isinstance(thumb.data, bytes)
    assert len(thumb.data) <= max_bytes
    with Image.open(io.BytesIO(thumb.data)) as im:
        im.load()
        fmt = im.format
        size = im.size
        decoded = im.copy()
    assert {"PNG": "image/png", "JPEG": "image/jpeg"}[fmt or ""] == thumb.mime_type
    if thumb.mime_type == "image/png":
        assert thumb.data.startswith(b"\x89PNG\r\n\x1a\n")
    else:
        assert thumb.data.startswith(b"\xff\xd8\xff")
    assert size == (thumb.width, thumb.height)
    w, h = size
    sw, sh = src_size
    assert max(w, h) <= max_side
    assert w <= sw and h <= sh, "never upscale"
    # aspect ratio kept within 1 px: the other side computed from the longer one
    if sw >= sh:
        assert abs(h - sh * w / sw) <= 1
    else:
        assert abs(w - sw * h / sh) <= 1
    return decoded
