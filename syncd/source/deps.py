"""What a source uses: handed in by the engine, so no source holds the engine."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from bson import Timestamp
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.asynchronous.mongo_client import AsyncMongoClient

from syncd.changes import Change
from syncd.config import MongoConfig
from syncd.health import HealthState
from syncd.positions import Positions
from syncd.source.publish import Publisher
from syncd.state.aio import StateCalls


@dataclass
class SourceDeps:
    client: AsyncMongoClient[dict[str, Any]]  # server commands (buildInfo, operationTime)
    db: AsyncDatabase[dict[str, Any]]  # the source database
    mongo: MongoConfig
    calls: StateCalls  # the state store, off the event loop when it is remote
    positions: Positions
    publisher: Publisher
    route_many: Callable[[Sequence[Change]], Awaitable[None]]
    health: HealthState
    stopping: asyncio.Event
    #: Persist the newest safe positions now (a backfill pass's end).
    save_positions: Callable[[], Awaitable[None]]
    dead_letter_retry_seconds: float = 0.0

    async def operation_time(self) -> tuple[int, int]:
        """The cluster's current operation time: where a stream after a scan must start."""
        async with self.client.start_session() as session:
            reply = await self.client.admin.command("ping", session=session)
            ts = reply.get("operationTime") or session.operation_time
        if not isinstance(ts, Timestamp):
            raise RuntimeError("the server reported no operationTime: is it a replica set?")
        return (ts.time, ts.inc)
