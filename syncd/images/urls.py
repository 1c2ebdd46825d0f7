"""Build object-storage URLs for a painting document, refusing anything unsafe.

Layout (``platform-facts.md`` §1):

* users: bucket ``user_bucket``; the key candidates are ``images.user_keys``
  in order, by default ``{user}/painting/{name}`` (where uploads go) then
  ``{user}/{name}`` (the oldest objects), with ``.png`` for the image and
  ``.zip`` for the recording. ``{user}`` is the sub, percent-encoded; ``{name}``
  is the slug, or the ``{name}`` of a slug that already reads
  ``{user}/painting/{name}`` (both forms name the same object).
* guests (no ``user``): bucket ``guest_bucket``; ``images.guest_keys``, by
  default ``{name}``; a slug ``image:recording`` names the image ``image.png``
  and the zip ``recording.zip``.
* a document's own ``bucket`` wins over the default.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

from syncd.images.errors import DisallowedHostError, InvalidPaintingError, UnsafeSlugError
from syncd.images.settings import ImageSettings, origins

MAX_SLUG_LENGTH = 256
# S3/Spaces bucket names; the bucket becomes part of a hostname in the default template.
_BUCKET_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]|\.(?!\.)){1,61}[a-z0-9]$")
_DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True)
class PaintingSource:
    """Where a painting's full-size image (and, maybe, its recording zip) can be fetched.

    ``image_urls`` / ``recording_urls`` are the candidates in the order to try;
    ``image_url`` / ``recording_url`` are the first of each. Built with only the
    first two, the lists are those single URLs.
    """

    image_url: str
    recording_url: str | None
    image_urls: tuple[str, ...] = ()
    recording_urls: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.image_urls:
            object.__setattr__(self, "image_urls", (self.image_url,))
        if not self.recording_urls and self.recording_url is not None:
            object.__setattr__(self, "recording_urls", (self.recording_url,))


def _bad_char(text: str) -> str | None:
    for ch in text:
        if ch in "\\?#%":
            return repr(ch)
        if unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp"):
            return f"U+{ord(ch):04X}"
    return None


def _check_slug(slug: object) -> str:
    """The slug, if it can name an object. As on the platform (source-system.md), only a
    slug containing ``..`` or starting with ``/`` is invalid; any other character is
    part of the key and percent-encoded in the URL (:func:`_enc_path`), so it can never
    change the URL's host, path depth above the owner's directory, query or fragment."""
    if not isinstance(slug, str):
        raise UnsafeSlugError(f"slug must be a string, got {type(slug).__name__}")
    if not slug:
        raise UnsafeSlugError("slug is empty")
    if len(slug) > MAX_SLUG_LENGTH:
        raise UnsafeSlugError(f"slug is longer than {MAX_SLUG_LENGTH} characters")
    if slug.startswith("/"):
        raise UnsafeSlugError(f"slug {slug!r} starts with '/'")
    if ".." in slug:
        raise UnsafeSlugError(f"slug {slug!r} contains '..'")
    return slug


def _check_user(user: object) -> str:
    if not isinstance(user, str) or not user:
        raise InvalidPaintingError(
            f"user must be a non-empty string, got {user!r}", reason="invalid_user"
        )
    if user in (".", "..") or _bad_char(user.replace("%", "")) is not None:
        raise InvalidPaintingError(
            f"user {user!r} is not a safe key segment", reason="invalid_user"
        )
    return user


def _check_bucket(bucket: object) -> str:
    if not isinstance(bucket, str) or not _BUCKET_RE.fullmatch(bucket):
        raise InvalidPaintingError(f"bucket {bucket!r} is not a valid name", reason="unsafe_bucket")
    return bucket


def _enc(segment: str) -> str:
    return quote(segment, safe="")


def _enc_path(name: str) -> str:
    """A key path under the owner's directory: each ``/``-separated part percent-encoded
    (a part that is a lone ``.`` too, so no URL normalisation drops it from the key)."""
    return "/".join("%2E" if part == "." else _enc(part) for part in name.split("/"))


def painting_name(user: str, slug: str) -> str:
    """The ``{name}`` of a user's painting: the slug itself, or what follows the prefix
    of a slug that already reads ``{user}/painting/{name}`` (the user's sub, plain or
    percent-encoded). A slug with another user's prefix is a plain slug: it names an
    object inside *this* user's directory, never the other user's."""
    for prefix in (f"{user}/painting/", f"{_enc(user)}/painting/"):
        if slug.startswith(prefix) and len(slug) > len(prefix):
            return slug[len(prefix) :]
    return slug


def _user_keys(user: str, slug: str, templates: Iterable[str]) -> list[str]:
    """Key stems (no extension) of a user's painting, in the order to try."""
    name = _enc_path(painting_name(user, slug))
    return [t.format(user=_enc(user), name=name) for t in templates]


def _guest_names(slug: str) -> tuple[str, str]:
    """(image name, recording name) of a guest slug ``image`` or ``image:recording``."""
    image, sep, recording = slug.partition(":")
    if not sep:
        recording = image
    return _enc_path(image), _enc_path(recording)


def _origin(url: str) -> tuple[str, str, int] | None:
    """``(scheme, host, port)`` of an absolute http(s) URL without user information,
    parsed as httpx (which makes the request) parses it; ``None`` otherwise."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError):
        return None
    scheme = parsed.scheme
    if scheme not in _DEFAULT_PORTS or not parsed.host or parsed.userinfo:
        return None
    port = parsed.port if parsed.port is not None else _DEFAULT_PORTS[scheme]
    return scheme, parsed.host.rstrip(".").lower(), port


def is_allowed_url(url: str, allowed_hosts: Iterable[str]) -> bool:
    """True if ``url``'s origin (scheme, host and port) is one ``allowed_hosts`` allows.

    A bare ``host`` entry allows https on port 443 only; ``http://host:port`` or
    ``https://host:port`` allows exactly that origin. URLs with user information
    are never allowed.
    """
    origin = _origin(url)
    return origin is not None and origin in origins(tuple(allowed_hosts))


def check_url(url: str, allowed_hosts: Iterable[str], *, reason: str = "disallowed_host") -> str:
    """Return ``url`` unchanged, or raise :class:`DisallowedHostError` with ``reason``."""
    if not is_allowed_url(url, allowed_hosts):
        origin = _origin(url)
        where = f"{origin[0]}://{origin[1]}:{origin[2]}" if origin else "an unusable URL"
        raise DisallowedHostError(
            f"refusing {url!r}: {where} is not an origin images.allowed_hosts allows",
            reason=reason,
            url=url,
        )
    return url


def painting_source(
    *,
    user: str | None,
    slug: str,
    settings: ImageSettings,
    bucket: str | None = None,
) -> PaintingSource:
    """URLs of a painting's image and recording zip, every candidate in order.

    Raises :class:`UnsafeSlugError` / :class:`InvalidPaintingError` for a slug,
    user or bucket that could not safely form a key, and
    :class:`DisallowedHostError` if a resulting URL leaves ``allowed_hosts``.
    """
    slug = _check_slug(slug)
    if user is None:
        image_name, recording_name = _guest_names(slug)
        image_stems = [t.format(name=image_name) for t in settings.guest_keys]
        recording_stems = [t.format(name=recording_name) for t in settings.guest_keys]
        default_bucket = settings.guest_bucket
    else:
        image_stems = recording_stems = _user_keys(_check_user(user), slug, settings.user_keys)
        default_bucket = settings.user_bucket
    chosen = _check_bucket(bucket if bucket is not None else default_bucket)
    image_urls = tuple(
        check_url(
            settings.url_template.format(bucket=chosen, key=f"{s}.png"), settings.allowed_hosts
        )
        for s in image_stems
    )
    recording_urls = tuple(
        check_url(
            settings.recording_template.format(bucket=chosen, key=f"{s}.zip"),
            settings.allowed_hosts,
        )
        for s in recording_stems
    )
    return PaintingSource(
        image_url=image_urls[0],
        recording_url=recording_urls[0],
        image_urls=image_urls,
        recording_urls=recording_urls,
    )


def painting_source_from_doc(doc: Mapping[str, Any], settings: ImageSettings) -> PaintingSource:
    """:func:`painting_source` for a ``paintings`` MongoDB document (``user`` absent = guest)."""
    user = doc.get("user")
    bucket = doc.get("bucket")
    if bucket == "":
        bucket = None
    slug: Any = doc.get("slug")
    return painting_source(user=user, slug=slug, settings=settings, bucket=bucket)
