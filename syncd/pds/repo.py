"""The repository operations syncd performs, each authenticated as the repo's account.

Every call refreshes an expired session once and retries; retrying transient
failures is the caller's decision (see :mod:`syncd.retry`), because only the
caller knows about ordering and shutdown.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from syncd import metrics
from syncd.pds.errors import AuthError, XrpcError
from syncd.pds.sessions import Account, SessionManager
from syncd.pds.xrpc import XrpcClient

T = TypeVar("T")

APPLY_WRITES = "com.atproto.repo.applyWrites"


def create_write(nsid: str, rkey: str, record: dict[str, Any]) -> dict[str, Any]:
    return {"$type": f"{APPLY_WRITES}#create", "collection": nsid, "rkey": rkey, "value": record}


def update_write(nsid: str, rkey: str, record: dict[str, Any]) -> dict[str, Any]:
    return {"$type": f"{APPLY_WRITES}#update", "collection": nsid, "rkey": rkey, "value": record}


def delete_write(nsid: str, rkey: str) -> dict[str, Any]:
    return {"$type": f"{APPLY_WRITES}#delete", "collection": nsid, "rkey": rkey}


class Repo:
    def __init__(self, xrpc: XrpcClient, sessions: SessionManager) -> None:
        self.xrpc = xrpc
        self.sessions = sessions

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

        async def call(token: str) -> list[dict[str, Any]]:
            data = await self.xrpc.procedure(
                APPLY_WRITES, {"repo": account.did, "writes": list(writes)}, token=token
            )
            results = data.get("results")
            if not isinstance(results, list) or len(results) != len(writes):
                raise XrpcError(APPLY_WRITES, 200, "BadResponse", "results do not match writes")
            return results

        return await self._authed(account, call)

    async def put_record(
        self, account: Account, nsid: str, rkey: str, record: dict[str, Any]
    ) -> tuple[str, str]:
        """Create-or-replace (idempotent). Returns (uri, cid)."""

        async def call(token: str) -> tuple[str, str]:
            data = await self.xrpc.procedure(
                "com.atproto.repo.putRecord",
                {"repo": account.did, "collection": nsid, "rkey": rkey, "record": record},
                token=token,
            )
            return str(data["uri"]), str(data["cid"])

        return await self._authed(account, call)

    async def delete_record(self, account: Account, nsid: str, rkey: str) -> None:
        """Idempotent: deleting a missing record succeeds."""

        async def call(token: str) -> None:
            await self.xrpc.procedure(
                "com.atproto.repo.deleteRecord",
                {"repo": account.did, "collection": nsid, "rkey": rkey},
                token=token,
            )

        await self._authed(account, call)

    async def upload_blob(self, account: Account, data: bytes, mime_type: str) -> dict[str, Any]:
        async def call(token: str) -> dict[str, Any]:
            reply = await self.xrpc.procedure(
                "com.atproto.repo.uploadBlob", token=token, content=data, content_type=mime_type
            )
            return dict(reply["blob"])

        blob = await self._authed(account, call)
        metrics.BLOB_BYTES_UPLOADED.inc(len(data))
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

    async def list_records(
        self, did: str, nsid: str, *, cursor: str | None = None, limit: int = 100
    ) -> tuple[list[dict[str, Any]], str | None]:
        params: dict[str, Any] = {"repo": did, "collection": nsid, "limit": limit}
        if cursor:
            params["cursor"] = cursor
        data = await self.xrpc.query("com.atproto.repo.listRecords", params)
        return list(data.get("records", [])), data.get("cursor")
