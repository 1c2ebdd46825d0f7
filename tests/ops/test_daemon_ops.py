"""The ops surface of a real running daemon: metrics, health, systemd notify, Prometheus."""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from bson import ObjectId

from syncd_sandbox.seed import make_mood
from syncd_sandbox.syncd_process import SyncdProcess, metric_sum, parse_metrics
from syncd_sandbox.testing import SandboxWorld

from .prometheus_server import PrometheusServer

INTERFACE = {
    "syncd_events_total": ("collection", "operation"),
    "syncd_records_written_total": ("collection", "action"),
    "syncd_write_errors_total": ("collection", "reason"),
    "syncd_dead_letters": ("collection",),
    "syncd_lag_seconds": (),
    "syncd_resume_token_age_seconds": (),
    "syncd_backfill_remaining": ("collection",),
    "syncd_pds_requests_total": ("method", "status"),
    "syncd_pds_request_seconds": ("method",),
    "syncd_rate_limited_total": (),
    "syncd_blob_bytes_uploaded_total": (),
    "syncd_queue_depth": ("stage",),
    "syncd_stream_connected": (),
    "syncd_history_lost_total": (),
}


@pytest.fixture
def daemon(world: SandboxWorld) -> Iterator[SyncdProcess]:
    world.write_config({"mongo": {"max_await_ms": 100}})
    proc = SyncdProcess(world.config_path, log_path=world.tmp / "syncd.log")
    yield proc
    if proc.alive:
        proc.kill()


def test_every_interface_metric_exists_and_moves(world: SandboxWorld, daemon: SyncdProcess) -> None:
    alice = world.sub("alice")
    assert alice
    daemon.start()
    daemon.wait_ready()
    world.insert("moods", *[make_mood(alice, f"m{i}") for i in range(3)])
    world.insert("moods", {"_id": ObjectId(), "user": alice, "mood": "no when"})
    daemon.wait_until(
        lambda: (
            metric_sum(
                daemon.metrics(), "syncd_records_written_total", collection="moods", action="create"
            )
            == 3
        ),
        20,
    )
    daemon.wait_idle()
    # syncd_dead_letters is read from the store once a second: it may trail the idle queue.
    daemon.wait_metric("syncd_dead_letters", 1, collection="moods")
    text = daemon.get("/metrics").text
    for name, labels in INTERFACE.items():
        lines = [
            line for line in text.splitlines() if line.startswith(name) and not line.startswith("#")
        ]
        assert lines, f"{name} missing from /metrics"
        for label in labels:
            assert any(f'{label}="' in line for line in lines), f"{name} lacks label {label}"
    m = parse_metrics(text)
    assert metric_sum(m, "syncd_events_total", collection="moods", operation="insert") == 4
    assert metric_sum(m, "syncd_stream_connected") == 1
    assert metric_sum(m, "syncd_lag_seconds") == 0
    assert (
        metric_sum(m, "syncd_pds_request_seconds_count", method="com.atproto.repo.applyWrites") >= 1
    )


def test_readyz_flips_when_the_stream_is_lost_and_comes_back(
    world: SandboxWorld, daemon: SyncdProcess
) -> None:
    daemon.start()
    daemon.wait_ready()
    assert daemon.get("/readyz").status_code == 200
    # Every getMore and aggregate fails (non-resumable) for a while: syncd must reopen.
    world.client.admin.command(
        {
            "configureFailPoint": "failCommand",
            "mode": {"times": 5},
            "data": {"failCommands": ["getMore", "aggregate"], "errorCode": 2},
        }
    )
    reply = daemon.wait_until(
        lambda: (r := daemon.get("/readyz")).status_code == 503 and r, 20, interval=0.05
    )
    assert "stream" in reply.text
    assert metric_sum(daemon.metrics(), "syncd_stream_connected") == 0
    daemon.wait_until(lambda: daemon.get("/readyz").status_code == 200, 60)
    alice = world.sub("alice")
    assert alice
    doc = make_mood(alice, "after the outage")
    world.insert("moods", doc)
    daemon.wait_until(
        lambda: str(doc["_id"]) in world.records_by_ref("alice", "computer.aesthetic.mood"), 20
    )


def _receive_until(
    sock: socket.socket, got: list[str], done: Callable[[], bool], seconds: float
) -> None:
    """Append each notify datagram to ``got`` until ``done()`` or ``seconds`` pass."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not done():
        try:
            got.append(sock.recv(4096).decode())
        except TimeoutError:
            continue


def test_systemd_notify_protocol_against_the_real_daemon(
    world: SandboxWorld, tmp_path: Path
) -> None:
    sock_path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    sock.settimeout(0.5)
    env = dict(os.environ, NOTIFY_SOCKET=str(sock_path), WATCHDOG_USEC="1000000")
    env.pop("WATCHDOG_PID", None)
    world.write_config({"mongo": {"max_await_ms": 100}})
    proc = SyncdProcess(world.config_path, log_path=world.tmp / "syncd.log", env=env).start()
    got: list[str] = []
    try:
        _receive_until(sock, got, lambda: sum("WATCHDOG=1" in g for g in got) >= 3, 30)
        # `systemctl reload`: RELOADING=1, the new log level, then READY=1 again.
        world.write_config({"mongo": {"max_await_ms": 100}, "logging": {"level": "debug"}})
        reload_at = len(got)
        proc.proc.send_signal(signal.SIGHUP)  # type: ignore[union-attr]
        _receive_until(sock, got, lambda: any("READY=1" in g for g in got[reload_at:]), 10)
        (reloaded,) = proc.events("reloaded")
        code, seconds = proc.terminate()
        _receive_until(sock, got, lambda: any("STOPPING=1" in g for g in got), 5)
    finally:
        if proc.alive:
            proc.kill()
        sock.close()
    assert code == 0 and seconds < 10
    ready = next(i for i, g in enumerate(got) if "READY=1" in g)
    assert sum("WATCHDOG=1" in g for g in got) >= 3
    assert any(g.startswith("STATUS=") or "\nSTATUS=" in g for g in got)
    assert any("STOPPING=1" in g for g in got[ready:])
    assert reloaded["log_level"] == "debug"
    after = got[reload_at:]
    reloading = next(i for i, g in enumerate(after) if "RELOADING=1" in g)
    assert "MONOTONIC_USEC=" in after[reloading]
    assert any("READY=1" in g for g in after[reloading:]), after


async def test_prometheus_scrapes_a_running_syncd(
    world: SandboxWorld, daemon: SyncdProcess
) -> None:
    alice = world.sub("alice")
    assert alice
    daemon.start()
    target = daemon.config.metrics.listen
    async with PrometheusServer([target]) as prom:
        import asyncio

        await asyncio.to_thread(daemon.wait_ready)
        world.insert("moods", *[make_mood(alice, f"scraped {i}") for i in range(5)])
        value = await prom.wait_for_value(
            'sum(syncd_records_written_total{collection="moods",action="create"})',
            lambda v: v >= 5,
            within=40,
        )
        assert value == 5
