"""Shrink a painting into a lexicon-conforming thumbnail (PNG or JPEG, <= 512 px, <= 100 KB).

:func:`make_thumbnail` is a plain, CPU-bound function of picklable arguments so
it can run in any executor. :class:`ThumbnailPool` runs it off the event loop.
It never returns the original bytes: either a conforming thumbnail or a
:class:`~syncd.images.errors.ThumbnailError`.
"""

from __future__ import annotations

import asyncio
import io
import os
import struct
import zlib
from collections.abc import Callable
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from multiprocessing import get_context
from types import TracebackType
from typing import Literal

from PIL import ExifTags, Image, ImageFile, ImageOps

from syncd.images.errors import ThumbnailError
from syncd.images.settings import ImageSettings

#: Input formats we agree to decode; everything else Pillow knows is attack surface.
INPUT_FORMATS = ("PNG", "JPEG", "GIF", "WEBP")
#: JPEG qualities tried, in order, once the PNG does not fit.
JPEG_QUALITIES = (90, 80, 70, 60, 50, 40)
#: Each further step shrinks the sides by this factor (JPEG at the lowest quality).
SHRINK_FACTOR = 0.8
MIN_SIDE = 16
_RESAMPLE = Image.Resampling.LANCZOS
#: Shrinking by an integer factor ``k <= ratio / REDUCING_GAP`` is a box average
#: (``Image.reduce``); only the remaining step (< 2x) is resampled with LANCZOS. A
#: 1024 px painting becomes 512 px by averaging 2x2 blocks: ~2 ms instead of ~16 ms,
#: 46-51 dB PSNR against a full LANCZOS resample (see docs/images.md).
REDUCING_GAP = 1.0
#: ``optimize=True`` (zlib level 9 + filter search) costs ~4x a default encode and saves
#: a few percent at best: it is tried only when the default PNG is this close to the limit.
OPTIMIZE_WITHIN = 1.10
# Errors Pillow raises on malformed/truncated data.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, IndexError, zlib.error)


@dataclass(frozen=True)
class Thumbnail:
    data: bytes
    mime_type: Literal["image/png", "image/jpeg"]
    width: int
    height: int


def _fit(width: int, height: int, max_side: int) -> tuple[int, int]:
    """Size of ``width``x``height`` scaled to fit ``max_side``, aspect kept, never upscaled."""
    longest = max(width, height)
    if longest <= max_side:
        return width, height
    scale = max_side / longest
    return max(1, round(width * scale)), max(1, round(height * scale))


def _open(data: bytes, max_pixels: int) -> ImageFile.ImageFile:
    """Open (header only) and refuse oversized images before any pixel is decoded."""
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
    if width * height > max_pixels:
        raise ThumbnailError(
            f"image claims {width}x{height} = {width * height} pixels, over the limit of "
            f"{max_pixels}; refusing to decode it",
            reason="decompression_bomb",
        )
    return im


def _to_8bit(im: Image.Image) -> Image.Image:
    """Map 16/32-bit integer and float greyscale onto 0..255."""
    if im.mode.startswith("I;16"):
        return im.convert("I").point(lambda v: v * (1 / 257)).convert("L")
    extrema = im.getextrema()
    lo, hi = float(extrema[0]), float(extrema[1])  # type: ignore[arg-type]
    if im.mode == "F" and lo >= 0 and hi <= 1.0:
        return im.point(lambda v: v * 255).convert("L")
    if lo >= 0 and hi <= 255:
        return im.convert("L")
    if lo >= 0 and hi <= 65535:
        return im.point(lambda v: v * (1 / 257)).convert("L")
    span = float(hi - lo) or 1.0
    return im.point(lambda v: (v - lo) * (255 / span)).convert("L")


def _normalize_mode(im: Image.Image) -> Image.Image:
    """Bring any decoded mode to L, LA, RGB or RGBA (alpha dropped when fully opaque)."""
    mode = im.mode
    if mode in ("P", "PA"):
        has_alpha = mode == "PA" or "transparency" in im.info
        im = im.convert("RGBA" if has_alpha else "RGB")
    elif mode == "1":
        im = im.convert("L")
    elif mode.startswith("I") or mode == "F":
        im = _to_8bit(im)
    elif mode in ("RGBa", "RGBX", "CMYK", "YCbCr", "LAB", "HSV"):
        im = im.convert("RGBA" if mode == "RGBa" else "RGB")
    elif mode == "La":
        im = im.convert("LA")
    elif mode not in ("L", "LA", "RGB", "RGBA"):
        im = im.convert("RGBA" if "A" in mode else "RGB")
    if im.mode in ("LA", "RGBA"):
        alpha = im.getchannel("A")
        if alpha.getextrema() == (255, 255):
            im = im.convert("L" if im.mode == "LA" else "RGB")
    return im


def _flatten(im: Image.Image) -> Image.Image:
    """Composite alpha onto white for JPEG."""
    if im.mode not in ("LA", "RGBA"):
        return im
    rgba = im.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    background.alpha_composite(rgba)
    return background.convert("L" if im.mode == "LA" else "RGB")


def _encode_png(im: Image.Image, *, optimize: bool = False) -> bytes:
    # zlib's default level first: ``optimize`` (level 9 plus filter search) costs about
    # three times as long for ~2% fewer bytes, so it is only tried when the size matters.
    buf = io.BytesIO()
    im.save(buf, format="PNG", optimize=optimize)
    return buf.getvalue()


def _encode_jpeg(im: Image.Image, quality: int) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=quality, optimize=True)
    return buf.getvalue()


def _decode(data: bytes, max_side: int, max_pixels: int) -> Image.Image:
    im = _open(data, max_pixels)
    try:
        target = _fit(*im.size, max_side)
        if im.format == "JPEG":
            # Let libjpeg scale by 1/2, 1/4 or 1/8 while decoding; keep >= 2x the target
            # (square box, so it does not matter whether EXIF later rotates by 90 degrees).
            side = 2 * max(target)
            im.draft(None, (side, side))
        im.load()  # the first frame only, for animations
        orientation = im.getexif().get(ExifTags.Base.Orientation, 1)
        if orientation in range(2, 9):
            rotated = ImageOps.exif_transpose(im)
            if rotated is not None:
                return rotated
        return im
    except Image.DecompressionBombError as exc:
        raise ThumbnailError(str(exc), reason="decompression_bomb") from None
    except _DECODE_ERRORS as exc:
        raise ThumbnailError(
            f"image is truncated or corrupt: {exc}", reason="image_corrupt"
        ) from None


def make_thumbnail(
    data: bytes,
    *,
    max_side: int = 512,
    max_bytes: int = 102_400,
    max_pixels: int = 40_000_000,
) -> Thumbnail:
    """Make a PNG (preferred) or JPEG of at most ``max_side`` px and ``max_bytes`` bytes.

    The image fits inside ``max_side``x``max_side`` keeping its aspect ratio and is
    never upscaled. PNG (alpha kept) is used when it fits ``max_bytes``; otherwise
    JPEG (alpha flattened onto white) at qualities 90..40, then at smaller sizes.

    Raises :class:`ThumbnailError` with ``reason`` ``decompression_bomb`` (more
    than ``max_pixels`` pixels, refused before decoding), ``not_an_image``,
    ``image_corrupt`` (truncated or undecodable), ``thumbnail_too_large``
    (cannot fit ``max_bytes``) or ``invalid_limits``.
    """
    if max_side < 1 or max_bytes < 1 or max_pixels < 1:
        raise ThumbnailError(
            f"invalid limits max_side={max_side} max_bytes={max_bytes} max_pixels={max_pixels}",
            reason="invalid_limits",
        )
    im = _decode(data, max_side, max_pixels)
    try:
        im = _normalize_mode(im)
        if max(im.size) > max_side:
            im.thumbnail((max_side, max_side), _RESAMPLE, reducing_gap=REDUCING_GAP)
    except _DECODE_ERRORS as exc:
        raise ThumbnailError(f"cannot convert image: {exc}", reason="image_corrupt") from None

    png = _encode_png(im)
    if max_bytes < len(png) <= max_bytes * OPTIMIZE_WITHIN:
        png = _encode_png(im, optimize=True)
    if len(png) <= max_bytes:
        return Thumbnail(png, "image/png", im.width, im.height)

    flat = _flatten(im)
    for quality in JPEG_QUALITIES:
        jpeg = _encode_jpeg(flat, quality)
        if len(jpeg) <= max_bytes:
            return Thumbnail(jpeg, "image/jpeg", flat.width, flat.height)

    width, height = flat.size
    while True:
        width, height = int(width * SHRINK_FACTOR), int(height * SHRINK_FACTOR)
        if min(width, height) < 1 or max(width, height) < MIN_SIDE:
            break
        smaller = flat.resize(_fit(*flat.size, max(width, height)), _RESAMPLE)
        jpeg = _encode_jpeg(smaller, JPEG_QUALITIES[-1])
        if len(jpeg) <= max_bytes:
            return Thumbnail(jpeg, "image/jpeg", smaller.width, smaller.height)
    raise ThumbnailError(
        f"cannot encode a thumbnail within {max_bytes} bytes", reason="thumbnail_too_large"
    )


PoolKind = Literal["thread", "process"]


class LoopSemaphore:
    """An ``asyncio.Semaphore`` per event loop, so one object can serve several loops
    in turn (``asyncio.run`` twice, test fixtures) without "bound to a different loop"."""

    def __init__(self, value: int) -> None:
        self.value = value
        self._by_loop: dict[asyncio.AbstractEventLoop, asyncio.Semaphore] = {}

    def _get(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        sem = self._by_loop.get(loop)
        if sem is None:
            self._by_loop = {lp: s for lp, s in self._by_loop.items() if not lp.is_closed()}
            sem = self._by_loop[loop] = asyncio.Semaphore(self.value)
        return sem

    async def __aenter__(self) -> None:
        await self._get().acquire()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._get().release()


class ThumbnailPool:
    """Runs :func:`make_thumbnail` in an executor sized to the machine.

    ``kind="thread"`` (the default) is the measured choice: Pillow releases the
    GIL while decoding, resampling and encoding, so threads scale across cores
    without copying images between processes (see ``docs/images.md``).
    ``kind="process"`` uses a *spawn* context (never fork a threaded daemon).

    ``admit()`` bounds the images in preparation (fetched, not yet shrunk) to
    ``max_jobs`` (default 4 per worker): enough to keep the workers busy while
    others download, without holding every queued painting's bytes in memory.
    """

    def __init__(
        self,
        workers: int = 0,
        *,
        kind: PoolKind = "thread",
        max_side: int = 512,
        max_bytes: int = 102_400,
        max_pixels: int = 40_000_000,
        max_jobs: int = 0,
    ) -> None:
        self.workers = workers or (os.cpu_count() or 1)
        self.max_jobs = max_jobs or 4 * self.workers
        self._jobs = LoopSemaphore(self.max_jobs)
        self.kind = kind
        self._limits = {"max_side": max_side, "max_bytes": max_bytes, "max_pixels": max_pixels}
        self._executor: Executor
        if kind == "thread":
            self._executor = ThreadPoolExecutor(self.workers, thread_name_prefix="thumbnail")
        elif kind == "process":
            self._executor = ProcessPoolExecutor(self.workers, mp_context=get_context("spawn"))
        else:
            raise ValueError(f"unknown pool kind {kind!r}")
        self._closed = False

    @classmethod
    def from_settings(cls, settings: ImageSettings, *, kind: PoolKind = "thread") -> ThumbnailPool:
        return cls(
            settings.workers,
            kind=kind,
            max_side=settings.thumbnail_max_side,
            max_bytes=settings.thumbnail_max_bytes,
            max_pixels=settings.max_pixels,
        )

    def admit(self) -> LoopSemaphore:
        """``async with pool.admit():`` around fetching and shrinking one image."""
        return self._jobs

    async def make(
        self,
        data: bytes,
        *,
        max_side: int | None = None,
        max_bytes: int | None = None,
        max_pixels: int | None = None,
    ) -> Thumbnail:
        """:func:`make_thumbnail` off the event loop; limits default to the pool's."""
        if self._closed:
            raise RuntimeError("ThumbnailPool is closed")
        limits = dict(self._limits)
        for name, value in (
            ("max_side", max_side),
            ("max_bytes", max_bytes),
            ("max_pixels", max_pixels),
        ):
            if value is not None:
                limits[name] = value
        call: Callable[[], Thumbnail] = partial(make_thumbnail, data, **limits)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, call)

    def close(self, *, wait: bool = True) -> None:
        """Stop accepting work; with ``wait`` block until running jobs finish."""
        self._closed = True
        self._executor.shutdown(wait=wait, cancel_futures=True)

    def __enter__(self) -> ThumbnailPool:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
