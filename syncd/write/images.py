"""Painting images, prepared ahead of their batch (shared by every account writer).

A painting's image work -- find the image at its candidate keys, make the
thumbnail in a boxed worker, hash it, and upload the blob if the account lacks
it and an upload slot is free -- starts when its op is submitted, off the batch
path: the op becomes ready once its image is, so text documents never wait in a
batch for another document's image, and batches go out while thumbnails are
being made.

At most ``budget`` prepared images are held at once (the thumbnails in memory:
bounds memory when the PDS is slow), and ``uploads`` blob uploads run ahead of
batches. An upload never waits for a slot: when all are busy the upload is left
to the painting's batch, so a saturated PDS shares itself between paintings and
text as batches do.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from syncd.images import (
    ImageError,
    ImageFetcher,
    ImageSettings,
    PreparedImage,
    ThumbnailPool,
    prepare_painting_blob,
)
from syncd.pds.errors import XrpcError
from syncd.retry import TooLong
from syncd.write.blobs import Blobs

#: Painting images prepared ahead of their batch or being prepared, in all.
IMAGE_BUDGET = 256
#: Blob uploads ahead of batches in flight at once (not the batches' PDS slots: an
#: upload waiting on a busy PDS must not keep a batch from going out).
UPLOAD_CONCURRENCY = 4


@dataclass
class ImageResult:
    """A painting's image work: the prepared image (or why there is none), and the blob
    link when it was uploaded ahead of the batch."""

    prepared: PreparedImage | None = None
    error: ImageError | None = None
    link: str | None = None
    budgeted: bool = False


class ImageStage:
    def __init__(
        self,
        settings: ImageSettings,
        fetcher: ImageFetcher,
        pool: ThumbnailPool,
        *,
        budget: int = IMAGE_BUDGET,
        uploads: int = UPLOAD_CONCURRENCY,
    ) -> None:
        self.settings = settings
        self._fetcher = fetcher
        self._pool = pool
        self._budget = asyncio.Semaphore(budget)
        self._uploads = asyncio.Semaphore(uploads)

    async def make(self, doc: Mapping[str, Any]) -> ImageResult:
        """The image work alone (no budget, no upload): for a painting whose image was
        not prepared ahead."""
        try:
            prepared = await prepare_painting_blob(doc, self.settings, self._fetcher, self._pool)
        except ImageError as exc:
            return ImageResult(error=exc)
        return ImageResult(prepared=prepared)

    async def prepare(self, collection: str, doc: Mapping[str, Any], blobs: Blobs) -> ImageResult:
        """Ahead of the batch: the image work under the budget, then the upload if the
        account lacks the blob and an upload slot is free (else the batch uploads)."""
        await self._budget.acquire()
        try:
            result = await self.make(doc)
            result.budgeted = True
            prepared = result.prepared
            if (
                prepared is not None
                and prepared.thumbnail is not None
                and prepared.cid is not None
                and not self._uploads.locked()
                and not await blobs.known(prepared.cid)
            ):
                async with self._uploads:
                    try:
                        result.link = await blobs.upload(
                            collection, prepared.thumbnail, prepared.cid
                        )
                    except (XrpcError, TooLong):
                        pass  # the batch uploads, and records the failure
        except BaseException:
            self._budget.release()
            raise
        return result

    def release(self, result: ImageResult) -> None:
        """The op holding ``result`` is finished: its place in the budget is free."""
        if result.budgeted:
            result.budgeted = False
            self._budget.release()
