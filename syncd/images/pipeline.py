"""The one call the daemon makes per painting: find the image, shrink it in a worker,
hash it, and probe the recording."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from syncd.images.cid import blob_cid
from syncd.images.errors import ImageNotFoundError, TransientImageError
from syncd.images.fetch import ImageFetcher
from syncd.images.render import Thumbnail
from syncd.images.settings import ImageSettings
from syncd.images.thumbnail import ThumbnailPool
from syncd.images.urls import PaintingSource, painting_source_from_doc
from syncd.images.worker import Payload


@dataclass(frozen=True)
class PreparedImage:
    """A painting's image work, done.

    ``thumbnail`` is ready for ``uploadBlob`` and ``cid`` is what the PDS will
    answer; ``image_url`` is the candidate that answered. All three are ``None``
    when the painting is :attr:`missing` (every candidate answered 404/410): the
    platform then writes the record without a thumbnail. ``recording_exists``
    says whether the recording zip exists (``recording_url``: the candidate that
    answered), image or no image.
    """

    thumbnail: Thumbnail | None
    cid: str | None
    image_url: str | None
    recording_exists: bool
    recording_url: str | None = None

    @property
    def missing(self) -> bool:
        """True when no candidate key holds the image (all answered 404 or 410)."""
        return self.thumbnail is None


class _Search:
    """The candidate keys of one painting, tried in order across attempts: a 404/410
    is final for a candidate, so a retry starts at the one that failed."""

    def __init__(self, urls: tuple[str, ...]) -> None:
        self.urls = urls
        self.next = 0

    async def fetch(self, fetcher: ImageFetcher) -> tuple[int, Payload] | None:
        """One attempt: the index and body of the first candidate that answers, or
        ``None`` when every one is missing. Transient failures propagate."""
        while self.next < len(self.urls):
            try:
                return self.next, await fetcher.fetch_once(self.urls[self.next])
            except ImageNotFoundError:
                self.next += 1
        return None


async def prepare_painting_blob(
    doc: Mapping[str, Any],
    settings: ImageSettings,
    fetcher: ImageFetcher,
    pool: ThumbnailPool,
) -> PreparedImage:
    """Find a painting's image (candidate keys in order: one GET when the first holds
    it), make its thumbnail in a worker process, compute the blob CID, and check
    (meanwhile) whether its recording zip exists.

    A missing image (every candidate 404/410) is a result, not an error:
    :attr:`PreparedImage.missing`. Anything else raises an
    :class:`~syncd.images.errors.ImageError`: check ``.permanent`` to decide
    between skipping the document and retrying later.

    The pool's admission is held while fetching and shrinking, never while
    waiting to retry: a slow image store does not hold the workers' slots.
    """
    source = painting_source_from_doc(doc, settings)
    search = _Search(source.image_urls)
    probe: asyncio.Task[str | None] | None = None
    hit: tuple[int, Payload] | None = None
    thumbnail: Thumbnail | None = None
    try:
        for attempt in range(settings.retries + 1):
            async with pool.admit():  # bounds the bodies fetched and not yet shrunk
                try:
                    hit = await search.fetch(fetcher)
                except TransientImageError as exc:
                    error = exc
                else:
                    # The probe runs while the thumbnail is made. Started before the
                    # admission, hundreds of queued paintings' HEADs took the fetcher's
                    # request slots ahead of the admitted paintings' GETs.
                    probe = _start_probe(fetcher, source, search.next)
                    if hit is not None:
                        thumbnail = await pool.make(hit[1])  # closes the body
                    break
            if attempt >= settings.retries:
                raise error
            await fetcher.backoff(attempt, error)  # outside the admission
        recording = await probe if probe is not None else None
    except BaseException:
        if probe is not None and not probe.done():
            probe.cancel()
            with contextlib.suppress(BaseException):
                await probe
        raise
    if hit is None or thumbnail is None:
        return PreparedImage(None, None, None, recording is not None, recording)
    return PreparedImage(
        thumbnail=thumbnail,
        cid=blob_cid(thumbnail.data),
        image_url=source.image_urls[hit[0]],
        recording_exists=recording is not None,
        recording_url=recording,
    )


def _start_probe(
    fetcher: ImageFetcher, source: PaintingSource, found: int
) -> asyncio.Task[str | None] | None:
    """HEAD the recording candidates, the one next to the image first."""
    urls = list(source.recording_urls)
    if not urls:
        return None
    if 0 <= found < len(urls):
        urls.insert(0, urls.pop(found))
    return asyncio.create_task(fetcher.first_recording(urls))
