"""One writer per account: batches of changes become one ``applyWrites`` call.

A writer takes its queue in order, so changes to one document are applied in
order. A batch never holds the same document twice. For each batch:

1. plan every op against the ledger (:mod:`syncd.planner`);
2. attach painting thumbnails (uploading the blobs the account lacks);
3. validate each record against its lexicon;
4. mark the writes pending in the ledger (so a crash right after sending is
   recovered with idempotent calls), send them (``applyWrites``, falling back to
   single ``putRecord``/``deleteRecord`` calls when a batch is refused), and
5. commit the results, write ``atproto.rkey`` back to MongoDB, and complete the
   changes' tickets so the resume position can advance. The write-back runs
   while the next batch is sent (at most one behind), not before it.

A painting's image work (fetch, thumbnail, blob upload) starts when its op is
submitted, off the batch path: the op joins the queue only once its image is
ready, so text documents never wait in a batch for another document's image,
and batches go out while thumbnails are being made. Ops of one document still
join the queue in order (a later op waits behind an earlier one still being
prepared). At most ``IMAGE_BUDGET`` prepared images are held per engine.
"""

from __future__ import annotations

import asyncio
import weakref
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog
from pymongo import UpdateOne
from pymongo.errors import BulkWriteError, PyMongoError

from syncd import lexicon, metrics
from syncd.changes import Op, Problem, record_outcome
from syncd.ids import ref_for
from syncd.images.errors import ImageError
from syncd.images.pipeline import PreparedImage, prepare_painting_blob
from syncd.images.thumbnail import Thumbnail
from syncd.lexicon import LexiconError
from syncd.mappings.base import when_of
from syncd.mappings.paintings import Paintings
from syncd.pds.errors import AccountUnavailableError, AuthError, RateLimitedError, XrpcError
from syncd.pds.ratelimit import writes_that_fit
from syncd.pds.repo import create_write, delete_write, update_write
from syncd.pds.sessions import Account
from syncd.planner import (
    BATCHABLE,
    CHECK,
    CREATE,
    DELETE,
    DELETE_UNCERTAIN,
    FOREIGN,
    FREE,
    NONE,
    OURS,
    UPDATE,
    UPSERT,
    WRITES,
    KeyCheck,
    Plan,
    plan,
)
from syncd.retry import Abandoned, Kind, classify, pause_for, retrying, sleep_or_stop, with_retries
from syncd.rkey import free_key, named_key
from syncd.state import LedgerEntry

if TYPE_CHECKING:
    from syncd.engine import Engine

log = structlog.get_logger("syncd.writer")
# The account cannot write right now (bad credentials, deactivated, taken down):
# its documents are dead-lettered as retryable, other accounts carry on.
ACCOUNT_ERRORS = (AuthError, AccountUnavailableError)
#: Painting images prepared ahead of their batch (thumbnail in memory, <= 100 KB
#: each) or being prepared, per engine: bounds memory when the PDS is slow.
IMAGE_BUDGET = 256
#: Blob uploads ahead of batches in flight at once, per engine. Not the batches'
#: PDS slots: an upload waiting on a busy PDS must not keep a batch from going out
#: (holding a slot each, 25 paintings/s starved the writers of slots). When all are
#: busy the upload is left to the painting's batch instead of waiting: a saturated
#: PDS then shares itself between paintings and text as batches do, rather than
#: letting paintings queue behind a few upload slots.
UPLOAD_CONCURRENCY = 4
#: Paintings of one batch whose blob is uploaded (or image made) at once: more only
#: queue in the HTTP pool (the PDS does one at a time anyway).
BATCH_UPLOAD_CONCURRENCY = 8
_IMAGE = "image"  # Op.extra key: the op's image task


@dataclass
class _Limits:
    budget: asyncio.Semaphore
    uploads: asyncio.Semaphore


_limits: weakref.WeakKeyDictionary[Any, _Limits] = weakref.WeakKeyDictionary()


def _engine_limits(engine: Engine) -> _Limits:
    limits = _limits.get(engine)
    if limits is None:
        limits = _limits[engine] = _Limits(
            asyncio.Semaphore(IMAGE_BUDGET), asyncio.Semaphore(UPLOAD_CONCURRENCY)
        )
    return limits


def _image_budget(engine: Engine) -> asyncio.Semaphore:
    return _engine_limits(engine).budget


@dataclass
class _Image:
    """A painting's image work: the thumbnail (or why there is none), and the blob
    link when it was uploaded ahead of the batch."""

    prepared: PreparedImage | None = None
    error: ImageError | None = None
    link: str | None = None
    budgeted: bool = False


def _blob_missing(exc: XrpcError) -> bool:
    return exc.status == 400 and (
        exc.error == "BlobNotFound"
        or ("blob" in exc.message.lower() and "not found" in exc.message.lower())
    )


def _count_error(collection: str) -> Any:
    def count(exc: XrpcError) -> None:
        metrics.WRITE_ERRORS.labels(collection=collection, reason=exc.reason).inc()

    return count


class AccountWriter:
    def __init__(self, engine: Engine, account: Account) -> None:
        self.engine = engine
        self.account = account
        self.queue: deque[Op] = deque()  # ready to be sent, in order
        self._wake = asyncio.Event()
        self._uploaded: set[str] = set()  # blob CIDs uploaded by this process
        # Ops waiting for their own image, or behind an earlier op of the same document
        # that is: (collection, key) -> ops in order; the first one is being prepared.
        self._gated: dict[tuple[str, str], deque[Op]] = {}
        self._images: set[asyncio.Task[_Image]] = set()
        self._writeback: asyncio.Task[None] | None = None
        self.task: asyncio.Task[None] | None = None

    def submit(self, op: Op) -> None:
        if self._wants_image(op):
            task = asyncio.create_task(self._prepare_image(op), name="painting-image")
            op.extra[_IMAGE] = task
            self._images.add(task)
            task.add_done_callback(self._images.discard)
        ident = (op.change.collection, op.change.key)
        if _IMAGE in op.extra:
            op.extra[_IMAGE].add_done_callback(lambda _: self._image_done(ident))
        gated = self._gated.get(ident)
        if gated is not None:
            gated.append(op)  # after the earlier op of this document
        elif _IMAGE in op.extra:
            self._gated[ident] = deque([op])
        else:
            self.queue.append(op)
            self._wake.set()

    def _wants_image(self, op: Op) -> bool:
        """True when ``op`` is a painting this account will (most likely) write: its
        image work can start now. The batch plans again; a wrong guess costs only
        the work (a missed one is done in the batch)."""
        draft = op.draft
        if draft is None or draft.image is None or op.desired is None:
            return False
        if op.desired.did != self.account.did or op.change.doc is None:
            return False
        entry = self.engine.store.ledger_get(op.change.collection, op.change.key)
        # CHECK: the document names a key to adopt; it will almost always be written.
        return plan(op, self.account.did, entry).action in (*WRITES, CHECK)

    def _image_done(self, ident: tuple[str, str]) -> None:
        """One of the document's images is ready: release its ops that now are, in order."""
        ops = self._gated.get(ident)
        if ops is None:
            return
        while ops and (_IMAGE not in ops[0].extra or ops[0].extra[_IMAGE].done()):
            self.queue.append(ops.popleft())
        if not ops:
            del self._gated[ident]
        self._wake.set()

    def start(self) -> None:
        self.task = asyncio.create_task(self._run(), name=f"writer:{self.account.did}")

    async def _run(self) -> None:
        try:
            await self._loop()
        finally:
            for task in list(self._images):
                task.cancel()
            if self._writeback is not None:
                self._writeback.cancel()
                if self._writeback.done() and not self._writeback.cancelled():
                    self._writeback.exception()  # retrieved (Abandoned at shutdown)

    async def _loop(self) -> None:
        limit = self.engine.config.pds.max_writes_per_call
        while True:
            if not self.queue:
                self._wake.clear()
                await self._wake.wait()
                continue
            batch: list[Op] = []
            plans: list[Plan] | None = None
            try:
                async with self.engine.pds_slots:
                    # Take the batch once a slot is ours: what queued up while waiting
                    # rides in this call instead of the next (fewer, fuller applyWrites).
                    seen: set[tuple[str, str]] = set()
                    while self.queue and len(batch) < limit:
                        op = self.queue[0]
                        ident = (op.change.collection, op.change.key)
                        if ident in seen:
                            break
                        seen.add(ident)
                        batch.append(self.queue.popleft())
                    self.engine.queued_ops -= len(batch)
                    plans = await self.process(batch)
            except Abandoned:
                # Shutdown: the batch is not applied, so its changes stay incomplete and
                # the saved position stays before them; the next start replays them.
                return
            except Exception as exc:  # a bug must not stall the stream or lose the document
                log.exception("batch_failed", did=self.account.did, ops=len(batch))
                with self.engine.store.transaction():
                    for op in batch:
                        self.engine.store.dead_letter(
                            op.change.collection,
                            op.change.key,
                            "internal_error",
                            f"{type(exc).__name__}: {exc}"[:500],
                            retryable=True,
                        )
                self.engine.refresh_dead_letter_gauge()
            if plans is None:
                self._finish(batch)
                continue
            previous = self._writeback
            if previous is not None:
                try:
                    await previous  # at most one write-back behind the batches
                except Abandoned:
                    return
            self._writeback = asyncio.create_task(self._write_back_then_finish(batch, plans))

    async def _write_back_then_finish(self, batch: list[Op], plans: list[Plan]) -> None:
        """The records are written: set ``atproto.rkey`` in MongoDB, then complete the
        changes (so the saved position never passes a document not written back)."""
        try:
            await self._write_back(plans)
        except Abandoned:
            raise  # shutdown: the changes stay incomplete and are replayed
        except Exception:  # a bug: the records are written, the next change retries
            log.exception("writeback_failed_unexpectedly", did=self.account.did)
        self._finish(batch)

    def _finish(self, batch: list[Op]) -> None:
        for op in batch:
            self._release_image(op)
            self.engine.router.finished(op, self.account.did)
            op.change.ticket.complete()

    def _release_image(self, op: Op) -> None:
        task = op.extra.pop(_IMAGE, None)
        if task is not None and task.done() and not task.cancelled():
            if task.exception() is None and task.result().budgeted:
                _image_budget(self.engine).release()

    # -- one batch -----------------------------------------------------------
    async def process(self, ops: list[Op]) -> list[Plan]:
        """Plan, prepare, send and commit one batch; returns the plans to write back."""
        store = self.engine.store
        did = self.account.did
        entries = [store.ledger_get(op.change.collection, op.change.key) for op in ops]
        plans = [plan(op, did, entry) for op, entry in zip(ops, entries, strict=True)]
        if any(p.action == CHECK for p in plans):
            plans = await self._plan_checked(plans, entries)
        self._resolve_key_collisions(plans)
        await self._prepare_records(plans)
        to_send = [p for p in plans if p.action != NONE and p.failed is None]
        if to_send:
            with store.transaction():
                for p in to_send:
                    self._mark_pending(p)
            await self._send(to_send)
        self._commit(plans)
        return plans

    async def _plan_checked(
        self, plans: list[Plan], entries: list[LedgerEntry | None]
    ) -> list[Plan]:
        """Look at the keys documents name (a few at a time), then plan those again."""
        sem = asyncio.Semaphore(BATCH_UPLOAD_CONCURRENCY)

        async def one(p: Plan, entry: LedgerEntry | None) -> Plan:
            if p.action != CHECK:
                return p
            async with sem:
                try:
                    check = await self._check_key(p)
                except ACCOUNT_ERRORS as exc:
                    self._account_failed([p], exc)
                    return p
                except XrpcError as exc:
                    p.failed = Problem("dead", "key_check_failed", exc.reason, retryable=True)
                    return p
            again = plan(p.op, self.account.did, entry, {check.rkey: check})
            if again.refused_key is not None:
                self._refused(again, again.refused_key)
            return again

        return list(await asyncio.gather(*(one(p, e) for p, e in zip(plans, entries, strict=True))))

    async def _check_key(self, p: Plan) -> KeyCheck:
        """Whose record is at the key ``p``'s document names (see :mod:`syncd.planner`)."""
        engine = self.engine
        did = self.account.did
        holder = engine.store.rkey_owner(did, p.nsid, p.rkey)
        if holder not in (None, p.key):
            return KeyCheck(p.rkey, FOREIGN, detail=f"the ledger gives it to {holder}")
        found = await with_retries(
            lambda: engine.repo.get_record(did, p.nsid, p.rkey),
            stop=engine.stopping,
            cap=engine.config.pds.retry_max_seconds,
            on_error=_count_error(p.collection),
        )
        if found is None:
            return KeyCheck(p.rkey, FREE)
        raw = found.get("value")
        value: dict[str, Any] = raw if isinstance(raw, dict) else {}
        ref = ref_for(p.op.change.doc_id)
        # The record says whose it is: `ref`, or `mongoId` on the earliest mood records.
        named = value.get("ref") if "ref" in value else value.get("mongoId")
        if ref is not None and named == ref:
            return KeyCheck(p.rkey, OURS, cid=found.get("cid"))
        return KeyCheck(p.rkey, FOREIGN, detail=f"its record is document {str(named)[:40]!r}'s")

    def _refused(self, p: Plan, check: KeyCheck) -> None:
        metrics.REFUSED_KEYS.labels(collection=p.collection).inc()
        log.warning(
            "named_key_refused",
            collection=p.collection,
            doc=p.key,
            did=self.account.did,
            rkey=check.rkey,
            detail=check.detail,
        )

    def _resolve_key_collisions(self, plans: list[Plan]) -> None:
        """Give a new record another derived key when its key is already taken here
        (two documents in one millisecond, or two naming the same key in one batch)."""
        taken: set[tuple[str, str]] = set()
        store = self.engine.store
        did = self.account.did
        for p in plans:
            if p.action not in WRITES or p.failed is not None:
                continue
            doc = p.op.change.doc
            assert doc is not None
            named = named_key(doc) == p.rkey
            if named and (p.nsid, p.rkey) in taken:
                # Another document of this batch took the key this one names first.
                self._refused(p, KeyCheck(p.rkey, FOREIGN, detail="named by another document"))
                named = False
                if p.retire is not None:
                    p.rkey, p.retire = p.retire, None
                    p.action = UPDATE if p.retire_certain else UPSERT
                else:
                    p.action = CREATE
            if p.action == CREATE and not named:
                nsid, key = p.nsid, p.key

                def held(rkey: str, nsid: str = nsid, key: str = key) -> bool:
                    return (nsid, rkey) in taken or store.rkey_owner(did, nsid, rkey) not in (
                        None,
                        key,
                    )

                p.rkey = free_key(when_of(doc), p.op.change.doc_id, held)
            taken.add((p.nsid, p.rkey))

    async def _prepare_records(self, plans: list[Plan]) -> None:
        writes = [p for p in plans if p.action in WRITES]
        paintings = [p for p in writes if p.op.draft is not None and p.op.draft.image is not None]
        if paintings:
            # Mostly ready already; what is left (uploads the PDS was too busy to take
            # ahead, images the submit-time guess missed) goes a few at a time.
            sem = asyncio.Semaphore(BATCH_UPLOAD_CONCURRENCY)

            async def attach(p: Plan) -> None:
                async with sem:
                    await self._attach_thumbnail(p)

            await asyncio.gather(*(attach(p) for p in paintings))
        for p in writes:
            if p.failed is not None:
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
        for p in writes:
            if p.failed is not None and not p.failed.retryable:
                # The document can no longer produce a valid record: remove the old one.
                self._to_delete_after_failure(p)

    def _to_delete_after_failure(self, p: Plan) -> None:
        """``p``'s document can no longer produce a valid record: delete the records of it
        that exist here (syncd's, and the one it names when that is known to be its own)."""
        entry = self.engine.store.ledger_get(p.collection, p.key)
        mine = entry if entry is not None and entry.did == self.account.did else None
        known = p.rkey if p.action == UPDATE else None  # a record checked to be this one's
        p.problem, p.failed, p.record = p.failed, None, None
        p.retire, p.retire_certain = None, False
        if mine is not None:
            p.action = DELETE_UNCERTAIN if mine.pending else DELETE
            p.nsid, p.rkey, p.writeback = mine.nsid, mine.rkey, "unset"
            p.previous_blob_cid = mine.blob_cid
            if known is not None and known != mine.rkey:
                p.retire, p.retire_certain = known, True
        elif known is not None:
            p.action, p.owns_ledger, p.writeback = DELETE, False, "unset"
        else:
            p.action, p.writeback = NONE, None

    async def _prepare_image(self, op: Op) -> _Image:
        """Ahead of the batch: fetch and shrink the image, and upload the blob if the
        account lacks it and one of the ``UPLOAD_CONCURRENCY`` upload slots is free.
        Otherwise, and after a failed upload, the batch uploads (and records failures)."""
        engine = self.engine
        await _image_budget(engine).acquire()
        image = _Image(budgeted=True)
        try:
            image = await self._make_image(op)
            image.budgeted = True
            prepared = image.prepared
            uploads = _engine_limits(engine).uploads
            if prepared is not None and not self._has_blob(prepared.cid) and not uploads.locked():
                async with uploads:
                    try:
                        image.link = await self._upload(
                            op.change.collection, prepared.thumbnail, prepared.cid
                        )
                    except XrpcError:
                        pass
        except BaseException:
            if image.budgeted:
                _image_budget(engine).release()
            raise
        return image

    async def _make_image(self, op: Op) -> _Image:
        engine = self.engine
        doc = op.change.doc
        assert doc is not None
        try:
            prepared = await prepare_painting_blob(
                doc, engine.config.images, engine.image_fetcher, engine.thumbnails
            )
        except ImageError as exc:
            return _Image(error=exc)
        return _Image(prepared=prepared)

    async def _attach_thumbnail(self, p: Plan) -> None:
        engine = self.engine
        task: asyncio.Task[_Image] | None = p.op.extra.get(_IMAGE)
        image = task.result() if task is not None else await self._make_image(p.op)
        if image.error is not None:
            exc = image.error
            p.failed = Problem("dead", exc.reason, str(exc)[:500], retryable=not exc.permanent)
            log.warning(
                "painting_image_failed",
                collection=p.collection,
                doc=p.key,
                reason=exc.reason,
                permanent=exc.permanent,
            )
            return
        prepared = image.prepared
        assert prepared is not None
        p.extra["thumbnail"] = prepared.thumbnail
        if image.link is not None and image.link in self._uploaded:
            p.blob_cid = image.link  # uploaded ahead of the batch, and not forgotten since
            blob = self._blob_ref(prepared.thumbnail, image.link)
        else:
            maybe = await self._ensure_blob(p, prepared.thumbnail, prepared.cid)
            if maybe is None:
                return
            blob = maybe
        extra: dict[str, Any] = {"thumbnail": blob}
        if prepared.recording_exists:
            assert p.op.draft is not None
            extra["recordingUrl"] = Paintings.recording_url(p.op.draft.fields, engine.mapping_ctx)
        p.extra["record_extra"] = extra

    @staticmethod
    def _blob_ref(thumb: Thumbnail, link: str) -> dict[str, Any]:
        return {
            "$type": "blob",
            "ref": {"$link": link},
            "mimeType": thumb.mime_type,
            "size": len(thumb.data),
        }

    def _has_blob(self, cid: str) -> bool:
        return cid in self._uploaded or self.engine.store.blob_known(self.account.did, cid)

    async def _upload(self, collection: str, thumb: Thumbnail, cid: str) -> str:
        """uploadBlob (with retries); returns the link the PDS answered."""
        engine = self.engine
        uploaded = await with_retries(
            lambda: engine.repo.upload_blob(self.account, thumb.data, thumb.mime_type),
            stop=engine.stopping,
            on_error=_count_error(collection),
        )
        link = uploaded.get("ref", {}).get("$link")
        if link and link != cid:
            log.warning("blob_cid_mismatch", computed=cid, pds=link)
        link = str(link or cid)
        self._uploaded.add(link)
        return link

    async def _ensure_blob(
        self, p: Plan, thumb: Thumbnail, cid: str, *, force: bool = False
    ) -> dict[str, Any] | None:
        """The blob ref for ``thumb``, uploading it unless this account already has it."""
        link = cid
        if force or not self._has_blob(cid):
            try:
                link = await self._upload(p.collection, thumb, cid)
            except ACCOUNT_ERRORS as exc:
                p.failed = Problem("dead", "account_unavailable", exc.error, retryable=True)
                return None
            except XrpcError as exc:
                p.failed = Problem("dead", "blob_rejected", exc.reason, retryable=exc.status == 413)
                return None
        p.blob_cid = link
        return self._blob_ref(thumb, link)

    def _mark_pending(self, p: Plan) -> None:
        store = self.engine.store
        if p.action in WRITES and p.retire is None:
            store.ledger_put(
                p.collection,
                p.key,
                did=self.account.did,
                nsid=p.nsid,
                rkey=p.rkey,
                cid=None,
                fingerprint=None,
                blob_cid=p.previous_blob_cid,
                pending=True,
            )
        elif p.owns_ledger:
            # Deletes, and moves: the row keeps the old key (pending) until the commit, so
            # a crash in between still knows the record to delete; the new key is the
            # one the document names, so it is known again when the change replays.
            store.ledger_mark_pending(p.collection, p.key)

    # -- sending -------------------------------------------------------------
    @staticmethod
    def _batchable(p: Plan) -> bool:
        return p.action in BATCHABLE and (p.retire is None or p.retire_certain)

    @staticmethod
    def _kinds(p: Plan) -> list[str]:
        """The ``applyWrites`` operations ``p`` sends (create 3, update 2, delete 1 points)."""
        kinds = {CREATE: "create", UPDATE: "update", DELETE: "delete"}
        main = [kinds.get(p.action, "create")]
        return [*main, "delete"] if p.retire is not None else main

    async def _send(self, plans: list[Plan]) -> None:
        batchable = [p for p in plans if self._batchable(p)]
        singles = [p for p in plans if not self._batchable(p)]
        limit = self.engine.config.pds.max_writes_per_call
        while batchable:
            # A chunk of at most `limit` writes (a move is two).
            n, writes = 0, 0
            while n < len(batchable) and writes + len(self._kinds(batchable[n])) <= limit:
                writes += len(self._kinds(batchable[n]))
                n += 1
            chunk, batchable = batchable[: max(n, 1)], batchable[max(n, 1) :]
            leftover = await self._apply(chunk)
            singles.extend(leftover)
        if singles:
            sem = asyncio.Semaphore(8)

            async def one(p: Plan) -> None:
                async with sem:
                    await self._single(p)

            await asyncio.gather(*(one(p) for p in singles))

    async def _apply(self, chunk: list[Plan]) -> list[Plan]:
        """Send one applyWrites; returns the plans that must be sent one by one."""
        engine = self.engine
        writes: list[dict[str, Any]] = []
        main_index: list[int] = []
        for p in chunk:
            main_index.append(len(writes))
            if p.action == CREATE:
                assert p.record is not None
                writes.append(create_write(p.nsid, p.rkey, p.record))
            elif p.action == UPDATE:
                assert p.record is not None
                writes.append(update_write(p.nsid, p.rkey, p.record))
            else:
                writes.append(delete_write(p.nsid, p.rkey))
            if p.retire is not None:
                writes.append(delete_write(p.nsid, p.retire))
        attempt = 0
        while True:
            if engine.stopping.is_set():
                raise Abandoned()
            budget = engine.repo.write_budget(self.account.did)
            if budget is not None:
                # The last write said how many points are left: a batch costing more
                # would be refused whole (and spend them). Send what they pay for; when
                # nothing fits, send anyway and let the 429 say how long to wait.
                fit = self._fits(budget.remaining, chunk)
                if 0 < fit < len(chunk):
                    log.info(
                        "batch_sized_to_write_budget",
                        did=self.account.did,
                        points_left=budget.remaining,
                        writes=len(chunk),
                        sending=fit,
                    )
                    head = await self._apply(chunk[:fit])
                    return head + await self._apply(chunk[fit:])
            try:
                results = await engine.repo.apply_writes(self.account, writes)
            except XrpcError as exc:
                self._count(chunk, exc)
                verdict = classify(exc)
                if verdict.kind is Kind.ACCOUNT:
                    self._account_failed(chunk, exc)
                    return []
                if verdict.kind is Kind.REFUSED:
                    # The PDS refuses a batch with a create on an existing key (or an
                    # update/delete of a missing one) with a 500 naming no write; a 4xx
                    # names none either. Idempotent single calls settle both.
                    log.warning(
                        "apply_writes_refused",
                        did=self.account.did,
                        status=exc.status,
                        error=exc.error,
                        writes=len(chunk),
                    )
                    for p in chunk:
                        p.action = UPSERT if p.action in (CREATE, UPDATE) else DELETE_UNCERTAIN
                        p.retire_certain = False
                    return chunk
                if isinstance(exc, RateLimitedError):
                    fit = self._fits(exc.remaining, chunk)
                    if 0 < fit < len(chunk):
                        # The budget left still takes part of the batch: send that now.
                        head = await self._apply(chunk[:fit])
                        return head + await self._apply(chunk[fit:])
                wait = pause_for(verdict, attempt, cap=engine.config.pds.retry_max_seconds)
                attempt += 1
                await sleep_or_stop(wait, engine.stopping)
                continue
            for p, i in zip(chunk, main_index, strict=True):
                if p.action in WRITES:
                    p.uri, p.cid = results[i].get("uri"), results[i].get("cid")
            return []

    def _fits(self, points: int | None, chunk: list[Plan]) -> int:
        """How many of ``chunk``'s plans (each whole: a move is two writes) ``points`` pay for."""
        if points is None or points <= 0:
            return 0
        kinds: list[str] = []
        ends: list[int] = []
        for p in chunk:
            kinds += self._kinds(p)
            ends.append(len(kinds))
        paid = writes_that_fit(points, kinds)
        return sum(1 for end in ends if end <= paid)

    async def _single(self, p: Plan) -> None:
        try:
            if p.action in WRITES:
                try:
                    await self._put(p)
                except XrpcError as exc:
                    thumb = p.extra.get("thumbnail")
                    if not _blob_missing(exc) or thumb is None or p.blob_cid is None:
                        raise
                    # The PDS dropped a blob the state store thought it had (its
                    # records were deleted elsewhere): upload it again, once.
                    log.warning("blob_gone_reuploading", did=self.account.did, cid=p.blob_cid)
                    self._maybe_forget_blob(p.blob_cid)
                    blob = await self._ensure_blob(p, thumb, p.blob_cid, force=True)
                    if blob is None:
                        return
                    assert p.record is not None
                    p.record["thumbnail"] = blob
                    await self._put(p)
            else:
                await self._delete(p, p.rkey)
            if p.retire is not None:
                await self._delete(p, p.retire)
        except ACCOUNT_ERRORS as exc:
            metrics.WRITE_ERRORS.labels(collection=p.collection, reason=exc.reason).inc()
            self._account_failed([p], exc)
        except XrpcError as exc:
            metrics.WRITE_ERRORS.labels(collection=p.collection, reason=exc.reason).inc()
            p.failed = Problem("dead", "pds_rejected", f"{exc.error}: {exc.message}"[:500])
            log.warning("record_rejected", collection=p.collection, doc=p.key, error=exc.error)

    async def _delete(self, p: Plan, rkey: str) -> None:
        engine = self.engine
        await with_retries(
            lambda: engine.repo.delete_record(self.account, p.nsid, rkey),
            stop=engine.stopping,
            cap=engine.config.pds.retry_max_seconds,
            on_error=_count_error(p.collection),
        )

    async def _put(self, p: Plan) -> None:
        engine = self.engine
        assert p.record is not None
        record = p.record
        p.uri, p.cid = await with_retries(
            lambda: engine.repo.put_record(self.account, p.nsid, p.rkey, record),
            stop=engine.stopping,
            cap=engine.config.pds.retry_max_seconds,
            on_error=_count_error(p.collection),
        )

    def _count(self, chunk: list[Plan], exc: XrpcError) -> None:
        for coll in {p.collection for p in chunk}:
            metrics.WRITE_ERRORS.labels(collection=coll, reason=exc.reason).inc()

    def _account_failed(self, plans: Iterable[Plan], exc: XrpcError) -> None:
        log.error("account_unavailable", did=self.account.did, error=exc.error)
        for p in plans:
            p.failed = Problem("dead", "account_unavailable", exc.error, retryable=True)

    # -- bookkeeping ---------------------------------------------------------
    def _commit(self, plans: list[Plan]) -> None:
        store = self.engine.store
        did = self.account.did
        with store.transaction():
            for p in plans:
                if p.failed is not None:
                    store.dead_letter(
                        p.collection,
                        p.key,
                        p.failed.reason,
                        p.failed.detail,
                        retryable=p.failed.retryable,
                    )
                    p.writeback = None
                    continue
                if p.action in WRITES:
                    store.ledger_put(
                        p.collection,
                        p.key,
                        did=did,
                        nsid=p.nsid,
                        rkey=p.rkey,
                        cid=p.cid,
                        fingerprint=p.fingerprint,
                        blob_cid=p.blob_cid,
                        pending=False,
                    )
                    if p.blob_cid:
                        store.blob_add(did, p.blob_cid, 0)
                    if p.previous_blob_cid and p.previous_blob_cid != p.blob_cid:
                        self._maybe_forget_blob(p.previous_blob_cid)
                    action = "update" if p.action == UPDATE or p.extra.get("existed") else "create"
                    metrics.RECORDS_WRITTEN.labels(collection=p.collection, action=action).inc()
                elif p.action in (DELETE, DELETE_UNCERTAIN):
                    if p.owns_ledger:
                        # Only our row: it may have moved to the new owner's repo meanwhile.
                        store.ledger_delete(p.collection, p.key, did=did, rkey=p.rkey)
                    if p.previous_blob_cid:
                        self._maybe_forget_blob(p.previous_blob_cid)
                    metrics.RECORDS_WRITTEN.labels(collection=p.collection, action="delete").inc()
                record_outcome(store, p.collection, p.key, p.problem)
        self.engine.refresh_dead_letter_gauge()

    def _maybe_forget_blob(self, cid: str) -> None:
        # An unreferenced blob may be garbage-collected by the PDS: forget it so a
        # later record uploads it again instead of pointing at nothing.
        self.engine.store.blob_forget(self.account.did, cid)
        self._uploaded.discard(cid)

    async def _write_back(self, plans: list[Plan]) -> None:
        """Set (or unset) the documents' ``atproto`` back-references.

        Each update is conditional on the back-reference the document had when it was
        planned: if another writer (the platform's inline hook) has set its own key
        since, syncd's write-back does nothing, and the change that set it -- already
        on its way down the change stream -- decides which record stays."""
        by_collection: dict[str, list[UpdateOne]] = {}
        for p in plans:
            if p.failed is not None or p.writeback is None or p.op.change.doc is None:
                continue
            doc_id = p.op.change.doc_id
            current = p.op.change.doc.get("atproto")
            if "atproto" in p.op.change.doc and not isinstance(current, dict):
                # `atproto: 5` (or null, a list...): "atproto.rkey" cannot be set inside
                # it, so the whole field becomes the back-reference.
                where: dict[str, Any] = {"_id": doc_id, "atproto": current}
            else:
                where = {"_id": doc_id, "atproto.rkey": p.seen_rkey}
            if p.writeback == "set" and p.rkey:
                uri = p.uri or f"at://{self.account.did}/{p.nsid}/{p.rkey}"
                update: dict[str, Any] = {"atproto.rkey": p.rkey, "atproto.uri": uri}
                if p.cid:
                    update["atproto.cid"] = p.cid
                if isinstance(current, dict) and all(
                    current.get(k.split(".")[1]) == v for k, v in update.items()
                ):
                    continue
                if "atproto" in p.op.change.doc and not isinstance(current, dict):
                    whole = {k.split(".")[1]: v for k, v in update.items()}
                    req = UpdateOne(where, {"$set": {"atproto": whole}})
                else:
                    req = UpdateOne(where, {"$set": update})
            elif p.writeback == "unset":
                req = UpdateOne(
                    where, {"$unset": {"atproto.rkey": "", "atproto.uri": "", "atproto.cid": ""}}
                )
            else:
                continue
            by_collection.setdefault(p.collection, []).append(req)
        for coll, requests in by_collection.items():
            try:
                await retrying(
                    lambda coll=coll, requests=requests: self.engine.db[coll].bulk_write(  # type: ignore[misc]
                        requests, ordered=False
                    ),
                    stop=self.engine.stopping,
                    cap=10.0,
                    what="writeback",
                )
            except BulkWriteError as exc:
                # Per-document write errors are permanent (the document changed shape
                # since it was read): retrying would stall this account forever. The
                # records are written; the next change to the document retries.
                for err in exc.details.get("writeErrors") or []:
                    log.warning(
                        "writeback_rejected",
                        collection=coll,
                        code=err.get("code"),
                        error=str(err.get("errmsg", ""))[:200],
                    )
            except PyMongoError as exc:
                log.warning("writeback_refused", collection=coll, error=type(exc).__name__)


__all__ = ["DELETE", "AccountWriter"]
