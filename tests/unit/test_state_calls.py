"""``StateCalls`` times every store call: how long it ran, and how long it waited for the
state thread -- the two figures that tell a slow MongoDB from a busy state thread."""

from __future__ import annotations

import asyncio
import time
from typing import Any, cast

import pytest

from syncd import metrics
from syncd.state.aio import StateCalls
from syncd.state.model import Store


def _sample(name: str, **labels: str) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


def slow_lookup(seconds: float) -> str:
    time.sleep(seconds)
    return "found"


def failing_apply() -> None:
    raise RuntimeError("the store said no")


def test_offloaded_calls_are_timed_and_their_wait_for_the_thread_too() -> None:
    calls = StateCalls(cast(Store, object()), offload=True)
    ran = _sample("syncd_state_call_seconds_count", call="slow_lookup")
    ran_s = _sample("syncd_state_call_seconds_sum", call="slow_lookup")
    waited = _sample("syncd_state_call_wait_seconds_count")
    waited_s = _sample("syncd_state_call_wait_seconds_sum")

    async def two_at_once() -> list[str]:
        return list(await asyncio.gather(calls(slow_lookup, 0.05), calls(slow_lookup, 0.05)))

    try:
        assert asyncio.run(two_at_once()) == ["found", "found"]
    finally:
        calls.close()
    assert _sample("syncd_state_call_seconds_count", call="slow_lookup") == ran + 2
    assert _sample("syncd_state_call_seconds_sum", call="slow_lookup") - ran_s >= 0.1
    # One thread: the second call waited for the first one's 50 ms.
    assert _sample("syncd_state_call_wait_seconds_count") == waited + 2
    assert _sample("syncd_state_call_wait_seconds_sum") - waited_s >= 0.04


def test_inline_calls_are_timed_without_a_wait_and_a_failing_call_is_timed_too() -> None:
    calls = StateCalls(cast(Store, object()), offload=False)
    waited = _sample("syncd_state_call_wait_seconds_count")
    failed = _sample("syncd_state_call_seconds_count", call="failing_apply")
    read = _sample("syncd_state_call_seconds_count", call="slow_lookup")

    async def run() -> Any:
        with pytest.raises(RuntimeError, match="the store said no"):
            await calls(failing_apply)
        return await calls.read(slow_lookup, 0.0)

    assert asyncio.run(run()) == "found"
    assert _sample("syncd_state_call_seconds_count", call="failing_apply") == failed + 1
    assert _sample("syncd_state_call_seconds_count", call="slow_lookup") == read + 1
    assert _sample("syncd_state_call_wait_seconds_count") == waited
