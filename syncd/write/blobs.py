"""One account's blobs: which it has, and uploading the ones it lacks (never twice).

A blob CID is known to the account when this process uploaded it, or when the
state store says a committed record references it. An unreferenced blob may be
garbage-collected by the PDS, so a CID is forgotten once no record of syncd's
references it (``forget``), and uploaded again if a later record needs it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import structlog

from syncd import metrics
from syncd.images import Thumbnail
from syncd.parking import PARK_AFTER
from syncd.pds.errors import XrpcError
from syncd.pds.repo import Repo, StreamBody
from syncd.pds.sessions import Account
from syncd.retry import Verdict, retrying
from syncd.state.aio import StateCalls

log = structlog.get_logger("syncd.writer")


def blob_ref(thumb: Thumbnail, link: str) -> dict[str, Any]:
    """The record's ``thumbnail`` value for an uploaded blob."""
    return {
        "$type": "blob",
        "ref": {"$link": link},
        "mimeType": thumb.mime_type,
        "size": len(thumb.data),
    }


def count_error(collection: str) -> Callable[[BaseException, Verdict], None]:
    def count(exc: BaseException, verdict: Verdict) -> None:
        if isinstance(exc, XrpcError):
            metrics.WRITE_ERRORS.labels(collection=collection, reason=exc.reason).inc()

    return count


class Blobs:
    def __init__(
        self,
        account: Callable[[], Account],
        repo: Repo,
        calls: StateCalls,
        stopping: asyncio.Event,
    ) -> None:
        self._account = account
        self._repo = repo
        self._calls = calls
        self._stopping = stopping
        self.uploaded: set[str] = set()  # CIDs this process uploaded for the account

    async def known(self, cid: str) -> bool:
        if cid in self.uploaded:
            return True
        return await self._calls(self._calls.store.blob_known, self._account().did, cid)

    async def upload(self, collection: str, thumb: Thumbnail, cid: str) -> str:
        """``uploadBlob`` (transient failures retried); the link the PDS answered."""
        uploaded = await self._upload(collection, thumb.data, thumb.mime_type, cid)
        return str(uploaded["ref"]["$link"])

    async def upload_stream(
        self, collection: str, body: StreamBody, mime_type: str, cid: str
    ) -> dict[str, Any]:
        """``uploadBlob`` of a streamed blob (each attempt reads it from the start); the
        PDS's answer (``ref.$link``, ``mimeType`` and ``size`` as the PDS recorded them)."""
        return await self._upload(collection, body, mime_type, cid)

    async def _upload(
        self, collection: str, data: bytes | StreamBody, mime_type: str, cid: str
    ) -> dict[str, Any]:
        account = self._account()
        uploaded = await retrying(
            lambda: self._repo.upload_blob(account, data, mime_type),
            stop=self._stopping,
            on_error=count_error(collection),
            what="uploadBlob",
            max_wait=PARK_AFTER,
        )
        ref = uploaded.get("ref")
        link = ref.get("$link") if isinstance(ref, dict) else None
        if link and link != cid:
            log.warning("blob_cid_mismatch", computed=cid, pds=link)
        link = str(link or cid)
        self.uploaded.add(link)
        return {**uploaded, "ref": {"$link": link}}

    def forget(self, cid: str) -> None:
        """No record of syncd's references ``cid`` any more (the commit drops it from
        the store): the next record that needs it uploads it again."""
        self.uploaded.discard(cid)
