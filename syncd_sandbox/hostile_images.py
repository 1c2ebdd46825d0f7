"""Hostile image files, for tests and for the sandbox's image server.

Each generator builds, deterministically and in well under a second, a file
that is a valid (or nearly valid) PNG, GIF or JPEG a decoder will accept, but
that costs it far more memory or CPU than its size suggests. They exist to
prove that syncd refuses them with a reason, in bounded time and memory.

Nothing here imports syncd: the generators know the file formats, not what
syncd will do with them.

| generator | what it costs a naive decoder |
|---|---|
| :func:`gif_comment_flood` | ~25 MB of one-byte comment sub-blocks: Pillow keeps one bytes object per block (the daemon went from 68 MB to 1.27 GB) |
| :func:`gif_frame_flood` | tens of thousands of 1x1 frames |
| :func:`jpeg_marker_flood` | hundreds of thousands of empty COM/APPn markers before the image, each parsed in Python |
| :func:`progressive_scan_bomb` | a progressive JPEG whose AC scan is repeated ~100,000 times: every scan is a pass over all blocks (90 s of CPU for 2.5 MB) |
| :func:`palette_png_bomb` | an 8-bit palette PNG of ~40 M pixels in ~40 KB (700-850 MB once converted to RGBA and resampled) |
| :func:`png_chunk_flood` | a PNG with hundreds of thousands of tiny ancillary chunks before its image data |
| :func:`png_dimension_bomb` | a tiny PNG whose header claims an enormous size |
"""

from __future__ import annotations

import io
import struct
import zlib

from PIL import Image

__all__ = [
    "gif_comment_flood",
    "gif_frame_flood",
    "jpeg_marker_flood",
    "palette_png_bomb",
    "png_chunk_flood",
    "png_dimension_bomb",
    "progressive_scan_bomb",
]

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


# -- PNG ---------------------------------------------------------------------


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _ihdr(width: int, height: int, bit_depth: int, colour_type: int) -> bytes:
    return _png_chunk(
        b"IHDR", struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    )


def palette_png_bomb(side: int = 6300, *, transparent: bool = True, level: int = 9) -> bytes:
    """An 8-bit palette PNG ``side`` x ``side`` (default 39.7 M pixels), all index 0.

    About 40 KB at the default size. With ``transparent`` a ``tRNS`` chunk makes
    index 0 transparent, which sends decoders down the RGBA path.
    """
    row = b"\x00" + bytes(side)  # filter byte 0, then the row's indices
    compressor = zlib.compressobj(level)
    parts = []
    chunk_rows = max(1, (1 << 20) // len(row))
    block = row * chunk_rows
    rows_left = side
    while rows_left:
        n = min(rows_left, chunk_rows)
        parts.append(compressor.compress(block if n == chunk_rows else row * n))
        rows_left -= n
    parts.append(compressor.flush())
    idat = b"".join(parts)
    palette = bytes((0, 0, 0, 255, 255, 255)) + bytes(3 * 254)
    out = [PNG_SIGNATURE, _ihdr(side, side, 8, 3), _png_chunk(b"PLTE", palette)]
    if transparent:
        out.append(_png_chunk(b"tRNS", b"\x00"))
    out += [_png_chunk(b"IDAT", idat), _png_chunk(b"IEND", b"")]
    return b"".join(out)


def png_chunk_flood(chunks: int = 200_000, *, kind: bytes = b"prVt") -> bytes:
    """A 16x16 greyscale PNG with ``chunks`` empty ancillary chunks before its IDAT.

    The default private chunk type (``prVt``: ancillary, private, safe to copy) is
    skipped by decoders one at a time; ``kind=b"tEXt"`` floods text chunks instead
    (their payload is then ``k\\0v``).
    """
    payload = b"k\x00v" if kind == b"tEXt" else b""
    flood = _png_chunk(kind, payload) * chunks
    raw = b"".join(b"\x00" + bytes(range(16)) for _ in range(16))
    return b"".join(
        (
            PNG_SIGNATURE,
            _ihdr(16, 16, 8, 0),
            flood,
            _png_chunk(b"IDAT", zlib.compress(raw)),
            _png_chunk(b"IEND", b""),
        )
    )


def png_dimension_bomb(width: int = 100_000, height: int = 100_000) -> bytes:
    """A 1-bit greyscale PNG whose IHDR claims ``width`` x ``height`` pixels, with a
    few hundred bytes of image data (a decoder that trusts the header allocates
    the whole image first)."""
    row = b"\x00" + bytes((width + 7) // 8)
    return b"".join(
        (
            PNG_SIGNATURE,
            _ihdr(width, height, 1, 0),
            _png_chunk(b"IDAT", zlib.compress(row * 4)),
            _png_chunk(b"IEND", b""),
        )
    )


# -- GIF ---------------------------------------------------------------------

_GIF_HEAD = (
    b"GIF89a"
    + struct.pack("<HHBBB", 1, 1, 0x80, 0, 0)  # 1x1 screen, a 2-colour global table
    + b"\x00\x00\x00\xff\xff\xff"
)
# A 1x1 frame: descriptor, LZW minimum code size 2, one data sub-block, terminator.
_GIF_FRAME = b"\x2c" + struct.pack("<HHHHB", 0, 0, 1, 1, 0) + b"\x02\x02\x44\x01\x00"


def gif_comment_flood(total_bytes: int = 25 * 1024 * 1024) -> bytes:
    """A 1x1 GIF preceded by one comment extension made of one-byte sub-blocks,
    about ``total_bytes`` long (every sub-block is two bytes: length 1, one byte)."""
    blocks = max(1, (total_bytes - len(_GIF_HEAD) - len(_GIF_FRAME) - 4) // 2)
    comment = b"\x21\xfe" + b"\x01x" * blocks + b"\x00"
    return _GIF_HEAD + comment + _GIF_FRAME + b"\x3b"


def gif_frame_flood(frames: int = 100_000) -> bytes:
    """A 1x1 GIF with ``frames`` frames (about 20 bytes each)."""
    control = b"\x21\xf9\x04\x00\x00\x00\x00\x00"  # graphic control: no delay
    return _GIF_HEAD + (control + _GIF_FRAME) * frames + b"\x3b"


# -- JPEG --------------------------------------------------------------------


def _jpeg(im: Image.Image, **params: object) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "JPEG", **params)
    return buf.getvalue()


def jpeg_marker_flood(markers: int = 600_000, *, marker: int = 0xFE) -> bytes:
    """A 16x16 JPEG with ``markers`` empty segments of type ``marker`` (default COM;
    0xE0..0xEF for APPn) right after SOI: four bytes each, 2.4 MB by default."""
    if not (0xE0 <= marker <= 0xEF or marker == 0xFE):
        raise ValueError("marker must be COM (0xFE) or APPn (0xE0-0xEF)")
    base = _jpeg(Image.new("L", (16, 16), 128), quality=90)
    flood = bytes((0xFF, marker, 0x00, 0x02)) * markers
    return base[:2] + flood + base[2:]


def _segments(data: bytes) -> list[tuple[int, bytes]]:
    """Split a baseline/progressive JPEG into (marker, bytes including the marker).

    An SOS segment carries its entropy-coded data up to the next marker that is
    not a stuffed ``FF00`` or a restart marker.
    """
    out: list[tuple[int, bytes]] = []
    pos = 2
    out.append((0xD8, data[:2]))
    while pos < len(data):
        if data[pos] != 0xFF:
            raise ValueError(f"expected a marker at {pos}")
        marker = data[pos + 1]
        if marker == 0xD9:
            out.append((marker, data[pos : pos + 2]))
            break
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        end = pos + 2 + length
        if marker == 0xDA:
            while True:
                end = data.index(b"\xff", end)
                following = data[end + 1]
                if following == 0x00 or 0xD0 <= following <= 0xD7:
                    end += 2
                    continue
                break
        out.append((marker, data[pos:end]))
        pos = end
    return out


def progressive_scan_bomb(total_bytes: int = 2_500_000, *, size: int = 1024) -> bytes:
    """A ``size`` x ``size`` greyscale progressive JPEG whose first AC scan is
    repeated until the file is about ``total_bytes`` long.

    Each repeat is a valid scan header plus a few bytes of entropy-coded data (an
    end-of-band run over a flat image) that a decoder must still apply to every
    8x8 block: the cost is the number of scans times the number of blocks.
    """
    flat = Image.new("L", (size, size), 100)
    segments = _segments(_jpeg(flat, quality=90, progressive=True))
    scans = [seg for marker, seg in segments if marker == 0xDA]
    ac_scans = [s for s in scans if s[4] == 1 and s[7] >= 1]  # one component, Ss >= 1 (AC)
    if not ac_scans:
        raise RuntimeError("Pillow wrote no AC scan to repeat")
    repeat = min(ac_scans, key=len)
    head = b"".join(seg for marker, seg in segments if marker != 0xD9)
    copies = max(1, (total_bytes - len(head) - 2) // len(repeat))
    return head + repeat * copies + b"\xff\xd9"
