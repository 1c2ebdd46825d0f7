"""The image server's key mapping and the seed generators (no PDS or Mongo needed)."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import httpx
import pytest
from PIL import Image

from syncd_sandbox.images import (
    GUEST_BUCKET,
    USER_BUCKET,
    ImageServer,
    StoredObject,
    UnsafeKeyError,
    key_path,
    painting_keys,
    painting_objects,
    url_path_to_file,
)
from syncd_sandbox.seed import (
    demo_dataset,
    is_public,
    legacy_mood_record,
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


ENC = "auth0%7C63effeeb2a7d55f8098d62f9"


def test_layout_follows_the_platform_facts() -> None:
    """platform-facts.md §1, spelled out key by key (the world never asks syncd)."""
    plain = painting_objects(SUB, "2023.8.21.19.42.03.043")
    assert [o.key for o in plain.images] == [
        f"{ENC}/painting/2023.8.21.19.42.03.043.png",  # where uploads go today
        f"{ENC}/2023.8.21.19.42.03.043.png",  # the oldest objects
    ]
    assert [o.key for o in plain.recordings] == [
        f"{ENC}/painting/2023.8.21.19.42.03.043.zip",
        f"{ENC}/2023.8.21.19.42.03.043.zip",
    ]
    assert {o.bucket for o in plain.images} == {USER_BUCKET}
    # A newer slug already names {sub}/painting/{name}: the same object, raw or encoded sub.
    for prefix in (SUB, ENC):
        prefixed = painting_objects(SUB, f"{prefix}/painting/2025.01.02.03.04.05.678")
        assert [o.key for o in prefixed.images] == [f"{ENC}/painting/2025.01.02.03.04.05.678.png"]
    guest = painting_objects(None, "pic:rec")
    assert [(o.bucket, o.key) for o in guest.images] == [(GUEST_BUCKET, "pic.png")]
    assert [(o.bucket, o.key) for o in guest.recordings] == [(GUEST_BUCKET, "rec.zip")]
    assert [o.key for o in painting_objects(None, "solo").recordings] == ["solo.zip"]
    # The document's own bucket wins.
    assert {o.bucket for o in painting_objects(SUB, "x", "wand-bucket").images} == {"wand-bucket"}
    assert {o.bucket for o in painting_objects(None, "x", "").images} == {GUEST_BUCKET}
    # Writers: today's key by default, the oldest on request.
    assert painting_keys(SUB, "s") == (
        USER_BUCKET,
        f"{ENC}/painting/s.png",
        f"{ENC}/painting/s.zip",
    )
    assert painting_keys(SUB, "s", layout="old") == (USER_BUCKET, f"{ENC}/s.png", f"{ENC}/s.zip")
    assert painting_keys(None, "pic:rec") == (GUEST_BUCKET, "pic.png", "rec.zip")
    with pytest.raises(ValueError):
        painting_keys(None, "pic", layout="old")
    assert (
        StoredObject("b", "k%7C/x.png").url("http://h:1/{bucket}/{key}")
        == "http://h:1/b/k%7C/x.png"
    )


@pytest.mark.parametrize("slug", ["../x", "/abs", "a..b", "", "a/../b"])
def test_unsafe_slugs_never_become_keys(slug: str) -> None:
    with pytest.raises(UnsafeKeyError):
        painting_objects(SUB, slug)
    with pytest.raises(UnsafeKeyError):
        painting_objects(None, slug)


@pytest.mark.parametrize("bucket", ["../etc", "a/b", "with space", 7])
def test_unsafe_buckets_are_refused(bucket: object) -> None:
    with pytest.raises(UnsafeKeyError):
        painting_objects(SUB, "ok", bucket)


def test_files_land_at_the_platform_keys(tmp_path: Path) -> None:
    today = write_painting_files(tmp_path, SUB, "p1", recording=True)
    assert today.image_path == tmp_path.resolve() / USER_BUCKET / SUB / "painting" / "p1.png"
    assert today.recording_path == today.image_path.with_suffix(".zip")
    old = write_painting_files(tmp_path, SUB, "p0", layout="old")
    assert old.image_path == tmp_path.resolve() / USER_BUCKET / SUB / "p0.png"
    own = write_painting_files(tmp_path, None, "g:r", bucket="elsewhere", recording=True)
    assert (own.bucket, own.image_key, own.recording_key) == ("elsewhere", "g.png", "r.zip")
    art = write_painting_files(tmp_path, SUB, "px", width=16, height=16, pixel_art=True)
    assert Image.open(art.image_path).size == (16, 16)
    assert len(Image.open(art.image_path).convert("RGB").getcolors(256) or []) <= 6


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
    assert counts == {"paintings": 14, "moods": 8, "pieces": 6, "kidlisp": 6, "tapes": 6}
    for files in ds.files:
        assert files.image_path.is_file()
        assert files.image_path.is_relative_to(tmp_path)
    assert sum(f.recording_path is not None for f in ds.files) == 3
    sizes = {Image.open(f.image_path).size for f in ds.files}
    # pixel art of 16-128 px next to large paintings
    assert {(16, 16), (32, 32), (128, 128), (1024, 1024), (1024, 512)} <= sizes
    paintings = ds.documents["paintings"]
    wip = [p for p in paintings if p.get("status") == "wip"]
    assert len(wip) == 1 and wip[0]["slug"].startswith("wip/")
    jeffrey = ds.users[0].sub
    assert any(p["slug"].startswith(f"{jeffrey}/painting/") for p in paintings)
    keys = {(f.bucket, f.image_key) for f in ds.files}
    enc = jeffrey.replace("|", "%7C")
    assert (USER_BUCKET, f"{enc}/2023.8.21.19.42.03.043.png") in keys  # the oldest layout
    # One public painting has no file at any of its keys: its image is missing.
    stored = {f.image_key for f in ds.files}
    missing = [
        p
        for p in paintings
        if "user" in p
        and not {o.key for o in painting_objects(p["user"], p["slug"]).images} & stored
    ]
    assert len(missing) == 1 and is_public(missing[0])
    # Two legacy moods: one named by its document's atproto.rkey, one not.
    assert [named for _, named in ds.legacy_moods] == [True, False]
    for doc, _ in ds.legacy_moods:
        record = legacy_mood_record(doc)
        assert record["mongoId"] == str(doc["_id"]) and "ref" not in record
    # Tapes: small MP4s on disk, named by full URL; one still processing, a guest one.
    tapes = ds.documents["tapes"]
    assert sum(t["mp4Status"] == "processing" and "mp4" not in t for t in tapes) == 1
    assert any("user" not in t and t["mp4Status"] == "complete" for t in tapes)
    for t in tapes:
        if "mp4" in t:
            bucket, _, key = (
                t["mp4"].removeprefix("https://").partition(".sfo3.digitaloceanspaces.com/")
            )
            head = key_path(tmp_path, bucket, key).read_bytes()[:12]
            assert head[4:12] == b"ftypisom", t["mp4"]
