"""The daemon's lifecycle: startup → main loop → graceful shutdown.

- startup: logging, state store, clients, the ops listener (metrics, health);
- the work task: backfill when there is no saved position (or one is
  unfinished), then tail the stream; a lost history starts a repair backfill;
- the main loop turns at least once a second: saves checkpoints, feeds the
  systemd watchdog from its own progress, updates ``STATUS=``;
- SIGTERM/SIGINT: stop reading, let in-flight batches finish within the grace
  period, abandon the rest (they are replayed on the next start), save the
  position, ``STOPPING=1``, exit 0. SIGHUP re-reads the log level and format
  from the config file. SIGUSR1/SIGUSR2 log what it waits on (:mod:`syncd.dump`).

With ``state.backend = "mongodb"`` the work runs only while this instance holds
a partition's lease (:mod:`syncd.lease`, :mod:`syncd.cluster`): it stands by
(metrics and health up, ``syncd_leader`` 0) until a lease is free, leads while
it renews it, and on losing it steps down at once, abandoning in-flight work
without writing anything, and stands by again. A clean shutdown releases the
lease so a standby takes over without waiting for it to lapse.
"""

from __future__ import annotations

import asyncio
import signal
import time
from typing import Any

import structlog
from pymongo import MongoClient

from syncd import config as config_mod
from syncd import dump, logs, metrics
from syncd.cluster import Candidate
from syncd.config import Config, ConfigError
from syncd.engine import Engine, mongo_client
from syncd.health import HealthServer, HealthState, start_health_server
from syncd.lease import Lease, LeaseLost
from syncd.notify import Notifier, WatchdogPinger
from syncd.source.backfill import Backfill
from syncd.source.redrive import redrive_loop
from syncd.source.stream import HistoryLost, StreamSource
from syncd.state import ClusterStore

log = structlog.get_logger("syncd.daemon")

#: How often the gauges read from the store (dead letters, ...) are refreshed.
GAUGE_INTERVAL = 1.0
CHECKPOINT_INTERVAL = 0.2


class Daemon:
    def __init__(self, config: Config, *, notifier: Notifier | None = None) -> None:
        self.config = config
        self.notifier = notifier or Notifier()
        self.health = HealthState(config.metrics.liveness_stale_seconds)
        self.should_exit = asyncio.Event()
        self.engine: Engine | None = None
        self.server: HealthServer | None = None
        self._ready_sent = False
        self.exit_code = 0
        self.lease: Lease | None = None

    # -- public entry points -------------------------------------------------
    def run(self) -> int:
        return asyncio.run(self.serve())

    async def serve(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._request_exit, sig)
        loop.add_signal_handler(signal.SIGHUP, self._reload)
        dump.install(loop)
        try:
            await self.startup()
            if self.config.state.backend == "mongodb":
                await self.lead_or_stand_by()
            else:
                metrics.LEADER.set(1)
                self.engine = Engine(self.config, health=self.health)
                await self.main_loop()
        finally:
            await self.shutdown()
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
            dump.uninstall(loop)
        return self.exit_code

    # -- phases --------------------------------------------------------------
    async def startup(self) -> None:
        metrics.PARTITIONS.set(self.config.cluster.partitions)
        self.server = await start_health_server(self.config.metrics, self.health)
        self.health.register("main")
        log.info(
            "syncd_starting",
            database=self.config.mongo.database,
            collections=list(self.config.mongo.collections),
            pds=self.config.pds.url,
            state=self.config.state.backend,
            metrics=self.server.url if self.server.listening else None,
        )

    async def lead_or_stand_by(self) -> None:
        """Cluster mode: wait for a lease, lead while it holds, stand by again when lost."""
        uri = self.config.state.mongodb_uri or self.config.mongo.uri
        client = mongo_client(uri)
        # Lease renewals get their own synchronous client and thread (syncd/lease.py).
        renewals: MongoClient[dict[str, Any]] = MongoClient(
            uri, appname="syncd-lease", serverSelectionTimeoutMS=5000, socketTimeoutMS=5000
        )
        candidate = Candidate(self.config, client, renewals)
        try:
            while not self.should_exit.is_set():
                self.health.set_phase("standby")
                if not self._ready_sent:
                    self._ready_sent = True
                    self.notifier.ready("standing by")
                self.notifier.status("standby: waiting for a lease")
                lease = await candidate.acquire(self.should_exit, self._standby_turn)
                if lease is None:
                    return
                self.lease = lease
                if not await self._lead(lease):
                    return
        finally:
            metrics.LEADER.set(0)
            await client.close()
            renewals.close()

    def _standby_turn(self) -> None:
        self.health.beat("main")
        WatchdogPinger(self.notifier, self.health).tick()

    async def _lead(self, lease: Lease) -> bool:
        """Run the engine under ``lease``; False when the daemon is exiting, True after a step-down."""
        try:
            self.engine = Engine(
                self.config, health=self.health, fence=lease, partition=lease.partition
            )
            if isinstance(self.engine.store, ClusterStore):
                await self.engine.calls(self.engine.store.claim)
        except LeaseLost:
            await self._step_down()
            return True
        keeper = asyncio.create_task(lease.keep(), name="lease")
        try:
            await self.main_loop(lease)
        finally:
            keeper.cancel()
            await asyncio.gather(keeper, return_exceptions=True)
        if self.should_exit.is_set() and not lease.lost.is_set():
            await self._close_engine()  # drain, save, release the lease (client still open)
            return False
        await self._step_down()
        return not self.should_exit.is_set()

    async def _step_down(self) -> None:
        """The lease is gone: abandon everything in flight and write nothing."""
        engine, self.engine = self.engine, None
        metrics.LEADER.set(0)
        metrics.PARTITION.set(-1)
        self.health.unregister("source")
        self.health.set_stream_connected(False, "standby")
        if engine is not None:
            await engine.aclose(save=False)
        log.warning(
            "stepped_down",
            lease=self.lease.id if self.lease else None,
            reason=self.lease.lost_reason if self.lease else None,
        )
        self.lease = None

    async def main_loop(self, lease: Lease | None = None) -> None:
        assert self.engine is not None
        engine = self.engine
        self.health.register("source")
        pinger = WatchdogPinger(self.notifier, self.health)
        await engine.parking.load()
        work = asyncio.create_task(self.work(), name="work")
        redrive = asyncio.create_task(redrive_loop(engine.sources), name="redrive")
        parking = asyncio.create_task(engine.parking.run(engine.stopping), name="parking")
        lifecycle = asyncio.create_task(engine.lifecycle.run(), name="lifecycle")
        last_status = last_gauges = 0.0
        while not self.should_exit.is_set():
            if lease is not None and lease.lost.is_set():
                break
            if work.done():
                exc = work.exception()
                if isinstance(exc, LeaseLost):
                    break
                if exc is not None:
                    log.error("work_failed", error=f"{type(exc).__name__}: {exc}")
                    self.exit_code = 1
                break
            try:
                await engine.save_checkpoints()
                if time.monotonic() - last_gauges >= GAUGE_INTERVAL:
                    last_gauges = time.monotonic()
                    await engine.refresh_gauges()
            except LeaseLost:
                break
            if not self._ready_sent and (
                self.health.stream_connected or await self._first_batch_safe()
            ):
                self._ready_sent = True
                self.notifier.ready("syncing")
            self.health.beat("main")
            pinger.tick()
            now = time.monotonic()
            if now - last_status > 5:
                last_status = now
                self.notifier.status(self._status_line())
            try:
                await asyncio.wait_for(self.should_exit.wait(), CHECKPOINT_INTERVAL)
            except TimeoutError:
                pass
        if lease is None or not lease.lost.is_set():
            self.health.set_phase("stopping")
            self.notifier.stopping("stopping")
        for task in (lifecycle, parking, redrive, work):
            if not task.done():
                task.cancel()
        await asyncio.gather(work, redrive, parking, lifecycle, return_exceptions=True)

    async def work(self) -> None:
        """Backfill when needed, then stream; rescan when the history was lost."""
        assert self.engine is not None
        engine = self.engine
        calls, store = engine.calls, engine.store
        stream = StreamSource(engine.sources)
        while True:
            position = await calls(store.load_position)
            if position is None or await calls(store.backfill_start_time) is not None:
                await Backfill(engine.sources).run()
                position = await calls(store.load_position)
            self.health.set_phase("streaming")
            try:
                await stream.run(position)
                return
            except HistoryLost as exc:
                metrics.HISTORY_LOST.inc()
                log.error(
                    "history_lost",
                    detail=str(exc)[:300],
                    action="the saved position has left the oplog; rescanning every collection "
                    "and removing records whose documents are gone",
                )
                await calls(store.clear_position)
                await Backfill(engine.sources).ensure_started("history_lost")

    async def _close_engine(self) -> None:
        """Graceful end of work: drain within the grace period, save, release the lease."""
        engine, self.engine = self.engine, None
        if engine is None:
            return
        drained = await engine.drain(self.config.pipeline.shutdown_grace_seconds)
        if not drained:
            log.warning("shutdown_abandoning_in_flight", outstanding=engine.positions.outstanding)
        await engine.aclose()
        if self.lease is not None:
            await self.lease.release()
            self.lease = None
        log.info("syncd_stopped", drained=drained)

    async def shutdown(self) -> None:
        self.health.set_phase("stopping")
        await self._close_engine()
        if self.server is not None:
            await self.server.close()
        self.notifier.close()

    # -- helpers -------------------------------------------------------------
    async def _first_batch_safe(self) -> bool:
        assert self.engine is not None
        progress = await self.engine.calls(self.engine.store.backfill_progress)
        return any(p.scanned > 0 or p.done for p in progress.values())

    def _status_line(self) -> str:
        assert self.engine is not None
        e = self.engine
        return (
            f"{self.health.phase}; in flight {e.positions.outstanding}; "
            f"lag {self.health.lag:.1f}s; stream {'open' if self.health.stream_connected else 'closed'}"
        )

    def _request_exit(self, sig: signal.Signals) -> None:
        if self.should_exit.is_set():
            return
        log.info("signal_received", signal=sig.name)
        self.should_exit.set()

    def _reload(self) -> None:
        """SIGHUP: re-read logging settings (level, format) from the config file."""
        try:
            fresh = (
                config_mod.load(self.config.source_path) if self.config.source_path else self.config
            )
        except ConfigError as exc:
            log.error("reload_failed", error=str(exc))
            return
        self.notifier.reloading()
        logs.configure(fresh.logging.level, fresh.logging.format)
        log.info("reloaded", log_level=fresh.logging.level, log_format=fresh.logging.format)
        self.notifier.ready()
