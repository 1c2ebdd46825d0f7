"""A painting's thumbnail as the platform makes it (platform-facts §2).

Always ``side`` x ``side`` (512) pixels: the image fitted inside with
``contain`` and centred, letterboxed on black (#000000). A source smaller than
``side`` in either dimension is scaled with nearest-neighbour (pixel art stays
crisp: 32 x 32 becomes exact 16 x 16 blocks); otherwise it is box-reduced by
the largest integer factor and the rest (< 2x) resampled with LANCZOS.
Transparent pixels are composited onto the same black (the platform's
``fit: contain, background: black``). PNG, unless it would be over
``max_bytes``; then JPEG.

:func:`make_thumbnail` is a plain CPU-bound function of picklable arguments. It
checks the container (:mod:`syncd.images.structure`) before Pillow sees any
pixel, and never returns the original bytes. It runs in boxed worker processes
(:class:`syncd.images.thumbnail.ThumbnailPool`); this module is what a worker
imports, so it imports nothing else.
"""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass, replace
from typing import Literal

from PIL import ExifTags, Image, ImageFile

from syncd.images.errors import ThumbnailError
from syncd.images.settings import LEXICON_THUMBNAIL_MAX_BYTES
from syncd.images.structure import (
    PLATFORM_THUMBNAIL_SIDE,
    StructureLimits,
    inspect_image,
)

#: Input formats we agree to decode; everything else Pillow knows is attack surface.
INPUT_FORMATS = ("PNG", "JPEG", "GIF", "WEBP")
#: JPEG qualities tried, in order, once the PNG does not fit.
JPEG_QUALITIES = (90, 80, 70, 60, 50, 40)
#: ``optimize=True`` (zlib level 9 + filter search) costs ~4x a default encode and saves
#: a few percent at best: it is tried only when the default PNG is this close to the limit.
OPTIMIZE_WITHIN = 1.10
#: Normalising (mode, alpha onto black) and box-reducing go a strip of rows at a time,
#: about this many bytes of RGB each, so a large image is never held twice.
STRIP_BYTES = 4 << 20
BLACK = 0
# Errors Pillow raises on malformed/truncated data.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, IndexError, zlib.error)
_ORIENTATION = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_GREY_MODES = frozenset({"1", "L", "LA", "La", "I", "F"})


@dataclass(frozen=True)
class Thumbnail:
    data: bytes
    mime_type: Literal["image/png", "image/jpeg"]
    width: int
    height: int


def fit_contain(width: int, height: int, side: int) -> tuple[int, int]:
    """Size of ``width`` x ``height`` scaled to fit ``side`` x ``side`` (aspect kept,
    up or down); the constraining dimension is exactly ``side``."""
    if width >= height:
        return side, max(1, min(side, round(height * side / width)))
    return max(1, min(side, round(width * side / height))), side


def uses_nearest(width: int, height: int, side: int) -> bool:
    """The platform's rule: nearest-neighbour when the source is smaller than ``side``
    in either dimension (even when the other side is larger and the scale below 1)."""
    return width < side or height < side


def _open(data: bytes, limits: StructureLimits) -> ImageFile.ImageFile:
    """Open (header only); the container was checked, Pillow's view is checked again."""
    try:
        im = Image.open(io.BytesIO(data), formats=INPUT_FORMATS)
    except Image.DecompressionBombError as exc:
        raise ThumbnailError(str(exc), reason="decompression_bomb") from None
    except Image.UnidentifiedImageError:
        raise ThumbnailError(
            "not a PNG, JPEG, GIF or WebP image Pillow can identify", reason="not_an_image"
        ) from None
    except _DECODE_ERRORS as exc:
        raise ThumbnailError(f"cannot read image header: {exc}", reason="image_corrupt") from None
    width, height = im.size
    if width <= 0 or height <= 0:
        raise ThumbnailError(f"image has an empty size {im.size}", reason="image_corrupt")
    if width * height > limits.max_pixels:
        raise ThumbnailError(
            f"image is {width}x{height} = {width * height} pixels, over the limit of "
            f"{limits.max_pixels}; refusing to decode it",
            reason="decompression_bomb",
        )
    return im


def _grey_scale(im: Image.Image) -> tuple[float, float] | None:
    """For 16/32-bit integer and float greyscale: ``(offset, factor)`` mapping the image's
    values onto 0..255, computed once over the whole image (strips share it)."""
    if im.mode.startswith("I;16"):
        return 0.0, 1 / 257
    if im.mode not in ("I", "F"):
        return None
    extrema = im.getextrema()
    lo, hi = float(extrema[0]), float(extrema[1])  # type: ignore[arg-type]
    if im.mode == "F" and lo >= 0 and hi <= 1.0:
        return 0.0, 255.0
    if lo >= 0 and hi <= 255:
        return 0.0, 1.0
    if lo >= 0 and hi <= 65535:
        return 0.0, 1 / 257
    return lo, 255 / (float(hi - lo) or 1.0)


def _on_black(im: Image.Image, out_mode: str, scale: tuple[float, float] | None) -> Image.Image:
    """Any decoded mode as ``out_mode`` (L or RGB), alpha composited onto black."""
    mode = im.mode
    if scale is not None:
        offset, factor = scale
        if mode.startswith("I;16"):
            im = im.convert("I")
        return im.point(lambda v: (v - offset) * factor).convert("L").convert(out_mode)
    if mode in ("P", "PA"):
        im = im.convert("RGBA" if mode == "PA" or "transparency" in im.info else "RGB")
    elif mode == "La":
        im = im.convert("LA")
    elif mode == "RGBa":
        im = im.convert("RGBA")
    if im.mode in ("LA", "RGBA"):
        black = Image.new(out_mode, im.size, BLACK)
        black.paste(im, (0, 0), im.getchannel("A"))  # colour x alpha: composited onto black
        return black
    return im if im.mode == out_mode else im.convert(out_mode)


def _reduce_on_black(
    im: Image.Image, factor: int, out_mode: str, scale: tuple[float, float] | None
) -> Image.Image:
    """``_on_black`` then a ``factor`` x ``factor`` box average, a strip of rows at a time."""
    width, height = im.size
    rows = max(1, STRIP_BYTES // (4 * width) // factor) * factor
    if rows >= height:
        out = _on_black(im, out_mode, scale)
        return out.reduce(factor) if factor > 1 else out
    out = Image.new(out_mode, (-(-width // factor), -(-height // factor)), BLACK)
    for top in range(0, height, rows):
        strip = _on_black(im.crop((0, top, width, min(height, top + rows))), out_mode, scale)
        out.paste(strip.reduce(factor) if factor > 1 else strip, (0, top // factor))
    return out


def _orientation(im: Image.Image) -> Image.Transpose | None:
    """How to turn the image as its EXIF orientation says (a malformed EXIF block is
    read as "no rotation", not as a broken image)."""
    try:
        value = im.getexif().get(ExifTags.Base.Orientation, 1)
    except _DECODE_ERRORS:
        return None
    return _ORIENTATION.get(value) if isinstance(value, int) else None


def _swaps(transpose: Image.Transpose | None) -> bool:
    return transpose in (
        Image.Transpose.TRANSPOSE,
        Image.Transpose.TRANSVERSE,
        Image.Transpose.ROTATE_90,
        Image.Transpose.ROTATE_270,
    )


def _fitted(data: bytes, side: int, limits: StructureLimits) -> Image.Image:
    """Decode ``data`` and return it fitted (``contain``) into ``side``, in L or RGB, on black."""
    im = _open(data, limits)
    try:
        if im.format != "JPEG":
            # Reading EXIF loads these formats anyway; load here, where a failure is
            # image_corrupt. A JPEG's EXIF is a marker read with the header: it says
            # how to rotate before libjpeg is told the size to decode at.
            im.load()
        transpose = _orientation(im)
        native_w, native_h = im.size
        view_w, view_h = (native_h, native_w) if _swaps(transpose) else (native_w, native_h)
        target = fit_contain(view_w, view_h, side)
        native_target = (target[1], target[0]) if _swaps(transpose) else target
        nearest = uses_nearest(view_w, view_h, side)
        if im.format == "JPEG" and not nearest:
            # libjpeg scales by 1/2, 1/4 or 1/8 while decoding; keep >= 2x the target.
            im.draft(None, (2 * native_target[0], 2 * native_target[1]))
        im.load()  # the first frame only, for animations
        out_mode = "L" if im.mode in _GREY_MODES or im.mode.startswith("I;16") else "RGB"
        if nearest:
            small = im.resize(native_target, Image.Resampling.NEAREST)
            out = _on_black(small, out_mode, _grey_scale(small))
        else:
            factor = max(1, min(im.width // native_target[0], im.height // native_target[1]))
            out = _reduce_on_black(im, factor, out_mode, _grey_scale(im))
        if out is not im:
            im.close()  # the decoded image: free it before resampling
        del im
        if transpose is not None:
            out = out.transpose(transpose)
        if out.size != target:
            out = out.resize(target, Image.Resampling.LANCZOS)
        return out
    except Image.DecompressionBombError as exc:
        raise ThumbnailError(str(exc), reason="decompression_bomb") from None
    except _DECODE_ERRORS as exc:
        raise ThumbnailError(
            f"image is truncated or corrupt: {exc}", reason="image_corrupt"
        ) from None


def _encode_png(im: Image.Image, *, optimize: bool = False) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="PNG", optimize=optimize)
    return buf.getvalue()


def _encode_jpeg(im: Image.Image, quality: int) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=quality, optimize=True)
    return buf.getvalue()


def letterbox(im: Image.Image, side: int) -> Image.Image:
    """``im`` (at most ``side`` x ``side``) centred on a black square of ``side``."""
    if im.size == (side, side):
        return im
    canvas = Image.new(im.mode, (side, side), BLACK)
    canvas.paste(im, ((side - im.width) // 2, (side - im.height) // 2))
    return canvas


def make_thumbnail(
    data: bytes,
    *,
    side: int = PLATFORM_THUMBNAIL_SIDE,
    max_bytes: int = LEXICON_THUMBNAIL_MAX_BYTES,
    limits: StructureLimits | None = None,
    max_pixels: int | None = None,
) -> Thumbnail:
    """The platform's thumbnail of ``data``: ``side`` x ``side``, ``contain`` on black,
    PNG if it fits ``max_bytes``, otherwise JPEG (qualities 90..40).

    ``limits`` are checked on the container first (``max_pixels`` overrides its
    pixel limit). Raises :class:`ThumbnailError` with ``reason``
    ``not_an_image``, ``image_corrupt``, ``decompression_bomb``,
    ``image_too_many_{chunks,frames,blocks,markers,scans}``,
    ``thumbnail_too_large`` or ``invalid_limits``.
    """
    limits = limits or StructureLimits()
    if max_pixels is not None:
        limits = replace(limits, max_pixels=max_pixels)
    if side < 1 or max_bytes < 1 or limits.max_pixels < 1:
        raise ThumbnailError(
            f"invalid limits side={side} max_bytes={max_bytes} max_pixels={limits.max_pixels}",
            reason="invalid_limits",
        )
    inspect_image(data, limits)
    try:
        im = letterbox(_fitted(data, side, limits), side)
        png = _encode_png(im)
        if max_bytes < len(png) <= max_bytes * OPTIMIZE_WITHIN:
            png = _encode_png(im, optimize=True)
        if len(png) <= max_bytes:
            return Thumbnail(png, "image/png", side, side)
        for quality in JPEG_QUALITIES:
            jpeg = _encode_jpeg(im, quality)
            if len(jpeg) <= max_bytes:
                return Thumbnail(jpeg, "image/jpeg", side, side)
    except _DECODE_ERRORS as exc:
        raise ThumbnailError(f"cannot convert image: {exc}", reason="image_corrupt") from None
    raise ThumbnailError(
        f"cannot encode a {side}x{side} thumbnail within {max_bytes} bytes",
        reason="thumbnail_too_large",
    )
