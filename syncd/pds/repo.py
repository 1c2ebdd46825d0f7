"""The repository operations syncd performs, each authenticated as the repo's account.

Every call refreshes an expired session once and retries; retrying transient
failures is the caller's decision (see :mod:`syncd.retry`), because only the
caller knows about ordering and shutdown.

**Fenced writes** (a cluster leader, see :mod:`syncd.lease`): with a ``fence``,
every repository write first checks the lease, then carries ``swapCommit``: the
repo's commit CID as this instance last saw it. The PDS applies the write only
if the repo is still at that commit, so a write from a former leader that was
already on the wire when its lease ran out fails with ``InvalidSwap`` as soon as
the new leader has written to that repo, instead of overwriting newer records.
On ``InvalidSwap`` the head is read again and, if the lease still holds (an
admin command or another partition wrote), the write is retried. Writes to one
repo are serialised while fenced (a swap needs a known head).

**Write budgets**: every successful write's rate-limit headers are read for the
account's repository-write budget (:mod:`syncd.pds.ratelimit`); a reply about
another limit counts the last known budget down by the call's points.
:meth:`Repo.write_budget` answers the estimate, so a writer can size a batch to
the points left instead of having the whole batch refused.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import httpx

from syncd import metrics
from syncd.pds.errors import AuthError, XrpcError
from syncd.pds.ratelimit import WriteBudget, after_call, call_points
from syncd.pds.sessions import Account, SessionManager
from syncd.pds.xrpc import XrpcClient

if TYPE_CHECKING:
    from syncd.lease import Fence

T = TypeVar("T")
SWAP_ATTEMPTS = 5

APPLY_WRITES = "com.atproto.repo.applyWrites"


class StreamBody(Protocol):
    """A blob that is streamed, not held: its size, and its bytes from the start (a
    fresh iterator for every attempt)."""

    @property
    def size(self) -> int: ...

    def chunks(self) -> AsyncIterator[bytes]: ...


async def _counted(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    async for chunk in chunks:
        metrics.BLOB_BYTES_SENT.inc(len(chunk))
        yield chunk


def create_write(nsid: str, rkey: str, record: dict[str, Any]) -> dict[str, Any]:
    return {"$type": f"{APPLY_WRITES}#create", "collection": nsid, "rkey": rkey, "value": record}


def update_write(nsid: str, rkey: str, record: dict[str, Any]) -> dict[str, Any]:
    return {"$type": f"{APPLY_WRITES}#update", "collection": nsid, "rkey": rkey, "value": record}


def delete_write(nsid: str, rkey: str) -> dict[str, Any]:
    return {"$type": f"{APPLY_WRITES}#delete", "collection": nsid, "rkey": rkey}


class Repo:
    def __init__(
        self, xrpc: XrpcClient, sessions: SessionManager, *, fence: Fence | None = None
    ) -> None:
        self.xrpc = xrpc
        self.sessions = sessions
        self.fence = fence
        self._heads: dict[str, str | None] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._budgets: dict[str, WriteBudget] = {}

    def write_budget(self, did: str) -> WriteBudget | None:
        """The account's write budget while its window lasts: as the newest budget reply
        said, less the points of the writes since; None when no reply has described it
        (rate limits off, or another limit always tighter)."""
        budget = self._budgets.get(did)
        if budget is not None and not budget.current():
            del self._budgets[did]
            return None
        return budget

    def _budget_observer(
        self, did: str, method: str, body: dict[str, Any]
    ) -> Callable[[httpx.Headers], None]:
        def observe(headers: httpx.Headers) -> None:
            budget = after_call(self._budgets.get(did), headers, call_points(method, body))
            if budget is None:
                self._budgets.pop(did, None)
            else:
                self._budgets[did] = budget

        return observe

    async def _write(
        self, account: Account, nsid_call: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        """One repository write; fenced (lease check + ``swapCommit``) when leading a cluster."""
        did = account.did
        if self.fence is None:
            return await self._authed(
                account, lambda token: self._procedure(nsid_call, body, did, token)
            )
        lock = self._locks.setdefault(did, asyncio.Lock())
        async with lock:
            for attempt in range(SWAP_ATTEMPTS):
                self.fence.check()
                if did not in self._heads:
                    self._heads[did] = await self.latest_commit(did)
                head = self._heads[did]
                sent = dict(body, swapCommit=head) if head else body
                try:
                    data = await self._authed(
                        account,
                        partial(self._procedure, nsid_call, sent, did),
                    )
                except XrpcError as exc:
                    if exc.error != "InvalidSwap" or attempt == SWAP_ATTEMPTS - 1:
                        self._heads.pop(did, None)
                        raise
                    metrics.SWAP_CONFLICTS.inc()
                    self._heads.pop(did, None)
                    continue
                commit = data.get("commit")
                if isinstance(commit, dict) and isinstance(commit.get("cid"), str):
                    self._heads[did] = commit["cid"]
                return data
        raise AssertionError("unreachable")

    async def _procedure(
        self, method: str, body: dict[str, Any], did: str, token: str
    ) -> dict[str, Any]:
        return await self.xrpc.procedure(
            method, body, token=token, on_headers=self._budget_observer(did, method, body)
        )

    async def latest_commit(self, did: str) -> str | None:
        """The repo's current commit CID (public ``com.atproto.sync.getLatestCommit``)."""
        data = await self.xrpc.query("com.atproto.sync.getLatestCommit", {"did": did})
        cid = data.get("cid")
        return cid if isinstance(cid, str) else None

    async def _authed(self, account: Account, call: Callable[[str], Awaitable[T]]) -> T:
        token = await self.sessions.token(account)
        try:
            return await call(token)
        except AuthError as exc:
            if not exc.expired:
                raise
            await self.sessions.expired(account, token)
            return await call(await self.sessions.token(account))

    async def apply_writes(
        self, account: Account, writes: Sequence[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        """All-or-nothing batch; returns one result per write, in order."""

        data = await self._write(
            account, APPLY_WRITES, {"repo": account.did, "writes": list(writes)}
        )
        results = data.get("results")
        if not isinstance(results, list) or len(results) != len(writes):
            raise XrpcError(APPLY_WRITES, 200, "BadResponse", "results do not match writes")
        return results

    async def put_record(
        self, account: Account, nsid: str, rkey: str, record: dict[str, Any]
    ) -> tuple[str, str]:
        """Create-or-replace (idempotent). Returns (uri, cid)."""

        data = await self._write(
            account,
            "com.atproto.repo.putRecord",
            {"repo": account.did, "collection": nsid, "rkey": rkey, "record": record},
        )
        return str(data["uri"]), str(data["cid"])

    async def delete_record(self, account: Account, nsid: str, rkey: str) -> None:
        """Idempotent: deleting a missing record succeeds."""

        await self._write(
            account,
            "com.atproto.repo.deleteRecord",
            {"repo": account.did, "collection": nsid, "rkey": rkey},
        )

    async def upload_blob(
        self, account: Account, data: bytes | StreamBody, mime_type: str
    ) -> dict[str, Any]:
        """``uploadBlob``: ``data`` in memory (a thumbnail) or streamed (a tape's MP4, read
        a chunk at a time from its spool; never whole in memory)."""
        if self.fence is not None:
            self.fence.check()
        size = len(data) if isinstance(data, bytes) else data.size

        async def call(token: str) -> dict[str, Any]:
            if isinstance(data, bytes):
                metrics.BLOB_BYTES_SENT.inc(size)
                content: bytes | AsyncIterator[bytes] = data
            else:
                content = _counted(data.chunks())
            reply = await self.xrpc.procedure(
                "com.atproto.repo.uploadBlob",
                token=token,
                content=content,
                content_type=mime_type,
                content_length=None if isinstance(data, bytes) else size,
            )
            return dict(reply["blob"])

        blob = await self._authed(account, call)
        metrics.BLOB_BYTES_UPLOADED.inc(size)
        metrics.BLOBS_UPLOADED.inc()
        return blob

    async def get_record(self, did: str, nsid: str, rkey: str) -> dict[str, Any] | None:
        try:
            return await self.xrpc.query(
                "com.atproto.repo.getRecord", {"repo": did, "collection": nsid, "rkey": rkey}
            )
        except XrpcError as exc:
            if exc.status == 400 and exc.error == "RecordNotFound":
                return None
            raise

    async def get_blob(self, did: str, cid: str) -> bytes | None:
        """A blob's bytes (public ``com.atproto.sync.getBlob``); None when the PDS has none."""
        try:
            return await self.xrpc.query_bytes("com.atproto.sync.getBlob", {"did": did, "cid": cid})
        except XrpcError as exc:
            if exc.status in (400, 404) and exc.error in (
                "BlobNotFound",
                "NotFound",
                "InvalidRequest",
            ):
                return None
            raise

    async def list_records(
        self, did: str, nsid: str, *, cursor: str | None = None, limit: int = 100
    ) -> tuple[list[dict[str, Any]], str | None]:
        params: dict[str, Any] = {"repo": did, "collection": nsid, "limit": limit}
        if cursor:
            params["cursor"] = cursor
        data = await self.xrpc.query("com.atproto.repo.listRecords", params)
        return list(data.get("records", [])), data.get("cursor")
