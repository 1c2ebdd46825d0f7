"""Applying a :class:`~syncd.admin.diff.CollectionReport`: the only place admin commands write.

Order, chosen so an interruption at any point leaves a state the next run
recognises and finishes (every step is idempotent and re-derived from a fresh
listing):

1. delete orphans and duplicates (``applyWrites`` batches of at most 200; a
   batch the PDS refuses -- e.g. a key someone else deleted meanwhile answers
   500 for the whole batch -- is redone with idempotent ``deleteRecord`` calls);
2. correct the ledger (drop rows of documents that must have no record, point
   rows at the records that exist, pin the key a missing record must get), in
   one transaction;
3. set or unset the documents' back-references (``atproto``; ``at`` on tapes) that
   need no write;
4. push the documents that need a write through the publish path (router →
   account writer), with a fresh read of each document, and wait for it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import structlog
from pymongo import UpdateOne

from syncd.admin.diff import CollectionReport
from syncd.admin.progress import Reporter
from syncd.ids import parse_doc_key
from syncd.mappings import backref_field
from syncd.pds.errors import XrpcError
from syncd.pds.repo import delete_write
from syncd.pds.sessions import Account
from syncd.retry import Kind, classify, retrying
from syncd.write.writeback import unset_backref

if TYPE_CHECKING:
    from syncd.engine import Engine

log = structlog.get_logger("syncd.admin")


@dataclass
class ApplyResult:
    deleted: int = 0
    published: int = 0
    ledger_fixed: int = 0
    backrefs_fixed: int = 0
    failed: list[dict[str, str]] = field(default_factory=list)

    def add(self, other: ApplyResult) -> None:
        self.deleted += other.deleted
        self.published += other.published
        self.ledger_fixed += other.ledger_fixed
        self.backrefs_fixed += other.backrefs_fixed
        self.failed += other.failed

    def to_json(self) -> dict[str, Any]:
        return {
            "deleted": self.deleted,
            "published": self.published,
            "ledger_fixed": self.ledger_fixed,
            "backrefs_fixed": self.backrefs_fixed,
            "failed": self.failed,
        }


def batch_limit(engine: Engine) -> int:
    return max(1, min(200, engine.config.pds.max_writes_per_call))


async def delete_records(
    engine: Engine,
    account: Account,
    nsid: str,
    rkeys: Sequence[str],
    *,
    on_progress: Callable[[int], None] | None = None,
) -> tuple[int, list[str]]:
    """Delete ``rkeys`` from ``account``'s repository in ``applyWrites`` batches.

    Returns (deleted, failed keys). Deleting a key that is already gone is a
    success (the single-call fallback is idempotent).
    """
    deleted, failed = 0, []
    limit = batch_limit(engine)
    cap = engine.config.pds.retry_max_seconds
    for i in range(0, len(rkeys), limit):
        chunk = list(rkeys[i : i + limit])
        singles = False
        try:
            await retrying(
                lambda chunk=chunk: engine.repo.apply_writes(  # type: ignore[misc]
                    account, [delete_write(nsid, k) for k in chunk]
                ),
                stop=None,
                cap=cap,
            )
        except XrpcError as exc:
            if classify(exc).kind is Kind.ACCOUNT:
                raise
            # A 500 names no write (a key already gone fails the whole batch): one by one.
            log.info("delete_batch_refused", did=account.did, status=exc.status, n=len(chunk))
            singles = True
        if singles:
            for rkey in chunk:
                try:
                    await retrying(
                        lambda k=rkey: engine.repo.delete_record(account, nsid, k),  # type: ignore[misc]
                        stop=None,
                        cap=cap,
                    )
                except XrpcError as exc:
                    if classify(exc).kind is Kind.ACCOUNT:
                        raise
                    log.warning("delete_failed", did=account.did, rkey=rkey, error=exc.error)
                    failed.append(rkey)
        deleted += len(chunk) - sum(1 for k in chunk if k in failed)
        if on_progress is not None:
            on_progress(len(chunk))
    return deleted, failed


async def publish_documents(
    engine: Engine,
    collection: str,
    keys: Sequence[str],
    *,
    on_progress: Callable[[int], None] | None = None,
) -> None:
    """Route the current state of each document in ``keys`` and wait until all are applied."""
    page = max(1, engine.config.mongo.scan_batch_size)
    done_before = 0
    for i in range(0, len(keys), page):
        chunk = list(keys[i : i + page])
        ids = [parse_doc_key(k) for k in chunk]
        fresh = await engine.publisher.fetch(collection, ids)
        for key, doc_id in zip(chunk, ids, strict=True):
            await engine.publisher.emit(collection, doc_id, fresh.get(key), operation="admin")
        while engine.positions.outstanding > 0:
            if on_progress is not None:
                finished = done_before + len(chunk) - engine.positions.outstanding
                on_progress(max(done_before, finished))
            try:
                await asyncio.wait_for(engine.positions.drained(), 0.25)
            except TimeoutError:
                continue
        done_before += len(chunk)
        if on_progress is not None:
            on_progress(done_before)


async def apply_report(
    engine: Engine, account: Account, report: CollectionReport, reporter: Reporter
) -> ApplyResult:
    result = ApplyResult()
    store = engine.store
    did, coll, nsid = account.did, report.collection, report.nsid
    label = f"{account.handle or did} {coll}"

    # 1. Orphans and duplicates.
    if report.deletes:
        task = reporter.task(f"deleting {label}", len(report.deletes))
        deleted, failed = await delete_records(
            engine, account, nsid, report.deletes, on_progress=task.advance
        )
        task.done()
        result.deleted += deleted
        result.failed += [
            {"collection": coll, "rkey": k, "reason": "delete_failed"} for k in failed
        ]
        if report.deleted_blobs:
            with store.transaction():
                for cid in report.deleted_blobs:
                    store.blob_forget(did, cid)

    # 2. The ledger, in one transaction.
    with store.transaction():
        for key in report.ledger_drops:
            entry = store.ledger_get(coll, key)
            if entry is not None and entry.did == did:
                store.ledger_delete(coll, key)
                result.ledger_fixed += 1
        for r in report.ledger_repairs:
            store.ledger_put(
                coll,
                r.doc_key,
                did=did,
                nsid=nsid,
                rkey=r.rkey,
                cid=r.cid,
                fingerprint=r.fingerprint,
                blob_cid=r.blob_cid,
                pending=False,
            )
            if r.blob_cid:
                store.blob_add(did, r.blob_cid, 0)
            store.wiped_key_clear(coll, r.doc_key, did)
            result.ledger_fixed += 1
        for p in report.publish:
            entry = store.ledger_get(coll, p.doc_key)
            for cid in p.forget_blobs:
                store.blob_forget(did, cid)
            if p.action == "update":
                store.ledger_put(
                    coll,
                    p.doc_key,
                    did=did,
                    nsid=nsid,
                    rkey=p.rkey,
                    cid=p.record_cid,
                    fingerprint=None,  # unknown: the writer sends an update
                    blob_cid=p.blob_cid,
                    pending=False,
                )
            elif p.pin:
                store.ledger_put(
                    coll,
                    p.doc_key,
                    did=did,
                    nsid=nsid,
                    rkey=p.rkey,
                    cid=None,
                    fingerprint=None,
                    blob_cid=None,
                    pending=True,  # the writer upserts at exactly this key
                )
            elif p.drop_ledger and entry is not None and entry.did == did:
                store.ledger_delete(coll, p.doc_key)

    # 3. Back-references that need no write.
    requests: list[UpdateOne] = []
    field = backref_field(coll)
    for s in report.backref_sets:
        requests.append(
            UpdateOne(
                {"_id": report.doc_ids[s.doc_key]},
                {"$set": {f"{field}.rkey": s.rkey, f"{field}.uri": s.uri, f"{field}.cid": s.cid}},
            )
        )
    for key in report.backref_unsets:
        requests.append(UpdateOne({"_id": report.doc_ids[key]}, unset_backref(field)))
    if requests:
        await engine.db[coll].bulk_write(requests, ordered=False)
        result.backrefs_fixed += len(requests)

    # 4. Writes through the publish path.
    if report.publish:
        keys = [p.doc_key for p in report.publish]
        task = reporter.task(f"publishing {label}", len(keys))
        await publish_documents(engine, coll, keys, on_progress=task.set)
        task.done()
        dead = {d.doc_key: d for d in store.dead_letters(coll)}
        with store.transaction():
            for p in report.publish:
                entry = store.ledger_get(coll, p.doc_key)
                if entry is not None and entry.did == did and not entry.pending:
                    result.published += 1
                    store.wiped_key_clear(coll, p.doc_key, did)
                    continue
                letter = dead.get(p.doc_key)
                reason = letter.reason if letter is not None else "not_published"
                result.failed.append({"collection": coll, "doc": p.doc_key, "reason": reason})
    return result
