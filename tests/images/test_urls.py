from __future__ import annotations

from dataclasses import replace
from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from syncd.images.errors import (
    DisallowedHostError,
    ImageError,
    InvalidPaintingError,
    UnsafeSlugError,
)
from syncd.images.settings import ImageSettings
from syncd.images.urls import (
    PaintingSource,
    is_allowed_url,
    painting_source,
    painting_source_from_doc,
)

S = ImageSettings()
DO = "sfo3.digitaloceanspaces.com"


U = f"https://user-aesthetic-computer.{DO}"
G = f"https://art-aesthetic-computer.{DO}"


def test_user_painting_candidates_where_uploads_go_then_the_oldest_objects() -> None:
    src = painting_source(user="auth0|abc", slug="2023.1.2.3.4.5.678", settings=S)
    assert src.image_urls == (
        f"{U}/auth0%7Cabc/painting/2023.1.2.3.4.5.678.png",
        f"{U}/auth0%7Cabc/2023.1.2.3.4.5.678.png",
    )
    assert src.recording_urls == (
        f"{U}/auth0%7Cabc/painting/2023.1.2.3.4.5.678.zip",
        f"{U}/auth0%7Cabc/2023.1.2.3.4.5.678.zip",
    )
    assert src.image_url == src.image_urls[0]
    assert src.recording_url == src.recording_urls[0]


@pytest.mark.parametrize(
    "slug", ["auth0|abc/painting/2024.5.6", "auth0%7Cabc/painting/2024.5.6", "2024.5.6"]
)
def test_a_slug_with_the_painting_prefix_names_the_same_object(slug: str) -> None:
    src = painting_source(user="auth0|abc", slug=slug, settings=S)
    assert src.image_urls == (
        f"{U}/auth0%7Cabc/painting/2024.5.6.png",
        f"{U}/auth0%7Cabc/2024.5.6.png",
    )
    assert src.recording_urls[0] == f"{U}/auth0%7Cabc/painting/2024.5.6.zip"


def test_a_slug_with_another_users_prefix_stays_in_this_users_directory() -> None:
    # Not the prefixed form (the prefix is not this user's): a plain slug, whose key
    # is inside this user's directory -- never the other user's object.
    src = painting_source(user="auth0|abc", slug="auth0|zzz/painting/x", settings=S)
    assert src.image_urls == (
        f"{U}/auth0%7Cabc/painting/auth0%7Czzz/painting/x.png",
        f"{U}/auth0%7Cabc/auth0%7Czzz/painting/x.png",
    )


def test_configured_key_templates_are_tried_in_their_order() -> None:
    settings = ImageSettings(user_keys=("{user}/{name}", "old/{user}-{name}"))
    src = painting_source(user="a b", slug="x", settings=settings)
    assert src.image_urls == (f"{U}/a%20b/x.png", f"{U}/old/a%20b-x.png")


@pytest.mark.parametrize(
    ("slug", "path"),
    [
        ("a/b", "a/b"),
        ("a/./b", "a/%2E/b"),
        ("a/painting/b/c", "a/painting/b/c"),
        ("auth0|abc/painting/b/c", "b/c"),
        ("auth0|abc/drawing/x", "auth0%7Cabc/drawing/x"),
    ],
)
def test_other_slashes_are_key_paths_under_the_users_directory(slug: str, path: str) -> None:
    src = painting_source(user="auth0|abc", slug=slug, settings=S)
    assert src.image_url == f"{U}/auth0%7Cabc/painting/{path}.png"


def test_guest_plain_slug() -> None:
    src = painting_source(user=None, slug="abc123", settings=S)
    assert src == PaintingSource(f"{G}/abc123.png", f"{G}/abc123.zip")
    assert src.image_urls == (f"{G}/abc123.png",)
    assert src.recording_urls == (f"{G}/abc123.zip",)


def test_guest_image_colon_recording() -> None:
    src = painting_source_from_doc({"slug": "image:recording"}, S)
    assert src.image_urls == (f"{G}/image.png",)
    assert src.recording_urls == (f"{G}/recording.zip",)


def test_user_slug_with_colon_is_encoded_as_one_segment() -> None:
    src = painting_source(user="u", slug="a:b", settings=S)
    assert src.image_url.endswith("/u/painting/a%3Ab.png")


@pytest.mark.parametrize("slug", ["", "..", "../x", "a/../b", "a..b", "/abs", "x" * 300])
@pytest.mark.parametrize("user", [None, "auth0|abc"])
def test_unsafe_slugs(slug: str, user: str | None) -> None:
    # source-system.md: a slug containing ".." or a leading "/" is invalid and must never
    # reach a URL (nor can an empty one, or one longer than any lexicon allows).
    with pytest.raises(UnsafeSlugError) as info:
        painting_source(user=user, slug=slug, settings=S)
    assert info.value.reason == "unsafe_slug"
    assert info.value.permanent
    assert isinstance(info.value, ImageError)


@pytest.mark.parametrize(
    ("slug", "name"),
    [
        ("   ", "%20%20%20"),
        ("a\\b", "a%5Cb"),
        ("a?b", "a%3Fb"),
        ("a#b", "a%23b"),
        ("a\nb", "a%0Ab"),
        ("a\x00b", "a%00b"),
        ("a\u202eb", "a%E2%80%AEb"),
        ("a%2e%2e", "a%252e%252e"),
    ],
)
@pytest.mark.parametrize("user", [None, "auth0|abc"])
def test_any_other_character_is_part_of_the_key_percent_encoded(
    slug: str, name: str, user: str | None
) -> None:
    src = painting_source(user=user, slug=slug, settings=S)
    base = G if user is None else f"{U}/auth0%7Cabc/painting"
    assert src.image_url == f"{base}/{name}.png"


@pytest.mark.parametrize(
    ("slug", "image", "recording"),
    [("image:", "image", ""), (":rec", "", "rec"), ("a/b:c", "a/b", "c")],
)
def test_guest_colon_slugs_name_their_parts_as_they_are(
    slug: str, image: str, recording: str
) -> None:
    src = painting_source(user=None, slug=slug, settings=S)
    assert src.image_urls == (f"{G}/{image}.png",)
    assert src.recording_urls == (f"{G}/{recording}.zip",)


@pytest.mark.parametrize("slug", [None, 42, b"bytes"])
def test_non_string_slug(slug: object) -> None:
    with pytest.raises(UnsafeSlugError):
        painting_source_from_doc({"slug": slug, "user": "u"}, S)


@pytest.mark.parametrize("user", ["", "..", ".", 7, "a\nb"])
def test_invalid_user(user: object) -> None:
    with pytest.raises(InvalidPaintingError) as info:
        painting_source_from_doc({"slug": "s", "user": user}, S)
    assert info.value.reason == "invalid_user"


def test_user_with_slash_is_encoded_not_a_path() -> None:
    src = painting_source(user="a/b", slug="s", settings=S)
    assert src.image_urls[1].endswith("/a%2Fb/s.png")


def test_the_documents_bucket_wins() -> None:
    settings = ImageSettings(allowed_hosts=(*S.allowed_hosts, f"old-bucket.{DO}"))
    src = painting_source_from_doc({"user": "u", "slug": "s", "bucket": "old-bucket"}, settings)
    assert src.image_urls == (
        f"https://old-bucket.{DO}/u/painting/s.png",
        f"https://old-bucket.{DO}/u/s.png",
    )
    guest = painting_source_from_doc({"slug": "g", "bucket": "old-bucket"}, settings)
    assert guest.image_urls == (f"https://old-bucket.{DO}/g.png",)


def test_bucket_override_to_an_unlisted_host_is_refused() -> None:
    with pytest.raises(DisallowedHostError) as info:
        painting_source_from_doc({"user": "u", "slug": "s", "bucket": "other"}, S)
    assert info.value.reason == "disallowed_host"
    assert info.value.permanent


@pytest.mark.parametrize("bucket", ["evil.com/x", "a", "UPPER", "a..b", "x?y", "x@evil.com"])
def test_bad_bucket_names(bucket: str) -> None:
    with pytest.raises(InvalidPaintingError) as info:
        painting_source(user="u", slug="s", settings=S, bucket=bucket)
    assert info.value.reason == "unsafe_bucket"


def test_disallowed_host_from_template() -> None:
    settings = ImageSettings(url_template="https://cdn.example.net/{bucket}/{key}")
    with pytest.raises(DisallowedHostError):
        painting_source(user="u", slug="s", settings=settings)


def test_the_sandbox_origin_with_its_port() -> None:
    template = "http://127.0.0.1:9000/{bucket}/{key}"
    settings = ImageSettings(
        url_template=template,
        recording_template=template,
        allowed_hosts=("http://127.0.0.1:9000",),
    )
    src = painting_source(user="auth0|x", slug="s", settings=settings)
    assert src.image_url == "http://127.0.0.1:9000/user-aesthetic-computer/auth0%7Cx/painting/s.png"
    for other in ("http://127.0.0.1:9001", "127.0.0.1", "https://127.0.0.1:9000"):
        with pytest.raises(DisallowedHostError):
            painting_source(user="u", slug="s", settings=replace(settings, allowed_hosts=(other,)))


def test_separate_recording_template() -> None:
    settings = ImageSettings(
        recording_template="https://rec.example/{key}",
        allowed_hosts=(*S.allowed_hosts, "REC.example"),
    )
    src = painting_source(user=None, slug="i:r", settings=settings)
    assert src.recording_url == "https://rec.example/r.zip"


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("https://A.example/x", True),
        ("https://a.example:443/x", True),
        ("https://a.example./x", True),
        ("https://a.example:8443/x", False),  # another port of an allowed host
        ("http://a.example/x", False),  # the bare entry means https only
        ("http://a.example:443/x", False),
        ("ftp://a.example/x", False),
        ("https://user:pw@a.example/x", False),
        ("https://user@a.example/x", False),
        ("https://a.example@evil.example/x", False),
        ("https://a.example.evil/x", False),
        ("https://evil/a.example", False),
        ("https://[::1]/x", False),
        ("not a url", False),
        ("http://b.example:8080/x", True),
        ("http://b.example:8081/x", False),
        ("https://b.example:8080/x", False),
        ("https://c.example/x", True),  # "https://c.example" = port 443
        ("https://c.example:443/x", True),
        ("http://c.example/x", False),
    ],
)
def test_host_matching_is_scheme_host_and_port(url: str, ok: bool) -> None:
    allowed = ["a.example", "http://b.example:8080", "https://c.example"]
    assert is_allowed_url(url, allowed) is ok


@given(st.text(max_size=40), st.one_of(st.none(), st.text(min_size=1, max_size=20)))
def test_any_slug_either_fails_cleanly_or_stays_on_allowed_hosts(
    slug: str, user: str | None
) -> None:
    try:
        src = painting_source(user=user, slug=slug, settings=S)
    except ImageError as exc:
        assert exc.reason
        return
    assert len(src.image_urls) == (1 if user is None else 2)
    for url in (*src.image_urls, *src.recording_urls):
        assert is_allowed_url(url, S.allowed_hosts)
        path = url.split(DO, 1)[1]
        # No dot segment (what URL resolution would collapse); a user such as "0.." is
        # one literal segment, not a traversal.
        assert not {".", ".."} & set(path.split("/"))
        assert "?" not in path and "#" not in path and "\\" not in path
        if user is not None:  # inside the user's own directory, whatever the slug
            assert path.startswith("/" + quote(user, safe="") + "/")
