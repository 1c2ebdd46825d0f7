"""Platform users with (or without) ATProto accounts, stored as the platform stores them.

* ``users``: ``{_id: <sub>, atproto: {did, handle, password}}`` (no ``atproto``
  for a user without an account); the guest account is ``_id: "art-guest"``.
* ``@handles``: ``{_id: <sub>, handle: "<platform handle>"}``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

from pymongo.database import Database

from syncd_sandbox.pds import PdsApi, unique_handle
from syncd_sandbox.seed import GUEST_USER_ID, new_sub

USERS = "users"
HANDLES = "@handles"
GUEST_NAME = "art"


@dataclass(frozen=True)
class WorldAccount:
    """A platform user of a world; ``did``/``handle``/``password`` are None without ATProto."""

    name: str
    sub: str
    did: str | None = None
    handle: str | None = None
    password: str | None = None

    @property
    def has_atproto(self) -> bool:
        return self.did is not None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> WorldAccount:
        return cls(
            name=str(data["name"]),
            sub=str(data["sub"]),
            did=data.get("did"),
            handle=data.get("handle"),
            password=data.get("password"),
        )


def store_user(db: Database[Any], account: WorldAccount, *, platform_handle: bool = True) -> None:
    """Write the ``users`` (and ``@handles``) documents for ``account``."""
    doc: dict[str, Any] = {"_id": account.sub}
    if account.has_atproto:
        doc["atproto"] = {
            "did": account.did,
            "handle": account.handle,
            "password": account.password,
        }
    db[USERS].replace_one({"_id": account.sub}, doc, upsert=True)
    if platform_handle:
        db[HANDLES].replace_one(
            {"_id": account.sub}, {"_id": account.sub, "handle": account.name}, upsert=True
        )


def provision_user(
    db: Database[Any],
    api: PdsApi,
    name: str,
    *,
    sub: str | None = None,
    with_atproto: bool = True,
    handle: str | None = None,
) -> WorldAccount:
    """Create the ATProto account (handle ``handle`` or ``{name}.test``) and store the user."""
    sub = sub or new_sub()
    if with_atproto:
        created = api.create_account(handle or f"{name}.test")
        account = WorldAccount(name, sub, created.did, created.handle, created.password)
    else:
        account = WorldAccount(name, sub)
    store_user(db, account)
    return account


def provision_guest(db: Database[Any], api: PdsApi, handle: str | None = None) -> WorldAccount:
    """The shared guest account (``art.test``) stored under ``users._id == "art-guest"``."""
    created = api.create_account(handle or f"{GUEST_NAME}.test")
    account = WorldAccount(GUEST_NAME, GUEST_USER_ID, created.did, created.handle, created.password)
    store_user(db, account, platform_handle=False)
    return account


# -- the platform's account lifecycle, in a running world ----------------------------------
# The platform makes an ATProto account for an existing user over time: it creates the
# account on the PDS, then sets ``users.atproto``; it deletes one the other way round
# (the PDS account goes, then ``atproto`` is unset). Both as ``$set``/``$unset`` updates.


def create_account(
    db: Database[Any], api: PdsApi, account: WorldAccount, *, handle: str | None = None
) -> WorldAccount:
    """Give the existing user ``account`` (a new) ATProto account, as the platform does."""
    created = api.create_account(handle or unique_handle(account.name))
    fresh = replace(account, did=created.did, handle=created.handle, password=created.password)
    db[USERS].update_one(
        {"_id": account.sub},
        {
            "$set": {
                "atproto": {"did": fresh.did, "handle": fresh.handle, "password": fresh.password}
            }
        },
        upsert=True,
    )
    return fresh


def delete_account(db: Database[Any], api: PdsApi, account: WorldAccount) -> WorldAccount:
    """Delete the user's ATProto account on the PDS, then unset ``users.atproto``."""
    if account.did is None:
        raise ValueError(f"{account.name} has no ATProto account")
    api.delete_account(account.did)
    db[USERS].update_one({"_id": account.sub}, {"$unset": {"atproto": ""}})
    return replace(account, did=None, handle=None, password=None)


def set_password(db: Database[Any], account: WorldAccount, password: str) -> WorldAccount:
    """Change the password stored in ``users`` (not on the PDS): a wrong one, or the fix."""
    db[USERS].update_one({"_id": account.sub}, {"$set": {"atproto.password": password}})
    return replace(account, password=password)
