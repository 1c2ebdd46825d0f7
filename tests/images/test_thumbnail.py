"""make_thumbnail against real images generated here with Pillow.

The shape is the platform's (platform-facts §2): always 512x512, the image
fitted inside (``contain``) and centred on black, nearest-neighbour when the
source is under 512 in either dimension, PNG unless over 1,048,576 bytes.
"""

from __future__ import annotations

import io
import pickle
import struct
import tracemalloc
import zlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageDraw

from syncd.images.errors import ThumbnailError
from syncd.images.render import _grey_scale, _on_black, fit_contain, make_thumbnail
from syncd.images.thumbnail import Thumbnail

from .helpers import (
    LIMIT,
    SIDE,
    assert_valid_thumbnail,
    decode,
    encode,
    fitted_box,
    gradient,
    noise_rgb,
)


def thumb_of(im: Image.Image, fmt: str = "PNG", **params: object) -> tuple[Thumbnail, Image.Image]:
    t = make_thumbnail(encode(im, fmt, **params))
    return t, assert_valid_thumbnail(t, im.size)


def inside(out: Image.Image, src_size: tuple[int, int]) -> Image.Image:
    return out.crop(fitted_box(src_size))


@pytest.mark.parametrize(
    "size", [(1, 1), (3, 7), (7, 3), (512, 512), (511, 512), (512, 1), (100, 50)]
)
def test_every_thumbnail_is_512_square_png_with_the_image_centred(size: tuple[int, int]) -> None:
    t, out = thumb_of(gradient(*size))
    assert (t.width, t.height) == (SIDE, SIDE)
    assert t.mime_type == "image/png"
    box = fitted_box(size)
    assert max(box[2] - box[0], box[3] - box[1]) == SIDE  # contain: the image touches two sides
    assert out.size == (SIDE, SIDE)


def test_pixel_art_becomes_exact_blocks() -> None:
    src = noise_rgb(32, 32, seed=7)
    t, out = thumb_of(src)
    assert t.mime_type == "image/png"
    for y in range(32):
        for x in range(32):
            block = out.crop((16 * x, 16 * y, 16 * x + 16, 16 * y + 16))
            assert block.getcolors() == [(256, src.getpixel((x, y)))], (x, y)


def test_non_square_pixel_art_is_letterboxed_with_exact_blocks() -> None:
    src = noise_rgb(32, 16, seed=3)
    _t, out = thumb_of(src)
    assert fitted_box(src.size) == (0, 128, 512, 384)
    assert (
        out.crop((0, 128, 512, 384)).tobytes()
        == src.resize((512, 256), Image.Resampling.NEAREST).tobytes()
    )
    for x, y in ((0, 0), (10, 127), (511, 384), (300, 511)):
        assert out.getpixel((x, y)) == (0, 0, 0)
    assert out.getpixel((8, 136)) == src.getpixel((0, 0))


def test_a_source_under_512_on_one_side_is_scaled_nearest_even_downwards() -> None:
    # The platform's rule is "smaller than 512 in either dimension": 1024x256 is scaled
    # by 1/2 with nearest-neighbour, every other column and row of the source.
    src = noise_rgb(1024, 256, seed=5)
    _t, out = thumb_of(src)
    assert fitted_box(src.size) == (0, 192, 512, 320)
    expected = src.resize((512, 128), Image.Resampling.NEAREST)
    assert out.crop((0, 192, 512, 320)).tobytes() == expected.tobytes()


def test_large_painting_shrinks_into_the_square() -> None:
    im = Image.new("RGB", (2048, 1536), (250, 240, 230))
    draw = ImageDraw.Draw(im)
    draw.ellipse((200, 200, 1400, 1200), fill=(200, 30, 40))
    draw.line((0, 0, 2047, 1535), fill=(0, 0, 90), width=40)
    t, out = thumb_of(im)
    assert fitted_box(im.size) == (0, 64, 512, 448)
    assert t.mime_type == "image/png"
    assert out.getpixel((500, 70)) == (250, 240, 230)


def test_noise_fits_as_png_under_the_lexicon_limit() -> None:
    t, out = thumb_of(noise_rgb(2048, 2048))
    assert t.mime_type == "image/png"  # 512x512x3 incompressible is ~770 KB < 1 MiB
    assert len(t.data) <= LIMIT
    assert out.mode == "RGB"


def test_over_the_byte_limit_becomes_jpeg_still_512() -> None:
    im = noise_rgb(1024, 1024)
    t = make_thumbnail(encode(im), max_bytes=200_000)
    assert t.mime_type == "image/jpeg"
    assert_valid_thumbnail(t, im.size, max_bytes=200_000)


def test_impossible_limit_raises_instead_of_returning_the_original() -> None:
    data = encode(noise_rgb(300, 300))
    with pytest.raises(ThumbnailError) as info:
        make_thumbnail(data, max_bytes=8_000)
    assert info.value.reason == "thumbnail_too_large"
    assert info.value.permanent


def test_palette_transparency_is_composited_onto_black() -> None:
    im = Image.new("P", (800, 600), 0)
    im.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * (256 * 3 - 9))
    ImageDraw.Draw(im).rectangle((100, 100, 500, 400), fill=1)
    t, out = thumb_of(im, transparency=0)
    assert t.mime_type == "image/png"
    assert out.mode == "RGB"
    top = fitted_box(im.size)[1]
    assert out.getpixel((0, top)) == (0, 0, 0)  # transparent red is black, not red
    assert out.getpixel((200, 200)) == (0, 255, 0)


def test_partial_alpha_is_premultiplied_onto_black() -> None:
    im = Image.new("RGBA", (1024, 1024), (200, 100, 50, 128))
    _t, out = thumb_of(im)
    r, g, b = out.getpixel((256, 256))  # type: ignore[misc]
    assert (abs(r - 100), abs(g - 50), abs(b - 25)) <= (1, 1, 1)


def test_alpha_gradient_fades_to_black() -> None:
    im = Image.new("RGBA", (1024, 1024), (255, 255, 255, 255))
    im.putalpha(Image.linear_gradient("L").resize((1024, 1024)))
    _t, out = thumb_of(im)
    assert out.mode == "RGB"
    assert max(out.getpixel((256, 1))) < 5  # type: ignore[arg-type]
    assert min(out.getpixel((256, 510))) > 240  # type: ignore[arg-type]


def test_sixteen_bit_greyscale_maps_to_8_bit() -> None:
    im = Image.linear_gradient("L").resize((700, 700)).convert("I")
    im16 = im.point(lambda v: v * 257).convert("I;16")
    data = encode(im16)
    with Image.open(io.BytesIO(data)) as check:
        assert check.mode.startswith("I")
    t = make_thumbnail(data)
    out = assert_valid_thumbnail(t, im16.size)
    assert out.mode == "L"
    lo, hi = out.getextrema()
    assert lo == 0 and isinstance(hi, int) and hi > 250  # full range, not clipped to white


def test_float_and_32_bit_modes() -> None:
    f = Image.linear_gradient("L").resize((600, 300)).convert("F").point(lambda v: v / 255)
    big = Image.linear_gradient("L").resize((600, 300)).convert("I").point(lambda v: v * 1000)
    for im in (f, big):
        # Neither mode can arrive as a PNG/JPEG/GIF/WebP: the mapping is tested directly.
        out = _on_black(im, "L", _grey_scale(im))
        assert out.mode == "L"
        lo, hi = out.getextrema()
        assert isinstance(lo, int) and isinstance(hi, int) and lo < 5 and hi > 250


def test_cmyk_jpeg() -> None:
    im = gradient(900, 600).convert("CMYK")
    _t, out = thumb_of(im, "JPEG", quality=90)
    assert out.mode == "RGB"


def test_one_bit_image() -> None:
    im = Image.new("1", (1500, 700), 0)
    ImageDraw.Draw(im).ellipse((100, 100, 1200, 600), fill=1)
    t, out = thumb_of(im)
    assert t.mime_type == "image/png"
    assert fit_contain(1500, 700, 512) == (512, 239)
    assert out.mode == "L"


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
    assert out.convert("RGB").getpixel((5, 100)) == (200, 10, 10)


def test_animated_png_uses_the_first_frame() -> None:
    frames = [Image.new("RGB", (600, 600), c) for c in ((0, 0, 255), (255, 0, 0))]
    data = encode(frames[0], "PNG", save_all=True, append_images=frames[1:])
    t = make_thumbnail(data)
    out = assert_valid_thumbnail(t, (600, 600))
    assert out.convert("RGB").getpixel((5, 5)) == (0, 0, 255)


@pytest.mark.parametrize("size", [(8000, 10), (10, 8000), (5000, 1), (1, 5000), (3000, 2999)])
def test_extreme_aspect_ratios(size: tuple[int, int]) -> None:
    t, _out = thumb_of(gradient(*size, mode="L"))
    assert (t.width, t.height) == (SIDE, SIDE)


def test_exif_orientation_is_applied() -> None:
    # Stored 1600x800 with a red left half; orientation 6 means "rotate 90 CW to view".
    im = Image.new("RGB", (1600, 800), (0, 0, 255))
    ImageDraw.Draw(im).rectangle((0, 0, 799, 799), fill=(255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6
    data = encode(im, "JPEG", exif=exif.tobytes(), quality=95)
    t = make_thumbnail(data)
    out = assert_valid_thumbnail(t, (800, 1600))
    assert fitted_box((800, 1600)) == (128, 0, 384, 512)
    r, _g, b = out.convert("RGB").getpixel((256, 20))  # type: ignore[misc]
    assert r > 200 and b < 60  # the red half is now on top
    r, _g, b = out.convert("RGB").getpixel((256, 490))  # type: ignore[misc]
    assert b > 200 and r < 60


def test_large_jpeg_uses_draft_and_fits() -> None:
    im = gradient(4000, 3000)
    t, _out = thumb_of(im, "JPEG", quality=85)
    assert fitted_box(im.size) == (0, 64, 512, 448)
    assert t.mime_type == "image/png"


def test_webp_input() -> None:
    _t, out = thumb_of(gradient(700, 350), "WEBP")
    assert fitted_box((700, 350)) == (0, 128, 512, 384)
    assert out.mode == "RGB"


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
        make_thumbnail(encode(gradient(4, 4)), side=0)
    assert info.value.reason == "invalid_limits"


def test_result_and_errors_are_picklable_for_process_pools() -> None:
    t = make_thumbnail(encode(gradient(20, 20)))
    assert pickle.loads(pickle.dumps(t)) == t
    err = ThumbnailError("boom", reason="decompression_bomb")
    back = pickle.loads(pickle.dumps(err))
    assert isinstance(back, ThumbnailError)
    assert back.reason == "decompression_bomb" and str(back) == "boom"


def test_the_original_bytes_are_never_returned() -> None:
    # A 512x512 PNG is already the right shape; it is still decoded and re-encoded.
    src = encode(gradient(512, 512), compress_level=1)
    t = make_thumbnail(src)
    assert t.data != src
    assert decode(t.data).tobytes() == decode(src).tobytes()


MODES = ["1", "L", "LA", "P", "PA", "RGB", "RGBA", "I;16", "CMYK"]


def _make_image(mode: str, width: int, height: int, seed: int, noisy: bool) -> bytes:
    base = noise_rgb(width, height, seed) if noisy else gradient(width, height)
    if mode in ("P", "PA"):
        im = base.convert("P")
        if mode == "PA":
            return encode(im, "PNG", transparency=0)
        return encode(im, "PNG")
    if mode == "I;16":
        im16 = base.convert("L").convert("I").point(lambda v: v * 257).convert("I;16")
        return encode(im16, "PNG")
    if mode == "CMYK":
        return encode(base.convert("CMYK"), "JPEG")
    im = base.convert(mode)
    if mode in ("LA", "RGBA"):
        im.putalpha(base.convert("L"))
    return encode(im, "PNG")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    mode=st.sampled_from(MODES),
    width=st.integers(1, 1400),
    height=st.integers(1, 1400),
    seed=st.integers(0, 2**16),
    noisy=st.booleans(),
)
def test_any_mode_and_size_gives_the_platforms_shape(
    mode: str, width: int, height: int, seed: int, noisy: bool
) -> None:
    t = make_thumbnail(_make_image(mode, width, height, seed, noisy))
    assert_valid_thumbnail(t, (width, height))
    assert t.mime_type == "image/png"


def test_a_malformed_exif_block_means_no_rotation_not_a_broken_image() -> None:
    im = gradient(800, 600)
    for fmt in ("PNG", "JPEG"):
        data = encode(im, fmt, exif=b"Exif\x00\x00this is not a TIFF header")
        t = make_thumbnail(data)
        assert_valid_thumbnail(t, (800, 600))
