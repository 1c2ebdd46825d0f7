"""Durable state: resume position, ledger, backfill progress, dead letters.

:func:`open_store` picks the backend from ``[state] backend``; everything else
types against :class:`Store`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from syncd.state.model import (
    BackfillProgress,
    BlobAdd,
    BlobForget,
    ClusterStore,
    DeadLetter,
    GoneAccount,
    KnownAccount,
    LedgerDelete,
    LedgerEntry,
    LedgerPending,
    LedgerPut,
    Lookup,
    Outcome,
    OwnerScan,
    ParkedAccount,
    Position,
    StateError,
    StateOp,
    Store,
)
from syncd.state.sqlite import StateStore

if TYPE_CHECKING:
    from syncd.config import Config
    from syncd.lease import Fence

__all__ = [
    "BackfillProgress",
    "BlobAdd",
    "BlobForget",
    "ClusterStore",
    "DeadLetter",
    "GoneAccount",
    "KnownAccount",
    "LedgerDelete",
    "LedgerEntry",
    "LedgerPending",
    "LedgerPut",
    "Lookup",
    "Outcome",
    "OwnerScan",
    "ParkedAccount",
    "Position",
    "StateError",
    "StateOp",
    "StateStore",
    "Store",
    "open_store",
    "state_mongo_uri",
]


def state_mongo_uri(config: Config) -> str:
    return config.state.mongodb_uri or config.mongo.uri


def open_store(config: Config, *, fence: Fence | None = None, partition: int = 0) -> Store:
    """The configured store; with ``mongodb``, scoped to one cluster partition."""
    if config.state.backend != "mongodb":
        return StateStore(config.state.directory)
    from pymongo import MongoClient

    from syncd.logs import register_secret_from_uri
    from syncd.state.mongo import MongoStateStore

    uri = state_mongo_uri(config)
    register_secret_from_uri(uri)
    client: MongoClient[dict[str, Any]] = MongoClient(
        uri,
        tz_aware=True,
        appname="syncd-state",
        serverSelectionTimeoutMS=10_000,
        socketTimeoutMS=20_000,
    )
    return MongoStateStore(
        client,
        config.state.mongodb_database,
        cluster=config.cluster.cluster_name,
        partition=partition,
        fence=fence,
    )
