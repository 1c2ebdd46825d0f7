"""Reading syncd's ``/metrics`` in tests and benchmarks: one helper for all of them.

Parsed with ``prometheus_client``'s own text parser; samples are keyed
``name{label="value",...}`` (labels in the order the exposition prints them).
"""

from __future__ import annotations

from collections.abc import Mapping

import httpx
from prometheus_client.parser import text_string_to_metric_families


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text format -> {"name{labels}": value}."""
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sample.labels.items())
            out[sample.name + (f"{{{labels}}}" if labels else "")] = float(sample.value)
    return out


def metric_sum(samples: Mapping[str, float], name: str, **labels: str) -> float:
    """Sum of every sample of ``name`` whose labels include ``labels``."""
    total = 0.0
    for key, value in samples.items():
        base, _, rest = key.partition("{")
        if base == name and all(f'{k}="{v}"' in rest for k, v in labels.items()):
            total += value
    return total


def scrape(url: str, timeout: float = 2.0) -> dict[str, float] | None:
    """The samples at ``url`` (a ``/metrics`` URL), or None when it does not answer."""
    try:
        response = httpx.get(url, timeout=timeout, trust_env=False)
    except httpx.HTTPError:
        return None
    return parse_metrics(response.text) if response.status_code == 200 else None


def caught_up(samples: Mapping[str, float]) -> bool:
    """syncd has nothing queued (``syncd_queue_depth`` 0) and its stream is open."""
    return (
        samples.get("syncd_stream_connected") == 1.0
        and metric_sum(samples, "syncd_queue_depth") == 0
    )


def metrics_caught_up(metrics_url: str, timeout: float = 2.0) -> bool:
    """:func:`caught_up` for the syncd whose ``/metrics`` is at ``metrics_url``."""
    samples = scrape(metrics_url, timeout)
    return samples is not None and caught_up(samples)
