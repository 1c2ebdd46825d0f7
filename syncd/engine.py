"""The engine: every component of a running syncd, wired once, closed once.

The daemon (``syncd run``) and the one-shot commands (``backfill``, admin
commands) build the same engine, so a document becomes a record through exactly
one code path whichever command moved it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Sequence
from datetime import UTC
from typing import TYPE_CHECKING, Any

import structlog
from bson import CodecOptions, DatetimeConversion
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from syncd import metrics
from syncd.accounts import AccountResolver
from syncd.cluster import partition_of
from syncd.config import Config
from syncd.gone import GoneAccounts
from syncd.handles import Handles
from syncd.health import HealthState
from syncd.images.fetch import ImageFetcher, make_client
from syncd.images.thumbnail import ThumbnailPool
from syncd.lease import LeaseLost
from syncd.lifecycle import build_lifecycle
from syncd.logs import register_secret_from_uri
from syncd.mappings import MappingContext
from syncd.media.limits import UploadLimit
from syncd.parking import Parking, reason_label
from syncd.pds.repo import Repo
from syncd.pds.sessions import Account, SessionManager
from syncd.pds.xrpc import XrpcClient
from syncd.positions import Positions
from syncd.router import Router, RouterDeps
from syncd.source.deps import SourceDeps
from syncd.source.publish import Publisher
from syncd.state import open_store
from syncd.state.aio import StateCalls
from syncd.write import AccountWriter, WriterDeps
from syncd.write.images import ImageStage
from syncd.write.streamed import StreamedSettings, StreamedStage

if TYPE_CHECKING:
    from syncd.lease import Fence

log = structlog.get_logger("syncd.engine")


def mongo_client(uri: str, **kwargs: Any) -> AsyncMongoClient[dict[str, Any]]:
    """The client options syncd relies on.

    ``DATETIME_AUTO`` decodes dates outside Python's range instead of failing the
    whole batch (the mapping dead-letters them). The source database is read with
    :data:`SOURCE_CODEC` (see :func:`source_database`).
    """
    register_secret_from_uri(uri)
    return AsyncMongoClient(
        uri,
        tz_aware=True,
        datetime_conversion="DATETIME_AUTO",
        unicode_decode_error_handler="replace",
        appname="syncd",
        retryWrites=True,
        serverSelectionTimeoutMS=10_000,
        socketTimeoutMS=20_000,
        **kwargs,
    )


#: How source documents are decoded: ``surrogateescape`` keeps invalid UTF-8 decodable,
#: as lone surrogates that lexicon validation rejects ("not valid UTF-8"), so such a
#: document is dead-lettered instead of stalling the stream -- while a real U+FFFD a
#: user typed stays a character like any other (``replace`` would confuse the two; the
#: client option accepts only strict/replace/ignore, the codec any handler).
SOURCE_CODEC: CodecOptions[dict[str, Any]] = CodecOptions(
    tz_aware=True,
    tzinfo=UTC,
    datetime_conversion=DatetimeConversion.DATETIME_AUTO,
    unicode_decode_error_handler="surrogateescape",
)


def source_database(
    client: AsyncMongoClient[dict[str, Any]], name: str
) -> AsyncDatabase[dict[str, Any]]:
    return client.get_database(name, codec_options=SOURCE_CODEC)


class Engine:
    """Everything one running syncd (or one cluster partition's leader) needs, wired.

    The engine builds the store, the clients and the limits, and hands each stage
    exactly what it uses (:class:`~syncd.router.RouterDeps`,
    :class:`~syncd.write.WriterDeps`); no stage holds the engine. The daemon, the
    one-shot ``backfill`` and the admin commands use its parts.

    ``fence``: the lease this engine writes under (``None`` without a cluster);
    ``partition``: which of ``cluster.partitions`` this engine serves (``None``: all
    of them, as one-shot and admin commands do; their store is partition 0's).
    """

    def __init__(
        self,
        config: Config,
        *,
        health: HealthState | None = None,
        fence: Fence | None = None,
        partition: int | None = None,
    ) -> None:
        self.config = config
        self.health = health or HealthState()
        self.fence = fence
        self.partition = partition
        self.partitions = config.cluster.partitions
        self.store = open_store(config, fence=fence, partition=partition or 0)
        self.calls = StateCalls.for_store(self.store)
        self.gone = GoneAccounts(self.calls)  # lifecycle: accounts syncd no longer writes for
        self.client = mongo_client(config.mongo.uri)
        self.db = source_database(self.client, config.mongo.database)
        self.xrpc = XrpcClient(config.pds.url, timeout=config.pds.timeout_seconds)
        self.sessions = SessionManager(self.xrpc, self.store)
        self.repo = Repo(self.xrpc, self.sessions, fence=fence)
        self.accounts = AccountResolver(
            self.db,
            users_collection=config.mongo.users_collection,
            guest_id=config.mongo.guest_user_id,
            gone=self.gone.reason,
        )
        self.mapping_ctx = MappingContext(
            public_base_url=config.records.public_base_url.rstrip("/"),
            images=config.images,
            tape_hosts=config.tapes.allowed_hosts,
        )
        self.image_http = make_client(config.images)
        self.image_fetcher = ImageFetcher(self.image_http, config.images)
        self.thumbnails = ThumbnailPool.from_settings(config.images)
        self.images = ImageStage(config.images, self.image_fetcher, self.thumbnails)
        self.upload_limit = UploadLimit(config.pds.blob_upload_limit)
        self.streamed = (
            self._streamed_stage(config) if "tapes" in config.mongo.collections else None
        )
        self.positions = Positions(self.store, config.pipeline.queue_size)
        self.positions.on_wait(lambda: self.health.beat("source"))
        self.stopping = asyncio.Event()
        self.pds_slots = asyncio.Semaphore(config.pds.account_concurrency)
        partitioned = self.partitions > 1 and partition is not None
        self.router = Router(
            RouterDeps(
                calls=self.calls,
                accounts=self.accounts,
                mapping_ctx=self.mapping_ctx,
                make_writer=self._make_writer,
                credentials_changed=self._credentials_changed,
                handles=Handles(self.calls),
                owns=self.owns if partitioned else None,
                is_gone=self.gone.__contains__,
            )
        )
        self.publisher = Publisher(
            self.db, self.positions, self.router.route_many, config.pipeline.queue_size
        )
        self.parking = Parking(self.calls, self._unpark)
        self._parked_series: set[tuple[str, str]] = set()
        self.lifecycle = build_lifecycle(
            self.config,
            db=self.db,
            calls=self.calls,
            positions=self.positions,
            router=self.router,
            publisher=self.publisher,
            parking=self.parking,
            accounts=self.accounts,
            gone=self.gone,
            sessions=self.sessions,
            xrpc=self.xrpc,
            stopping=self.stopping,
            owns=self.owns,
        )
        self.sources = SourceDeps(
            client=self.client,
            db=self.db,
            mongo=config.mongo,
            calls=self.calls,
            positions=self.positions,
            publisher=self.publisher,
            route_many=self.router.route_many,
            health=self.health,
            stopping=self.stopping,
            save_positions=self.save_checkpoints,
            dead_letter_retry_seconds=config.pipeline.dead_letter_retry_seconds,
            user_event=self.lifecycle.on_user_event,
            resync_accounts=self.lifecycle.resync,
        )
        self._writer_deps = WriterDeps(
            calls=self.calls,
            repo=self.repo,
            db=self.db,
            images=self.images,
            slots=self.pds_slots,
            stopping=self.stopping,
            mapping_ctx=self.mapping_ctx,
            max_writes=config.pds.max_writes_per_call,
            retry_cap=config.pds.retry_max_seconds,
            parking=self.parking,
            on_done=self.router.op_done,
            streamed=self.streamed,
        )
        metrics.initialise(tuple(config.mongo.collections))

    def _streamed_stage(self, config: Config) -> StreamedStage:
        """Tape MP4s: their own fetcher (the tapes' origins and timeouts, the image client)
        and upload bounds, apart from the text writes' PDS slots."""
        tapes = config.tapes
        settings = dataclasses.replace(
            config.images,
            allowed_hosts=tapes.allowed_hosts or config.images.allowed_hosts,
            timeout_seconds=tapes.timeout_seconds,
            retries=tapes.retries,
        )
        fetcher = ImageFetcher(self.image_http, settings, max_concurrent=tapes.prepared_max)
        return StreamedStage(
            fetcher,
            self.upload_limit,
            StreamedSettings(
                upload_concurrency=tapes.upload_concurrency,
                upload_bytes_in_flight=tapes.upload_bytes_in_flight,
                upload_bytes_per_second=tapes.upload_bytes_per_second,
                prepared_max=tapes.prepared_max,
                retries=tapes.retries,
                spool_directory=tapes.spool_directory or None,
            ),
        )

    def _credentials_changed(self, account: Account) -> None:
        """New credentials in ``users``: new sessions, and a parked account tries again now."""
        self.sessions.forget(account)
        self.parking.wake(account.did)

    async def _unpark(self, keys: Sequence[tuple[str, str]]) -> None:
        await self.publisher.republish(keys, operation="unpark")

    def _make_writer(self, account: Account) -> AccountWriter:
        return AccountWriter(account, self._writer_deps)

    def owns(self, did: str | None) -> bool:
        """Whether this engine's partition serves the account ``did`` (always, unpartitioned)."""
        if self.partitions <= 1 or self.partition is None:
            return True
        return partition_of(did or "", self.partitions) == self.partition

    async def refresh_gauges(self) -> None:
        """Dead letters and thumbnail-less paintings, from the store (kept incrementally
        there; this only reads the totals)."""
        counts = await self.calls(self.store.dead_letter_counts)
        for coll in self.config.mongo.collections:
            metrics.DEAD_LETTERS.labels(collection=coll).set(counts.get(coll, 0))
        if "paintings" in self.config.mongo.collections:
            missing = await self.calls(self.store.without_blob_count, "paintings")
            metrics.WITHOUT_THUMBNAIL.set(missing)
        parked = {
            (a.did, reason_label(a.reason)): a.documents
            for a in await self.calls(self.store.parked_accounts)
        }
        for gone in self._parked_series - set(parked):
            metrics.PARKED.remove(*gone)
        for (did, reason), n in parked.items():
            metrics.PARKED.labels(account=did, reason=reason).set(n)
        self._parked_series = set(parked)

    async def operation_time(self) -> tuple[int, int]:
        """The cluster's current operation time (:meth:`SourceDeps.operation_time`)."""
        return await self.sources.operation_time()

    async def save_checkpoints(self) -> None:
        """Persist the newest safe positions, and report lag and queue depths."""
        positions = self.positions
        saved = await positions.save(self.calls)
        oldest = positions.oldest_pending_started()
        self.health.set_lag(max(0.0, time.time() - oldest) if oldest else 0.0)
        if saved:
            metrics.RESUME_TOKEN_AGE.set(0)
        else:
            pos = await self.calls(self.store.load_position)
            if pos is not None:
                metrics.RESUME_TOKEN_AGE.set(max(0.0, time.time() - pos.saved_at))
        metrics.QUEUE_DEPTH.labels(stage="source").set(positions.outstanding)
        metrics.QUEUE_DEPTH.labels(stage="writer").set(self.router.queued)

    async def checkpoint_loop(self, interval: float = 0.2) -> None:
        """For one-shot commands: keep the watermark moving (the daemon's main loop does this)."""
        while True:
            await self.save_checkpoints()
            await asyncio.sleep(interval)

    async def drain(self, grace: float) -> bool:
        """Wait until every change handed to the writers has been applied."""
        try:
            await asyncio.wait_for(self.positions.drained(), grace)
            return True
        except TimeoutError:
            return False

    async def stop_writers(self) -> None:
        self.stopping.set()
        tasks = [w.task for w in self.router.writers.values() if w.task is not None]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def aclose(self, *, save: bool = True) -> None:
        """Stop and close everything; ``save=False`` after losing the lease (write nothing)."""
        await self.stop_writers()
        if save:
            try:
                await self.save_checkpoints()
            except LeaseLost:
                log.warning("final_checkpoint_fenced_out")
        await self.xrpc.aclose()
        await self.image_http.aclose()
        self.thumbnails.close(wait=False)
        await self.client.close()
        await self.router.deps.handles.flush()
        self.calls.close()
        self.store.close()
