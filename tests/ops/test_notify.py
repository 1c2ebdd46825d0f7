"""The systemd notify protocol against a fake NOTIFY_SOCKET the test binds."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from syncd.health import HealthState
from syncd.notify import Notifier, WatchdogPinger


class FakeClock:
    def __init__(self) -> None:
        self.now = 500.0

    def __call__(self) -> float:
        return self.now


class Listener:
    """The systemd side: a bound unix datagram socket."""

    def __init__(self, sock: socket.socket, env_value: str) -> None:
        self.sock = sock
        self.env_value = env_value

    def recv(self) -> dict[str, str]:
        data = self.sock.recv(4096).decode()
        return dict(line.split("=", 1) for line in data.split("\n") if line)

    def empty(self) -> bool:
        self.sock.setblocking(False)
        try:
            self.sock.recv(4096)
        except BlockingIOError:
            return True
        finally:
            self.sock.settimeout(2)
        return False


@pytest.fixture(params=["path", "abstract"])
def listener(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Listener]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.settimeout(2)
    if request.param == "path":
        path = str(tmp_path / "notify.sock")
        sock.bind(path)
        env_value = path
    else:
        name = f"syncd-test-{uuid.uuid4().hex}"
        sock.bind("\0" + name)
        env_value = "@" + name
    try:
        yield Listener(sock, env_value)
    finally:
        sock.close()


def env_for(listener: Listener, **extra: str) -> dict[str, str]:
    return {"NOTIFY_SOCKET": listener.env_value, **extra}


def test_messages_arrive(listener: Listener) -> None:
    n = Notifier(env_for(listener))
    assert n.enabled
    assert n.ready()
    assert listener.recv() == {"READY": "1"}
    assert n.status("backfill: paintings 120/500\nmore")
    assert listener.recv() == {"STATUS": "backfill: paintings 120/500 more"}
    assert n.ready(status="streaming")
    assert listener.recv() == {"READY": "1", "STATUS": "streaming"}
    assert n.watchdog()
    assert listener.recv() == {"WATCHDOG": "1"}
    assert n.reloading()
    msg = listener.recv()
    assert msg["RELOADING"] == "1" and int(msg["MONOTONIC_USEC"]) > 0
    assert n.extend_timeout(90)
    assert listener.recv() == {"EXTEND_TIMEOUT_USEC": "90000000"}
    assert n.stopping()
    assert listener.recv() == {"STOPPING": "1"}
    n.close()


def test_no_socket_is_a_no_op() -> None:
    n = Notifier({})
    assert not n.enabled
    assert n.watchdog_interval() is None
    assert n.ready() is False
    assert n.status("x") is False
    assert n.watchdog() is False
    assert n.stopping() is False
    assert n.reloading() is False
    pinger = WatchdogPinger(n, HealthState())
    assert not pinger.enabled
    assert pinger.tick() is False
    assert pinger.seconds_until_due() is None


def test_default_environ_is_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert not Notifier().enabled


def test_missing_socket_never_raises(tmp_path: Path) -> None:
    n = Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone.sock")})
    assert n.enabled
    assert n.ready() is False  # logged, not raised
    assert n.watchdog() is False


def test_unsupported_address_disables() -> None:
    n = Notifier({"NOTIFY_SOCKET": "vsock:2:1234"})
    assert not n.enabled
    assert n.ready() is False


def test_watchdog_interval_from_env(listener: Listener) -> None:
    pid = str(os.getpid())
    assert Notifier(env_for(listener)).watchdog_interval() is None
    assert Notifier(env_for(listener, WATCHDOG_USEC="60000000")).watchdog_interval() == 30.0
    assert (
        Notifier(env_for(listener, WATCHDOG_USEC="60000000", WATCHDOG_PID=pid)).watchdog_interval()
        == 30.0
    )
    other = str(os.getpid() + 1)
    assert (
        Notifier(
            env_for(listener, WATCHDOG_USEC="60000000", WATCHDOG_PID=other)
        ).watchdog_interval()
        is None
    )
    assert Notifier(env_for(listener, WATCHDOG_USEC="0")).watchdog_interval() is None
    assert Notifier(env_for(listener, WATCHDOG_USEC="soon")).watchdog_interval() is None
    # Without a socket there is nobody to ping.
    assert Notifier({"WATCHDOG_USEC": "60000000"}).watchdog_interval() is None


def test_pinger_honours_interval(listener: Listener) -> None:
    clock = FakeClock()
    health = HealthState(stale_after=30, clock=clock)
    health.beat("main")
    n = Notifier(env_for(listener, WATCHDOG_USEC="10000000"))  # 10 s -> ping every 5 s
    pinger = WatchdogPinger(n, health, clock=clock)
    assert pinger.interval == 5.0
    assert pinger.seconds_until_due() == 0.0

    assert pinger.tick() is True  # first turn pings at once
    assert listener.recv() == {"WATCHDOG": "1"}
    for _ in range(4):
        clock.now += 1
        health.beat("main")
        assert pinger.tick() is False
    assert listener.empty()
    assert pinger.seconds_until_due() == pytest.approx(1.0)
    clock.now += 1  # 5 s since the last ping
    health.beat("main")
    assert pinger.tick() is True
    assert listener.recv() == {"WATCHDOG": "1"}


def test_pinger_withholds_when_not_live(listener: Listener) -> None:
    clock = FakeClock()
    health = HealthState(stale_after=30, clock=clock)
    health.beat("main")
    health.beat("writer")
    n = Notifier(env_for(listener, WATCHDOG_USEC="10000000"))
    pinger = WatchdogPinger(n, health, clock=clock)
    assert pinger.tick() is True
    assert listener.recv() == {"WATCHDOG": "1"}

    clock.now += 31
    health.beat("main")  # the main loop turns, but the writer is stuck
    assert pinger.tick() is False
    status = listener.recv()  # one STATUS line explains why, no WATCHDOG
    assert status["STATUS"].startswith("unhealthy: loop 'writer' stuck")
    clock.now += 6
    assert pinger.tick() is False
    assert listener.empty()

    health.beat("writer")
    assert pinger.tick() is True
    assert listener.recv() == {"WATCHDOG": "1"}
