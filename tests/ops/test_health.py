"""HealthState logic and the real ops HTTP listener (port 0, httpx)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
from structlog.testing import capture_logs

from syncd import metrics
from syncd.config import MetricsConfig
from syncd.health import (
    HealthServer,
    HealthState,
    is_loopback,
    parse_listen,
    start_health_server,
)

INTERFACE_METRICS = (
    "syncd_events_total",
    "syncd_records_written_total",
    "syncd_write_errors_total",
    "syncd_dead_letters",
    "syncd_lag_seconds",
    "syncd_resume_token_age_seconds",
    "syncd_backfill_remaining",
    "syncd_pds_requests_total",
    "syncd_pds_request_seconds",
    "syncd_rate_limited_total",
    "syncd_blob_bytes_uploaded_total",
    "syncd_queue_depth",
    "syncd_stream_connected",
    "syncd_history_lost_total",
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def health(clock: FakeClock) -> HealthState:
    return HealthState(stale_after=30, clock=clock)


@pytest.fixture
async def server(health: HealthState) -> AsyncIterator[HealthServer]:
    srv = await start_health_server(
        MetricsConfig(listen="127.0.0.1:0", ready_max_lag_seconds=60.0), health
    )
    try:
        yield srv
    finally:
        await srv.close()


@pytest.fixture
async def client(server: HealthServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.url, timeout=5) as c:
        yield c


def make_ready(health: HealthState) -> None:
    for loop in ("main", "stream", "writer"):
        health.beat(loop)
    health.set_phase("streaming")
    health.set_stream_connected(True)
    health.set_lag(0.5)


# -- HealthState logic -----------------------------------------------------------


def test_no_loops_is_live_but_not_ready(health: HealthState) -> None:
    assert health.liveness() == (True, "ok")
    assert health.readiness(60) == (False, "starting")


def test_stale_loop_is_named(health: HealthState, clock: FakeClock) -> None:
    health.beat("main")
    health.beat("writer")
    clock.advance(20)
    health.beat("main")
    clock.advance(15)  # writer: 35 s, main: 15 s
    ok, reason = health.liveness()
    assert not ok
    assert reason == "loop 'writer' stuck: no beat for 35s (> 30s)"
    assert "\n" not in reason


def test_all_stale_loops_listed_stalest_first(health: HealthState, clock: FakeClock) -> None:
    health.beat("stream")
    clock.advance(5)
    health.beat("writer")
    clock.advance(40)
    ok, reason = health.liveness()
    assert not ok
    assert reason.startswith("loop 'stream' stuck: no beat for 45s")
    assert "also stale: 'writer'" in reason


def test_register_and_unregister(health: HealthState, clock: FakeClock) -> None:
    health.register("backfill")
    clock.advance(31)
    assert health.liveness()[0] is False
    health.unregister("backfill")
    assert health.liveness() == (True, "ok")


def test_readiness_reasons(health: HealthState) -> None:
    make_ready(health)
    assert health.readiness(60) == (True, "ok")

    health.set_phase("backfill")
    assert health.readiness(60) == (False, "backfill in progress")
    health.set_phase("streaming")

    health.set_stream_connected(False, "connection reset\nby peer")
    assert health.readiness(60) == (False, "stream disconnected: connection reset by peer")
    health.set_stream_connected(False)
    assert health.readiness(60) == (False, "stream disconnected: unknown")
    health.set_stream_connected(True)

    health.set_lag(123.4)
    assert health.readiness(60) == (False, "lag 123.4s > 60s")
    health.set_lag(60)
    assert health.readiness(60) == (True, "ok")

    health.set_phase("stopping")
    assert health.readiness(60) == (False, "stopping")


def test_not_live_is_not_ready(health: HealthState, clock: FakeClock) -> None:
    make_ready(health)
    clock.advance(31)
    ok, reason = health.readiness(60)
    assert not ok and "stuck" in reason


def test_gauges_follow_state(health: HealthState) -> None:
    health.set_stream_connected(True)
    assert metrics.REGISTRY.get_sample_value("syncd_stream_connected") == 1
    health.set_stream_connected(False, "x")
    assert metrics.REGISTRY.get_sample_value("syncd_stream_connected") == 0
    health.set_lag(42.5)
    assert metrics.REGISTRY.get_sample_value("syncd_lag_seconds") == 42.5
    health.set_lag(-3)  # clock skew never reports negative lag
    assert metrics.REGISTRY.get_sample_value("syncd_lag_seconds") == 0


def test_unknown_phase_rejected(health: HealthState) -> None:
    with pytest.raises(ValueError, match="unknown phase"):
        health.set_phase("resting")


def test_real_monotonic_clock_default() -> None:
    h = HealthState(stale_after=0.05)
    h.beat("main")
    assert h.liveness()[0]


def test_parse_listen_and_loopback() -> None:
    assert parse_listen("127.0.0.1:9464") == ("127.0.0.1", 9464)
    assert parse_listen("[::1]:0") == ("::1", 0)
    with pytest.raises(ValueError):
        parse_listen("9464")
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("::") and not is_loopback("10.0.0.5")


# -- the HTTP listener --------------------------------------------------------------


def test_default_bind_is_loopback() -> None:
    host, port = parse_listen(MetricsConfig().listen)
    assert is_loopback(host)
    assert port == 9464


async def test_port_zero_binds_loopback(server: HealthServer) -> None:
    assert server.listening
    assert server.port > 0
    assert server.host == "127.0.0.1"


async def test_healthz_flips_and_recovers(
    client: httpx.AsyncClient, health: HealthState, clock: FakeClock
) -> None:
    make_ready(health)
    r = await client.get("/healthz")
    assert (r.status_code, r.text) == (200, "ok\n")

    clock.advance(20)
    health.beat("main")
    health.beat("stream")
    clock.advance(15)
    r = await client.get("/healthz")
    assert r.status_code == 503
    assert r.text == "loop 'writer' stuck: no beat for 35s (> 30s)\n"

    health.beat("writer")
    r = await client.get("/healthz")
    assert (r.status_code, r.text) == (200, "ok\n")


async def test_readyz_flips_and_recovers(client: httpx.AsyncClient, health: HealthState) -> None:
    r = await client.get("/readyz")
    assert (r.status_code, r.text) == (503, "starting\n")

    make_ready(health)
    r = await client.get("/readyz")
    assert (r.status_code, r.text) == (200, "ok\n")

    health.set_stream_connected(False, "not primary")
    r = await client.get("/readyz")
    assert (r.status_code, r.text) == (503, "stream disconnected: not primary\n")

    health.set_stream_connected(True)
    health.set_lag(123.4)
    r = await client.get("/readyz")
    assert (r.status_code, r.text) == (503, "lag 123.4s > 60s\n")

    health.set_lag(0)
    health.set_phase("backfill")
    r = await client.get("/readyz")
    assert (r.status_code, r.text) == (503, "backfill in progress\n")

    health.set_phase("streaming")
    r = await client.get("/readyz?verbose=1")
    assert (r.status_code, r.text) == (200, "ok\n")
    assert r.headers["connection"] == "close"


async def test_not_found_and_method(client: httpx.AsyncClient) -> None:
    r = await client.get("/")
    assert r.status_code == 404
    r = await client.get("/metricsx")
    assert r.status_code == 404
    r = await client.post("/metrics", content=b"x")
    assert r.status_code == 405
    r = await client.head("/healthz")
    assert r.status_code == 200 and r.content == b""


async def test_metrics_serves_the_interface(client: httpx.AsyncClient) -> None:
    metrics.initialise()
    # Label-less and labelled samples for the metrics initialise() leaves without children.
    metrics.WRITE_ERRORS.labels(collection="moods", reason="http_500").inc()
    metrics.PDS_REQUESTS.labels(method="com.atproto.repo.applyWrites", status="200").inc()
    metrics.PDS_REQUEST_SECONDS.labels(method="com.atproto.repo.applyWrites").observe(0.03)
    metrics.RESUME_TOKEN_AGE.set(2)
    metrics.QUEUE_DEPTH.labels(stage="writer").set(3)

    r = await client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    body = r.text
    sample_names = {
        line.split("{", 1)[0].split(" ", 1)[0]
        for line in body.splitlines()
        if line and not line.startswith("#")
    }
    for name in INTERFACE_METRICS:
        if name == "syncd_pds_request_seconds":
            assert {f"{name}_bucket", f"{name}_count", f"{name}_sum"} <= sample_names
        else:
            assert name in sample_names, name
    assert 'syncd_records_written_total{action="create",collection="paintings"}' in body
    assert "syncd_build_info{version=" in body


async def test_metrics_openmetrics_negotiation(client: httpx.AsyncClient) -> None:
    r = await client.get(
        "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}
    )
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/openmetrics-text")
    assert r.text.rstrip().endswith("# EOF")


async def test_garbage_request_does_not_hurt(
    server: HealthServer, client: httpx.AsyncClient
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"NONSENSE\r\n\r\n")
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    assert data.startswith(b"HTTP/1.1 400")
    # A client that connects and says nothing is dropped without affecting others.
    _r2, w2 = await asyncio.open_connection("127.0.0.1", server.port)
    r = await client.get("/healthz")
    assert r.status_code == 200
    w2.close()


async def test_disabled_binds_nothing(health: HealthState) -> None:
    srv = await start_health_server(MetricsConfig(listen="127.0.0.1:0", enabled=False), health)
    assert not srv.listening
    with pytest.raises(RuntimeError):
        _ = srv.port
    await srv.close()


async def test_non_loopback_bind_warns(health: HealthState) -> None:
    with capture_logs() as logs:
        srv = await start_health_server(MetricsConfig(listen="0.0.0.0:0"), health)
        await srv.close()
    warnings = [e for e in logs if e["log_level"] == "warning"]
    assert warnings and "non-loopback" in warnings[0]["event"]

    with capture_logs() as logs:
        srv = await start_health_server(MetricsConfig(listen="127.0.0.1:0"), health)
        await srv.close()
    assert not [e for e in logs if e["log_level"] == "warning"]


async def test_listener_does_not_block_the_loop(client: httpx.AsyncClient) -> None:
    """Many concurrent scrapes while another coroutine keeps ticking."""
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    t = asyncio.create_task(ticker())
    try:
        rs = await asyncio.gather(*(client.get("/metrics") for _ in range(20)))
    finally:
        t.cancel()
    assert all(r.status_code == 200 for r in rs)
    assert ticks >= 10  # the ticker kept running between requests
