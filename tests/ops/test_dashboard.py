"""The Grafana dashboard: valid JSON, a datasource variable, and only real metrics."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.metrics import MetricWrapperBase

from syncd import metrics

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "syncd.json"

# Labels every scraped series gets from Prometheus, plus the histogram bucket label.
TARGET_LABELS = {"job", "instance", "le"}


def exposed_names() -> dict[str, set[str]]:
    """Every sample name REGISTRY can expose -> the labels it carries."""
    names: dict[str, set[str]] = {}
    wrappers = {m._name: m for m in vars(metrics).values() if isinstance(m, MetricWrapperBase)}
    for family in metrics.REGISTRY.collect():
        labels = set(getattr(wrappers.get(family.name), "_labelnames", ()))
        if family.type == "counter":
            suffixes = ["_total", "_created"]
        elif family.type == "histogram":
            suffixes = ["_bucket", "_count", "_sum", "_created"]
        else:
            suffixes = [""]
        for suffix in suffixes:
            names[family.name + suffix] = labels
    return names


def walk(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from walk(value)


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    data = json.loads(DASHBOARD.read_text())
    assert isinstance(data, dict)
    return data


def queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(expr, legendFormat) for every PromQL query in panels, annotations, variables."""
    found: list[tuple[str, str]] = []
    for node in walk(dashboard):
        if isinstance(node.get("expr"), str):
            found.append((node["expr"], node.get("legendFormat", "")))
        if isinstance(node.get("definition"), str):
            found.append((node["definition"], ""))
    return found


def metric_names(expr: str) -> set[str]:
    expr = re.sub(r'"[^"]*"', '""', expr)  # drop label values
    return set(re.findall(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{", expr))


def test_datasource_variable(dashboard: dict[str, Any]) -> None:
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]
    assert dashboard["uid"] == "syncd"


def test_panel_ids_unique_and_on_grid(dashboard: dict[str, Any]) -> None:
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for p in dashboard["panels"]:
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24, p["title"]


def test_every_metric_exists(dashboard: dict[str, Any]) -> None:
    exposed = exposed_names()
    all_queries = queries(dashboard)
    assert all_queries
    for expr, legend in all_queries:
        names = metric_names(expr)
        assert names, f"no metric selector in {expr!r}"
        for name in names:
            assert name in exposed, f"{name} (in {expr!r}) is not exposed by syncd.metrics"
        allowed = TARGET_LABELS.union(*(exposed[n] for n in names))
        for group in re.findall(r"\bby\s*\(([^)]*)\)", expr):
            for label in filter(None, (s.strip() for s in group.split(","))):
                assert label in allowed, f"label {label!r} not on {names} in {expr!r}"
        for label in re.findall(r"\{\{\s*(\w+)\s*\}\}", legend):
            assert label in allowed, f"legend label {label!r} not on {names}"


def test_required_panels(dashboard: dict[str, Any]) -> None:
    exprs = " ".join(e for e, _ in queries(dashboard))
    for needed in (
        "syncd_records_written_total",
        "syncd_events_total",
        "syncd_lag_seconds",
        "syncd_resume_token_age_seconds",
        "syncd_stream_connected",
        "syncd_write_errors_total",
        "syncd_dead_letters",
        "syncd_queue_depth",
        "syncd_pds_requests_total",
        "syncd_rate_limited_total",
        "syncd_blob_bytes_uploaded_total",
        "syncd_backfill_remaining",
    ):
        assert needed in exprs, needed
    for q in ("0.5", "0.95", "0.99"):
        assert (
            f"histogram_quantile({q}, sum by (le) (rate(syncd_pds_request_seconds_bucket" in exprs
        )
