"""Streamed blobs (tape MP4s), prepared ahead of their batch and uploaded apart from it.

The seam: a draft with a ``blob`` (:class:`~syncd.mappings.base.StreamedBlob`) names
where its bytes are; this stage turns it into a CID and a stream. When the writer is
given an op whose record it will write, :meth:`StreamedStage.prepare` starts at once:

1. a place among the ``prepared_max`` blobs held (each one a spool file on disk: this
   bounds the disk, as nothing is held in memory);
2. the fetch (:mod:`syncd.media.fetch`): allowed origins only, size and type checked
   against the lexicon and the PDS's upload limit, spooled while its CID is computed;
3. when the account does not have that CID yet, the upload: at most
   ``upload_concurrency`` at once and ``upload_bytes_in_flight`` bytes in flight, and
   **never** inside the batch's PDS slot (``pds.account_concurrency``), so one account
   uploading a 50 MB tape holds up no other account's text writes; a blob already
   uploaded (the same bytes: the same CID) is never uploaded again.

The op becomes ready when this is done; its batch only attaches the blob ref
(:func:`attach_streamed`). What failed becomes the plan's dead letter (a 413 names
the PDS's upload limit and teaches it: :class:`~syncd.media.limits.UploadLimit`), or
parks the account when the account cannot write.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import structlog

from syncd import metrics
from syncd.changes import Problem
from syncd.images.errors import ImageError
from syncd.images.fetch import ImageFetcher
from syncd.mappings.base import StreamedBlob
from syncd.media.fetch import FetchLimits, fetch_to_spool
from syncd.media.limits import ByteBudget, UploadLimit
from syncd.media.spool import Spool
from syncd.parking import Blocked, blocked_by
from syncd.pds.errors import XrpcError
from syncd.planner import Plan
from syncd.retry import Kind, TooLong, classify
from syncd.write.blobs import Blobs

log = structlog.get_logger("syncd.writer")


@dataclass
class StreamedResult:
    """A streamed blob's preparation: the spool and its CID, the blob ref once the account
    has it (``link``: uploaded now or before), or why there is none (``error``: a dead
    letter; ``parked``: the account cannot write now)."""

    blob: StreamedBlob
    spool: Spool | None = None
    link: str | None = None
    mime_type: str = ""
    size: int = 0
    uploaded: bool = False  # uploaded by this preparation (not known before)
    error: Problem | None = None
    parked: Blocked | None = None
    held: bool = False  # holds a place among the prepared blobs
    extra: dict[str, Any] = field(default_factory=dict)

    def ref(self) -> dict[str, Any]:
        assert self.link is not None
        return {
            "$type": "blob",
            "ref": {"$link": self.link},
            "mimeType": self.mime_type,
            "size": self.size,
        }


@dataclass(frozen=True)
class StreamedSettings:
    upload_concurrency: int = 2
    upload_bytes_in_flight: int = 104_857_600
    prepared_max: int = 4
    retries: int = 4
    spool_directory: str | None = None
    upload_bytes_per_second: int = 0  # per upload; 0: as fast as the PDS takes it


class StreamedStage:
    def __init__(
        self, fetcher: ImageFetcher, limit: UploadLimit, settings: StreamedSettings
    ) -> None:
        self._fetcher = fetcher
        self.limit = limit
        self.settings = settings
        self._prepared = asyncio.Semaphore(settings.prepared_max)
        self._uploads = asyncio.Semaphore(settings.upload_concurrency)
        self._bytes = ByteBudget(settings.upload_bytes_in_flight)
        self._held = 0

    async def prepare(
        self, collection: str, blob: StreamedBlob, blobs: Blobs, *, ahead: bool = True
    ) -> StreamedResult:
        """Fetch, hash and (when the account lacks it) upload ``blob``. Failures are on the
        result; only cancellation and shutdown (``Abandoned``) raise.

        ``ahead``: prepared ahead of the batch, under the ``prepared_max`` bound. A batch
        that finds an op not prepared ahead (rare: the writer guessed it would not write)
        prepares it with ``ahead=False``: it already holds a PDS slot, and waiting there
        for a place held by ops that wait for PDS slots could never end."""
        result = StreamedResult(blob)
        if ahead:
            await self._prepared.acquire()
            result.held = True
            self._held += 1
            metrics.BLOBS_PREPARED.set(self._held)
        try:
            await self._fetch(result)
            if result.spool is not None and result.error is None:
                cid = result.spool.cid
                if await blobs.known(cid):
                    result.link = cid  # the same bytes are on the PDS already
                else:
                    await self.upload(collection, result, blobs)
        except BaseException:
            self.release(result)
            raise
        return result

    async def _fetch(self, result: StreamedResult) -> None:
        blob = result.blob
        max_bytes, why = self.limit.effective(blob.max_bytes)
        limits = FetchLimits(max_bytes, why, self.settings.spool_directory)
        started = time.monotonic()
        try:
            spool = await fetch_to_spool(self._fetcher, blob, limits, retries=self.settings.retries)
        except ImageError as exc:
            result.error = Problem("dead", exc.reason, str(exc)[:500], retryable=not exc.permanent)
            log.warning("blob_fetch_failed", url_reason=exc.reason, permanent=exc.permanent)
            return
        result.spool, result.size = spool, spool.size
        result.mime_type = blob.accept[0]
        log.info(
            "blob_fetched",
            cid=spool.cid,
            bytes=spool.size,
            seconds=round(time.monotonic() - started, 2),
        )

    async def upload(
        self, collection: str, result: StreamedResult, blobs: Blobs, *, force: bool = False
    ) -> None:
        """Upload the spooled blob (bounded apart from the text writes); the outcome is on
        ``result``. ``force``: even if the account is thought to have it (it was gone)."""
        spool = result.spool
        assert spool is not None
        cid = spool.cid
        if not force and cid in blobs.uploaded:
            result.link = cid
            return
        bound = self.limit.bound
        if bound is not None and spool.size > bound:
            result.error = self._over_limit(spool.size, result.blob)
            return
        waited = time.monotonic()
        async with self._uploads:
            await self._bytes.acquire(spool.size)
            metrics.BLOB_UPLOADS_IN_FLIGHT.inc()
            started = time.monotonic()
            try:
                body = spool.paced(self.settings.upload_bytes_per_second)
                answer = await blobs.upload_stream(collection, body, result.blob.accept[0], cid)
            except TooLong as exc:
                assert isinstance(exc.error, XrpcError)
                result.parked = blocked_by(exc.error, exc.wait)
                return
            except XrpcError as exc:
                if classify(exc).kind is Kind.ACCOUNT:
                    result.parked = blocked_by(exc)
                elif exc.status == 413:
                    self.limit.refused(spool.size)
                    result.error = self._over_limit(spool.size, result.blob)
                else:
                    detail = f"{exc.error}: {exc.message}"[:500]
                    result.error = Problem("dead", "blob_rejected", detail)
                return
            finally:
                metrics.BLOB_UPLOADS_IN_FLIGHT.dec()
                self._bytes.release(spool.size)
        self.limit.took(spool.size)
        result.link = str(answer["ref"]["$link"])
        mime, size = answer.get("mimeType"), answer.get("size")
        result.mime_type = mime if isinstance(mime, str) else result.mime_type
        result.size = size if isinstance(size, int) and not isinstance(size, bool) else spool.size
        result.uploaded = True
        log.info(
            "blob_uploaded",
            collection=collection,
            cid=result.link,
            bytes=result.size,
            waited_seconds=round(started - waited, 2),
            seconds=round(time.monotonic() - started, 2),
        )

    def _over_limit(self, size: int, blob: StreamedBlob) -> Problem:
        # Not retried by itself: a PDS's limit changes only when its operator changes it.
        return Problem("dead", "blob_over_pds_limit", self.limit.refusal(size, blob.max_bytes))

    def release(self, result: StreamedResult) -> None:
        """The op holding ``result`` is finished: its spool is deleted, its place is free."""
        if result.spool is not None:
            result.spool.close()
        if result.held:
            result.held = False
            self._held -= 1
            metrics.BLOBS_PREPARED.set(self._held)
            self._prepared.release()


async def attach_streamed(
    p: Plan, result: StreamedResult, stage: StreamedStage, blobs: Blobs
) -> None:
    """Give ``p``'s record its streamed blob (or its failure). The upload was done ahead;
    if the account forgot the blob since (a record that referenced it was deleted), it
    is uploaded again here."""
    if result.parked is not None:
        p.parked = result.parked
        return
    if result.error is not None:
        p.failed = result.error
        log.warning(
            "streamed_blob_failed", collection=p.collection, doc=p.key, reason=result.error.reason
        )
        return
    if result.link is None or (
        result.link not in blobs.uploaded and not await blobs.known(result.link)
    ):
        await stage.upload(p.collection, result, blobs, force=True)
        if result.parked is not None or result.error is not None:
            await attach_streamed(p, result, stage, blobs)
            return
    assert result.link is not None
    p.blob_cid = result.link
    p.extra["record_extra"] = {**p.extra.get("record_extra", {}), result.blob.field: result.ref()}
    p.extra["streamed"] = result
