"""Clustering: which partition an account belongs to, and waiting for a lease.

``partition_of`` is a stable hash (SHA-256 of the owner DID, not Python's
salted ``hash``), so every instance, on every host and after every restart,
assigns an account to the same partition. :class:`Candidate` is the standby
side: it polls the partitions' leases until one is free or lapsed and takes it.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
from typing import Any

import structlog
from pymongo import AsyncMongoClient, MongoClient

from syncd import metrics
from syncd.config import Config
from syncd.lease import COLLECTION, Lease

log = structlog.get_logger("syncd.cluster")


def partition_of(did: str, partitions: int) -> int:
    """The partition (0 … partitions-1) that serves the account ``did``."""
    if partitions <= 1:
        return 0
    digest = hashlib.sha256(did.encode()).digest()
    return int.from_bytes(digest[:8], "big") % partitions


def instance_id(config: Config) -> str:
    return config.cluster.instance_id or f"{socket.gethostname()}:{os.getpid()}"


class Candidate:
    """Stand by until one partition's lease can be taken; one partition per instance."""

    def __init__(
        self,
        config: Config,
        client: AsyncMongoClient[dict[str, Any]],
        renewals: MongoClient[dict[str, Any]] | None = None,
    ) -> None:
        self.config = config
        self.owner = instance_id(config)
        coll = client[config.state.mongodb_database][COLLECTION]
        sync = None if renewals is None else renewals[config.state.mongodb_database][COLLECTION]
        n = config.cluster.partitions
        # Start at a different partition on each instance so a cold start spreads out.
        first = partition_of(self.owner, n)
        self.leases = [
            Lease(
                coll,
                cluster=config.cluster.cluster_name,
                partition=(first + i) % n,
                owner=self.owner,
                seconds=config.cluster.lease_seconds,
                renewals=sync,
            )
            for i in range(n)
        ]

    @property
    def poll_seconds(self) -> float:
        return max(0.2, self.config.cluster.lease_seconds / 6)

    async def acquire(self, stop: asyncio.Event, on_turn: Any = None) -> Lease | None:
        """The first lease taken, or ``None`` once ``stop`` is set."""
        metrics.LEADER.set(0)
        metrics.PARTITION.set(-1)
        announced = False
        while not stop.is_set():
            for lease in self.leases:
                try:
                    if await lease.try_acquire():
                        metrics.LEADER.set(1)
                        metrics.PARTITION.set(lease.partition)
                        return lease
                except Exception as exc:  # MongoDB unreachable: stay a standby, keep trying
                    log.warning("lease_poll_failed", error=type(exc).__name__)
                    break
            if not announced:
                announced = True
                log.info(
                    "standing_by",
                    owner=self.owner,
                    cluster=self.config.cluster.cluster_name,
                    partitions=self.config.cluster.partitions,
                )
            if on_turn is not None:
                on_turn()
            try:
                await asyncio.wait_for(stop.wait(), self.poll_seconds)
            except TimeoutError:
                pass
        return None
