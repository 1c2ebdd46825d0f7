from __future__ import annotations

import time

import pytest

from syncd.pds.ratelimit import WriteBudget, write_budget, writes_that_fit


def _headers(policy: str, remaining: str = "200", reset: float | None = None) -> dict[str, str]:
    reset = time.time() + 3000 if reset is None else reset
    return {
        "ratelimit-policy": policy,
        "ratelimit-limit": policy.split(";")[0],
        "ratelimit-remaining": remaining,
        "ratelimit-reset": str(int(reset)),
    }


def test_hourly_and_daily_write_limits_are_budgets() -> None:
    b = write_budget(_headers("5000;w=3600", "200"))
    assert b is not None and b.remaining == 200 and b.current()
    d = write_budget(_headers("35000;w=86400", "31000"))
    assert d is not None and d.remaining == 31000


@pytest.mark.parametrize(
    "headers",
    [
        _headers("3000;w=300", "2990"),  # the per-IP limit: calls, not write points
        _headers("30;w=300", "3"),  # createSession
        {},  # rate limits off
        _headers("5000", "200"),  # no window
        _headers("5000;w=3600", "many"),
        {"ratelimit-policy": "5000;w=3600", "ratelimit-remaining": "2"},  # no reset
    ],
)
def test_other_limits_and_garbage_are_not_budgets(headers: dict[str, str]) -> None:
    assert write_budget(headers) is None


def test_a_budget_ends_with_its_window() -> None:
    assert not WriteBudget(remaining=0, reset_at=time.time() - 1).current()
    assert WriteBudget(remaining=0, reset_at=100.0).current(now=99.0)


def test_negative_remaining_is_zero() -> None:
    b = write_budget(_headers("5000;w=3600", "-3"))
    assert b is not None and b.remaining == 0


def test_writes_that_fit_counts_points_in_order() -> None:
    assert writes_that_fit(200, ["create"] * 100) == 66
    assert writes_that_fit(5, ["create", "update", "delete"]) == 2  # 3 + 2
    assert writes_that_fit(6, ["create", "update", "delete"]) == 3
    assert writes_that_fit(2, ["create", "delete"]) == 0  # order kept: no skipping ahead
    assert writes_that_fit(0, ["delete"]) == 0
