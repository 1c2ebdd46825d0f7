"""Painting thumbnails as the platform makes them (platform-facts.md §2), and their check.

* :func:`make_thumbnail` -- what the platform's own writer uploads: always a
  512×512 PNG, the source fitted inside with ``contain`` and letterboxed on
  black; a source smaller than 512 in either dimension is scaled with
  nearest-neighbour (pixel art stays crisp), a larger one with Lanczos. JPEG
  only if the PNG would not fit the lexicon's 1,048,576 bytes.
* :func:`check_thumbnail` -- whether a blob is such a thumbnail of a source:
  size, format, 512×512, black letterbox rows/columns, and the content: for
  nearest-neighbour every sampled pixel is the colour of the source pixel under
  it (a neighbour at block edges), otherwise close to a Lanczos fit.

Written with Pillow only, independently of syncd's thumbnail code.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

from PIL import Image, ImageChops, ImageStat

from syncd_sandbox.platform import THUMBNAIL_MAX_BYTES, THUMBNAIL_SIDE

SIDE = THUMBNAIL_SIDE
# How many sample points per axis the nearest-neighbour check looks at (≤ 64×64 pixels).
SAMPLES_PER_AXIS = 64
# Mean absolute difference per channel allowed against our own Lanczos fit (different
# Lanczos implementations and a pixel of centring differ by a few levels).
LANCZOS_TOLERANCE = 10.0
JPEG_TOLERANCE = 28


@dataclass(frozen=True)
class Box:
    """Where the fitted source sits inside the 512×512 thumbnail."""

    x0: int
    y0: int
    width: int
    height: int


def content_box(source: tuple[int, int], side: int = SIDE) -> Box:
    """``contain``: the largest size with the source's aspect ratio, centred."""
    sw, sh = source
    scale = min(side / sw, side / sh)
    w = min(side, max(1, round(sw * scale)))
    h = min(side, max(1, round(sh * scale)))
    return Box((side - w) // 2, (side - h) // 2, w, h)


def uses_nearest(source: tuple[int, int], side: int = SIDE) -> bool:
    """platform-facts §2: a source smaller than 512 in either dimension: nearest-neighbour."""
    return min(source) < side


def on_black(img: Image.Image) -> Image.Image:
    """The image as RGB, transparent parts composited on black."""
    if img.mode == "RGB":
        return img
    rgba = img.convert("RGBA")
    ground = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
    return Image.alpha_composite(ground, rgba).convert("RGB")


def fit(source: Image.Image, side: int = SIDE) -> Image.Image:
    """The platform's 512×512 ``contain`` thumbnail on black, as an RGB image."""
    src = on_black(source)
    box = content_box(src.size, side)
    method = Image.Resampling.NEAREST if uses_nearest(src.size, side) else Image.Resampling.LANCZOS
    scaled = src.resize((box.width, box.height), method)
    canvas = Image.new("RGB", (side, side), (0, 0, 0))
    canvas.paste(scaled, (box.x0, box.y0))
    return canvas


def encode_png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def make_thumbnail(data: bytes) -> tuple[bytes, str]:
    """(bytes, mime type) of the platform's thumbnail of an image file. Raises on bad input."""
    with Image.open(io.BytesIO(data)) as im:
        im.load()
        thumb = fit(im)
    png = encode_png(thumb)
    if len(png) <= THUMBNAIL_MAX_BYTES:
        return png, "image/png"
    for quality in (90, 80, 70, 60, 50):
        buf = io.BytesIO()
        thumb.save(buf, format="JPEG", quality=quality)
        if buf.tell() <= THUMBNAIL_MAX_BYTES:
            return buf.getvalue(), "image/jpeg"
    raise ValueError("no thumbnail fits 1,048,576 bytes")


def decode(data: bytes | None) -> Image.Image | None:
    """A decoded image, or None when ``data`` is not an image Pillow can read."""
    if not data:
        return None
    try:
        im = Image.open(io.BytesIO(data))
        im.load()
        return im
    except Exception:
        return None


def _strips(box: Box, side: int) -> list[tuple[int, int, int, int]]:
    # The letterbox, kept one pixel away from the content (rounding of the centring).
    x0, y0 = box.x0 - 1, box.y0 - 1
    x1, y1 = box.x0 + box.width + 1, box.y0 + box.height + 1
    out = []
    if y0 > 0:
        out.append((0, 0, side, y0))
    if y1 < side:
        out.append((0, y1, side, side))
    if x0 > 0:
        out.append((0, 0, x0, side))
    if x1 < side:
        out.append((x1, 0, side, side))
    return out


def _letterbox_problem(thumb: Image.Image, box: Box, tolerance: int) -> str | None:
    side = thumb.size[0]
    has_alpha = "A" in thumb.getbands()
    rgb = thumb.convert("RGB")
    alpha = thumb.getchannel("A") if has_alpha else None
    for strip in _strips(box, side):
        extrema = rgb.crop(strip).getextrema()
        brightest = max(hi for _, hi in extrema)  # type: ignore[misc]
        if brightest > tolerance:
            return f"letterbox {strip} is not black (a channel reaches {brightest})"
        if alpha is not None:
            lo = cast(tuple[int, int], alpha.crop(strip).getextrema())[0]
            if lo < 255 - tolerance:
                return f"letterbox {strip} is transparent, not black"
    return None


def _near(a: Any, b: Any, tolerance: int) -> bool:
    # Pixels of RGB images are (r, g, b) tuples.
    return all(abs(x - y) <= tolerance for x, y in zip(a, b, strict=False))


def _positions(start: int, length: int) -> list[int]:
    lo, hi = (start + 1, start + length - 1) if length > 2 else (start, start + length)
    n = min(SAMPLES_PER_AXIS, hi - lo)
    return sorted({lo + (k * (hi - lo)) // n + (hi - lo) // (2 * n) for k in range(n)})


def _nearest_problem(thumb: Image.Image, src: Image.Image, box: Box, tolerance: int) -> str | None:
    """Every sampled thumbnail pixel is the colour of the source pixel it covers."""
    sw, sh = src.size
    t_px = thumb.load()
    s_px = src.load()
    assert t_px is not None and s_px is not None
    bx, by = box.width / sw, box.height / sh
    # Samples stay a pixel inside the content (another implementation may centre it a
    # pixel off), spread evenly over it.
    ys = _positions(box.y0, box.height)
    xs = _positions(box.x0, box.width)
    bad = 0
    checked = 0
    first = ""
    for y in ys:
        v = (y - box.y0 + 0.5) / by
        j = min(sh - 1, max(0, math.floor(v)))
        fv = v - math.floor(v)
        for x in xs:
            u = (x - box.x0 + 0.5) / bx
            i = min(sw - 1, max(0, math.floor(u)))
            fu = u - math.floor(u)
            got = t_px[x, y]
            checked += 1
            # Well inside a block of 8+ pixels: exactly that source pixel; near a block's
            # edge (or small blocks): the source pixel or one of its neighbours.
            inner = bx >= 8 and by >= 8 and 0.25 <= fu <= 0.75 and 0.25 <= fv <= 0.75
            if inner:
                ok = _near(got, s_px[i, j], tolerance)
            else:
                ok = any(
                    _near(got, s_px[ii, jj], tolerance)
                    for ii in range(max(0, i - 1), min(sw, i + 2))
                    for jj in range(max(0, j - 1), min(sh, j + 2))
                )
            if not ok:
                bad += 1
                if not first:
                    first = f"pixel ({x},{y}) is {got}, source ({i},{j}) is {s_px[i, j]}"
    if bad:
        return f"not nearest-neighbour: {bad} of {checked} sampled pixels off ({first})"
    return None


def _lanczos_problem(
    thumb: Image.Image, src: Image.Image, box: Box, tolerance: float
) -> str | None:
    expected = src.resize((box.width, box.height), Image.Resampling.LANCZOS)
    best = math.inf
    for dx in (0, 1, -1):
        for dy in (0, 1, -1):
            x0, y0 = box.x0 + dx, box.y0 + dy
            if (
                x0 < 0
                or y0 < 0
                or x0 + box.width > thumb.size[0]
                or y0 + box.height > thumb.size[1]
            ):
                continue
            got = thumb.crop((x0, y0, x0 + box.width, y0 + box.height))
            diff = ImageStat.Stat(ImageChops.difference(got, expected)).mean
            best = min(best, sum(diff) / len(diff))
            if best <= tolerance:
                return None
    return f"content is not the source fitted in {box.width}x{box.height} (mean diff {best:.1f})"


def check_thumbnail(
    blob: bytes | None, meta: Mapping[str, Any], source: bytes | Image.Image
) -> str | None:
    """None when ``blob`` (declared as ``meta``, the record's blob) is the platform's
    thumbnail of ``source``; otherwise what is wrong."""
    if blob is None:
        return "thumbnail blob not on the PDS"
    if len(blob) > THUMBNAIL_MAX_BYTES:
        return f"thumbnail is {len(blob)} bytes (limit {THUMBNAIL_MAX_BYTES})"
    if meta.get("size") != len(blob):
        return f"blob size {meta.get('size')} != {len(blob)} bytes on the PDS"
    mime = meta.get("mimeType")
    thumb = decode(blob)
    if thumb is None:
        return "thumbnail does not decode"
    fmt = {"PNG": "image/png", "JPEG": "image/jpeg"}.get(thumb.format or "")
    if fmt is None or fmt != mime:
        return f"thumbnail is {thumb.format} but declared {mime}"
    if thumb.size != (SIDE, SIDE):
        return f"thumbnail is {thumb.size[0]}x{thumb.size[1]}, not {SIDE}x{SIDE}"
    src_img = source if isinstance(source, Image.Image) else decode(source)
    if src_img is None:
        return "a thumbnail of a source that does not decode"
    src = on_black(src_img)
    if fmt == "image/jpeg" and len(encode_png(fit(src))) <= THUMBNAIL_MAX_BYTES:
        return "thumbnail is a JPEG although a PNG fits"
    lossy = fmt == "image/jpeg"
    box = content_box(src.size)
    problem = _letterbox_problem(thumb, box, JPEG_TOLERANCE if lossy else 0)
    if problem:
        return problem
    flat = on_black(thumb)
    if uses_nearest(src.size):
        return _nearest_problem(flat, src, box, JPEG_TOLERANCE if lossy else 0)
    return _lanczos_problem(flat, src, box, LANCZOS_TOLERANCE * (2 if lossy else 1))
