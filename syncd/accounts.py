"""Who owns a document on ATProto: ``user`` → ``users._id`` → ``atproto.{did,handle,password}``.

Documents without a ``user`` belong to the guest account (``users._id ==
"art-guest"``). A user without ``atproto.did`` has no repository: their content
is skipped and counted, not an error. Lookups are cached briefly; the daemon
follows ``users`` on its change stream (:mod:`syncd.lifecycle`) and drops the
cached entries an account change touches at once, so the ``ttl`` only bounds
how stale a lookup can be for a caller that does not follow the stream.

Two refusals are decided here, so every caller (the router, ``reconcile``) sees
them the same way:

* an account that is *gone* (:mod:`syncd.gone`) resolves to no account
  (``account_gone``): its documents are skips;
* a DID named by two ``users`` documents is a conflict (``did_conflict``):
  neither user resolves to it -- one user's documents must never land in
  another's repository through a shared session -- until one of them changes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from syncd.logs import register_secret
from syncd.pds.sessions import Account

NO_ACCOUNT = "no_atproto_account"
UNKNOWN_USER = "unknown_user"
NO_PASSWORD = "no_atproto_password"
ACCOUNT_GONE = "account_gone"
DID_CONFLICT = "did_conflict"


class AccountResolver:
    def __init__(
        self,
        db: AsyncDatabase[dict[str, Any]],
        *,
        users_collection: str = "users",
        guest_id: str = "art-guest",
        ttl: float = 60.0,
        gone: Callable[[str], object] | None = None,
    ) -> None:
        self._users = db[users_collection]
        self._guest_id = guest_id
        self._ttl = ttl
        self._cache: dict[str, tuple[float, Account | None, str]] = {}
        #: Whether a DID is gone (truthy: gone); set by the engine.
        self.gone = gone
        #: user id -> why its DID is in conflict (the dead letters' detail).
        self._conflicts: dict[str, str] = {}

    def user_id(self, owner: str | None) -> str:
        return self._guest_id if owner is None else owner

    async def resolve(self, owner: str | None) -> tuple[Account | None, str]:
        """(account, "") or (None, reason) for an owner sub (None = guest)."""
        uid = self.user_id(owner)
        hit = self._cache.get(uid)
        now = time.monotonic()
        if hit is not None and now - hit[0] < self._ttl:
            return self._not_gone(hit[1], hit[2])
        doc = await self._users.find_one({"_id": uid}, {"atproto": 1})
        account, reason = self._account(owner, doc)
        if account is not None:
            other = await self._users.find_one(
                {"atproto.did": account.did, "_id": {"$ne": uid}}, {"_id": 1}
            )
            if other is not None:
                self._conflicts[uid] = (
                    f"users {uid!r} and {other['_id']!r} both name {account.did}: neither is "
                    "published (the records it holds stay) until one of them changes"
                )
                account, reason = None, DID_CONFLICT
        self._cache[uid] = (now, account, reason)
        return self._not_gone(account, reason)

    def _not_gone(self, account: Account | None, reason: str) -> tuple[Account | None, str]:
        if account is not None and self.gone is not None and self.gone(account.did):
            return None, ACCOUNT_GONE
        return account, reason

    def conflict_detail(self, owner: str | None) -> str:
        """Why ``owner``'s DID is in conflict (after :meth:`resolve` said ``did_conflict``)."""
        return self._conflicts.get(self.user_id(owner), "")

    async def by_handle_or_did(self, ident: str) -> Account | None:
        """Admin commands: find an account by ATProto handle or DID."""
        query: dict[str, Any]
        if ident.startswith("did:"):
            query = {"atproto.did": ident}
        else:
            query = {"atproto.handle": ident}
        docs = await self._users.find(query, {"atproto": 1}).limit(2).to_list()
        if len(docs) != 1:
            return None  # nobody, or a DID two users name (a conflict: nobody's)
        doc = docs[0]
        owner = None if doc["_id"] == self._guest_id else doc["_id"]
        return self._account(owner, doc)[0]

    def invalidate(self, owner: str | None = None) -> None:
        """Forget the cached lookup of ``owner`` (None: of everyone)."""
        if owner is None:
            self._cache.clear()
            self._conflicts.clear()
        else:
            self._cache.pop(self.user_id(owner), None)
            self._conflicts.pop(self.user_id(owner), None)

    def invalidate_user(self, user_id: str) -> None:
        """Forget the cached lookup of the ``users`` document ``user_id`` (the guest's too)."""
        self._cache.pop(user_id, None)
        self._conflicts.pop(user_id, None)

    def cached(self, user_id: str) -> Account | None:
        """The account last resolved for ``user_id`` (however old), if any."""
        hit = self._cache.get(user_id)
        return None if hit is None else hit[1]

    @staticmethod
    def _account(owner: str | None, doc: dict[str, Any] | None) -> tuple[Account | None, str]:
        if doc is None:
            return None, UNKNOWN_USER
        at = doc.get("atproto")
        if not isinstance(at, dict) or not isinstance(at.get("did"), str) or not at["did"]:
            return None, NO_ACCOUNT
        password = at.get("password")
        if not isinstance(password, str) or not password:
            return None, NO_PASSWORD
        register_secret(password)  # never in a log line, a dead letter or status
        return (
            Account(
                sub=owner, did=at["did"], handle=str(at.get("handle") or ""), password=password
            ),
            "",
        )
