"""The one call the daemon makes per painting: fetch, shrink, hash, probe the recording."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from syncd.images.cid import blob_cid
from syncd.images.fetch import ImageFetcher
from syncd.images.settings import ImageSettings
from syncd.images.thumbnail import Thumbnail, ThumbnailPool
from syncd.images.urls import painting_source_from_doc


@dataclass(frozen=True)
class PreparedImage:
    """A thumbnail ready for ``uploadBlob``; ``cid`` is what the PDS will answer."""

    thumbnail: Thumbnail
    cid: str
    image_url: str
    recording_exists: bool


async def prepare_painting_blob(
    doc: Mapping[str, Any],
    settings: ImageSettings,
    fetcher: ImageFetcher,
    pool: ThumbnailPool,
) -> PreparedImage:
    """Fetch a painting's image, make its thumbnail in ``pool``, compute the blob CID
    and check (concurrently) whether its recording zip exists.

    Raises a :class:`~syncd.images.errors.ImageError` subclass; check
    ``.permanent`` to decide between skipping the document and retrying later.
    """
    source = painting_source_from_doc(doc, settings)
    probe: asyncio.Task[bool] | None = None
    try:
        async with pool.admit():  # bounds the fetched bodies held before shrinking
            data = await fetcher.fetch_image(source.image_url)
            # The probe runs while the thumbnail is made. Started before the admission,
            # hundreds of queued paintings' HEADs took the fetcher's request slots
            # ahead of the admitted paintings' GETs; inside it, a slow HEAD kept a
            # worker's admission.
            if source.recording_url is not None:
                probe = asyncio.create_task(fetcher.recording_exists(source.recording_url))
            thumbnail = await pool.make(
                data,
                max_side=settings.thumbnail_max_side,
                max_bytes=settings.thumbnail_max_bytes,
                max_pixels=settings.max_pixels,
            )
            del data
        recording_exists = await probe if probe is not None else False
    except BaseException:
        if probe is not None and not probe.done():
            probe.cancel()
            with contextlib.suppress(BaseException):
                await probe
        raise
    return PreparedImage(
        thumbnail=thumbnail,
        cid=blob_cid(thumbnail.data),
        image_url=source.image_url,
        recording_exists=recording_exists,
    )
