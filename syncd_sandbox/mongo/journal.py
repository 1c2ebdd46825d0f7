"""Append-only journal and snapshots of the MongoDB sandbox (dev/test only).

Layout of a data directory::

    snapshot.bson   records of a full state dump (atomically replaced: tmp + rename)
    journal.bson    records appended since that snapshot

Both files are plain sequences of BSON documents. Every journal record carries a
sequence number ``s``; the snapshot's header says up to which sequence number it
includes, so a crash between writing a snapshot and truncating the journal is harmless.
Each write command's records go out in one ``write()`` (so ``kill -9`` cannot lose an
acknowledged write), and the reply waits for an ``fsync`` shared by all writes that
arrived meanwhile (group commit). A torn record at the end of the journal (power loss
mid-write) is cut off at start-up.
"""

from __future__ import annotations

import asyncio
import os
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import bson

from .wire import DECODE_OPTIONS

_INT32 = struct.Struct("<i")

SNAPSHOT = "snapshot.bson"
JOURNAL = "journal.bson"


def iter_records(data: bytes) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (end offset, record) for every complete, decodable record in ``data``."""
    pos = 0
    end = len(data)
    while pos + 4 <= end:
        (size,) = _INT32.unpack_from(data, pos)
        if size < 5 or pos + size > end:
            return
        try:
            record = bson.decode(data[pos : pos + size], DECODE_OPTIONS)
        except Exception:
            return
        pos += size
        yield pos, record


class Journal:
    """Group-committed append-only journal in ``data_dir``."""

    def __init__(self, data_dir: Path, fsync: bool = True) -> None:
        self.dir = Path(data_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.fsync_enabled = fsync
        self.seq = 0
        self.records_since_snapshot = 0
        self.bytes_since_snapshot = 0
        self._fd: int | None = None
        self._written = 0
        self._synced = 0
        self._inflight: asyncio.Future[None] | None = None

    @property
    def journal_path(self) -> Path:
        return self.dir / JOURNAL

    @property
    def snapshot_path(self) -> Path:
        return self.dir / SNAPSHOT

    # -- start-up ------------------------------------------------------------------------
    def load(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Return (snapshot records, journal records after the snapshot) and open the journal."""
        snapshot: list[dict[str, Any]] = []
        upto = 0
        if self.snapshot_path.exists():
            data = self.snapshot_path.read_bytes()
            recs = [r for _, r in iter_records(data)]
            if recs and recs[0].get("t") == "header" and recs[-1].get("t") == "end":
                snapshot = recs[1:-1]
                upto = int(recs[0].get("upto", 0))
        journal: list[dict[str, Any]] = []
        good_end = 0
        if self.journal_path.exists():
            data = self.journal_path.read_bytes()
            for end, rec in iter_records(data):
                good_end = end
                if int(rec.get("s", 0)) > upto:
                    journal.append(rec)
            if good_end < len(data):
                with open(self.journal_path, "r+b") as fh:
                    fh.truncate(good_end)
        self.seq = max([upto] + [int(r.get("s", 0)) for r in journal])
        self.records_since_snapshot = len(journal)
        self.bytes_since_snapshot = good_end
        self._open()
        return snapshot, journal

    def _open(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
        self._fd = os.open(self.journal_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    # -- writing -------------------------------------------------------------------------
    def append(self, records: list[dict[str, Any]]) -> None:
        """Write records now (one ``write()``); :meth:`sync` makes them durable."""
        if not records or self._fd is None:
            return
        chunks = []
        for rec in records:
            self.seq += 1
            rec["s"] = self.seq
            chunks.append(bson.encode(rec))
        data = b"".join(chunks)
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
        self._written += 1
        self.records_since_snapshot += len(records)
        self.bytes_since_snapshot += len(data)

    async def sync(self) -> None:
        """Wait until everything appended so far is fsynced (shared among callers)."""
        if not self.fsync_enabled or self._fd is None:
            return
        target = self._written
        while self._synced < target:
            if self._inflight is None:
                self._inflight = asyncio.ensure_future(self._do_sync())
            await asyncio.shield(self._inflight)

    async def _do_sync(self) -> None:
        target = self._written
        fd = self._fd
        try:
            if fd is not None:
                await asyncio.get_running_loop().run_in_executor(None, os.fsync, fd)
            self._synced = max(self._synced, target)
        finally:
            self._inflight = None

    def write_snapshot(self, records: Iterator[dict[str, Any]]) -> None:
        """Replace the snapshot with ``records`` and empty the journal."""
        tmp = self.dir / (SNAPSHOT + ".tmp")
        with open(tmp, "wb") as fh:
            fh.write(bson.encode({"t": "header", "upto": self.seq}))
            for rec in records:
                fh.write(bson.encode(rec))
            fh.write(bson.encode({"t": "end"}))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.snapshot_path)
        dir_fd = os.open(self.dir, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self._fd = os.open(
            self.journal_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644
        )
        self.records_since_snapshot = 0
        self.bytes_since_snapshot = 0

    def flush(self) -> None:
        if self._fd is not None:
            os.fsync(self._fd)

    def close(self) -> None:
        if self._fd is not None:
            try:
                os.fsync(self._fd)
            finally:
                os.close(self._fd)
                self._fd = None
