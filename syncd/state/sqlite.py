"""The state store: SQLite in WAL mode, one file under the state directory.

It holds everything syncd must remember across restarts:

- ``position``: the change stream's resume token (a watermark: every event up to
  it has been applied or dead-lettered) and the cluster time it stands for;
- ``backfill``: per-collection scan progress and the operation time the
  stream starts at once the scan is done;
- ``ledger``: (collection, document) → (DID, NSID, rkey, CID, fingerprint), so
  a hard delete, whose event carries only ``_id``, can be mirrored; a row with
  ``pending = 1`` is a write that was sent but not confirmed (crash recovery
  uses idempotent calls for those);
- ``blobs``: which blob CIDs each account's records already reference;
- ``dead_letters``: documents that could not be published, with the reason;
- ``sessions``: refresh tokens, so a restart refreshes instead of logging in;
- ``wiped_keys``: the record key each document had when ``syncd wipe`` deleted
  its record, so ``syncd restore`` republishes it under the same key;
- ``accounts``: each platform user's account as the change stream last showed it
  (sub → DID, handle) and the progress of an account backfill due for it;
- ``gone_accounts``: accounts syncd no longer writes for (their ledger rows stay).

Calls are synchronous and short (WAL, ``synchronous=NORMAL``: a commit is a
write to the OS, not an fsync); writes that belong together share a transaction.
Safe to use from several processes at once (admin commands while the daemon
runs): SQLite serialises writers, ``busy_timeout`` waits for the lock.
"""

from __future__ import annotations

import base64
import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import bson

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
    StateError,
    StateOp,
)
from syncd.state.rules import apply_ops, lookup_by_rows

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS backfill (
    collection TEXT PRIMARY KEY,
    last_id BLOB,
    phase TEXT NOT NULL DEFAULT 'objectid',
    scanned INTEGER NOT NULL DEFAULT 0,
    done INTEGER NOT NULL DEFAULT 0,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS ledger (
    collection TEXT NOT NULL,
    doc_key TEXT NOT NULL,
    did TEXT NOT NULL,
    nsid TEXT NOT NULL,
    rkey TEXT NOT NULL,
    cid TEXT,
    fingerprint TEXT,
    blob_cid TEXT,
    pending INTEGER NOT NULL DEFAULT 0,
    updated_at REAL NOT NULL,
    PRIMARY KEY (collection, doc_key)
);
CREATE INDEX IF NOT EXISTS ledger_repo ON ledger (did, nsid, rkey);
CREATE TABLE IF NOT EXISTS blobs (
    did TEXT NOT NULL,
    cid TEXT NOT NULL,
    size INTEGER NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (did, cid)
);
CREATE TABLE IF NOT EXISTS dead_letters (
    collection TEXT NOT NULL,
    doc_key TEXT NOT NULL,
    reason TEXT NOT NULL,
    detail TEXT NOT NULL,
    retryable INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 1,
    first_seen REAL NOT NULL,
    last_seen REAL NOT NULL,
    PRIMARY KEY (collection, doc_key)
);
CREATE TABLE IF NOT EXISTS skipped (
    collection TEXT NOT NULL,
    doc_key TEXT NOT NULL,
    reason TEXT NOT NULL,
    seen_at REAL NOT NULL,
    PRIMARY KEY (collection, doc_key)
);
CREATE TABLE IF NOT EXISTS wiped_keys (
    collection TEXT NOT NULL,
    doc_key TEXT NOT NULL,
    did TEXT NOT NULL,
    nsid TEXT NOT NULL,
    rkey TEXT NOT NULL,
    wiped_at REAL NOT NULL,
    PRIMARY KEY (collection, doc_key, did)
);
CREATE INDEX IF NOT EXISTS dead_letters_due ON dead_letters (retryable, collection, doc_key);
CREATE TABLE IF NOT EXISTS parked_accounts (
    did TEXT PRIMARY KEY,
    reason TEXT NOT NULL,
    until REAL NOT NULL,
    since REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS parked (
    did TEXT NOT NULL,
    collection TEXT NOT NULL,
    doc_key TEXT NOT NULL,
    parked_at REAL NOT NULL,
    PRIMARY KEY (did, collection, doc_key)
);
CREATE TABLE IF NOT EXISTS accounts (
    sub TEXT PRIMARY KEY,
    did TEXT NOT NULL,
    handle TEXT NOT NULL,
    backfill_since REAL,
    progress TEXT,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS gone_accounts (
    did TEXT PRIMARY KEY,
    sub TEXT,
    handle TEXT NOT NULL,
    reason TEXT NOT NULL,
    since REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS sessions (
    did TEXT PRIMARY KEY,
    refresh_jwt TEXT NOT NULL,
    access_jwt TEXT NOT NULL,
    saved_at REAL NOT NULL
);
"""


# Dead-letter counts kept by the database itself, one row per collection: counting
# Counting with GROUP BY means a scan of every dead letter each time the gauge is read;
# the triggers keep the counts as rows change. They live in the file, so the writes of
# any syncd version (and of the admin commands) keep them right.
_COUNTS = """
BEGIN IMMEDIATE;
CREATE TABLE IF NOT EXISTS dead_letter_counts (collection TEXT PRIMARY KEY, n INTEGER NOT NULL);
INSERT OR IGNORE INTO dead_letter_counts (collection, n)
    SELECT collection, COUNT(*) FROM dead_letters GROUP BY collection;
CREATE TRIGGER IF NOT EXISTS dead_letters_counted AFTER INSERT ON dead_letters BEGIN
    INSERT INTO dead_letter_counts (collection, n) VALUES (NEW.collection, 1)
    ON CONFLICT(collection) DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER IF NOT EXISTS dead_letters_uncounted AFTER DELETE ON dead_letters BEGIN
    UPDATE dead_letter_counts SET n = n - 1 WHERE collection = OLD.collection;
END;
COMMIT;
"""


def _encode_value(value: Any) -> bytes:
    return bson.encode({"v": value})


def _decode_value(raw: bytes | None) -> Any:
    return None if raw is None else bson.decode(raw)["v"]


def _scans_to_json(progress: dict[str, OwnerScan]) -> str:
    return json.dumps(
        {
            c: {
                "last_id": None
                if p.last_id is None
                else base64.b64encode(_encode_value(p.last_id)).decode(),
                "phase": p.phase,
                "scanned": p.scanned,
                "total": p.total,
            }
            for c, p in progress.items()
        }
    )


def _scans_from_json(raw: str | None) -> dict[str, OwnerScan]:
    out: dict[str, OwnerScan] = {}
    for c, p in (json.loads(raw) if raw else {}).items():
        last = None if p["last_id"] is None else _decode_value(base64.b64decode(p["last_id"]))
        out[c] = OwnerScan(last, p["phase"], int(p["scanned"]), p.get("total"))
    return out


def _known(row: Any) -> KnownAccount:
    return KnownAccount(
        str(row[0]), str(row[1]), str(row[2]), row[3], _scans_from_json(row[4]) if row[3] else {}
    )


def _ledger(row: Any) -> LedgerEntry:
    return LedgerEntry(
        collection=row[0],
        doc_key=row[1],
        did=row[2],
        nsid=row[3],
        rkey=row[4],
        cid=row[5],
        fingerprint=row[6],
        blob_cid=row[7],
        pending=bool(row[8]),
        updated_at=row[9],
    )


class StateStore:
    """Open (creating if needed) the store at ``directory/syncd.sqlite3``."""

    def __init__(
        self, directory: str | os.PathLike[str], *, filename: str = "syncd.sqlite3"
    ) -> None:
        self.directory = Path(directory)
        self.path = self.directory / filename
        self._depth = 0
        # The connection belongs to the thread that opened the store; reads documented as
        # safe from any thread (StateCalls.read) use a read-only connection of their own.
        self._owner = threading.get_ident()
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        try:
            # It holds refresh tokens: owner-only from the first byte, whatever the umask
            # (SQLite gives its -wal and -shm files the database file's mode).
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            if not self.path.exists():
                os.close(os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
            self._db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            raise StateError(
                f"state file {self.path} cannot be opened ({exc}): check that the directory "
                "exists and that syncd's user may read and write it"
            ) from None
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA busy_timeout=30000")
            self._db.executescript(_SCHEMA)
            self._migrate()
            self._add_counts()
        except sqlite3.DatabaseError as exc:
            self._db.close()
            if isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc):
                raise StateError(
                    f"state file {self.path} is locked by another process ({exc}): "
                    "try again, or stop the process that holds it"
                ) from None
            raise StateError(
                f"state file {self.path} is unreadable ({exc}): restore it from the backup "
                "taken before the last upgrade, or move it aside to start over (syncd then "
                "backfills and adopts the records that exist; no duplicates are made)"
            ) from None
        except OSError as exc:
            self._db.close()
            raise StateError(f"state file {self.path} cannot be used ({exc})") from None

    def close(self) -> None:
        with self._readers_lock:
            for reader in self._readers:
                reader.close()
            self._readers.clear()
        self._db.close()

    def _reading(self) -> sqlite3.Connection:
        """The store's connection on its own thread; on any other, that thread's read-only
        connection (WAL: a reader sees what is committed and never blocks the writer)."""
        if threading.get_ident() == self._owner:
            return self._db
        reader: sqlite3.Connection | None = getattr(self._local, "reader", None)
        if reader is None:
            uri = f"{self.path.resolve().as_uri()}?mode=ro"
            reader = sqlite3.connect(uri, uri=True, timeout=30.0, check_same_thread=False)
            self._local.reader = reader
            with self._readers_lock:
                self._readers.append(reader)
        return reader

    def describe(self) -> str:
        return str(self.path)

    def _migrate(self) -> None:
        row = self._db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        if row is None:
            self._db.execute(
                "INSERT INTO meta (key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
            )
        elif int(row[0]) > SCHEMA_VERSION:
            raise StateError(
                f"state store {self.path} has schema {row[0]}, newer than this syncd "
                f"({SCHEMA_VERSION}); restore the backup taken before the upgrade"
            )

    def _add_counts(self) -> None:
        exists = self._db.execute(
            "SELECT 1 FROM sqlite_master WHERE type='table' AND name='dead_letter_counts'"
        ).fetchone()
        if exists is None:
            self._db.executescript(_COUNTS)  # idempotent, should two processes race here

    # -- batches ---------------------------------------------------------------
    def lookup(
        self, keys: Iterable[tuple[str, str]], did: str | None, rkeys: Iterable[tuple[str, str]]
    ) -> Lookup:
        return lookup_by_rows(self, keys, did, rkeys)

    def apply(self, ops: Iterable[StateOp]) -> None:
        apply_ops(self, ops)

    def dead_letters_due(
        self, before: float, limit: int, after: tuple[str, str] | None = None
    ) -> list[DeadLetter]:
        """Retryable dead letters last seen at or before ``before``, in key order after
        ``after`` (a page at a time: never the whole table at once). Safe from any thread
        (:meth:`syncd.state.aio.StateCalls.read`)."""
        a = after or ("", "")
        return [
            DeadLetter(r[0], r[1], r[2], r[3], bool(r[4]), int(r[5]), r[6], r[7])
            for r in self._reading().execute(
                "SELECT collection, doc_key, reason, detail, retryable, attempts, first_seen, "
                "last_seen FROM dead_letters WHERE retryable=1 AND (collection, doc_key) > (?, ?) "
                "AND last_seen <= ? ORDER BY collection, doc_key LIMIT ?",
                (a[0], a[1], before, limit),
            )
        ]

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Group writes; nested uses join the outer transaction."""
        if self._depth == 0:
            self._db.execute("BEGIN IMMEDIATE")
        self._depth += 1
        try:
            yield
        except BaseException:
            self._depth -= 1
            if self._depth == 0:
                self._db.execute("ROLLBACK")
            raise
        self._depth -= 1
        if self._depth == 0:
            self._db.execute("COMMIT")

    # -- meta ----------------------------------------------------------------
    def get_meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str | None) -> None:
        if value is None:
            self._db.execute("DELETE FROM meta WHERE key=?", (key,))
        else:
            self._db.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) "
                "ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                (key, value),
            )

    # -- stream position -----------------------------------------------------
    def save_position(
        self, token: dict[str, Any] | None, cluster_time: tuple[int, int] | None
    ) -> None:
        encoded = None if token is None else base64.b64encode(bson.encode(token)).decode()
        self.set_meta(
            "position",
            json.dumps({"token": encoded, "cluster_time": cluster_time, "saved_at": time.time()}),
        )

    def load_position(self) -> Position | None:
        raw = self.get_meta("position")
        if raw is None:
            return None
        data = json.loads(raw)
        token = None if data["token"] is None else bson.decode(base64.b64decode(data["token"]))
        ct = data.get("cluster_time")
        return Position(
            token=token, cluster_time=tuple(ct) if ct else None, saved_at=data["saved_at"]
        )

    def clear_position(self) -> None:
        self.set_meta("position", None)

    # -- backfill ------------------------------------------------------------
    def backfill_start_time(self) -> tuple[int, int] | None:
        raw = self.get_meta("backfill_start")
        return None if raw is None else tuple(json.loads(raw))

    def begin_backfill(
        self, start: tuple[int, int], collections: Iterable[str], *, reason: str
    ) -> None:
        """Start a fresh backfill pass that the stream will follow from ``start``."""
        with self.transaction():
            self.set_meta("backfill_start", json.dumps(list(start)))
            self.set_meta("backfill_reason", reason)
            self._db.execute("DELETE FROM backfill")
            now = time.time()
            for coll in collections:
                self._db.execute(
                    "INSERT INTO backfill (collection, updated_at) VALUES (?, ?)", (coll, now)
                )

    def backfill_progress(self) -> dict[str, BackfillProgress]:
        rows = self._db.execute(
            "SELECT collection, last_id, phase, scanned, done FROM backfill"
        ).fetchall()
        return {
            r[0]: BackfillProgress(r[0], _decode_value(r[1]), r[2], int(r[3]), bool(r[4]))
            for r in rows
        }

    def save_backfill_progress(
        self, collection: str, last_id: Any, phase: str, scanned: int, done: bool
    ) -> None:
        self._db.execute(
            "UPDATE backfill SET last_id=?, phase=?, scanned=?, done=?, updated_at=? WHERE collection=?",
            (
                None if last_id is None else _encode_value(last_id),
                phase,
                scanned,
                int(done),
                time.time(),
                collection,
            ),
        )

    def finish_backfill(self) -> None:
        """The scan is complete: the stream takes over from ``backfill_start``."""
        with self.transaction():
            start = self.backfill_start_time()
            self.set_meta("backfill_start", None)
            self.set_meta("backfill_reason", None)
            self.set_meta("backfill_completed_at", str(time.time()))
            self._db.execute("DELETE FROM backfill")
            if start is not None and self.load_position() is None:
                self.save_position(None, start)

    def backfill_reason(self) -> str | None:
        return self.get_meta("backfill_reason")

    # -- ledger --------------------------------------------------------------
    def ledger_get(self, collection: str, doc_key: str) -> LedgerEntry | None:
        row = self._db.execute(
            "SELECT collection, doc_key, did, nsid, rkey, cid, fingerprint, blob_cid, pending, updated_at "
            "FROM ledger WHERE collection=? AND doc_key=?",
            (collection, doc_key),
        ).fetchone()
        return None if row is None else _ledger(row)

    def ledger_get_many(self, collection: str, doc_keys: Iterable[str]) -> dict[str, LedgerEntry]:
        keys = list(doc_keys)
        out: dict[str, LedgerEntry] = {}
        for i in range(0, len(keys), 500):
            chunk = keys[i : i + 500]
            marks = ",".join("?" * len(chunk))
            for row in self._db.execute(
                "SELECT collection, doc_key, did, nsid, rkey, cid, fingerprint, blob_cid, pending, updated_at "
                f"FROM ledger WHERE collection=? AND doc_key IN ({marks})",
                (collection, *chunk),
            ):
                out[row[1]] = _ledger(row)
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
        self._db.execute(
            "INSERT INTO ledger (collection, doc_key, did, nsid, rkey, cid, fingerprint, blob_cid, pending, updated_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(collection, doc_key) DO UPDATE SET "
            "did=excluded.did, nsid=excluded.nsid, rkey=excluded.rkey, cid=excluded.cid, "
            "fingerprint=excluded.fingerprint, blob_cid=excluded.blob_cid, pending=excluded.pending, "
            "updated_at=excluded.updated_at",
            (
                collection,
                doc_key,
                did,
                nsid,
                rkey,
                cid,
                fingerprint,
                blob_cid,
                int(pending),
                time.time(),
            ),
        )

    def rkey_owner(self, did: str, nsid: str, rkey: str) -> str | None:
        """The document key whose record uses ``rkey`` in this repository, if any."""
        row = self._db.execute(
            "SELECT doc_key FROM ledger WHERE did=? AND nsid=? AND rkey=?", (did, nsid, rkey)
        ).fetchone()
        return None if row is None else str(row[0])

    def ledger_mark_pending(self, collection: str, doc_key: str) -> None:
        self._db.execute(
            "UPDATE ledger SET pending=1 WHERE collection=? AND doc_key=?", (collection, doc_key)
        )

    def ledger_delete(
        self, collection: str, doc_key: str, *, did: str | None = None, rkey: str | None = None
    ) -> None:
        """Delete the row; with ``did``/``rkey``, only if it still names that record."""
        if did is None:
            self._db.execute(
                "DELETE FROM ledger WHERE collection=? AND doc_key=?", (collection, doc_key)
            )
        else:
            self._db.execute(
                "DELETE FROM ledger WHERE collection=? AND doc_key=? AND did=? AND rkey=?",
                (collection, doc_key, did, rkey),
            )

    def ledger_iter(
        self, collection: str | None = None, did: str | None = None, batch: int = 1000
    ) -> Iterator[LedgerEntry]:
        """Every ledger row (optionally one collection / account), in key order, in pages."""
        after = ("", "")
        while True:
            clauses, args = ["(collection, doc_key) > (?, ?)"], [after[0], after[1]]
            if collection is not None:
                clauses.append("collection=?")
                args.append(collection)
            if did is not None:
                clauses.append("did=?")
                args.append(did)
            rows = self._db.execute(
                "SELECT collection, doc_key, did, nsid, rkey, cid, fingerprint, blob_cid, pending, updated_at "
                f"FROM ledger WHERE {' AND '.join(clauses)} ORDER BY collection, doc_key LIMIT ?",
                (*args, batch),
            ).fetchall()
            if not rows:
                return
            for row in rows:
                yield _ledger(row)
            after = (rows[-1][0], rows[-1][1])

    def ledger_page(self, collection: str, after: str, limit: int) -> list[LedgerEntry]:
        """``collection``'s rows with a document key after ``after``, in key order."""
        return [
            _ledger(row)
            for row in self._db.execute(
                "SELECT collection, doc_key, did, nsid, rkey, cid, fingerprint, blob_cid, pending, "
                "updated_at FROM ledger WHERE collection=? AND doc_key > ? ORDER BY doc_key LIMIT ?",
                (collection, after, limit),
            )
        ]

    def ledger_counts(self) -> list[tuple[str, str, int]]:
        """(collection, did, count) for every mirrored record."""
        return [
            (r[0], r[1], int(r[2]))
            for r in self._db.execute(
                "SELECT collection, did, COUNT(*) FROM ledger GROUP BY collection, did ORDER BY 1, 2"
            )
        ]

    def without_blob_count(self, collection: str) -> int:
        """Confirmed records of ``collection`` without a blob (paintings without thumbnail)."""
        row = self._db.execute(
            "SELECT COUNT(*) FROM ledger WHERE collection=? AND blob_cid IS NULL AND pending=0",
            (collection,),
        ).fetchone()
        return int(row[0])

    def pending_count(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM ledger WHERE pending=1").fetchone()[0])

    # -- blobs ---------------------------------------------------------------
    def blob_known(self, did: str, cid: str) -> bool:
        row = self._db.execute("SELECT 1 FROM blobs WHERE did=? AND cid=?", (did, cid)).fetchone()
        return row is not None

    def blob_add(self, did: str, cid: str, size: int) -> None:
        self._db.execute(
            "INSERT OR IGNORE INTO blobs (did, cid, size, created_at) VALUES (?, ?, ?, ?)",
            (did, cid, size, time.time()),
        )

    def blob_forget(self, did: str, cid: str | None = None) -> None:
        if cid is None:
            self._db.execute("DELETE FROM blobs WHERE did=?", (did,))
        else:
            self._db.execute("DELETE FROM blobs WHERE did=? AND cid=?", (did, cid))

    # -- dead letters --------------------------------------------------------
    def dead_letter(
        self, collection: str, doc_key: str, reason: str, detail: str, *, retryable: bool = False
    ) -> None:
        now = time.time()
        self._db.execute(
            "INSERT INTO dead_letters (collection, doc_key, reason, detail, retryable, attempts, first_seen, last_seen) "
            "VALUES (?, ?, ?, ?, ?, 1, ?, ?) ON CONFLICT(collection, doc_key) DO UPDATE SET "
            "reason=excluded.reason, detail=excluded.detail, retryable=excluded.retryable, "
            "attempts=dead_letters.attempts + 1, last_seen=excluded.last_seen",
            (collection, doc_key, reason, detail[:2000], int(retryable), now, now),
        )

    def clear_dead_letter(self, collection: str, doc_key: str) -> None:
        self._db.execute(
            "DELETE FROM dead_letters WHERE collection=? AND doc_key=?", (collection, doc_key)
        )

    def dead_letters(
        self, collection: str | None = None, limit: int | None = None
    ) -> list[DeadLetter]:
        sql = (
            "SELECT collection, doc_key, reason, detail, retryable, attempts, first_seen, last_seen "
            "FROM dead_letters"
        )
        args: list[Any] = []
        if collection is not None:
            sql += " WHERE collection=?"
            args.append(collection)
        sql += " ORDER BY last_seen DESC"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        return [
            DeadLetter(r[0], r[1], r[2], r[3], bool(r[4]), int(r[5]), r[6], r[7])
            for r in self._db.execute(sql, args)
        ]

    def dead_letter_counts(self) -> dict[str, int]:
        return {
            r[0]: int(r[1])
            for r in self._db.execute("SELECT collection, n FROM dead_letter_counts WHERE n > 0")
        }

    # -- parked accounts (cannot write now: their documents wait, by key) ----------
    def park(self, did: str, reason: str, until: float, keys: Iterable[tuple[str, str]]) -> None:
        """Park ``did`` until ``until`` (the reason and the time are the newest; ``since``
        is when this parking began) and its documents ``keys``."""
        now = time.time()
        with self.transaction():
            self._db.execute(
                "INSERT INTO parked_accounts (did, reason, until, since) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(did) DO UPDATE SET reason=excluded.reason, until=excluded.until",
                (did, reason, until, now),
            )
            self._db.executemany(
                "INSERT INTO parked (did, collection, doc_key, parked_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(did, collection, doc_key) DO UPDATE SET parked_at=excluded.parked_at",
                [(did, c, k, now) for c, k in keys],
            )

    def parked_accounts(self) -> list[ParkedAccount]:
        return [
            ParkedAccount(r[0], r[1], float(r[2]), float(r[3]), int(r[4]))
            for r in self._db.execute(
                "SELECT a.did, a.reason, a.until, a.since, "
                "(SELECT COUNT(*) FROM parked p WHERE p.did = a.did) "
                "FROM parked_accounts a ORDER BY a.did"
            )
        ]

    def parked_page(
        self, did: str, before: float, limit: int, after: tuple[str, str] | None = None
    ) -> list[tuple[str, str]]:
        """The account's documents parked at or before ``before``, in key order."""
        a = after or ("", "")
        return [
            (str(r[0]), str(r[1]))
            for r in self._db.execute(
                "SELECT collection, doc_key FROM parked WHERE did=? AND parked_at <= ? "
                "AND (collection, doc_key) > (?, ?) ORDER BY collection, doc_key LIMIT ?",
                (did, before, a[0], a[1], limit),
            )
        ]

    def unpark(self, did: str, keys: Iterable[tuple[str, str]], before: float) -> None:
        """Forget parked documents that have been routed again (unless parked anew since)."""
        self._db.executemany(
            "DELETE FROM parked WHERE did=? AND collection=? AND doc_key=? AND parked_at <= ?",
            [(did, c, k, before) for c, k in keys],
        )

    def unpark_account(self, did: str, before: float) -> bool:
        """Drop the account's parking unless it was parked again until after ``before``, or
        still has documents parked; True when it is gone."""
        with self.transaction():
            self._db.execute(
                "DELETE FROM parked_accounts WHERE did=? AND until <= ? AND NOT EXISTS "
                "(SELECT 1 FROM parked WHERE did=?)",
                (did, before, did),
            )
            row = self._db.execute("SELECT 1 FROM parked_accounts WHERE did=?", (did,)).fetchone()
        return row is None

    # -- accounts as the stream last showed them; account backfills -------------------
    def known_account(self, sub: str) -> KnownAccount | None:
        row = self._db.execute(
            "SELECT sub, did, handle, backfill_since, progress FROM accounts WHERE sub=?", (sub,)
        ).fetchone()
        return None if row is None else _known(row)

    def put_known_account(self, sub: str, did: str, handle: str, *, backfill: bool) -> None:
        """Remember ``sub``'s account; ``backfill``: an account backfill begins now (any
        earlier one's progress is dropped), else the one due (if any) is kept."""
        now = time.time()
        if backfill:
            self._db.execute(
                "INSERT INTO accounts (sub, did, handle, backfill_since, progress, updated_at) "
                "VALUES (?, ?, ?, ?, '{}', ?) ON CONFLICT(sub) DO UPDATE SET did=excluded.did, "
                "handle=excluded.handle, backfill_since=excluded.backfill_since, "
                "progress='{}', updated_at=excluded.updated_at",
                (sub, did, handle, now, now),
            )
        else:
            self._db.execute(
                "INSERT INTO accounts (sub, did, handle, updated_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(sub) DO UPDATE SET did=excluded.did, handle=excluded.handle, "
                "updated_at=excluded.updated_at",
                (sub, did, handle, now),
            )

    def drop_known_account(self, sub: str) -> None:
        self._db.execute("DELETE FROM accounts WHERE sub=?", (sub,))

    def known_accounts(self, after: str, limit: int) -> list[KnownAccount]:
        """Every remembered account, in user order after ``after`` (a page at a time)."""
        return [
            _known(r)
            for r in self._db.execute(
                "SELECT sub, did, handle, backfill_since, progress FROM accounts "
                "WHERE sub > ? ORDER BY sub LIMIT ?",
                (after, limit),
            )
        ]

    def account_backfills(self) -> list[KnownAccount]:
        return [
            _known(r)
            for r in self._db.execute(
                "SELECT sub, did, handle, backfill_since, progress FROM accounts "
                "WHERE backfill_since IS NOT NULL ORDER BY backfill_since, sub"
            )
        ]

    def save_account_scan(self, sub: str, since: float, collection: str, scan: OwnerScan) -> None:
        """One collection's progress, if the account backfill begun at ``since`` still runs."""
        with self.transaction():
            row = self._db.execute(
                "SELECT progress FROM accounts WHERE sub=? AND backfill_since=?", (sub, since)
            ).fetchone()
            if row is None:
                return
            progress = _scans_from_json(row[0])
            progress[collection] = scan
            self._db.execute(
                "UPDATE accounts SET progress=? WHERE sub=? AND backfill_since=?",
                (_scans_to_json(progress), sub, since),
            )

    def finish_account_backfill(self, sub: str, since: float) -> None:
        self._db.execute(
            "UPDATE accounts SET backfill_since=NULL, progress=NULL "
            "WHERE sub=? AND backfill_since=?",
            (sub, since),
        )

    def mark_gone(self, did: str, sub: str | None, handle: str, reason: str) -> None:
        """``did`` is gone (the newest reason wins; ``since`` is when it first went)."""
        self._db.execute(
            "INSERT INTO gone_accounts (did, sub, handle, reason, since) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT(did) DO UPDATE SET sub=COALESCE(excluded.sub, gone_accounts.sub), "
            "handle=CASE WHEN excluded.handle != '' THEN excluded.handle "
            "ELSE gone_accounts.handle END, reason=excluded.reason",
            (did, sub, handle, reason, time.time()),
        )

    def clear_gone(self, did: str) -> None:
        self._db.execute("DELETE FROM gone_accounts WHERE did=?", (did,))

    def gone_accounts(self) -> list[GoneAccount]:
        return [
            GoneAccount(str(r[0]), r[1], str(r[2]), str(r[3]), float(r[4]))
            for r in self._db.execute(
                "SELECT did, sub, handle, reason, since FROM gone_accounts ORDER BY did"
            )
        ]

    # -- skipped (e.g. owner without an ATProto account) -----------------------
    def skip(self, collection: str, doc_key: str, reason: str) -> None:
        self._db.execute(
            "INSERT INTO skipped (collection, doc_key, reason, seen_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT(collection, doc_key) DO UPDATE SET reason=excluded.reason, seen_at=excluded.seen_at",
            (collection, doc_key, reason, time.time()),
        )

    def unskip(self, collection: str, doc_key: str) -> None:
        self._db.execute(
            "DELETE FROM skipped WHERE collection=? AND doc_key=?", (collection, doc_key)
        )

    def skipped_counts(self) -> list[tuple[str, str, int]]:
        return [
            (r[0], r[1], int(r[2]))
            for r in self._db.execute(
                "SELECT collection, reason, COUNT(*) FROM skipped GROUP BY 1, 2 ORDER BY 1, 2"
            )
        ]

    # -- keys of wiped records (syncd wipe → syncd restore) ---------------------
    def wiped_key_put(self, collection: str, doc_key: str, did: str, nsid: str, rkey: str) -> None:
        self._db.execute(
            "INSERT INTO wiped_keys (collection, doc_key, did, nsid, rkey, wiped_at) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(collection, doc_key, did) DO UPDATE SET "
            "nsid=excluded.nsid, rkey=excluded.rkey, wiped_at=excluded.wiped_at",
            (collection, doc_key, did, nsid, rkey, time.time()),
        )

    def wiped_keys(self, collection: str, did: str) -> dict[str, tuple[str, str]]:
        """doc_key → (nsid, rkey) of the records ``syncd wipe`` removed from ``did``."""
        return {
            str(r[0]): (str(r[1]), str(r[2]))
            for r in self._db.execute(
                "SELECT doc_key, nsid, rkey FROM wiped_keys WHERE collection=? AND did=?",
                (collection, did),
            )
        }

    def wiped_key_clear(self, collection: str, doc_key: str, did: str) -> None:
        self._db.execute(
            "DELETE FROM wiped_keys WHERE collection=? AND doc_key=? AND did=?",
            (collection, doc_key, did),
        )

    # -- sessions ------------------------------------------------------------
    def save_session(self, did: str, access_jwt: str, refresh_jwt: str) -> None:
        self._db.execute(
            "INSERT INTO sessions (did, access_jwt, refresh_jwt, saved_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT(did) DO UPDATE SET access_jwt=excluded.access_jwt, "
            "refresh_jwt=excluded.refresh_jwt, saved_at=excluded.saved_at",
            (did, access_jwt, refresh_jwt, time.time()),
        )

    def load_session(self, did: str) -> tuple[str, str] | None:
        row = self._db.execute(
            "SELECT access_jwt, refresh_jwt FROM sessions WHERE did=?", (did,)
        ).fetchone()
        return None if row is None else (str(row[0]), str(row[1]))

    def drop_session(self, did: str) -> None:
        self._db.execute("DELETE FROM sessions WHERE did=?", (did,))
