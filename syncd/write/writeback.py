"""Write the back-reference ``{rkey, uri, cid}`` to the MongoDB documents.

The field is the mapping's ``backref``: ``atproto`` on paintings, moods, pieces and
kidlisp, ``at`` on tapes (platform-facts §5).

The platform's UI reads the back-reference, so it must keep being written. Each
update is conditional on the back-reference the document had when its change
was planned: if another writer (the platform's inline hook) has set its own key
since, syncd's write-back does nothing, and the change that set it -- already on
its way down the change stream -- decides which record stays.
"""

from __future__ import annotations

import asyncio
from typing import Any

import structlog
from pymongo import UpdateOne
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError, PyMongoError

from syncd.mappings import backref_field
from syncd.planner import Plan
from syncd.retry import retrying

log = structlog.get_logger("syncd.writer")


def unset_backref(field: str) -> dict[str, Any]:
    """The update that removes a back-reference held in ``field``."""
    return {"$unset": {f"{field}.rkey": "", f"{field}.uri": "", f"{field}.cid": ""}}


def writeback_request(p: Plan, did: str) -> UpdateOne | None:
    """The conditional update ``p`` needs, or None."""
    doc = p.op.change.doc
    if p.failed is not None or p.parked is not None or p.writeback is None or doc is None:
        return None
    field = backref_field(p.collection)
    current = doc.get(field)
    whole_field = field in doc and not isinstance(current, dict)
    where: dict[str, Any] = {"_id": p.op.change.doc_id}
    if whole_field:
        # `atproto: 5` (or null, a list...): "atproto.rkey" cannot be set inside it, so
        # the whole field becomes the back-reference.
        where[field] = current
    else:
        where[f"{field}.rkey"] = p.seen_rkey
    if p.writeback == "unset":
        return UpdateOne(where, unset_backref(field))
    if p.writeback != "set" or not p.rkey:
        return None
    update: dict[str, Any] = {
        "rkey": p.rkey,
        "uri": p.uri or f"at://{did}/{p.nsid}/{p.rkey}",
    }
    if p.cid:
        update["cid"] = p.cid
    if isinstance(current, dict) and all(current.get(k) == v for k, v in update.items()):
        return None  # already says so
    if whole_field:
        return UpdateOne(where, {"$set": {field: update}})
    return UpdateOne(where, {"$set": {f"{field}.{k}": v for k, v in update.items()}})


async def write_back(
    db: AsyncDatabase[dict[str, Any]], plans: list[Plan], did: str, stop: asyncio.Event
) -> None:
    """One unordered bulk write per collection; transient failures retried (forever)."""
    by_collection: dict[str, list[UpdateOne]] = {}
    for p in plans:
        req = writeback_request(p, did)
        if req is not None:
            by_collection.setdefault(p.collection, []).append(req)
    for coll, requests in by_collection.items():
        try:
            await retrying(
                lambda coll=coll, requests=requests: db[coll].bulk_write(  # type: ignore[misc]
                    requests, ordered=False
                ),
                stop=stop,
                cap=10.0,
                what="writeback",
            )
        except BulkWriteError as exc:
            # Per-document write errors are permanent (the document changed shape since
            # it was read): retrying would stall this account forever. The records are
            # written; the next change to the document retries.
            for err in exc.details.get("writeErrors") or []:
                log.warning(
                    "writeback_rejected",
                    collection=coll,
                    code=err.get("code"),
                    error=str(err.get("errmsg", ""))[:200],
                )
        except PyMongoError as exc:
            log.warning("writeback_refused", collection=coll, error=type(exc).__name__)
