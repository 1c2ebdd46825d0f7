"""Turn a batch's plans into the records to send: blobs attached, lexicon checked.

Where a painting's record gets its ``thumbnail`` (the blob of the image made
ahead, uploaded if the account lacks it) and ``recordingUrl`` (when the
recording zip exists), and a tape's record its ``video`` (the MP4 streamed and
uploaded ahead: :mod:`syncd.write.streamed`). A painting whose image is missing at every candidate key
is published without ``thumbnail``, as the platform does; a hostile or broken
image (unsafe slug, foreign host, not an image, a bomb) is a dead letter.
"""

from __future__ import annotations

import asyncio
from typing import Any

import structlog

from syncd import lexicon
from syncd.changes import Problem
from syncd.images import Thumbnail
from syncd.lexicon import LexiconError
from syncd.mappings import MappingContext
from syncd.mappings.paintings import Paintings
from syncd.parking import blocked_by
from syncd.pds.errors import XrpcError
from syncd.planner import WRITES, Plan
from syncd.retry import Kind, TooLong, classify
from syncd.write.blobs import Blobs, blob_ref
from syncd.write.images import ImageResult, ImageStage
from syncd.write.streamed import StreamedResult, StreamedStage, attach_streamed

log = structlog.get_logger("syncd.writer")

#: Paintings of one batch whose image is made (or blob uploaded) at once.
BATCH_IMAGE_CONCURRENCY = 8
IMAGE = "image"  # Op.extra key: the op's image task, started when it was submitted
STREAMED = "streamed"  # Op.extra key: the op's streamed-blob task (a tape's MP4)


async def ensure_blob(
    p: Plan, thumb: Thumbnail, cid: str, blobs: Blobs, *, force: bool = False
) -> dict[str, Any] | None:
    """The blob ref for ``thumb``, uploading it unless the account already has it."""
    link = cid
    if force or not await blobs.known(cid):
        try:
            link = await blobs.upload(p.collection, thumb, cid)
        except TooLong as exc:
            assert isinstance(exc.error, XrpcError)
            p.parked = blocked_by(exc.error, exc.wait)
            return None
        except XrpcError as exc:
            if classify(exc).kind is Kind.ACCOUNT:
                p.parked = blocked_by(exc)
            else:
                p.failed = Problem("dead", "blob_rejected", exc.reason, retryable=exc.status == 413)
            return None
    p.blob_cid = link
    return blob_ref(thumb, link)


async def attach_image(p: Plan, result: ImageResult, blobs: Blobs, ctx: MappingContext) -> None:
    """Give a painting's plan its thumbnail and recording URL (or why it has none)."""
    if result.error is not None:
        exc = result.error
        p.failed = Problem("dead", exc.reason, str(exc)[:500], retryable=not exc.permanent)
        log.warning(
            "painting_image_failed",
            collection=p.collection,
            doc=p.key,
            reason=exc.reason,
            permanent=exc.permanent,
        )
        return
    prepared = result.prepared
    assert prepared is not None and p.op.draft is not None
    extra: dict[str, Any] = {}
    if prepared.recording_exists:
        extra["recordingUrl"] = Paintings.recording_url(p.op.draft.fields, ctx)
    p.extra["record_extra"] = extra
    if prepared.thumbnail is None or prepared.cid is None:
        # Missing at every candidate key: published without a thumbnail (the platform's
        # own behaviour); `reconcile --apply` attaches it once the image exists.
        p.extra["image_missing"] = True
        log.info("painting_image_missing", collection=p.collection, doc=p.key)
        return
    p.extra["thumbnail"] = prepared.thumbnail
    if result.link is not None and result.link in blobs.uploaded:
        p.blob_cid = result.link  # uploaded ahead of the batch, and not forgotten since
        extra["thumbnail"] = blob_ref(prepared.thumbnail, result.link)
        return
    blob = await ensure_blob(p, prepared.thumbnail, prepared.cid, blobs)
    if blob is not None:
        extra["thumbnail"] = blob


async def build_records(
    plans: list[Plan],
    blobs: Blobs,
    images: ImageStage | None,
    ctx: MappingContext,
    streamed: StreamedStage | None = None,
) -> None:
    """Attach images and streamed blobs, then build and validate every record the batch
    writes."""
    writes = [p for p in plans if p.action in WRITES and p.failed is None]
    tapes = [p for p in writes if p.op.draft is not None and p.op.draft.blob is not None]
    for p in tapes:
        assert streamed is not None and p.op.draft is not None and p.op.draft.blob is not None
        prep: asyncio.Future[StreamedResult] | None = p.op.extra.get(STREAMED)
        if prep is None:
            # Not prepared ahead (the writer guessed it would not write): prepare now. The
            # task stays on the op, so finishing the op releases the spool.
            prep = asyncio.ensure_future(
                streamed.prepare(p.collection, p.op.draft.blob, blobs, ahead=False)
            )
            p.op.extra[STREAMED] = prep
        await attach_streamed(p, await prep, streamed, blobs)
    paintings = [p for p in writes if p.op.draft is not None and p.op.draft.image is not None]
    if paintings:
        sem = asyncio.Semaphore(BATCH_IMAGE_CONCURRENCY)

        async def attach(p: Plan) -> None:
            async with sem:
                task: asyncio.Task[ImageResult] | None = p.op.extra.get(IMAGE)
                if task is not None:
                    result = task.result()
                else:
                    assert images is not None and p.op.change.doc is not None
                    result = await images.make(p.op.change.doc)
                await attach_image(p, result, blobs, ctx)

        await asyncio.gather(*(attach(p) for p in paintings))
    for p in writes:
        if p.failed is not None or p.parked is not None:
            continue
        draft = p.op.draft
        assert draft is not None
        record: dict[str, Any] = {"$type": draft.nsid, **draft.fields}
        record.update(p.extra.get("record_extra", {}))
        try:
            lexicon.validate(draft.nsid, record)
        except LexiconError as exc:
            p.failed = Problem("dead", "lexicon_invalid", str(exc))
            continue
        p.record = record
