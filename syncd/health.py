"""Health state and the operations HTTP listener (``/metrics``, ``/healthz``, ``/readyz``).

:class:`HealthState` is what the daemon reports into (loop heartbeats, change-stream
state, lag, phase) and what the endpoints and the systemd watchdog read. It is plain
synchronous state with a monotonic clock: every method is cheap and safe to call
from any coroutine on the daemon's event loop.

:class:`HealthServer` is a deliberately tiny HTTP/1.1 server on ``asyncio.start_server``
rather than ``prometheus_client.start_http_server``:

* it runs *inside* the daemon's event loop, so ``/healthz`` observes the same loop
  the daemon runs on -- if that loop is wedged, the listener stops answering too,
  which is exactly what a liveness probe should see (a helper thread would keep
  answering "ok" for a dead loop);
* no threads reading daemon state concurrently, and shutdown is a plain ``await close()``;
* prometheus-client's helpers only serve ``/metrics``; we need three routes.

Each connection handles one request and is closed (``Connection: close``); the only
clients are Prometheus, probes and humans with ``curl``. Exposition is still done by
``prometheus_client`` (``generate_latest`` / OpenMetrics negotiation via ``Accept``).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import structlog
from prometheus_client import CollectorRegistry, exposition

from syncd import metrics

if TYPE_CHECKING:
    from syncd.config import MetricsConfig

log = structlog.get_logger(__name__)

PHASES = ("starting", "standby", "backfill", "streaming", "stopping")
DEFAULT_STALE_AFTER_SECONDS = 30.0

# Limits for the request head; anything bigger is not a probe or a scraper.
_MAX_HEAD_BYTES = 16 * 1024
_READ_TIMEOUT_SECONDS = 5.0


def _fmt_seconds(value: float) -> str:
    """``60`` -> ``60s``, ``123.456`` -> ``123.5s`` (one line, human-readable)."""
    if float(value).is_integer():
        return f"{int(value)}s"
    return f"{value:.1f}s"


class HealthState:
    """What the daemon reports and the health endpoints read.

    * Liveness: every *registered* loop (a name passed to :meth:`beat` or
      :meth:`register`) must have beaten within ``stale_after`` seconds.
      A loop that finishes for good (e.g. a one-off backfill task) should call
      :meth:`unregister`, or it will eventually be reported as stuck.
    * Readiness: live, phase is ``streaming``, the change stream is open and the lag
      is at most ``max_lag`` seconds.
    """

    def __init__(
        self,
        stale_after: float = DEFAULT_STALE_AFTER_SECONDS,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if stale_after <= 0:
            raise ValueError("stale_after must be positive")
        self.stale_after = float(stale_after)
        self._clock = clock
        self._beats: dict[str, float] = {}
        self._stream_connected = False
        self._stream_reason = "not opened yet"
        self._lag = 0.0
        self._phase = "starting"

    # -- reported by the daemon -------------------------------------------------

    def register(self, loop: str) -> None:
        """Start watching ``loop`` now, before its first turn (counts as a beat)."""
        self._beats[loop] = self._clock()

    def unregister(self, loop: str) -> None:
        """Stop watching ``loop`` (it has finished on purpose)."""
        self._beats.pop(loop, None)

    def beat(self, loop: str) -> None:
        """The named loop (``"stream"``, ``"writer"``, ``"main"``, ...) made a turn."""
        self._beats[loop] = self._clock()

    def set_stream_connected(self, connected: bool, reason: str = "") -> None:
        """The change stream opened (``True``) or closed (``False``, with a reason)."""
        self._stream_connected = bool(connected)
        self._stream_reason = "" if connected else (" ".join(reason.split()) or "unknown")
        metrics.STREAM_CONNECTED.set(1 if connected else 0)

    def set_lag(self, seconds: float) -> None:
        """Seconds behind the newest cluster time (0 when caught up and idle)."""
        self._lag = max(0.0, float(seconds))
        metrics.LAG.set(self._lag)

    def set_phase(self, phase: str) -> None:
        """One of ``starting``, ``standby``, ``backfill``, ``streaming``, ``stopping``."""
        if phase not in PHASES:
            raise ValueError(f"unknown phase {phase!r} (one of {', '.join(PHASES)})")
        self._phase = phase

    # -- read by the endpoints and the watchdog --------------------------------

    @property
    def phase(self) -> str:
        return self._phase

    @property
    def stream_connected(self) -> bool:
        return self._stream_connected

    @property
    def lag(self) -> float:
        return self._lag

    def loop_ages(self) -> dict[str, float]:
        """Seconds since each registered loop last beat."""
        now = self._clock()
        return {name: max(0.0, now - at) for name, at in self._beats.items()}

    def liveness(self) -> tuple[bool, str]:
        """``(True, "ok")`` or ``(False, "loop 'writer' stuck: no beat for 42.5s (> 30s)")``."""
        stale = [(age, name) for name, age in self.loop_ages().items() if age > self.stale_after]
        if not stale:
            return True, "ok"
        stale.sort(reverse=True)
        age, name = stale[0]
        reason = f"loop {name!r} stuck: no beat for {_fmt_seconds(age)} (> {_fmt_seconds(self.stale_after)})"
        if len(stale) > 1:
            others = ", ".join(repr(n) for _, n in stale[1:])
            reason += f"; also stale: {others}"
        return False, reason

    def readiness(self, max_lag: float) -> tuple[bool, str]:
        """``(True, "ok")`` or ``(False, <one-line reason>)``; see the class docstring."""
        live, why = self.liveness()
        if not live:
            return False, why
        if self._phase == "starting":
            return False, "starting"
        if self._phase == "stopping":
            return False, "stopping"
        if self._phase == "standby":
            return False, "standby: another instance holds the lease"
        if self._phase == "backfill":
            return False, "backfill in progress"
        if not self._stream_connected:
            return False, f"stream disconnected: {self._stream_reason}"
        if self._lag > max_lag:
            return False, f"lag {_fmt_seconds(self._lag)} > {_fmt_seconds(max_lag)}"
        return True, "ok"


def parse_listen(listen: str) -> tuple[str, int]:
    """``"127.0.0.1:9464"`` -> ``("127.0.0.1", 9464)``; ``"[::1]:0"`` -> ``("::1", 0)``."""
    host, sep, port = listen.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"expected HOST:PORT, got {listen!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses; false for wildcards and the rest."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    503: "Service Unavailable",
}


class HealthServer:
    """The operations listener. Create with :func:`start_health_server`."""

    def __init__(
        self,
        health: HealthState,
        *,
        ready_max_lag_seconds: float,
        registry: CollectorRegistry = metrics.REGISTRY,
    ) -> None:
        self.health = health
        self.ready_max_lag_seconds = ready_max_lag_seconds
        self._registry = registry
        self._server: asyncio.Server | None = None
        self._host = ""
        self._port: int | None = None

    @property
    def listening(self) -> bool:
        return self._server is not None

    @property
    def host(self) -> str:
        return self._host

    @property
    def port(self) -> int:
        """The bound port (the real one when ``listen`` asked for port 0)."""
        if self._port is None:
            raise RuntimeError("the health server is not listening (metrics.enabled = false?)")
        return self._port

    @property
    def url(self) -> str:
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self.port}"

    async def start(self, host: str, port: int) -> None:
        self._server = await asyncio.start_server(self._handle, host, port)
        sockname = self._server.sockets[0].getsockname()
        self._host, self._port = host, int(sockname[1])
        log.info("ops listener started", listen=f"{host}:{self._port}")
        if not is_loopback(host):
            log.warning(
                "ops listener bound to a non-loopback address; /metrics and the health "
                "endpoints are unauthenticated -- firewall the port",
                listen=f"{host}:{self._port}",
            )

    async def close(self) -> None:
        """Stop listening and wait for in-flight requests to finish."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(server.wait_closed(), timeout=5.0)
        log.info("ops listener stopped")

    async def __aenter__(self) -> HealthServer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- HTTP ------------------------------------------------------------------

    def route(self, method: str, target: str, accept: str) -> tuple[int, str, bytes]:
        """Status, content type and body for one request (no I/O; testable directly)."""
        if method not in ("GET", "HEAD"):
            return 405, "text/plain; charset=utf-8", b"method not allowed\n"
        path = target.split("?", 1)[0]
        if path == "/metrics":
            encoder, content_type = exposition.choose_encoder(accept)
            return 200, content_type, encoder(self._registry)
        if path == "/healthz":
            ok, reason = self.health.liveness()
        elif path == "/readyz":
            ok, reason = self.health.readiness(self.ready_max_lag_seconds)
        else:
            return 404, "text/plain; charset=utf-8", b"not found\n"
        return (200 if ok else 503), "text/plain; charset=utf-8", (reason + "\n").encode()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            try:
                head = await asyncio.wait_for(
                    reader.readuntil(b"\r\n\r\n"), timeout=_READ_TIMEOUT_SECONDS
                )
            except asyncio.LimitOverrunError:
                await self._respond(writer, 400, "text/plain", b"request too large\n", False)
                return
            except (asyncio.IncompleteReadError, TimeoutError, ConnectionError):
                return
            if len(head) > _MAX_HEAD_BYTES:
                await self._respond(writer, 400, "text/plain", b"request too large\n", False)
                return
            lines = head.decode("latin-1").split("\r\n")
            parts = lines[0].split()
            if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
                await self._respond(writer, 400, "text/plain", b"bad request\n", False)
                return
            method, target = parts[0], parts[1]
            accept = ""
            for line in lines[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "accept":
                    accept = value.strip()
            try:
                status, ctype, body = self.route(method, target, accept)
            except Exception:
                log.exception("ops listener: request failed", target=target)
                status, ctype, body = 500, "text/plain; charset=utf-8", b"internal error\n"
            await self._respond(writer, status, ctype, body, method == "HEAD")
        except Exception:  # never let a client take the daemon down
            log.exception("ops listener: connection error")
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    @staticmethod
    async def _respond(
        writer: asyncio.StreamWriter, status: int, ctype: str, body: bytes, head_only: bool
    ) -> None:
        reason = _REASONS.get(status, "Internal Server Error")
        header = (
            f"HTTP/1.1 {status} {reason}\r\n"
            f"Content-Type: {ctype}\r\n"
            f"Content-Length: {len(body)}\r\n"
            "Cache-Control: no-store\r\n"
            "Connection: close\r\n\r\n"
        ).encode("latin-1")
        writer.write(header if head_only else header + body)
        with contextlib.suppress(ConnectionError):
            await writer.drain()


async def start_health_server(cfg: MetricsConfig, health: HealthState) -> HealthServer:
    """Start the ops listener on ``cfg.listen`` (default loopback) in the running loop.

    When ``cfg.enabled`` is false nothing is bound: the returned server has
    ``listening == False`` and ``close()`` is a no-op, so callers need no special case.
    Raises ``OSError`` if the address cannot be bound (the daemon should exit: a
    daemon nobody can observe is worse than one that refuses to start).
    """
    server = HealthServer(health, ready_max_lag_seconds=cfg.ready_max_lag_seconds)
    if not cfg.enabled:
        log.info("ops listener disabled (metrics.enabled = false)")
        return server
    host, port = parse_listen(cfg.listen)
    await server.start(host, port)
    return server
