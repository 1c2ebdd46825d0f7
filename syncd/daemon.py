"""The daemon's lifecycle: startup → main loop → graceful shutdown.

- startup: logging, state store, clients, the ops listener (metrics, health);
- the work task: backfill when there is no saved position (or one is
  unfinished), then tail the stream; a lost history starts a repair backfill;
- the main loop turns at least once a second: saves checkpoints, feeds the
  systemd watchdog from its own progress, updates ``STATUS=``;
- SIGTERM/SIGINT: stop reading, let in-flight batches finish within the grace
  period, abandon the rest (they are replayed on the next start), save the
  position, ``STOPPING=1``, exit 0. SIGHUP re-reads the log level and format
  from the config file.
"""

from __future__ import annotations

import asyncio
import signal
import time

import structlog

from syncd import config as config_mod
from syncd import logs, metrics
from syncd.config import Config, ConfigError
from syncd.engine import Engine
from syncd.health import HealthServer, HealthState, start_health_server
from syncd.notify import Notifier, WatchdogPinger
from syncd.source.backfill import Backfill
from syncd.source.redrive import redrive_loop
from syncd.source.stream import HistoryLost, StreamSource

log = structlog.get_logger("syncd.daemon")

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

    # -- public entry points -------------------------------------------------
    def run(self) -> int:
        return asyncio.run(self.serve())

    async def serve(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._request_exit, sig)
        loop.add_signal_handler(signal.SIGHUP, self._reload)
        try:
            await self.startup()
            await self.main_loop()
        finally:
            await self.shutdown()
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
        return self.exit_code

    # -- phases --------------------------------------------------------------
    async def startup(self) -> None:
        self.engine = Engine(self.config, health=self.health)
        self.server = await start_health_server(self.config.metrics, self.health)
        self.health.register("main")
        self.health.register("source")
        log.info(
            "syncd_starting",
            database=self.config.mongo.database,
            collections=list(self.config.mongo.collections),
            pds=self.config.pds.url,
            metrics=self.server.url if self.server.listening else None,
        )

    async def main_loop(self) -> None:
        assert self.engine is not None
        engine = self.engine
        pinger = WatchdogPinger(self.notifier, self.health)
        work = asyncio.create_task(self.work(), name="work")
        redrive = asyncio.create_task(redrive_loop(engine), name="redrive")
        last_status = 0.0
        while not self.should_exit.is_set():
            if work.done():
                exc = work.exception()
                if exc is not None:
                    log.error("work_failed", error=f"{type(exc).__name__}: {exc}")
                    self.exit_code = 1
                break
            engine.save_checkpoints()
            if not self._ready_sent and (self.health.stream_connected or self._first_batch_safe()):
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
        self.health.set_phase("stopping")
        self.notifier.stopping("stopping")
        for task in (redrive, work):
            if not task.done():
                task.cancel()
        await asyncio.gather(work, redrive, return_exceptions=True)

    async def work(self) -> None:
        """Backfill when needed, then stream; rescan when the history was lost."""
        assert self.engine is not None
        engine = self.engine
        store = engine.store
        stream = StreamSource(engine)
        while True:
            position = store.load_position()
            if position is None or store.backfill_start_time() is not None:
                await Backfill(engine).run()
                position = store.load_position()
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
                store.clear_position()
                await Backfill(engine).ensure_started("history_lost")

    async def shutdown(self) -> None:
        engine = self.engine
        if engine is not None:
            drained = await engine.drain(self.config.pipeline.shutdown_grace_seconds)
            if not drained:
                log.warning(
                    "shutdown_abandoning_in_flight", outstanding=engine.checkpointer.outstanding
                )
            await engine.aclose()
            log.info("syncd_stopped", drained=drained)
        if self.server is not None:
            await self.server.close()
        self.notifier.close()

    # -- helpers -------------------------------------------------------------
    def _first_batch_safe(self) -> bool:
        assert self.engine is not None
        progress = self.engine.store.backfill_progress()
        return any(p.scanned > 0 or p.done for p in progress.values())

    def _status_line(self) -> str:
        assert self.engine is not None
        e = self.engine
        return (
            f"{self.health.phase}; in flight {e.checkpointer.outstanding}; "
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
        log.info("reloaded", level=fresh.logging.level, format=fresh.logging.format)
        self.notifier.ready()
