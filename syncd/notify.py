"""The systemd notify protocol (``sd_notify(3)``), spoken directly over ``$NOTIFY_SOCKET``.

No libsystemd binding: a notification is one datagram of ``KEY=VALUE`` lines sent to
a unix datagram socket whose path is in ``$NOTIFY_SOCKET`` (a leading ``@`` means the
Linux abstract namespace). Everything here is a no-op when the variable is unset
(running under a terminal, tests, containers) and nothing here ever raises into the
daemon: failures are logged and the daemon carries on. The socket is non-blocking,
so a full receive queue drops the datagram instead of stalling the event loop.

Watchdog: the daemon's main loop pings from the loop itself (:class:`WatchdogPinger`),
never from a timer thread, and only while :meth:`HealthState.liveness` is true -- so a
wedged loop or a stuck worker stops the pings and systemd restarts the service.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

import structlog

if TYPE_CHECKING:
    from syncd.health import HealthState

log = structlog.get_logger(__name__)


def _address(raw: str) -> str | None:
    if raw.startswith("@"):
        return "\0" + raw[1:]  # abstract namespace
    if raw.startswith("/"):
        return raw
    return None  # e.g. vsock:... (systemd >= 253, VMs) -- not supported here


class Notifier:
    """Sends ``READY=1``, ``STATUS=...``, ``WATCHDOG=1``, ``STOPPING=1``, ``RELOADING=1``."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        raw = env.get("NOTIFY_SOCKET", "")
        self._raw = raw
        self._address = _address(raw) if raw else None
        if raw and self._address is None:
            log.warning(
                "NOTIFY_SOCKET has an unsupported address; notifications disabled", address=raw
            )
        self._sock: socket.socket | None = None
        self._watchdog_interval = self._parse_watchdog(env)

    @property
    def enabled(self) -> bool:
        """True when ``$NOTIFY_SOCKET`` names a socket we can talk to."""
        return self._address is not None

    @staticmethod
    def _parse_watchdog(env: Mapping[str, str]) -> float | None:
        usec = env.get("WATCHDOG_USEC", "")
        if not usec:
            return None
        pid = env.get("WATCHDOG_PID", "")
        if pid:
            try:
                if int(pid) != os.getpid():
                    return None  # meant for another process (e.g. our parent)
            except ValueError:
                log.warning("WATCHDOG_PID is not a number; watchdog disabled", value=pid)
                return None
        try:
            value = int(usec)
        except ValueError:
            log.warning("WATCHDOG_USEC is not a number; watchdog disabled", value=usec)
            return None
        if value <= 0:
            return None
        # sd_watchdog_enabled() returns the full timeout; sd_notify(3) advises pinging
        # at half of it, so that one late turn does not get the service killed.
        return value / 1_000_000 / 2

    def watchdog_interval(self) -> float | None:
        """Seconds between watchdog pings (half of ``WATCHDOG_USEC``), or None when off."""
        if not self.enabled:
            return None
        return self._watchdog_interval

    def notify(self, *fields: str) -> bool:
        """Send one datagram of ``KEY=VALUE`` fields. True if it was sent."""
        if self._address is None:
            return False
        payload = "\n".join(fields).encode("utf-8", "replace")
        try:
            if self._sock is None:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                sock.setblocking(False)
                self._sock = sock
            self._sock.sendto(payload, self._address)
            return True
        except OSError as exc:
            log.warning(
                "sd_notify failed", fields=[f.split("=", 1)[0] for f in fields], error=str(exc)
            )
            return False
        except Exception as exc:  # never raise into the daemon
            log.warning("sd_notify failed unexpectedly", error=repr(exc))
            return False

    def ready(self, status: str | None = None) -> bool:
        """Start-up finished (and, after a reload, reloading finished)."""
        fields = ["READY=1"]
        if status:
            fields.append(_status_field(status))
        return self.notify(*fields)

    def status(self, text: str) -> bool:
        """Free-form status line shown by ``systemctl status``."""
        return self.notify(_status_field(text))

    def watchdog(self) -> bool:
        """Keep-alive ping; prefer :class:`WatchdogPinger` in the main loop."""
        return self.notify("WATCHDOG=1")

    def stopping(self, status: str | None = None) -> bool:
        """Shutdown has begun."""
        fields = ["STOPPING=1"]
        if status:
            fields.append(_status_field(status))
        return self.notify(*fields)

    def reloading(self) -> bool:
        """A reload (SIGHUP) has begun; send :meth:`ready` when it is done.

        ``MONOTONIC_USEC`` is required by ``Type=notify-reload`` (systemd >= 253) and
        ignored by older versions.
        """
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.notify("RELOADING=1", f"MONOTONIC_USEC={usec}")

    def extend_timeout(self, seconds: float) -> bool:
        """Ask for more start-up/shutdown time (``EXTEND_TIMEOUT_USEC``)."""
        return self.notify(f"EXTEND_TIMEOUT_USEC={int(seconds * 1_000_000)}")

    def close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()


def _status_field(text: str) -> str:
    return "STATUS=" + " ".join(text.split())


class WatchdogPinger:
    """Progress-based watchdog: the main loop calls :meth:`tick` once per turn.

    A ping is sent only when the interval has elapsed *and* ``health.liveness()`` is
    true, so systemd kills the service (``WatchdogSec=``) when either the main loop
    stops turning or another registered loop stops beating. The main loop must turn
    at least every :attr:`interval` seconds -- use :meth:`seconds_until_due` as the
    timeout of whatever it waits on.
    """

    def __init__(
        self,
        notifier: Notifier,
        health: HealthState,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.notifier = notifier
        self.health = health
        self.interval = notifier.watchdog_interval()
        self._clock = clock
        self._last: float | None = None
        self._reported_unhealthy = False

    @property
    def enabled(self) -> bool:
        return self.interval is not None

    def seconds_until_due(self) -> float | None:
        """Seconds until the next ping is due (0 if overdue), or None when disabled."""
        if self.interval is None:
            return None
        if self._last is None:
            return 0.0
        return max(0.0, self._last + self.interval - self._clock())

    def tick(self) -> bool:
        """Call once per main-loop turn. True if a ping was sent."""
        if self.interval is None:
            return False
        now = self._clock()
        if self._last is not None and now - self._last < self.interval:
            return False
        try:
            live, reason = self.health.liveness()
        except Exception as exc:  # never raise into the daemon
            live, reason = False, f"liveness check failed: {exc!r}"
        if not live:
            if not self._reported_unhealthy:
                log.error("withholding watchdog ping: not live", reason=reason)
                self.notifier.status(f"unhealthy: {reason}")
                self._reported_unhealthy = True
            return False
        if self._reported_unhealthy:
            log.info("live again; resuming watchdog pings")
            self._reported_unhealthy = False
        sent = self.notifier.watchdog()
        self._last = now
        return sent
