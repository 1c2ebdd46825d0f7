"""Build object-storage URLs for a painting document, refusing anything unsafe.

Layout (see ``/work/shared/reference/source-system.md``):

* users: bucket ``user_bucket``, key ``{quote(user)}/{slug}.png``; newer slugs
  already read ``{user}/painting/{name}`` and the key is then ``{slug}.png``
  (with the user segment percent-encoded); the recording zip is the same key
  with ``.zip``.
* guests (no ``user``): bucket ``guest_bucket``, key ``{slug}.png``; a slug
  ``image:recording`` names the image ``image.png`` and the zip ``recording.zip``.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

from syncd.images.errors import DisallowedHostError, InvalidPaintingError, UnsafeSlugError
from syncd.images.settings import ImageSettings

MAX_SLUG_LENGTH = 256
# S3/Spaces bucket names; the bucket becomes part of a hostname in the default template.
_BUCKET_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]|\.(?!\.)){1,61}[a-z0-9]$")


@dataclass(frozen=True)
class PaintingSource:
    """Where a painting's full-size image (and, maybe, its recording zip) can be fetched."""

    image_url: str
    recording_url: str | None


def _bad_char(text: str) -> str | None:
    for ch in text:
        if ch in "\\?#%":
            return repr(ch)
        if unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp"):
            return f"U+{ord(ch):04X}"
    return None


def _check_segment(segment: str, slug: str, what: str = "slug") -> None:
    """Reject a slug segment that is empty, a dot segment or holds a dangerous character."""
    if not segment:
        raise UnsafeSlugError(f"{what} {slug!r} has an empty segment")
    if ".." in segment or segment == ".":
        raise UnsafeSlugError(f"{what} {slug!r} contains a dot segment")
    bad = _bad_char(segment)
    if bad is not None:
        raise UnsafeSlugError(f"{what} {slug!r} contains the forbidden character {bad}")


def _check_slug(slug: object) -> str:
    if not isinstance(slug, str):
        raise UnsafeSlugError(f"slug must be a string, got {type(slug).__name__}")
    if not slug or not slug.strip():
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


def _user_keys(user: str, slug: str) -> tuple[str, str]:
    """Return (image key, recording key) for a user's painting."""
    encoded_user = _enc(user)
    if "/" in slug:
        parts = slug.split("/")
        if len(parts) != 3 or parts[1] != "painting":
            raise UnsafeSlugError(
                f"slug {slug!r} contains '/' but is not of the form '{{user}}/painting/{{name}}'"
            )
        owner, _, name = parts
        if owner not in (user, encoded_user):
            raise UnsafeSlugError(
                f"slug {slug!r} names another user than the document's ({user!r})",
                reason="slug_user_mismatch",
            )
        _check_segment(name, slug)
        base = f"{encoded_user}/painting/{_enc(name)}"
    else:
        _check_segment(slug, slug)
        base = f"{encoded_user}/{_enc(slug)}"
    return f"{base}.png", f"{base}.zip"


def _guest_keys(slug: str) -> tuple[str, str]:
    if "/" in slug:
        raise UnsafeSlugError(f"guest slug {slug!r} contains '/'")
    image, sep, recording = slug.partition(":")
    if not sep:
        recording = image
    _check_segment(image, slug)
    _check_segment(recording, slug)
    return f"{_enc(image)}.png", f"{_enc(recording)}.zip"


def normalize_host(host: str) -> str:
    """Lower-case a hostname and drop any ``:port`` and trailing dot."""
    host = host.strip()
    parsed = urlsplit(host if "//" in host else f"//{host}")
    name = parsed.hostname or ""
    return name.rstrip(".").lower()


def is_allowed_url(url: str, allowed_hosts: Iterable[str]) -> bool:
    """True if ``url`` is http(s) and its host (any port) is one of ``allowed_hosts``."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        return False
    if parts.scheme not in ("http", "https") or not host or parts.username or parts.password:
        return False
    allowed = {normalize_host(h) for h in allowed_hosts}
    return host.rstrip(".").lower() in allowed


def check_url(url: str, allowed_hosts: Iterable[str], *, reason: str = "disallowed_host") -> str:
    """Return ``url`` unchanged, or raise :class:`DisallowedHostError` with ``reason``."""
    if not is_allowed_url(url, allowed_hosts):
        try:
            host = urlsplit(url).hostname
        except ValueError:
            host = None
        raise DisallowedHostError(
            f"refusing {url!r}: host {host!r} is not in images.allowed_hosts",
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
    """URLs of a painting's image and recording zip.

    Raises :class:`UnsafeSlugError` / :class:`InvalidPaintingError` for a slug,
    user or bucket that could not safely form a key, and
    :class:`DisallowedHostError` if the resulting URL leaves ``allowed_hosts``.
    """
    slug = _check_slug(slug)
    if user is None:
        image_key, recording_key = _guest_keys(slug)
        default_bucket = settings.guest_bucket
    else:
        image_key, recording_key = _user_keys(_check_user(user), slug)
        default_bucket = settings.user_bucket
    chosen_bucket = _check_bucket(bucket if bucket is not None else default_bucket)
    image_url = settings.url_template.format(bucket=chosen_bucket, key=image_key)
    recording_url = settings.recording_template.format(bucket=chosen_bucket, key=recording_key)
    check_url(image_url, settings.allowed_hosts)
    check_url(recording_url, settings.allowed_hosts)
    return PaintingSource(image_url=image_url, recording_url=recording_url)


def painting_source_from_doc(doc: Mapping[str, Any], settings: ImageSettings) -> PaintingSource:
    """:func:`painting_source` for a ``paintings`` MongoDB document (``user`` absent = guest)."""
    user = doc.get("user")
    bucket = doc.get("bucket")
    if bucket == "":
        bucket = None
    slug: Any = doc.get("slug")
    return painting_source(user=user, slug=slug, settings=settings, bucket=bucket)
