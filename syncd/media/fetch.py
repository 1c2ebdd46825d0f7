"""A tape's MP4 fetched into a :class:`~syncd.media.spool.Spool`, defensively.

The document stores ``mp4`` as a full URL, so the fetch is the image fetcher's
(:meth:`~syncd.images.fetch.ImageFetcher.stream_once`): the URL's origin must be
allowed, redirects are followed by hand and every target is checked *before* it
is requested, a whole attempt has a deadline, nothing is decompressed. On top:

* the size: a ``Content-Length`` over the limit is refused before the body is read,
  and the read stops at the first chunk past it (``tape_too_large``, naming the
  limit: the lexicon's 52,428,800 bytes, or the PDS's upload limit when lower);
* the type: a ``Content-Type`` other than the lexicon's (``video/mp4``) or a generic
  ``application/octet-stream`` is refused (``mp4_wrong_type``), and the body must
  start with an ISO base media ``ftyp`` box whose brand the PDS reads as
  ``video/mp4`` (``not_mp4``), checked as soon as its first bytes arrive;
* the CID is computed while the body is written to disk.

Errors are :class:`~syncd.images.errors.ImageError` with tape reasons
(``mp4_not_found``, ``mp4_http_5xx``, ``mp4_redirect_disallowed_host``, ...) and
``permanent`` telling a dead letter from a retry.
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx

from syncd.images.errors import ImageError, TransientImageError
from syncd.images.fetch import ImageFetcher
from syncd.mappings.base import StreamedBlob
from syncd.media.spool import Spool

#: Content types an object store may send for an MP4 besides the lexicon's own.
GENERIC_TYPES = frozenset({"application/octet-stream", "binary/octet-stream"})
#: ``ftyp`` major brands the PDS's type sniffing (file-type) does *not* read as
#: video/mp4: QuickTime, M4V/M4A/M4B audio and video, HEIF/AVIF images, Canon raw.
NOT_MP4_BRANDS = frozenset(
    {
        "qt",
        "M4V",
        "M4VH",
        "M4VP",
        "M4A",
        "M4B",
        "F4A",
        "F4B",
        "avif",
        "mif1",
        "msf1",
        "heic",
        "heix",
        "hevc",
        "hevx",
        "crx",
    }
)


class TapeTooLargeError(ImageError):
    reason = "tape_too_large"


class NotMp4Error(ImageError):
    reason = "not_mp4"


def mp4_problem(head: bytes) -> str | None:
    """Why ``head`` (the first bytes) is not an MP4 the PDS takes as video/mp4, or None."""
    if len(head) < 12 or head[4:8] != b"ftyp":
        return f"does not start with an ISO base media 'ftyp' box ({head[:12]!r})"
    if not head[8] & 0x60:
        return "the ftyp box's major brand is not printable"
    brand = head[8:12].decode("latin-1").replace("\0", " ").strip()
    if brand in NOT_MP4_BRANDS:
        return f"its brand {brand!r} is not an MP4 video (the PDS would not call it video/mp4)"
    return None


def as_tape_error(exc: ImageError) -> ImageError:
    """The image fetcher's error with a tape's reason (``image_not_found`` ->
    ``mp4_not_found``, ``redirect_disallowed_host`` -> ``mp4_redirect_disallowed_host``)."""
    reason = exc.reason
    if reason.startswith("image_"):
        exc.reason = "mp4_" + reason.removeprefix("image_")
    elif not reason.startswith(("mp4_", "tape_", "not_mp4")):
        exc.reason = "mp4_" + reason
    return exc


@dataclass(frozen=True)
class FetchLimits:
    max_bytes: int  # the largest MP4 worth fetching
    why: str  # what that limit is, for the dead letter
    spool_directory: str | None = None


async def fetch_once(fetcher: ImageFetcher, blob: StreamedBlob, limits: FetchLimits) -> Spool:
    """One attempt: the MP4 at ``blob.url`` in a finished spool (its CID computed)."""

    async def read(response: httpx.Response, url: str) -> Spool:
        declared = response.headers.get("Content-Length")
        if declared is not None and declared.isdigit() and int(declared) > limits.max_bytes:
            raise TapeTooLargeError(
                f"the MP4 is {int(declared):,} bytes (Content-Length), over {limits.why}",
                url=url,
            )
        ctype = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if ctype and ctype not in blob.accept and ctype not in GENERIC_TYPES:
            raise NotMp4Error(
                f"{url} answered Content-Type {ctype[:60]!r}, not {'/'.join(blob.accept)}",
                reason="mp4_wrong_type",
                url=url,
            )
        spool = Spool(limits.spool_directory)
        checked = False
        try:
            async for chunk in response.aiter_raw():
                spool.write(chunk)
                if spool.size > limits.max_bytes:
                    raise TapeTooLargeError(
                        f"the MP4 sent more than {limits.max_bytes:,} bytes, over {limits.why}",
                        url=url,
                    )
                if not checked and spool.size >= 12:
                    checked = True
                    _check_head(spool.head, url)
            _check_head(spool.head, url)
            spool.finish()
        except BaseException:
            spool.close()
            raise
        return spool

    try:
        return await fetcher.stream_once(blob.url, read)
    except ImageError as exc:
        raise as_tape_error(exc) from None


def _check_head(head: bytes, url: str) -> None:
    problem = mp4_problem(head)
    if problem is not None:
        raise NotMp4Error(f"{url} is not an MP4: {problem}", url=url)


async def fetch_to_spool(
    fetcher: ImageFetcher, blob: StreamedBlob, limits: FetchLimits, *, retries: int
) -> Spool:
    """:func:`fetch_once`, retrying transient failures ``retries`` times (backoff with
    jitter, ``Retry-After`` honoured) before the :class:`TransientImageError` is raised."""
    attempt = 0
    while True:
        try:
            return await fetch_once(fetcher, blob, limits)
        except TransientImageError as exc:
            if attempt >= retries:
                raise
            await fetcher.backoff(attempt, exc)
            attempt += 1
