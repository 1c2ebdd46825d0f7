"""Who owns a document on ATProto: ``user`` → ``users._id`` → ``atproto.{did,handle,password}``.

Documents without a ``user`` belong to the guest account (``users._id ==
"art-guest"``). A user without ``atproto.did`` has no repository: their content
is skipped and counted, not an error. Lookups are cached briefly so a user who
gains an account (or changes password) is picked up within ``ttl`` seconds.
"""

from __future__ import annotations

import time
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from syncd.logs import register_secret
from syncd.pds.sessions import Account

NO_ACCOUNT = "no_atproto_account"
UNKNOWN_USER = "unknown_user"


class AccountResolver:
    def __init__(
        self,
        db: AsyncDatabase[dict[str, Any]],
        *,
        users_collection: str = "users",
        guest_id: str = "art-guest",
        ttl: float = 60.0,
    ) -> None:
        self._users = db[users_collection]
        self._guest_id = guest_id
        self._ttl = ttl
        self._cache: dict[str, tuple[float, Account | None, str]] = {}

    def user_id(self, owner: str | None) -> str:
        return self._guest_id if owner is None else owner

    async def resolve(self, owner: str | None) -> tuple[Account | None, str]:
        """(account, "") or (None, reason) for an owner sub (None = guest)."""
        uid = self.user_id(owner)
        hit = self._cache.get(uid)
        now = time.monotonic()
        if hit is not None and now - hit[0] < self._ttl:
            return hit[1], hit[2]
        doc = await self._users.find_one({"_id": uid}, {"atproto": 1})
        account, reason = self._account(owner, doc)
        self._cache[uid] = (now, account, reason)
        return account, reason

    async def by_handle_or_did(self, ident: str) -> Account | None:
        """Admin commands: find an account by ATProto handle or DID."""
        query: dict[str, Any]
        if ident.startswith("did:"):
            query = {"atproto.did": ident}
        else:
            query = {"atproto.handle": ident}
        doc = await self._users.find_one(query, {"atproto": 1})
        if doc is None:
            return None
        owner = None if doc["_id"] == self._guest_id else doc["_id"]
        return self._account(owner, doc)[0]

    def invalidate(self, owner: str | None = None) -> None:
        if owner is None:
            self._cache.clear()
        else:
            self._cache.pop(self.user_id(owner), None)

    @staticmethod
    def _account(owner: str | None, doc: dict[str, Any] | None) -> tuple[Account | None, str]:
        if doc is None:
            return None, UNKNOWN_USER
        at = doc.get("atproto")
        if not isinstance(at, dict) or not isinstance(at.get("did"), str) or not at["did"]:
            return None, NO_ACCOUNT
        password = at.get("password")
        if not isinstance(password, str) or not password:
            return None, "no_atproto_password"
        register_secret(password)  # never in a log line, a dead letter or status
        return (
            Account(
                sub=owner, did=at["did"], handle=str(at.get("handle") or ""), password=password
            ),
            "",
        )
