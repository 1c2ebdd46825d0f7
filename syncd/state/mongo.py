"""The state store in MongoDB: what a standby on another host needs to continue.

Opt-in with ``[state] backend = "mongodb"``; SQLite stays the default. The
collections (prefix ``syncd_``) live in ``state.mongodb_database``:

- ``syncd_progress``: one document per cluster partition (``<cluster>/<n>``)
  with the resume position, the backfill progress and the small ``meta``
  values, so each of them changes in one single-document (atomic) update;
- ``syncd_ledger``, ``syncd_blobs``, ``syncd_dead_letters``, ``syncd_skipped``,
  ``syncd_wiped_keys``, ``syncd_sessions``, ``syncd_gone_accounts``: one document
  per row of the SQLite tables of the same names, shared by every partition of
  the cluster;
- ``syncd_accounts``: one document per platform user and partition
  (``<cluster>/<n>/<sub>``): each partition follows ``users`` in its own stream
  order and runs its own account backfills;
- ``syncd_leases``: written by :mod:`syncd.lease`, never here.

Writes use majority write concern and reads majority read concern, so what a
leader saved survives the loss of the primary and is what the next leader reads.

**Fencing.** A store opened with a :class:`~syncd.lease.Fence` (the daemon's,
once it holds a lease) checks it before every write and stamps its fencing
token on the progress document and on ledger documents; the write filters only
match a document whose stamp is not newer than ours (for the ledger: not newer
*from the same partition*). A former leader that lost its lease therefore fails
on its first write (:class:`~syncd.lease.LeaseLost`) instead of moving the
position back or overwriting what its successor recorded. Admin commands open
the store without a fence.

Calls are synchronous, one round trip each; inside ``transaction()`` writes are
buffered and sent when the outermost block ends as one ordered bulk write per
collection (a read inside the block sends them first). The daemon's hot path
uses the batch calls -- :meth:`MongoStateStore.lookup` (one query for a batch's
reads) and :meth:`MongoStateStore.apply` (a batch's writes) -- and runs them
off the event loop (:mod:`syncd.state.aio`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from pymongo import ASCENDING, DeleteMany, DeleteOne, MongoClient, UpdateOne
from pymongo.collection import Collection
from pymongo.errors import BulkWriteError, DuplicateKeyError
from pymongo.read_concern import ReadConcern
from pymongo.write_concern import WriteConcern

from syncd.lease import Fence, LeaseLost
from syncd.state.model import (
    BackfillProgress,
    DeadLetter,
    GoneAccount,
    KnownAccount,
    LedgerEntry,
    Lookup,
    OwnerScan,
    ParkedAccount,
    Position,
    StateOp,
)
from syncd.state.rules import apply_ops

PREFIX = "syncd_"
LEASES = PREFIX + "leases"


class _DeleteId:
    """Delete the row with this ``_id`` if there is one: a published document's "no
    dead letter, not skipped" is one of these per row, and a run of them is sent as one
    ``$in`` delete (one statement, not one per document)."""

    __slots__ = ("id",)

    def __init__(self, _id: str) -> None:
        self.id = _id


_Op = UpdateOne | DeleteOne | _DeleteId


def _statements(ops: list[_Op]) -> list[UpdateOne | DeleteOne | DeleteMany]:
    """``ops`` in order, each run of :class:`_DeleteId` folded into one delete."""
    out: list[UpdateOne | DeleteOne | DeleteMany] = []
    run: list[str] = []
    for op in [*ops, None]:
        if isinstance(op, _DeleteId):
            run.append(op.id)
            continue
        if run:
            out.append(
                DeleteMany({"_id": {"$in": run}}) if len(run) > 1 else DeleteOne({"_id": run[0]})
            )
            run = []
        if op is not None:
            out.append(op)
    return out


def _ledger_id(collection: str, doc_key: str) -> str:
    return f"{collection}/{doc_key}"


def _ledger(doc: dict[str, Any]) -> LedgerEntry:
    return LedgerEntry(
        collection=doc["c"],
        doc_key=doc["k"],
        did=doc["did"],
        nsid=doc["nsid"],
        rkey=doc["rkey"],
        cid=doc.get("cid"),
        fingerprint=doc.get("fp"),
        blob_cid=doc.get("blob"),
        pending=bool(doc.get("pending")),
        updated_at=float(doc.get("updated_at", 0.0)),
    )


def _dead_letter(d: dict[str, Any]) -> DeadLetter:
    return DeadLetter(
        d["c"],
        d["k"],
        d["reason"],
        d["detail"],
        bool(d["retryable"]),
        int(d["attempts"]),
        float(d["first_seen"]),
        float(d["last_seen"]),
    )


def _known(d: dict[str, Any]) -> KnownAccount:
    since = d.get("backfill_since")
    progress = {
        c: OwnerScan(p.get("last_id"), p["phase"], int(p["scanned"]), p.get("total"))
        for c, p in (d.get("progress") or {}).items()
    }
    return KnownAccount(
        str(d["sub"]),
        str(d["did"]),
        str(d.get("handle") or ""),
        None if since is None else float(since),
        progress if since is not None else {},
    )


class MongoStateStore:
    """The :class:`~syncd.state.model.Store` of one cluster partition, in MongoDB."""

    def __init__(
        self,
        client: MongoClient[dict[str, Any]],
        database: str,
        *,
        cluster: str,
        partition: int = 0,
        fence: Fence | None = None,
        own_client: bool = True,
    ) -> None:
        self._client = client
        self._own_client = own_client
        db = client.get_database(
            database,
            write_concern=WriteConcern("majority", wtimeout=10_000),
            read_concern=ReadConcern("majority"),
        )
        self.database = database
        self.scope = f"{cluster}/{partition}"
        self.partition = partition
        self.fence = fence
        self._progress = db[PREFIX + "progress"]
        self._ledger = db[PREFIX + "ledger"]
        self._blobs = db[PREFIX + "blobs"]
        self._dead = db[PREFIX + "dead_letters"]
        self._skipped = db[PREFIX + "skipped"]
        self._wiped = db[PREFIX + "wiped_keys"]
        self._sessions = db[PREFIX + "sessions"]
        self._parked_accounts = db[PREFIX + "parked_accounts"]
        self._parked = db[PREFIX + "parked"]
        self._accounts = db[PREFIX + "accounts"]
        self._gone = db[PREFIX + "gone_accounts"]
        # Each thread's writes are buffered apart (StateCalls runs calls on a few threads
        # at once): one call's transaction block is one unit, whoever else is writing.
        self._local = threading.local()
        self._ledger.create_index([("did", ASCENDING), ("nsid", ASCENDING), ("rkey", ASCENDING)])
        self._ledger.create_index([("c", ASCENDING), ("k", ASCENDING)])
        self._dead.create_index([("retryable", ASCENDING), ("_id", ASCENDING)])
        self._parked.create_index([("did", ASCENDING), ("_id", ASCENDING)])
        self._accounts.create_index([("scope", ASCENDING), ("backfill_since", ASCENDING)])

    def close(self) -> None:
        if self._own_client:
            self._client.close()

    def describe(self) -> str:
        return f"mongodb database {self.database!r}, partition {self.scope}"

    # -- writing: fenced, buffered in transactions ------------------------------
    @property
    def _depth(self) -> int:
        return int(getattr(self._local, "depth", 0))

    @_depth.setter
    def _depth(self, value: int) -> None:
        self._local.depth = value

    @property
    def _buffer(self) -> list[tuple[Collection[dict[str, Any]], _Op]]:
        buffer: list[tuple[Collection[dict[str, Any]], _Op]] | None = getattr(
            self._local, "buffer", None
        )
        if buffer is None:
            buffer = self._local.buffer = []
        return buffer

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Group writes into ordered bulk writes; nested uses join the outer block."""
        self._depth += 1
        try:
            yield
        except BaseException:
            self._depth -= 1
            if self._depth == 0:
                self._buffer.clear()
            raise
        self._depth -= 1
        if self._depth == 0:
            self._flush()

    def _write(self, coll: Collection[dict[str, Any]], op: _Op) -> None:
        if self.fence is not None:
            self.fence.check()
        self._buffer.append((coll, op))
        if self._depth == 0:
            self._flush()

    def _flush(self) -> None:
        # One ordered bulk write per collection (in the order each was first written):
        # a batch's ledger, dead-letter, skip and blob writes are four round trips, not
        # one per run of consecutive writes. Order within a collection is kept; across
        # collections none is needed (they describe one batch, and the position that
        # would make the batch final is saved only after it, in its own block).
        groups: dict[int, tuple[Collection[dict[str, Any]], list[_Op]]] = {}
        for coll, op in self._buffer:
            groups.setdefault(id(coll), (coll, []))[1].append(op)
        self._buffer.clear()
        for coll, ops in groups.values():
            try:
                coll.bulk_write(_statements(ops), ordered=True)
            except BulkWriteError as exc:
                errors = exc.details.get("writeErrors", [])
                if self.fence is not None and any(e.get("code") == 11000 for e in errors):
                    self.fence.lose("a newer leader has written this partition's state")
                    raise LeaseLost("fenced out by a newer leader") from None
                raise

    def _read(self) -> None:
        if self._buffer:
            self._flush()

    def _stamp(self) -> dict[str, Any]:
        return {} if self.fence is None else {"fence": self.fence.token, "part": self.partition}

    def _progress_filter(self) -> dict[str, Any]:
        if self.fence is None:
            return {"_id": self.scope}
        return {
            "_id": self.scope,
            "$or": [{"fence": {"$lte": self.fence.token}}, {"fence": {"$exists": False}}],
        }

    def _ledger_filter(self, _id: str) -> dict[str, Any]:
        if self.fence is None:
            return {"_id": _id}
        return {
            "_id": _id,
            "$or": [{"part": {"$ne": self.partition}}, {"fence": {"$lte": self.fence.token}}],
        }

    def _progress_update(self, update: dict[str, Any]) -> None:
        stamp = self._stamp()
        if stamp:
            update.setdefault("$set", {})["fence"] = stamp["fence"]
        self._write(self._progress, UpdateOne(self._progress_filter(), update, upsert=True))

    def claim(self) -> None:
        """Stamp this leader's token on the progress document before anything else.

        From then on every write of a former leader of this partition fails.
        """
        try:
            self._progress_update({"$set": {"claimed_at": time.time()}})
        except DuplicateKeyError:
            if self.fence is not None:
                self.fence.lose("a newer leader has claimed this partition")
            raise LeaseLost("a newer leader has claimed this partition") from None

    # -- batches ---------------------------------------------------------------
    def lookup(
        self, keys: Iterable[tuple[str, str]], did: str | None, rkeys: Iterable[tuple[str, str]]
    ) -> Lookup:
        """One round trip: the batch's ledger rows, and the rows holding ``rkeys`` in
        ``did``'s repository."""
        self._read()
        ids = [_ledger_id(c, k) for c, k in keys]
        wanted = set(rkeys) if did is not None else set()
        clauses: list[dict[str, Any]] = []
        if ids:
            clauses.append({"_id": {"$in": ids}})
        if wanted:
            clauses.append({"did": did, "rkey": {"$in": sorted({r for _, r in wanted})}})
        entries: dict[tuple[str, str], LedgerEntry] = {}
        holders: dict[tuple[str, str], str] = {}
        if not clauses:
            return Lookup(entries, holders)
        id_set = set(ids)
        query = clauses[0] if len(clauses) == 1 else {"$or": clauses}
        for doc in self._ledger.find(query):
            entry = _ledger(doc)
            if doc["_id"] in id_set:
                entries[(entry.collection, entry.doc_key)] = entry
            if entry.did == did and (entry.nsid, entry.rkey) in wanted:
                holders[(entry.nsid, entry.rkey)] = entry.doc_key
        return Lookup(entries, holders)

    def apply(self, ops: Iterable[StateOp]) -> None:
        apply_ops(self, ops)

    def dead_letters_due(
        self, before: float, limit: int, after: tuple[str, str] | None = None
    ) -> list[DeadLetter]:
        self._read()
        query: dict[str, Any] = {"retryable": True, "last_seen": {"$lte": before}}
        if after is not None:
            query["_id"] = {"$gt": _ledger_id(*after)}
        cursor = self._dead.find(query).sort("_id", ASCENDING).limit(limit)
        return [_dead_letter(d) for d in cursor]

    def lease_document(self, lease_id: str) -> dict[str, Any] | None:
        """A lease as stored (read-only; :mod:`syncd.lease` writes them), for ``syncd status``."""
        return self._progress.database[LEASES].find_one({"_id": lease_id})

    def _progress_doc(self) -> dict[str, Any]:
        self._read()
        return self._progress.find_one({"_id": self.scope}) or {}

    # -- meta ----------------------------------------------------------------
    def get_meta(self, key: str) -> str | None:
        value = self._progress_doc().get("meta", {}).get(key)
        return None if value is None else str(value)

    def set_meta(self, key: str, value: str | None) -> None:
        if value is None:
            self._progress_update({"$unset": {f"meta.{key}": ""}})
        else:
            self._progress_update({"$set": {f"meta.{key}": value}})

    # -- stream position -----------------------------------------------------
    def save_position(
        self, token: dict[str, Any] | None, cluster_time: tuple[int, int] | None
    ) -> None:
        position = {
            "token": token,
            "cluster_time": None if cluster_time is None else list(cluster_time),
            "saved_at": time.time(),
        }
        self._progress_update({"$set": {"position": position}})

    def load_position(self) -> Position | None:
        data = self._progress_doc().get("position")
        if data is None:
            return None
        ct = data.get("cluster_time")
        return Position(
            token=data.get("token"),
            cluster_time=(int(ct[0]), int(ct[1])) if ct else None,
            saved_at=float(data["saved_at"]),
        )

    def clear_position(self) -> None:
        self._progress_update({"$unset": {"position": ""}})

    # -- backfill ------------------------------------------------------------
    def backfill_start_time(self) -> tuple[int, int] | None:
        start = self._progress_doc().get("backfill_start")
        return None if start is None else (int(start[0]), int(start[1]))

    def begin_backfill(
        self, start: tuple[int, int], collections: Iterable[str], *, reason: str
    ) -> None:
        now = time.time()
        rows = {
            c: {
                "last_id": None,
                "phase": "objectid",
                "scanned": 0,
                "done": False,
                "updated_at": now,
            }
            for c in collections
        }
        self._progress_update(
            {"$set": {"backfill_start": list(start), "backfill_reason": reason, "backfill": rows}}
        )

    def backfill_progress(self) -> dict[str, BackfillProgress]:
        rows = self._progress_doc().get("backfill") or {}
        return {
            c: BackfillProgress(c, r.get("last_id"), r["phase"], int(r["scanned"]), bool(r["done"]))
            for c, r in rows.items()
        }

    def save_backfill_progress(
        self, collection: str, last_id: Any, phase: str, scanned: int, done: bool
    ) -> None:
        row = {
            "last_id": last_id,
            "phase": phase,
            "scanned": scanned,
            "done": done,
            "updated_at": time.time(),
        }
        self._progress_update({"$set": {f"backfill.{collection}": row}})

    def finish_backfill(self) -> None:
        doc = self._progress_doc()
        update: dict[str, Any] = {
            "$set": {"meta.backfill_completed_at": str(time.time())},
            "$unset": {"backfill_start": "", "backfill_reason": "", "backfill": ""},
        }
        start = doc.get("backfill_start")
        if start is not None and doc.get("position") is None:
            update["$set"]["position"] = {
                "token": None,
                "cluster_time": list(start),
                "saved_at": time.time(),
            }
        self._progress_update(update)

    def backfill_reason(self) -> str | None:
        reason = self._progress_doc().get("backfill_reason")
        return None if reason is None else str(reason)

    # -- ledger --------------------------------------------------------------
    def ledger_get(self, collection: str, doc_key: str) -> LedgerEntry | None:
        self._read()
        doc = self._ledger.find_one({"_id": _ledger_id(collection, doc_key)})
        return None if doc is None else _ledger(doc)

    def ledger_get_many(self, collection: str, doc_keys: Iterable[str]) -> dict[str, LedgerEntry]:
        self._read()
        ids = [_ledger_id(collection, k) for k in doc_keys]
        out: dict[str, LedgerEntry] = {}
        for i in range(0, len(ids), 500):
            for doc in self._ledger.find({"_id": {"$in": ids[i : i + 500]}}):
                out[doc["k"]] = _ledger(doc)
        return out

    def ledger_put(
        self,
        collection: str,
        doc_key: str,
        *,
        did: str,
        nsid: str,
        rkey: str,
        cid: str | None,
        fingerprint: str | None,
        blob_cid: str | None,
        pending: bool,
    ) -> None:
        _id = _ledger_id(collection, doc_key)
        fields = {
            "c": collection,
            "k": doc_key,
            "did": did,
            "nsid": nsid,
            "rkey": rkey,
            "cid": cid,
            "fp": fingerprint,
            "blob": blob_cid,
            "pending": pending,
            "updated_at": time.time(),
            **self._stamp(),
        }
        self._write(
            self._ledger, UpdateOne(self._ledger_filter(_id), {"$set": fields}, upsert=True)
        )

    def rkey_owner(self, did: str, nsid: str, rkey: str) -> str | None:
        self._read()
        doc = self._ledger.find_one({"did": did, "nsid": nsid, "rkey": rkey}, {"k": 1})
        return None if doc is None else str(doc["k"])

    def ledger_mark_pending(self, collection: str, doc_key: str) -> None:
        _id = _ledger_id(collection, doc_key)
        self._write(self._ledger, UpdateOne(self._ledger_filter(_id), {"$set": {"pending": True}}))

    def ledger_delete(
        self, collection: str, doc_key: str, *, did: str | None = None, rkey: str | None = None
    ) -> None:
        query = self._ledger_filter(_ledger_id(collection, doc_key))
        if did is not None:
            query.update(did=did, rkey=rkey)
        self._write(self._ledger, DeleteOne(query))

    def ledger_iter(
        self, collection: str | None = None, did: str | None = None, batch: int = 1000
    ) -> Iterator[LedgerEntry]:
        self._read()
        query: dict[str, Any] = {}
        if collection is not None:
            query["c"] = collection
        if did is not None:
            query["did"] = did
        cursor = self._ledger.find(query).sort([("c", ASCENDING), ("k", ASCENDING)])
        for doc in cursor.batch_size(batch):
            yield _ledger(doc)

    def ledger_page(self, collection: str, after: str, limit: int) -> list[LedgerEntry]:
        self._read()
        cursor = self._ledger.find({"c": collection, "k": {"$gt": after}})
        return [_ledger(d) for d in cursor.sort("k", ASCENDING).limit(limit)]

    def ledger_counts(self) -> list[tuple[str, str, int]]:
        self._read()
        rows = self._ledger.aggregate(
            [{"$group": {"_id": {"c": "$c", "did": "$did"}, "n": {"$sum": 1}}}]
        )
        return sorted((r["_id"]["c"], r["_id"]["did"], int(r["n"])) for r in rows)

    def without_blob_count(self, collection: str) -> int:
        self._read()
        return int(self._ledger.count_documents({"c": collection, "blob": None, "pending": False}))

    def pending_count(self) -> int:
        self._read()
        return int(self._ledger.count_documents({"pending": True}))

    # -- blobs ---------------------------------------------------------------
    def blob_known(self, did: str, cid: str) -> bool:
        self._read()
        return self._blobs.find_one({"_id": f"{did}/{cid}"}, {"_id": 1}) is not None

    def blob_add(self, did: str, cid: str, size: int) -> None:
        doc = {"did": did, "cid": cid, "size": size, "created_at": time.time()}
        self._write(
            self._blobs, UpdateOne({"_id": f"{did}/{cid}"}, {"$setOnInsert": doc}, upsert=True)
        )

    def blob_forget(self, did: str, cid: str | None = None) -> None:
        if cid is None:
            self._read()
            for doc in self._blobs.find({"did": did}, {"_id": 1}):
                self._write(self._blobs, DeleteOne({"_id": doc["_id"]}))
        else:
            self._write(self._blobs, DeleteOne({"_id": f"{did}/{cid}"}))

    # -- dead letters --------------------------------------------------------
    def dead_letter(
        self, collection: str, doc_key: str, reason: str, detail: str, *, retryable: bool = False
    ) -> None:
        now = time.time()
        update = {
            "$set": {
                "c": collection,
                "k": doc_key,
                "reason": reason,
                "detail": detail[:2000],
                "retryable": retryable,
                "last_seen": now,
            },
            "$setOnInsert": {"first_seen": now},
            "$inc": {"attempts": 1},
        }
        _id = _ledger_id(collection, doc_key)
        self._write(self._dead, UpdateOne({"_id": _id}, update, upsert=True))

    def clear_dead_letter(self, collection: str, doc_key: str) -> None:
        self._write(self._dead, _DeleteId(_ledger_id(collection, doc_key)))

    def dead_letters(
        self, collection: str | None = None, limit: int | None = None
    ) -> list[DeadLetter]:
        self._read()
        query = {} if collection is None else {"c": collection}
        cursor = self._dead.find(query).sort("last_seen", -1)
        if limit is not None:
            cursor = cursor.limit(limit)
        return [_dead_letter(d) for d in cursor]

    def dead_letter_counts(self) -> dict[str, int]:
        self._read()
        rows = self._dead.aggregate([{"$group": {"_id": "$c", "n": {"$sum": 1}}}])
        return {r["_id"]: int(r["n"]) for r in rows}

    # -- parked accounts ---------------------------------------------------------
    def park(self, did: str, reason: str, until: float, keys: Iterable[tuple[str, str]]) -> None:
        now = time.time()
        with self.transaction():
            self._write(
                self._parked_accounts,
                UpdateOne(
                    {"_id": did},
                    {"$set": {"reason": reason, "until": until}, "$setOnInsert": {"since": now}},
                    upsert=True,
                ),
            )
            for c, k in keys:
                doc = {"did": did, "c": c, "k": k, "parked_at": now}
                self._write(
                    self._parked, UpdateOne({"_id": f"{did}/{c}/{k}"}, {"$set": doc}, upsert=True)
                )

    def parked_accounts(self) -> list[ParkedAccount]:
        self._read()
        out = []
        for a in self._parked_accounts.find({}).sort("_id", ASCENDING):
            n = self._parked.count_documents({"did": a["_id"]})
            out.append(
                ParkedAccount(a["_id"], a["reason"], float(a["until"]), float(a["since"]), n)
            )
        return out

    def parked_page(
        self, did: str, before: float, limit: int, after: tuple[str, str] | None = None
    ) -> list[tuple[str, str]]:
        self._read()
        query: dict[str, Any] = {"did": did, "parked_at": {"$lte": before}}
        if after is not None:
            query["_id"] = {"$gt": f"{did}/{after[0]}/{after[1]}"}
        cursor = self._parked.find(query).sort("_id", ASCENDING).limit(limit)
        return [(str(d["c"]), str(d["k"])) for d in cursor]

    def unpark(self, did: str, keys: Iterable[tuple[str, str]], before: float) -> None:
        with self.transaction():
            for c, k in keys:
                self._write(
                    self._parked,
                    DeleteOne({"_id": f"{did}/{c}/{k}", "parked_at": {"$lte": before}}),
                )

    def unpark_account(self, did: str, before: float) -> bool:
        self._read()
        if self._parked.find_one({"did": did}, {"_id": 1}) is None:
            self._write(self._parked_accounts, DeleteOne({"_id": did, "until": {"$lte": before}}))
        return self._parked_accounts.find_one({"_id": did}, {"_id": 1}) is None

    # -- accounts as the stream last showed them; account backfills -------------------
    def _account_id(self, sub: str) -> str:
        return f"{self.scope}/{sub}"

    def known_account(self, sub: str) -> KnownAccount | None:
        self._read()
        doc = self._accounts.find_one({"_id": self._account_id(sub)})
        return None if doc is None else _known(doc)

    def put_known_account(self, sub: str, did: str, handle: str, *, backfill: bool) -> None:
        now = time.time()
        fields: dict[str, Any] = {
            "scope": self.scope,
            "sub": sub,
            "did": did,
            "handle": handle,
            "updated_at": now,
        }
        if backfill:
            fields.update(backfill_since=now, progress={})
        self._write(
            self._accounts,
            UpdateOne({"_id": self._account_id(sub)}, {"$set": fields}, upsert=True),
        )

    def drop_known_account(self, sub: str) -> None:
        self._write(self._accounts, DeleteOne({"_id": self._account_id(sub)}))

    def known_accounts(self, after: str, limit: int) -> list[KnownAccount]:
        self._read()
        cursor = self._accounts.find({"_id": {"$gt": self._account_id(after)}, "scope": self.scope})
        return [_known(d) for d in cursor.sort("_id", ASCENDING).limit(limit)]

    def account_backfills(self) -> list[KnownAccount]:
        self._read()
        cursor = self._accounts.find({"scope": self.scope, "backfill_since": {"$ne": None}})
        docs = [d for d in cursor if d.get("backfill_since") is not None]
        return [_known(d) for d in sorted(docs, key=lambda d: (d["backfill_since"], d["sub"]))]

    def save_account_scan(self, sub: str, since: float, collection: str, scan: OwnerScan) -> None:
        row = {
            "last_id": scan.last_id,
            "phase": scan.phase,
            "scanned": scan.scanned,
            "total": scan.total,
        }
        self._write(
            self._accounts,
            UpdateOne(
                {"_id": self._account_id(sub), "backfill_since": since},
                {"$set": {f"progress.{collection}": row}},
            ),
        )

    def finish_account_backfill(self, sub: str, since: float) -> None:
        self._write(
            self._accounts,
            UpdateOne(
                {"_id": self._account_id(sub), "backfill_since": since},
                {"$set": {"backfill_since": None}, "$unset": {"progress": ""}},
            ),
        )

    def mark_gone(self, did: str, sub: str | None, handle: str, reason: str) -> None:
        fields: dict[str, Any] = {"reason": reason}
        if sub is not None:
            fields["sub"] = sub
        if handle:
            fields["handle"] = handle
        update: dict[str, Any] = {"$set": fields, "$setOnInsert": {"since": time.time()}}
        if sub is None:
            update["$setOnInsert"]["sub"] = None
        if not handle:
            update["$setOnInsert"]["handle"] = ""
        self._write(self._gone, UpdateOne({"_id": did}, update, upsert=True))

    def clear_gone(self, did: str) -> None:
        self._write(self._gone, DeleteOne({"_id": did}))

    def gone_accounts(self) -> list[GoneAccount]:
        self._read()
        return [
            GoneAccount(
                str(d["_id"]),
                d.get("sub"),
                str(d.get("handle") or ""),
                str(d["reason"]),
                float(d["since"]),
            )
            for d in self._gone.find({}).sort("_id", ASCENDING)
        ]

    # -- skipped ---------------------------------------------------------------
    def skip(self, collection: str, doc_key: str, reason: str) -> None:
        doc = {"c": collection, "k": doc_key, "reason": reason, "seen_at": time.time()}
        _id = _ledger_id(collection, doc_key)
        self._write(self._skipped, UpdateOne({"_id": _id}, {"$set": doc}, upsert=True))

    def unskip(self, collection: str, doc_key: str) -> None:
        self._write(self._skipped, _DeleteId(_ledger_id(collection, doc_key)))

    def skipped_counts(self) -> list[tuple[str, str, int]]:
        self._read()
        rows = self._skipped.aggregate(
            [{"$group": {"_id": {"c": "$c", "reason": "$reason"}, "n": {"$sum": 1}}}]
        )
        return sorted((r["_id"]["c"], r["_id"]["reason"], int(r["n"])) for r in rows)

    # -- keys of wiped records ---------------------------------------------------
    def wiped_key_put(self, collection: str, doc_key: str, did: str, nsid: str, rkey: str) -> None:
        _id = f"{collection}/{doc_key}/{did}"
        doc: dict[str, Any] = {"c": collection, "k": doc_key, "did": did, "nsid": nsid}
        doc.update(rkey=rkey, wiped_at=time.time())
        self._write(self._wiped, UpdateOne({"_id": _id}, {"$set": doc}, upsert=True))

    def wiped_keys(self, collection: str, did: str) -> dict[str, tuple[str, str]]:
        self._read()
        return {
            str(d["k"]): (str(d["nsid"]), str(d["rkey"]))
            for d in self._wiped.find({"c": collection, "did": did})
        }

    def wiped_key_clear(self, collection: str, doc_key: str, did: str) -> None:
        self._write(self._wiped, DeleteOne({"_id": f"{collection}/{doc_key}/{did}"}))

    # -- sessions ------------------------------------------------------------
    def save_session(self, did: str, access_jwt: str, refresh_jwt: str) -> None:
        doc = {"access_jwt": access_jwt, "refresh_jwt": refresh_jwt, "saved_at": time.time()}
        self._write(self._sessions, UpdateOne({"_id": did}, {"$set": doc}, upsert=True))

    def load_session(self, did: str) -> tuple[str, str] | None:
        self._read()
        doc = self._sessions.find_one({"_id": did})
        return None if doc is None else (str(doc["access_jwt"]), str(doc["refresh_jwt"]))

    def drop_session(self, did: str) -> None:
        self._write(self._sessions, DeleteOne({"_id": did}))
