"""End to end with a real Prometheus: it scrapes the ops listener on the test's loop,
loads alerts.yml, and evaluates every dashboard query."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from syncd import metrics
from syncd.config import MetricsConfig
from syncd.health import HealthState, start_health_server

from .prometheus_server import PrometheusServer

#: Starts processes (the PDS, the MongoDB sandbox, image workers, promtool, ...).
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "syncd.json"


def dashboard_queries() -> list[str]:
    found: list[str] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("expr", "definition") and isinstance(value, str):
                    found.append(value)
                else:
                    walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(json.loads(DASHBOARD.read_text()))
    return found


def to_promql(expr: str) -> str:
    """Grafana template variables -> plain PromQL."""
    expr = expr.replace("$__rate_interval", "1m").replace("$instance", ".*")
    if expr.startswith("label_values("):  # a Grafana function: query its selector
        expr = expr[len("label_values(") :].rsplit(",", 1)[0]
    return expr


@pytest.mark.timeout(120)
async def test_prometheus_scrapes_the_listener() -> None:
    metrics.initialise()
    health = HealthState()
    health.beat("main")
    health.set_stream_connected(False, "test: never opened")
    server = await start_health_server(MetricsConfig(listen="127.0.0.1:0"), health)
    try:
        metrics.RECORDS_WRITTEN.labels(collection="moods", action="create").inc(3)
        metrics.PDS_REQUEST_SECONDS.labels(method="com.atproto.repo.applyWrites").observe(0.2)
        expected = metrics.REGISTRY.get_sample_value(
            "syncd_records_written_total", {"collection": "moods", "action": "create"}
        )
        assert expected is not None and expected >= 3

        metrics.LEADER.set(1)  # as `syncd run` does without a cluster (a standby reports 0)
        async with PrometheusServer([f"127.0.0.1:{server.port}"], rule_files=[ALERTS]) as prom:
            assert await prom.wait_for_value('up{job="syncd"}', lambda v: v == 1) == 1
            value = await prom.wait_for_value(
                'syncd_records_written_total{job="syncd", collection="moods", action="create"}',
                lambda v: v == expected,
            )
            assert value == expected

            # The counter moves, Prometheus follows.
            metrics.RECORDS_WRITTEN.labels(collection="moods", action="create").inc()
            await prom.wait_for_value(
                'syncd_records_written_total{collection="moods", action="create"}',
                lambda v: v == expected + 1,
            )

            # Every dashboard query is valid PromQL against real syncd series.
            for expr in dashboard_queries():
                await prom.query(to_promql(expr))
            rows = await prom.query(to_promql('syncd_build_info{job="syncd"}'))
            assert rows and rows[0]["metric"]["version"]

            # alerts.yml loads, every rule evaluates without error, and the closed
            # stream puts SyncdStreamDisconnected into "pending" (for: 5m).
            deadline = time.monotonic() + 20
            states: dict[str, str] = {}
            while time.monotonic() < deadline:
                alerts = await prom.alerts()
                states = {a["labels"]["alertname"]: a["state"] for a in alerts}
                if "SyncdStreamDisconnected" in states:
                    break
                await asyncio.sleep(0.25)
            assert states.get("SyncdStreamDisconnected") == "pending", states
            assert "SyncdDown" not in states
            assert prom._client is not None
            rules = (await prom._client.get("/api/v1/rules")).json()["data"]["groups"]
            health_by_rule = {
                r["name"]: (r["health"], r.get("lastError")) for g in rules for r in g["rules"]
            }
            assert len(health_by_rule) >= 10
            assert all(h == "ok" for h, _ in health_by_rule.values()), health_by_rule
    finally:
        await server.close()
