"""make_thumbnail against real images generated here with Pillow."""

from __future__ import annotations

import io
import pickle
import struct
import time
import tracemalloc
import zlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageDraw

from syncd.images.errors import ThumbnailError
from syncd.images.thumbnail import Thumbnail, make_thumbnail

from .helpers import LIMIT, assert_valid_thumbnail, encode, gradient, noise_rgb


def extrema(im: Image.Image) -> tuple[float, float]:
    lo, hi = im.getextrema()
    assert isinstance(lo, int | float) and isinstance(hi, int | float)
    return float(lo), float(hi)


def thumb_of(im: Image.Image, fmt: str = "PNG", **params: object) -> tuple[Thumbnail, Image.Image]:
    t = make_thumbnail(encode(im, fmt, **params))
    return t, assert_valid_thumbnail(t, im.size)


@pytest.mark.parametrize("size", [(1, 1), (3, 7), (7, 3), (512, 512), (511, 512), (512, 1)])
def test_small_images_are_kept_at_their_size_as_png(size: tuple[int, int]) -> None:
    t, _out = thumb_of(gradient(*size))
    assert (t.width, t.height) == size
    assert t.mime_type == "image/png"


def test_large_painting_shrinks_to_512_png() -> None:
    im = Image.new("RGB", (2048, 1536), (250, 240, 230))
    draw = ImageDraw.Draw(im)
    draw.ellipse((200, 200, 1400, 1200), fill=(200, 30, 40))
    draw.line((0, 0, 2047, 1535), fill=(0, 0, 90), width=40)
    t, _out = thumb_of(im)
    assert (t.width, t.height) == (512, 384)
    assert t.mime_type == "image/png"


def test_noise_cannot_fit_as_png_so_becomes_jpeg_under_limit() -> None:
    im = noise_rgb(2048, 2048)
    t, out = thumb_of(im)
    assert t.mime_type == "image/jpeg"
    assert len(t.data) <= LIMIT
    assert out.mode == "RGB"


def test_noise_at_a_tiny_byte_limit_shrinks_dimensions() -> None:
    im = noise_rgb(600, 600)
    t = make_thumbnail(encode(im), max_bytes=8_000)
    assert_valid_thumbnail(t, im.size, max_bytes=8_000)
    assert t.mime_type == "image/jpeg"
    assert t.width < 512


def test_impossible_limit_raises_instead_of_returning_the_original() -> None:
    data = encode(noise_rgb(300, 300))
    with pytest.raises(ThumbnailError) as info:
        make_thumbnail(data, max_bytes=200)
    assert info.value.reason == "thumbnail_too_large"
    assert info.value.permanent


def test_palette_with_transparency_keeps_alpha_as_png() -> None:
    im = Image.new("P", (800, 600), 0)
    im.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * (256 * 3 - 9))
    ImageDraw.Draw(im).rectangle((100, 100, 500, 400), fill=1)
    im.info["transparency"] = 0
    t, out = thumb_of(im, transparency=0)
    assert t.mime_type == "image/png"
    assert out.mode == "RGBA"
    assert out.getpixel((0, 0))[3] == 0  # type: ignore[index]
    assert out.getpixel((t.width // 2, t.height // 2))[:3] == (0, 255, 0)  # type: ignore[index]


def test_rgba_alpha_is_kept_in_png() -> None:
    im = gradient(1024, 1024).convert("RGBA")
    im.putalpha(Image.linear_gradient("L").resize((1024, 1024)))
    t, out = thumb_of(im)
    assert t.mime_type == "image/png"
    assert out.mode == "RGBA"
    assert extrema(out.getchannel("A"))[0] < 10


def test_rgba_noise_is_flattened_onto_white_for_jpeg() -> None:
    im = noise_rgb(1024, 1024).convert("RGBA")
    alpha = Image.new("L", im.size, 255)
    ImageDraw.Draw(alpha).rectangle((0, 0, 511, 1023), fill=0)  # left half transparent
    im.putalpha(alpha)
    t, out = thumb_of(im)
    assert t.mime_type == "image/jpeg"
    r, g, b = out.getpixel((10, 10))  # type: ignore[misc]
    assert min(r, g, b) > 235  # white, not black


def test_opaque_alpha_channel_is_dropped() -> None:
    _t, out = thumb_of(gradient(100, 50).convert("RGBA"))
    assert out.mode == "RGB"


def test_sixteen_bit_greyscale_maps_to_8_bit() -> None:
    im = Image.linear_gradient("L").resize((700, 700)).convert("I")
    im16 = im.point(lambda v: v * 257).convert("I;16")
    data = encode(im16)
    with Image.open(io.BytesIO(data)) as check:
        assert check.mode.startswith("I")
    t = make_thumbnail(data)
    out = assert_valid_thumbnail(t, im16.size)
    assert out.mode == "L"
    lo, hi = extrema(out)
    assert lo < 5 and hi > 250  # full range kept, not clipped to white


def test_float_and_32_bit_modes() -> None:
    f = Image.linear_gradient("L").resize((600, 300)).convert("F").point(lambda v: v / 255)
    big = Image.linear_gradient("L").resize((600, 300)).convert("I").point(lambda v: v * 1000)
    for im in (f, big):
        # TIFF is not an accepted input format; exercise the mode mapping through the
        # public function by saving I as 16-bit PNG is lossy, so call the helper directly.
        from syncd.images.thumbnail import _normalize_mode

        out = _normalize_mode(im)
        assert out.mode == "L"
        lo, hi = extrema(out)
        assert lo < 5 and hi > 250


def test_cmyk_jpeg() -> None:
    im = gradient(900, 600).convert("CMYK")
    _t, out = thumb_of(im, "JPEG", quality=90)
    assert out.mode in ("RGB", "L")


def test_one_bit_image() -> None:
    im = Image.new("1", (1500, 700), 0)
    ImageDraw.Draw(im).ellipse((100, 100, 1200, 600), fill=1)
    t, _out = thumb_of(im)
    assert t.mime_type == "image/png"
    assert (t.width, t.height) == (512, 239)


def test_animated_gif_uses_the_first_frame() -> None:
    frames = [Image.new("P", (640, 480), i) for i in range(3)]
    for i, f in enumerate(frames):
        f.putpalette([200, 10, 10, 10, 200, 10, 10, 10, 200] + [0] * (253 * 3))
        ImageDraw.Draw(f).rectangle((0, 0, 639, 479), fill=i)
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    with Image.open(io.BytesIO(data)) as check:
        assert getattr(check, "n_frames", 1) == 3
    t = make_thumbnail(data)
    out = assert_valid_thumbnail(t, (640, 480))
    assert out.convert("RGB").getpixel((5, 5)) == (200, 10, 10)


def test_animated_png_uses_the_first_frame() -> None:
    frames = [Image.new("RGB", (600, 600), c) for c in ((0, 0, 255), (255, 0, 0))]
    data = encode(frames[0], "PNG", save_all=True, append_images=frames[1:])
    t = make_thumbnail(data)
    out = assert_valid_thumbnail(t, (600, 600))
    assert out.convert("RGB").getpixel((5, 5)) == (0, 0, 255)


@pytest.mark.parametrize("size", [(8000, 10), (10, 8000), (5000, 1), (1, 5000), (3000, 2999)])
def test_extreme_aspect_ratios(size: tuple[int, int]) -> None:
    t, _out = thumb_of(gradient(*size, mode="L"))
    assert max(t.width, t.height) == 512
    assert min(t.width, t.height) >= 1


def test_exif_orientation_is_applied() -> None:
    # Stored 800x400 with a red left half; orientation 6 means "rotate 90 CW to view".
    im = Image.new("RGB", (800, 400), (0, 0, 255))
    ImageDraw.Draw(im).rectangle((0, 0, 399, 399), fill=(255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6
    data = encode(im, "JPEG", exif=exif.tobytes(), quality=95)
    t = make_thumbnail(data)
    out = assert_valid_thumbnail(t, (400, 800))
    assert (t.width, t.height) == (256, 512)
    r, _g, b = out.convert("RGB").getpixel((128, 20))  # type: ignore[misc]
    assert r > 200 and b < 60  # the red half is now on top


def test_large_jpeg_uses_draft_and_fits() -> None:
    im = gradient(4000, 3000)
    data = encode(im, "JPEG", quality=85)
    started = time.perf_counter()
    t = make_thumbnail(data)
    assert time.perf_counter() - started < 5
    assert_valid_thumbnail(t, im.size)
    assert (t.width, t.height) == (512, 384)


def test_webp_input() -> None:
    t, _out = thumb_of(gradient(700, 350), "WEBP")
    assert (t.width, t.height) == (512, 256)


def test_truncated_png_is_a_clean_error() -> None:
    data = encode(noise_rgb(300, 300))
    with pytest.raises(ThumbnailError) as info:
        make_thumbnail(data[: len(data) // 2])
    assert info.value.reason == "image_corrupt"
    assert info.value.permanent


def test_garbage_is_not_an_image() -> None:
    with pytest.raises(ThumbnailError) as info:
        make_thumbnail(b"<html>not found</html>")
    assert info.value.reason == "not_an_image"


def test_other_formats_are_refused() -> None:
    with pytest.raises(ThumbnailError) as info:
        make_thumbnail(encode(gradient(10, 10), "BMP"))
    assert info.value.reason == "not_an_image"


def _png_with_size(width: int, height: int) -> bytes:
    """A small valid PNG whose IHDR is patched to claim ``width``x``height`` (CRC fixed)."""
    data = bytearray(encode(Image.new("1", (8, 8))))
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def test_decompression_bomb_is_refused_before_decoding() -> None:
    bomb = _png_with_size(50_000, 50_000)
    assert struct.unpack(">II", bomb[16:24]) == (50_000, 50_000)
    with Image.open(io.BytesIO(_png_with_size(9000, 9000))) as check:  # the patch is valid
        assert check.size == (9000, 9000)
    tracemalloc.start()
    try:
        with pytest.raises(ThumbnailError) as info:
            make_thumbnail(bomb)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert info.value.reason == "decompression_bomb"
    assert peak < 5_000_000


def test_bomb_limit_is_ours_not_pillows_global() -> None:
    # 7000x7000 = 49M pixels: under Pillow's default MAX_IMAGE_PIXELS, over ours.
    before = Image.MAX_IMAGE_PIXELS
    with pytest.raises(ThumbnailError) as info:
        make_thumbnail(_png_with_size(7000, 7000))
    assert info.value.reason == "decompression_bomb"
    assert Image.MAX_IMAGE_PIXELS == before
    # and a caller-supplied limit is honoured both ways
    with pytest.raises(ThumbnailError):
        make_thumbnail(encode(gradient(100, 100)), max_pixels=9_999)
    make_thumbnail(encode(gradient(100, 100)), max_pixels=10_000)


def test_huge_bomb_beyond_pillows_own_limit_is_also_our_error() -> None:
    with pytest.raises(ThumbnailError) as info:
        make_thumbnail(_png_with_size(2**20, 2**20), max_pixels=2**62)
    assert info.value.reason == "decompression_bomb"


def test_invalid_limits() -> None:
    with pytest.raises(ThumbnailError) as info:
        make_thumbnail(encode(gradient(4, 4)), max_side=0)
    assert info.value.reason == "invalid_limits"


def test_result_and_errors_are_picklable_for_process_pools() -> None:
    t = make_thumbnail(encode(gradient(20, 20)))
    assert pickle.loads(pickle.dumps(t)) == t
    err = ThumbnailError("boom", reason="decompression_bomb")
    back = pickle.loads(pickle.dumps(err))
    assert isinstance(back, ThumbnailError)
    assert back.reason == "decompression_bomb" and str(back) == "boom"


MODES = ["1", "L", "LA", "P", "PA", "RGB", "RGBA", "I;16", "CMYK"]


def _make_image(mode: str, width: int, height: int, seed: int, noisy: bool) -> tuple[bytes, str]:
    base = noise_rgb(width, height, seed) if noisy else gradient(width, height)
    if mode in ("P", "PA"):
        im = base.convert("P")
        if mode == "PA":
            im.info["transparency"] = 0
            return encode(im, "PNG", transparency=0), "PNG"
        return encode(im, "PNG"), "PNG"
    if mode == "I;16":
        im16 = base.convert("L").convert("I").point(lambda v: v * 257).convert("I;16")
        return encode(im16, "PNG"), "PNG"
    if mode == "CMYK":
        return encode(base.convert("CMYK"), "JPEG"), "JPEG"
    im = base.convert(mode)
    if mode in ("LA", "RGBA"):
        im.putalpha(base.convert("L"))
    return encode(im, "PNG"), "PNG"


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    mode=st.sampled_from(MODES),
    width=st.integers(1, 1400),
    height=st.integers(1, 1400),
    seed=st.integers(0, 2**16),
    noisy=st.booleans(),
)
def test_any_mode_and_size_gives_a_conforming_thumbnail(
    mode: str, width: int, height: int, seed: int, noisy: bool
) -> None:
    data, _ = _make_image(mode, width, height, seed, noisy)
    t = make_thumbnail(data)
    assert_valid_thumbnail(t, (width, height))
    if max(width, height) <= 512:
        assert (t.width, t.height) == (width, height) or t.mime_type == "image/jpeg"
