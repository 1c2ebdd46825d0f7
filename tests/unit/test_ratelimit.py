from __future__ import annotations

import json
import time

import httpx
import pytest

from syncd.pds.ratelimit import WriteBudget, after_call, call_points, write_budget, writes_that_fit
from syncd.pds.repo import Repo, create_write, delete_write, update_write
from syncd.pds.sessions import Account
from syncd.pds.xrpc import XrpcClient


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


def test_call_points() -> None:
    assert call_points("com.atproto.repo.putRecord", {}) == 2
    assert call_points("com.atproto.repo.deleteRecord", {}) == 1
    writes = [create_write("n", "a", {}), update_write("n", "b", {}), delete_write("n", "c")]
    assert call_points("com.atproto.repo.applyWrites", {"writes": writes}) == 6


def test_after_a_reply_about_another_limit_the_known_budget_is_counted_down() -> None:
    known = WriteBudget(remaining=800, reset_at=time.time() + 3000)
    per_ip = _headers("3000;w=300", "40")
    after = after_call(known, per_ip, 600)
    assert after is not None and after.remaining == 200 and after.reset_at == known.reset_at
    assert after_call(after, per_ip, 600) == WriteBudget(0, known.reset_at)
    assert after_call(None, per_ip, 3) is None  # never known: nothing to count down
    assert after_call(WriteBudget(5, time.time() - 1), per_ip, 3) is None  # window over
    fresh = after_call(known, _headers("5000;w=3600", "4997"), 3)
    assert fresh is not None and fresh.remaining == 4997  # a budget reply wins


class _Sessions:
    async def token(self, account: Account) -> str:
        return "token"

    async def expired(self, account: Account, token: str) -> None:
        return None


async def test_repo_keeps_the_budget_while_replies_describe_the_per_ip_limit() -> None:
    replies = [("5000;w=3600", "800"), ("3000;w=300", "41"), ("3000;w=300", "40")]

    def handler(request: httpx.Request) -> httpx.Response:
        policy, remaining = replies.pop(0)
        n = len(json.loads(request.content)["writes"])
        headers = {
            "ratelimit-policy": policy,
            "ratelimit-limit": policy.split(";")[0],
            "ratelimit-remaining": remaining,
            "ratelimit-reset": str(int(time.time() + 3000)),
        }
        body = {"commit": {"cid": "c", "rev": "r"}, "results": [{}] * n}
        return httpx.Response(200, json=body, headers=headers)

    xrpc = XrpcClient("http://pds.test", transport=httpx.MockTransport(handler))
    repo = Repo(xrpc, _Sessions())  # type: ignore[arg-type]
    acct = Account(sub=None, did="did:plc:budget", handle="b.test", password="pw")
    creates = [create_write("n", f"k{i}", {}) for i in range(100)]
    try:
        assert repo.write_budget(acct.did) is None
        await repo.apply_writes(acct, creates)
        assert _remaining(repo, acct.did) == 800
        await repo.apply_writes(acct, creates)  # the reply is about the per-IP limit
        assert _remaining(repo, acct.did) == 500
        await repo.apply_writes(acct, [delete_write("n", "k0")])
        assert _remaining(repo, acct.did) == 499
    finally:
        await xrpc.aclose()


def _remaining(repo: Repo, did: str) -> int:
    budget = repo.write_budget(did)
    assert budget is not None
    return budget.remaining
