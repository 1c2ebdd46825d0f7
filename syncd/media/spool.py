"""A blob on disk on its way to the PDS: written once, hashed as it is written, read
back in chunks as often as an upload is tried."""

from __future__ import annotations

import asyncio
import hashlib
import os
import tempfile
from collections.abc import AsyncIterator

from syncd.images.cid import cid_from_sha256

#: Bytes read from the spool per chunk handed to the HTTP client.
CHUNK_BYTES = 1 << 20
#: Bytes of the head kept for type checks (an MP4's ``ftyp`` box).
HEAD_BYTES = 64


class Spool:
    """An anonymous temporary file (in ``directory``, else ``$TMPDIR``; unlinked, so gone
    when closed or when the process dies) and the sha2-256 of everything written to it.

    Memory: the head (64 bytes) and one chunk at a time while reading; never the blob."""

    def __init__(self, directory: str | None = None) -> None:
        self._file = tempfile.TemporaryFile(dir=directory or None)
        self._sha = hashlib.sha256()
        self._cid: str | None = None
        self.size = 0
        self.head = b""

    def write(self, chunk: bytes) -> None:
        """Append ``chunk`` (a network read: a small write into the page cache)."""
        if self._cid is not None:
            raise ValueError("the spool is finished")
        if len(self.head) < HEAD_BYTES:
            self.head = (self.head + chunk[:HEAD_BYTES])[:HEAD_BYTES]
        self._file.write(chunk)
        self._sha.update(chunk)
        self.size += len(chunk)

    def finish(self) -> str:
        """Everything is written: flush, and return the blob's CID."""
        if self._cid is None:
            self._file.flush()
            self._cid = cid_from_sha256(self._sha.digest())
        return self._cid

    @property
    def cid(self) -> str:
        if self._cid is None:
            raise ValueError("the spool is not finished")
        return self._cid

    @property
    def sha256(self) -> str:
        return self._sha.hexdigest()

    async def chunks(self, size: int = CHUNK_BYTES) -> AsyncIterator[bytes]:
        """The bytes, from the start, ``size`` at a time (positional reads off the event
        loop: several uploads of one spool may run, each with its own iterator)."""
        fd = self._file.fileno()
        offset = 0
        while offset < self.size:
            data = await asyncio.to_thread(os.pread, fd, min(size, self.size - offset), offset)
            if not data:
                raise OSError(f"spool shorter than written ({offset} of {self.size} bytes)")
            offset += len(data)
            yield data

    def paced(self, bytes_per_second: int) -> PacedSpool:
        """This spool read back no faster than ``bytes_per_second`` (0: as fast as read)."""
        return PacedSpool(self, bytes_per_second)

    @property
    def closed(self) -> bool:
        return bool(self._file.closed)

    def close(self) -> None:
        self._file.close()


#: Chunk size while pacing: small enough that the pace is even, not bursts of a megabyte.
PACED_CHUNK_BYTES = 256 * 1024


class PacedSpool:
    """A :class:`Spool`'s bytes at most ``bytes_per_second`` (a stream body for
    ``uploadBlob``): the PDS takes a large blob in smaller slices of its time."""

    def __init__(self, spool: Spool, bytes_per_second: int) -> None:
        self._spool = spool
        self._rate = bytes_per_second

    @property
    def size(self) -> int:
        return self._spool.size

    async def chunks(self) -> AsyncIterator[bytes]:
        if self._rate <= 0:
            async for chunk in self._spool.chunks():
                yield chunk
            return
        loop = asyncio.get_running_loop()
        started, sent = loop.time(), 0
        async for chunk in self._spool.chunks(PACED_CHUNK_BYTES):
            yield chunk
            sent += len(chunk)
            ahead = sent / self._rate - (loop.time() - started)
            if ahead > 0:
                await asyncio.sleep(ahead)
