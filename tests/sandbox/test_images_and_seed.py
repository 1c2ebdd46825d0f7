"""The image server's key mapping and the seed generators (no PDS or Mongo needed)."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import httpx
import pytest
from PIL import Image

from syncd.images.settings import ImageSettings
from syncd.images.urls import painting_source
from syncd_sandbox.images import (
    GUEST_BUCKET,
    USER_BUCKET,
    ImageServer,
    UnsafeKeyError,
    key_path,
    painting_keys,
    url_path_to_file,
)
from syncd_sandbox.seed import (
    demo_dataset,
    make_kidlisp,
    make_mood,
    make_painting,
    make_piece,
    png_bytes,
    recording_zip_bytes,
    write_painting_files,
    write_png,
)

SUB = "auth0|63effeeb2a7d55f8098d62f9"


def test_keys_decode_per_segment(tmp_path: Path) -> None:
    path = key_path(tmp_path, USER_BUCKET, "auth0%7Cabc/2025.png")
    assert path == tmp_path.resolve() / USER_BUCKET / "auth0|abc" / "2025.png"


@pytest.mark.parametrize(
    "url_path",
    [
        "/b/../x.png",
        "/b/%2e%2e/x.png",
        "/b/..%2Fx.png",
        "/b/a%2Fb.png",
        "/b/%00.png",
        "/b//x.png",
        "/b/.hidden",
        "/b",
        "/",
        "/b/a%5C..%5Cx",
    ],
)
def test_unsafe_paths_are_refused(tmp_path: Path, url_path: str) -> None:
    with pytest.raises(UnsafeKeyError):
        url_path_to_file(tmp_path, url_path)


def test_symlink_out_of_root_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "images"
    (root / "b").mkdir(parents=True)
    (tmp_path / "secret.png").write_bytes(b"x")
    (root / "b" / "link.png").symlink_to(tmp_path / "secret.png")
    with pytest.raises(UnsafeKeyError):
        key_path(root, "b", "link.png")


def test_layout_matches_syncd_url_builder(tmp_path: Path) -> None:
    settings = ImageSettings(
        url_template="http://127.0.0.1:1/{bucket}/{key}",
        recording_template="http://127.0.0.1:1/{bucket}/{key}",
        allowed_hosts=("http://127.0.0.1:1",),
    )
    cases: list[tuple[str | None, str]] = [
        (SUB, "2025.03.01.12.00.00.123"),
        (SUB, f"{SUB}/painting/2025.03.01.12.00.00.123"),
        (None, "2025.03.01.12.00.00.123"),
        (None, "pic:rec"),
    ]
    for user, slug in cases:
        bucket, png_key, zip_key = painting_keys(user, slug)
        source = painting_source(user=user, slug=slug, settings=settings)
        assert source.image_url == f"http://127.0.0.1:1/{bucket}/{png_key}"
        assert source.recording_url == f"http://127.0.0.1:1/{bucket}/{zip_key}"
    assert painting_keys(None, "pic:rec") == (GUEST_BUCKET, "pic.png", "rec.zip")


def test_server_get_head_and_types(tmp_path: Path) -> None:
    files = write_painting_files(tmp_path, SUB, "slug1", width=33, height=22, recording=True)
    with ImageServer(tmp_path) as server, httpx.Client() as http:
        url = server.url(files.bucket, files.image_key)
        got = http.get(url)
        assert got.status_code == 200
        assert got.headers["content-type"] == "image/png"
        assert int(got.headers["content-length"]) == len(files.image_bytes)
        assert Image.open(io.BytesIO(got.content)).size == (33, 22)
        head = http.head(url)
        assert head.status_code == 200 and head.content == b""
        assert head.headers["content-length"] == got.headers["content-length"]
        z = http.get(server.url(files.bucket, files.recording_key))
        assert z.headers["content-type"] == "application/zip"
        assert zipfile.ZipFile(io.BytesIO(z.content)).namelist()
        assert http.get(server.url(files.bucket, "nope.png")).status_code == 404
        assert http.head(server.url(files.bucket, "nope.png")).status_code == 404
        assert server.hits(files.bucket, files.image_key) == 2


def test_generators_use_real_field_names() -> None:
    mood = make_mood(SUB, "hello")
    assert mood["mood"] == "hello" and "text" not in mood and mood["user"] == SUB
    assert mood["when"].tzinfo is not None and mood["when"].microsecond % 1000 == 0
    guest = make_painting(None, "s", "c0de")
    assert "user" not in guest and guest["slug"] == "s" and guest["code"] == "c0de"
    piece = make_piece(SUB, "wipe", code="w1", source="x", nuked=True)
    assert piece["nuked"] is True and piece["code"] == "w1"
    k = make_kidlisp(None, source="(wipe red)")
    assert "user" not in k and len(k["code"]) <= 10


def test_png_and_zip_helpers(tmp_path: Path) -> None:
    data = write_png(tmp_path / "a" / "b.png", 10, 12, seed=3)
    assert (tmp_path / "a" / "b.png").read_bytes() == data == png_bytes(10, 12, seed=3)
    assert Image.open(io.BytesIO(data)).size == (10, 12)
    assert len(zipfile.ZipFile(io.BytesIO(recording_zip_bytes(frames=2))).namelist()) == 3


def test_demo_dataset_shape(tmp_path: Path) -> None:
    ds = demo_dataset(tmp_path)
    assert [u.with_atproto for u in ds.users] == [True, True, True, False]
    counts = ds.counts()
    assert counts == {"paintings": 11, "moods": 6, "pieces": 6, "kidlisp": 6}
    for files in ds.files:
        assert files.image_path.is_file()
        assert files.image_path.is_relative_to(tmp_path)
    assert sum(f.recording_path is not None for f in ds.files) == 2
    sizes = {Image.open(f.image_path).size for f in ds.files}
    assert len(sizes) >= 5
