"""A cheap walk over an image's container, before any decoder sees it.

:func:`inspect_image` reads the structure of a PNG, GIF, JPEG or WebP (chunks,
blocks, markers; never pixel data) and refuses, with a reason, what would cost a
decoder far more than its size: more pixels than ``max_pixels`` (any frame, any
format, palette images included), floods of PNG chunks, GIF frames or
sub-blocks, JPEG markers, and progressive JPEGs with too many scans (each scan
is a pass over every block: 2.5 MB of repeated scans held a worker for 90 s).
It costs at most a few tens of milliseconds: every loop is bounded by a limit.

:func:`is_platform_thumbnail` uses the same walk to tell whether stored bytes
are a thumbnail as the platform makes them (a 512 x 512 PNG or JPEG).
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass

from syncd.images.errors import ThumbnailError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: The side of a thumbnail as the platform makes it (platform-facts §2).
PLATFORM_THUMBNAIL_SIDE = 512

# The next JPEG marker after entropy-coded data: 0xFF followed by anything but a
# stuffed zero, a restart marker (D0-D7) or a fill byte (FF).
_JPEG_NEXT_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")
# SOFn markers that carry the frame size (not DHT C4, JPG C8, DAC CC).
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_JPEG_PROGRESSIVE = frozenset({0xC2, 0xC6, 0xCA, 0xCE})
_JPEG_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})
_PNG_COLOUR_DEPTHS = {0: {1, 2, 4, 8, 16}, 2: {8, 16}, 3: {1, 2, 4, 8}, 4: {8, 16}, 6: {8, 16}}


@dataclass(frozen=True)
class StructureLimits:
    """What :func:`inspect_image` allows (``[images]`` has each one)."""

    max_pixels: int = 40_000_000
    max_chunks: int = 10_000
    max_frames: int = 5_000
    gif_max_blocks: int = 250_000
    jpeg_max_markers: int = 1_000
    jpeg_max_scans: int = 100


@dataclass(frozen=True)
class ImageInfo:
    """What the container says: format (``png``/``jpeg``/``gif``/``webp``), size and
    counts. ``width`` x ``height`` is the largest extent any frame reaches."""

    format: str
    width: int
    height: int
    frames: int = 1
    chunks: int = 0
    scans: int = 0
    progressive: bool = False


def _fail(reason: str, message: str) -> ThumbnailError:
    return ThumbnailError(message, reason=reason)


def _check_pixels(width: int, height: int, limits: StructureLimits, what: str) -> None:
    if width <= 0 or height <= 0:
        raise _fail("image_corrupt", f"{what} has an empty size {width}x{height}")
    if width * height > limits.max_pixels:
        raise _fail(
            "decompression_bomb",
            f"{what} claims {width}x{height} = {width * height} pixels, over the limit of "
            f"{limits.max_pixels}; refusing to decode it",
        )


def sniff(head: bytes) -> str | None:
    """``"png"``, ``"jpeg"``, ``"gif"`` or ``"webp"`` from the first bytes, else ``None``."""
    if head.startswith(PNG_SIGNATURE):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "gif"
    if len(head) >= 12 and head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    return None


def inspect_image(data: bytes, limits: StructureLimits | None = None) -> ImageInfo:
    """Walk ``data``'s container and return what it claims, or raise
    :class:`ThumbnailError` with reason ``not_an_image``, ``image_corrupt``,
    ``decompression_bomb`` or ``image_too_many_{chunks,frames,blocks,markers,scans}``.

    Truncated data is not an error here (the decoder says ``image_corrupt`` if it
    matters); what is there must still be within the limits.
    """
    limits = limits or StructureLimits()
    kind = sniff(data[:16])
    if kind == "png":
        return _png(data, limits)
    if kind == "jpeg":
        return _jpeg(data, limits)
    if kind == "gif":
        return _gif(data, limits)
    if kind == "webp":
        return _webp(data, limits)
    raise _fail(
        "not_an_image", f"body does not start with PNG/JPEG/GIF/WebP magic bytes ({data[:8]!r})"
    )


# -- PNG ------------------------------------------------------------------------


def _png(data: bytes, limits: StructureLimits) -> ImageInfo:
    pos = len(PNG_SIGNATURE)
    if data[pos + 4 : pos + 8] != b"IHDR" or len(data) < pos + 8 + 13:
        raise _fail("not_an_image", "PNG signature without an IHDR chunk")
    (length,) = struct.unpack_from(">I", data, pos)
    if length != 13:
        raise _fail("image_corrupt", f"PNG IHDR of {length} bytes (13 expected)")
    width, height, depth, colour = struct.unpack_from(">IIBB", data, pos + 8)
    if depth not in _PNG_COLOUR_DEPTHS.get(colour, ()):
        raise _fail("image_corrupt", f"PNG with colour type {colour} and bit depth {depth}")
    _check_pixels(width, height, limits, "PNG")
    chunks = frames = 0
    end = len(data)
    while pos + 8 <= end:
        length, kind = struct.unpack_from(">I4s", data, pos)
        chunks += 1
        if chunks > limits.max_chunks:
            raise _fail("image_too_many_chunks", f"PNG has more than {limits.max_chunks} chunks")
        if length > 0x7FFFFFFF:
            raise _fail("image_corrupt", f"PNG chunk {kind!r} claims {length} bytes")
        if kind == b"fcTL" and length >= 20:  # an APNG frame: its region must fit too
            fw, fh, fx, fy = struct.unpack_from(">IIII", data, pos + 12)
            frames += 1
            if frames > limits.max_frames:
                raise _fail(
                    "image_too_many_frames", f"APNG has more than {limits.max_frames} frames"
                )
            _check_pixels(fw, fh, limits, "APNG frame")
            if fx + fw > width or fy + fh > height:
                raise _fail("image_corrupt", "APNG frame outside the image")
        pos += 12 + length
        if kind == b"IEND":
            break
    return ImageInfo("png", width, height, frames=max(frames, 1), chunks=chunks)


# -- GIF ------------------------------------------------------------------------


class _GifWalk:
    def __init__(self, data: bytes, limits: StructureLimits) -> None:
        self.data = data
        self.limits = limits
        self.blocks = 0

    def sub_blocks(self, pos: int) -> int:
        """Skip a chain of data sub-blocks starting at ``pos``; return the position after
        its terminator (or the end of the data, if truncated)."""
        data, end, limit = self.data, len(self.data), self.limits.gif_max_blocks
        while pos < end:
            size = data[pos]
            pos += 1 + size
            self.blocks += 1
            if self.blocks > limit:
                raise _fail("image_too_many_blocks", f"GIF has more than {limit} data sub-blocks")
            if size == 0:
                break
        return pos


def _gif(data: bytes, limits: StructureLimits) -> ImageInfo:
    if len(data) < 13:
        raise _fail("not_an_image", "GIF header without a logical screen descriptor")
    width, height, flags = struct.unpack_from("<HHB", data, 6)
    _check_pixels(width, height, limits, "GIF")
    pos = 13
    if flags & 0x80:
        pos += 3 << ((flags & 7) + 1)
    walk = _GifWalk(data, limits)
    frames = 0
    extent_w, extent_h = width, height
    end = len(data)
    while pos < end:
        introducer = data[pos]
        if introducer == 0x3B:  # trailer
            break
        if introducer == 0x21:  # extension: label, then sub-blocks
            pos = walk.sub_blocks(pos + 2)
        elif introducer == 0x2C:  # image descriptor
            if pos + 10 > end:
                break
            left, top, fw, fh, fflags = struct.unpack_from("<HHHHB", data, pos + 1)
            frames += 1
            if frames > limits.max_frames:
                raise _fail(
                    "image_too_many_frames", f"GIF has more than {limits.max_frames} frames"
                )
            # A decoder grows the canvas to hold a frame that sticks out of it.
            extent_w, extent_h = max(extent_w, left + fw), max(extent_h, top + fh)
            _check_pixels(fw, fh, limits, "GIF frame")
            _check_pixels(extent_w, extent_h, limits, "GIF canvas")
            pos += 10
            if fflags & 0x80:
                pos += 3 << ((fflags & 7) + 1)
            pos = walk.sub_blocks(pos + 1)  # after the LZW minimum code size
        else:
            raise _fail("image_corrupt", f"GIF block introducer 0x{introducer:02x} at {pos}")
    if frames == 0:
        raise _fail("image_corrupt", "GIF without an image")
    return ImageInfo("gif", extent_w, extent_h, frames=frames, chunks=walk.blocks)


# -- JPEG -----------------------------------------------------------------------


def _jpeg(data: bytes, limits: StructureLimits) -> ImageInfo:
    pos, end = 2, len(data)
    markers = scans = 0
    size: tuple[int, int] | None = None
    progressive = False
    while pos < end:
        if data[pos] != 0xFF:
            if size is None:
                raise _fail("not_an_image", f"JPEG without a marker at byte {pos}")
            raise _fail("image_corrupt", f"JPEG data where a marker belongs (byte {pos})")
        while pos < end and data[pos] == 0xFF:  # fill bytes
            pos += 1
        if pos >= end:
            break
        marker = data[pos]
        pos += 1
        markers += 1
        if markers > limits.jpeg_max_markers:
            raise _fail(
                "image_too_many_markers", f"JPEG has more than {limits.jpeg_max_markers} markers"
            )
        if marker == 0xD9:  # EOI
            break
        if marker in _JPEG_STANDALONE:
            continue
        if marker in (0x00, 0xD8):
            raise _fail("image_corrupt", f"JPEG marker 0x{marker:02x} out of place")
        if pos + 2 > end:
            break
        (length,) = struct.unpack_from(">H", data, pos)
        if length < 2:
            raise _fail("image_corrupt", f"JPEG segment 0x{marker:02x} of length {length}")
        if marker in _JPEG_SOF and pos + 7 <= end:
            height, width = struct.unpack_from(">HH", data, pos + 3)
            if size is not None:
                raise _fail("image_corrupt", "JPEG with more than one frame header")
            if height == 0:  # the height would come later (DNL): no decoder we use takes it
                raise _fail("image_corrupt", "JPEG frame header without a height")
            _check_pixels(width, height, limits, "JPEG")
            size = (width, height)
            progressive = marker in _JPEG_PROGRESSIVE
        pos += length
        if marker == 0xDA:  # SOS: the entropy-coded data runs to the next real marker
            scans += 1
            if scans > limits.jpeg_max_scans:
                raise _fail(
                    "image_too_many_scans",
                    f"JPEG has more than {limits.jpeg_max_scans} scans",
                )
            found = _JPEG_NEXT_MARKER.search(data, pos)
            if found is None:
                break
            pos = found.start()
    if size is None:
        raise _fail("image_corrupt", "JPEG without a frame header")
    return ImageInfo("jpeg", size[0], size[1], chunks=markers, scans=scans, progressive=progressive)


# -- WebP -----------------------------------------------------------------------


def _webp(data: bytes, limits: StructureLimits) -> ImageInfo:
    pos, end = 12, len(data)
    chunks = frames = 0
    size: tuple[int, int] | None = None
    while pos + 8 <= end:
        kind, length = struct.unpack_from("<4sI", data, pos)
        body = pos + 8
        chunks += 1
        if chunks > limits.max_chunks:
            raise _fail("image_too_many_chunks", f"WebP has more than {limits.max_chunks} chunks")
        if kind == b"VP8X" and body + 10 <= end:
            w = int.from_bytes(data[body + 4 : body + 7], "little") + 1
            h = int.from_bytes(data[body + 7 : body + 10], "little") + 1
            _check_pixels(w, h, limits, "WebP canvas")
            size = (w, h)
        elif kind == b"VP8 " and size is None and body + 10 <= end:
            w, h = struct.unpack_from("<HH", data, body + 6)
            size = (w & 0x3FFF, h & 0x3FFF)
            _check_pixels(*size, limits, "WebP")
        elif kind == b"VP8L" and size is None and body + 5 <= end:
            bits = int.from_bytes(data[body + 1 : body + 5], "little")
            size = ((bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1)
            _check_pixels(*size, limits, "WebP")
        elif kind == b"ANMF":
            frames += 1
            if frames > limits.max_frames:
                raise _fail(
                    "image_too_many_frames", f"WebP has more than {limits.max_frames} frames"
                )
            if body + 12 <= end:
                fw = int.from_bytes(data[body + 6 : body + 9], "little") + 1
                fh = int.from_bytes(data[body + 9 : body + 12], "little") + 1
                _check_pixels(fw, fh, limits, "WebP frame")
            # A frame holds its own sub-chunks; they count as chunks too.
            pos = body + 16
            continue
        pos = body + length + (length & 1)
    if size is None:
        raise _fail("not_an_image", "WebP without a VP8, VP8L or VP8X chunk")
    return ImageInfo("webp", size[0], size[1], frames=max(frames, 1), chunks=chunks)


# -- the platform's thumbnails ----------------------------------------------------


def is_platform_thumbnail(data: bytes) -> bool:
    """True when ``data`` is a thumbnail as the platform makes it (platform-facts §2):
    a PNG or JPEG of exactly 512 x 512 pixels, one frame. Reads headers only.

    ``syncd reconcile`` uses it to report thumbnails made the old way (aspect kept,
    never upscaled, at most 100 KB).
    """
    try:
        info = inspect_image(data)
    except ThumbnailError:
        return False
    return (
        info.format in ("png", "jpeg")
        and info.frames == 1
        and (info.width, info.height) == (PLATFORM_THUMBNAIL_SIDE, PLATFORM_THUMBNAIL_SIDE)
    )
