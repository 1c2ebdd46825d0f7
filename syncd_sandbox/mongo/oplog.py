"""Bounded oplog, cluster-time clock and resume tokens of the MongoDB sandbox.

Dev/test only (part of the MongoDB replica-set sandbox; never a production option).

Positions in the oplog are *keys*: ``(seconds, increment, txn_op_index, kind)`` where
``kind`` is 0 for "just before this cluster time" (``startAtOperationTime``), 1 for the
oplog entry itself and 2 for the ``invalidate`` that follows a drop/rename. Resume tokens
are those four numbers as fixed-width upper-case hex, so string order equals oplog order.
A stream positioned at key ``p`` returns exactly the entries with a key strictly greater
than ``p``.
"""

from __future__ import annotations

import asyncio
import bisect
import datetime
import re
import time
from dataclasses import dataclass
from typing import Any

from bson.timestamp import Timestamp

Key = tuple[int, int, int, int]

KIND_BEFORE = 0
KIND_EVENT = 1
KIND_INVALIDATE = 2

_TOKEN_RE = re.compile(r"^[0-9A-F]{26}([0-9A-F]{4})?$")


class TokenError(ValueError):
    """A resume token that the sandbox did not produce (or cannot parse)."""


def encode_token(key: Key, fragment: int | None = None) -> str:
    """Return the ``_data`` string of the resume token for ``key``.

    ``fragment`` (0-based) marks the token of one fragment of an event split by
    ``$changeStreamSplitLargeEvent``: four more hex digits, so a fragment's token sorts
    after its event's and before the next event's.
    """
    secs, inc, op_index, kind = key
    token = f"{secs:08X}{inc:08X}{op_index:08X}{kind:02X}"
    if fragment is not None:
        token += f"{fragment:04X}"
    return token


def decode_token_fragment(token: Any) -> tuple[Key, int | None]:
    """Parse a resume token document (``{"_data": "..."}``): its key and fragment number."""
    data = token.get("_data") if isinstance(token, dict) else None
    if not isinstance(data, str) or not _TOKEN_RE.match(data.upper()):
        raise TokenError(f"invalid resume token: {token!r}")
    data = data.upper()
    key = (int(data[0:8], 16), int(data[8:16], 16), int(data[16:24], 16), int(data[24:26], 16))
    return key, (int(data[26:30], 16) if len(data) > 26 else None)


def decode_token(token: Any) -> Key:
    """Parse a resume token document (``{"_data": "..."}``) back to its key."""
    return decode_token_fragment(token)[0]


def key_timestamp(key: Key) -> Timestamp:
    """The cluster time (BSON Timestamp) of a key."""
    return Timestamp(key[0], key[1])


def time_key(ts: Timestamp) -> Key:
    """The position just before every entry at cluster time ``ts`` (inclusive start)."""
    return (ts.time, ts.inc, 0, KIND_BEFORE)


@dataclass(slots=True)
class OplogEntry:
    """One oplog entry: a document write or a DDL operation."""

    key: Key
    op: str  # insert | update | replace | delete | drop | dropDatabase | rename
    db: str
    coll: str
    wall: datetime.datetime
    doc_id: Any = None
    post: bytes | None = None  # BSON of the document after the write
    pre: bytes | None = None  # BSON pre-image, only when pre/post images were enabled
    images: bool = False  # changeStreamPreAndPostImages was enabled at write time
    update_desc: dict[str, Any] | None = None
    to: dict[str, str] | None = None  # rename target

    @property
    def ts(self) -> Timestamp:
        return Timestamp(self.key[0], self.key[1])

    def to_doc(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"k": list(self.key), "op": self.op, "db": self.db, "coll": self.coll}
        doc["wall"] = self.wall
        if self.doc_id is not None or self.op in ("insert", "update", "replace", "delete"):
            doc["id"] = self.doc_id
        if self.post is not None:
            doc["post"] = self.post
        if self.pre is not None:
            doc["pre"] = self.pre
        if self.images:
            doc["images"] = True
        if self.update_desc is not None:
            doc["ud"] = self.update_desc
        if self.to is not None:
            doc["to"] = self.to
        return doc

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> OplogEntry:
        k = doc["k"]
        return cls(
            key=(int(k[0]), int(k[1]), int(k[2]), int(k[3])),
            op=doc["op"],
            db=doc["db"],
            coll=doc["coll"],
            wall=doc["wall"],
            doc_id=doc.get("id"),
            post=bytes(doc["post"]) if doc.get("post") is not None else None,
            pre=bytes(doc["pre"]) if doc.get("pre") is not None else None,
            images=bool(doc.get("images", False)),
            update_desc=doc.get("ud"),
            to=doc.get("to"),
        )


def _entry_key(entry: OplogEntry) -> Key:
    return entry.key


class Oplog:
    """A bounded, in-memory oplog with a strictly increasing cluster-time clock.

    ``min_resumable`` is the oldest position from which a stream may still start: every
    entry after it is retained. It starts at the server's start time (history before the
    sandbox existed is "lost") and moves forward when entries are evicted or truncated,
    so an empty oplog after truncation still rejects old tokens.
    """

    def __init__(self, max_entries: int = 100_000, start_time: int | None = None) -> None:
        self.max_entries = max(1, int(max_entries))
        secs = int(time.time()) if start_time is None else start_time
        self.min_resumable: Key = (secs, 0, 0, KIND_BEFORE)
        self.last_key: Key = self.min_resumable
        self._entries: list[OplogEntry] = []
        self._offset = 0
        self._waiters: list[asyncio.Future[bool]] = []

    # -- clock ---------------------------------------------------------------------------
    def next_key(self) -> Key:
        """Allocate the key of the next entry (strictly greater than every earlier one)."""
        now = int(time.time())
        last_secs, last_inc = self.last_key[0], self.last_key[1]
        if now > last_secs:
            return (now, 1, 0, KIND_EVENT)
        return (last_secs, last_inc + 1, 0, KIND_EVENT)

    @property
    def cluster_time(self) -> Timestamp:
        return Timestamp(self.last_key[0], max(self.last_key[1], 0))

    # -- contents ------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._entries) - self._offset

    @property
    def first(self) -> OplogEntry | None:
        return self._entries[self._offset] if len(self) else None

    @property
    def last(self) -> OplogEntry | None:
        return self._entries[-1] if len(self) else None

    def append(self, entry: OplogEntry) -> None:
        if entry.key <= self.last_key:
            raise ValueError("oplog keys must strictly increase")
        self._entries.append(entry)
        self.last_key = entry.key
        if len(self) > self.max_entries:
            self._drop_front(len(self) - self.max_entries)
        if self._waiters:
            waiters, self._waiters = self._waiters, []
            for fut in waiters:
                if not fut.done():
                    fut.set_result(True)

    def _drop_front(self, count: int) -> None:
        count = min(count, len(self))
        if count <= 0:
            return
        last_dropped = self._entries[self._offset + count - 1]
        self.min_resumable = max(self.min_resumable, last_dropped.key)
        self._offset += count
        if self._offset > 1024 and self._offset * 2 > len(self._entries):
            del self._entries[: self._offset]
            self._offset = 0

    def truncate(self, keep: int = 0) -> int:
        """Drop all but the newest ``keep`` entries; return how many were dropped."""
        drop = max(0, len(self) - max(0, keep))
        if drop == 0 and keep == 0:
            # Nothing retained: history up to the current cluster time is gone.
            self.min_resumable = max(self.min_resumable, self.last_key)
            return 0
        self._drop_front(drop)
        if len(self) == 0:
            self.min_resumable = max(self.min_resumable, self.last_key)
        return drop

    def is_lost(self, position: Key) -> bool:
        """True when entries after ``position`` may have been discarded."""
        return position < self.min_resumable

    def index_after(self, position: Key) -> int:
        """Index (absolute, for :meth:`entry_at`) of the first entry with key > position."""
        return bisect.bisect_right(self._entries, position, lo=self._offset, key=_entry_key)

    def entry_at(self, index: int) -> OplogEntry | None:
        if index < self._offset:
            raise IndexError("oplog index no longer retained")
        return self._entries[index] if index < len(self._entries) else None

    def entries(self) -> list[OplogEntry]:
        return self._entries[self._offset :]

    async def wait_for_append(self, seconds: float) -> bool:
        """Wait (no polling) until the next append or ``seconds``; True if appended."""
        if seconds <= 0:
            return False
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[bool] = loop.create_future()
        self._waiters.append(fut)
        handle = loop.call_later(seconds, _expire, fut)
        try:
            await fut
        finally:
            handle.cancel()
        if not fut.result():
            try:
                self._waiters.remove(fut)
            except ValueError:
                pass
            return False
        return True


def _expire(fut: asyncio.Future[bool]) -> None:
    if not fut.done():
        fut.set_result(False)
