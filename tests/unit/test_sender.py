"""The sender against a PDS played by ``httpx.MockTransport``: batches, the all-or-nothing
500 and the fallback to idempotent single calls, moves, 429s (partial batches, or
parking the account), account errors, and the checks of keys documents name."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from bson import ObjectId

from syncd.changes import Change, Op
from syncd.checkpoint import Checkpointer, Ticket
from syncd.parking import Blocked
from syncd.pds.repo import Repo
from syncd.pds.sessions import Account
from syncd.pds.xrpc import XrpcClient
from syncd.planner import CREATE, DELETE, FOREIGN, FREE, OURS, UPDATE, UPSERT, Plan
from syncd.write.sender import Sender

DID = "did:plc:sender"
ACCOUNT = Account(sub="u", did=DID, handle="s.test", password="pw")
NSID = "computer.aesthetic.mood"
OID = ObjectId()


class FakePds:
    """A repository in memory, answering as the reference PDS does (pds-facts.md)."""

    def __init__(self) -> None:
        self.records: dict[str, dict[str, Any]] = {}
        self.calls: list[str] = []
        self.next_429: list[dict[str, str]] = []  # headers of 429s to answer next
        self.refuse_with: tuple[int, str] | None = None  # every write answered so
        self.lost_in_one_commit = False

    def handler(self, request: httpx.Request) -> httpx.Response:
        method = request.url.path.rsplit(".", 1)[-1]
        self.calls.append(method)
        if method == "getRecord":
            rkey = request.url.params["rkey"]
            if rkey not in self.records:
                return httpx.Response(400, json={"error": "RecordNotFound", "message": "no"})
            return httpx.Response(200, json={"value": self.records[rkey], "cid": f"c-{rkey}"})
        if self.refuse_with is not None:
            status, error = self.refuse_with
            return httpx.Response(status, json={"error": error, "message": "refused"})
        if self.next_429:
            return httpx.Response(
                429, json={"error": "RateLimitExceeded"}, headers=self.next_429.pop(0)
            )
        body = json.loads(request.content)
        if method == "applyWrites":
            writes = body["writes"]
            written = [w["value"] for w in writes if "value" in w]
            deleted = [self.records.get(w["rkey"]) for w in writes if "#delete" in w["$type"]]
            if any(v in written for v in deleted if v is not None):
                self.lost_in_one_commit = True  # the reference PDS loses the written record
            for w in writes:  # all or nothing: check first
                exists = w["rkey"] in self.records
                kind = w["$type"].rsplit("#", 1)[1]
                if (kind == "create") == exists:
                    return httpx.Response(500, json={"error": "InternalServerError"})
            results = []
            for w in body["writes"]:
                kind = w["$type"].rsplit("#", 1)[1]
                if kind == "delete":
                    del self.records[w["rkey"]]
                    results.append({})
                else:
                    self.records[w["rkey"]] = w["value"]
                    results.append(
                        {"uri": f"at://{DID}/{NSID}/{w['rkey']}", "cid": f"c-{w['rkey']}"}
                    )
            return httpx.Response(
                200, json={"commit": {"cid": "c", "rev": "r"}, "results": results}
            )
        if method == "putRecord":
            self.records[body["rkey"]] = body["record"]
            return httpx.Response(
                200, json={"uri": f"at://{DID}/{NSID}/{body['rkey']}", "cid": "c"}
            )
        if method == "deleteRecord":
            self.records.pop(body["rkey"], None)
            return httpx.Response(200, json={})
        return httpx.Response(400, json={"error": "InvalidRequest"})


class _Sessions:
    async def token(self, account: Account) -> str:
        return "token"

    async def expired(self, account: Account, token: str) -> None:
        return None


@pytest.fixture
def pds() -> FakePds:
    return FakePds()


@pytest.fixture
def sender(pds: FakePds) -> Iterator[Sender]:
    xrpc = XrpcClient("http://pds.test", transport=httpx.MockTransport(pds.handler))
    repo = Repo(xrpc, _Sessions())  # type: ignore[arg-type]
    blobs: Any = None
    yield Sender(lambda: ACCOUNT, repo, blobs, asyncio.Event(), max_writes=4, retry_cap=0.01)


def plan(action: str, rkey: str, *, retire: str | None = None, certain: bool = True) -> Plan:
    doc = {"_id": OID, "mood": "x", "when": datetime(2025, 1, 1, tzinfo=UTC)}
    change = Change("moods", OID, str(OID), doc, "update", Ticket(Checkpointer(10), None, 0.0))
    p = Plan(Op(change, ACCOUNT, None, None), action, nsid=NSID, rkey=rkey)
    p.record = {"$type": NSID, "mood": rkey, "ref": str(OID)}
    p.retire, p.retire_certain = retire, certain
    return p


async def test_creates_go_in_batches_of_at_most_max_writes(sender: Sender, pds: FakePds) -> None:
    plans = [plan(CREATE, f"k{i}") for i in range(10)]
    await sender.send(plans)
    assert pds.calls == ["applyWrites"] * 3  # 4 + 4 + 2
    assert set(pds.records) == {f"k{i}" for i in range(10)}
    assert all(p.cid == f"c-{p.rkey}" and p.failed is None for p in plans)


async def test_a_refused_batch_is_settled_by_single_idempotent_calls(
    sender: Sender, pds: FakePds
) -> None:
    pds.records["k1"] = {"old": True}  # a create on an existing key fails the whole batch
    plans = [plan(CREATE, "k0"), plan(CREATE, "k1"), plan(DELETE, "gone")]
    await sender.send(plans)
    assert pds.calls[0] == "applyWrites"
    assert sorted(pds.calls[1:]) == ["deleteRecord", "putRecord", "putRecord"]
    assert [p.action for p in plans] == [UPSERT, UPSERT, "delete_uncertain"]
    assert pds.records["k1"]["mood"] == "k1" and all(p.failed is None for p in plans)


async def test_a_move_writes_the_named_record_then_deletes_the_old_one(
    sender: Sender, pds: FakePds
) -> None:
    # syncd's old record holds exactly the content the named one gets: in one commit the
    # reference PDS would lose the named record (tests/sandbox/test_pds.py), so two.
    p = plan(UPDATE, "named", retire="mine")
    pds.records.update({"named": {"ref": str(OID), "by": "platform"}, "mine": p.record})
    await sender.send([p, plan(CREATE, "other")])
    assert pds.calls == ["applyWrites", "applyWrites"] and not pds.lost_in_one_commit
    assert set(pds.records) == {"named", "other"} and pds.records["named"] == p.record


async def test_an_uncertain_move_uses_single_calls(sender: Sender, pds: FakePds) -> None:
    pds.records["mine"] = {"ref": str(OID)}
    await sender.send([plan(UPSERT, "named", retire="mine", certain=False)])
    assert pds.calls == ["putRecord", "deleteRecord"] and set(pds.records) == {"named"}


def _limit(remaining: int, reset_in: float) -> dict[str, str]:
    return {
        "ratelimit-policy": "5000;w=3600",
        "ratelimit-limit": "5000",
        "ratelimit-remaining": str(remaining),
        "ratelimit-reset": str(int(time.time() + reset_in)),
        "retry-after": str(int(reset_in)),
    }


async def test_a_429_that_leaves_points_sends_the_part_they_pay_for(
    sender: Sender, pds: FakePds
) -> None:
    pds.next_429.append(_limit(remaining=6, reset_in=1))  # 6 points: two creates
    plans = [plan(CREATE, f"k{i}") for i in range(4)]
    await sender.send(plans)
    assert pds.calls[:2] == ["applyWrites", "applyWrites"]
    assert set(pds.records) == {f"k{i}" for i in range(4)}


async def test_a_spent_budget_parks_the_account_and_the_rest(sender: Sender, pds: FakePds) -> None:
    pds.next_429.append(_limit(remaining=0, reset_in=1800))
    plans = [plan(CREATE, f"k{i}") for i in range(6)]
    started = time.monotonic()
    await sender.send(plans)
    assert time.monotonic() - started < 5  # nobody sleeps for half an hour
    assert all(isinstance(p.parked, Blocked) for p in plans)
    blocked = plans[0].parked
    assert isinstance(blocked, Blocked) and blocked.reason == "rate_limited"
    assert blocked.until == pytest.approx(time.time() + 1800, abs=5)
    assert pds.records == {}


@pytest.mark.parametrize(
    ("status", "error", "reason"),
    [
        (401, "AuthRequired", "auth: AuthRequired"),
        (400, "AccountDeactivated", "refused: AccountDeactivated"),
    ],
)
async def test_an_account_error_parks_instead_of_dead_lettering(
    sender: Sender, pds: FakePds, status: int, error: str, reason: str
) -> None:
    pds.refuse_with = (status, error)
    plans = [plan(CREATE, "k0"), plan(UPSERT, "k1")]
    await sender.send(plans)
    assert all(p.failed is None for p in plans)
    reasons = {p.parked.reason for p in plans if isinstance(p.parked, Blocked)}
    assert reasons == {reason}


CHECKS: list[tuple[str, dict[str, Any] | None, str | None, str]] = [
    ("named", {"ref": str(OID)}, None, OURS),
    ("named", {"mongoId": str(OID), "mood": "old"}, None, OURS),  # the earliest moods
    ("named", {"ref": "65a1b2c3d4e5f60718293a4b"}, None, FOREIGN),
    ("named", {"ref": "65a1b2c3d4e5f60718293a4b", "mongoId": str(OID)}, None, FOREIGN),
    ("named", None, None, FREE),
    ("named", None, "another-doc", FOREIGN),  # the ledger gives the key to another
    ("named", {"ref": str(OID)}, str(OID), OURS),  # ... or to this one
]


@pytest.mark.parametrize(("rkey", "record", "holder", "state"), CHECKS)
async def test_check_key(
    sender: Sender,
    pds: FakePds,
    rkey: str,
    record: dict[str, Any] | None,
    holder: str | None,
    state: str,
) -> None:
    if record is not None:
        pds.records[rkey] = record
    check = await sender.check_key(plan("check", rkey), holder)
    assert check.state == state
    if holder not in (None, str(OID)):
        assert pds.calls == []  # decided from the ledger alone


class _BudgetPds(FakePds):
    """The write budget as the reference PDS keeps it: every applyWrites costs 3 points a
    create, charged even when refused (429); successful ones say the points left."""

    def __init__(self, points: int, reset_in: float) -> None:
        super().__init__()
        self.budget, self.points, self.reset_in = points, points, reset_in
        self.reset_at = time.time() + reset_in

    def handler(self, request: httpx.Request) -> httpx.Response:
        if time.time() >= self.reset_at:  # a new window
            self.points, self.reset_at = self.budget, time.time() + self.reset_in
        if request.url.path.endswith("applyWrites"):
            cost = 3 * len(json.loads(request.content)["writes"])
            self.points -= cost  # charged before the handler runs, refused or not
            if self.points < 0:
                headers = _limit(0, self.reset_at - time.time())
                return httpx.Response(429, json={"error": "RateLimitExceeded"}, headers=headers)
        resp = super().handler(request)
        if resp.status_code == 200 and request.url.path.endswith("applyWrites"):
            resp.headers.update(_limit(self.points, self.reset_at - time.time()))
        return resp


def _sender(pds: FakePds) -> Sender:
    xrpc = XrpcClient("http://pds.test", transport=httpx.MockTransport(pds.handler))
    repo = Repo(xrpc, _Sessions())  # type: ignore[arg-type]
    return Sender(lambda: ACCOUNT, repo, None, asyncio.Event(), max_writes=4, retry_cap=0.01)  # type: ignore[arg-type]


async def test_a_budget_known_to_pay_for_nothing_sends_nothing_and_parks() -> None:
    """A call sent only to be refused would spend its points all the same (the daily
    budget's too, tests/sandbox/test_pds.py): once the headers say the points left pay
    for no write, the rest waits for the reset without a call."""
    pds = _BudgetPds(points=4 * 3 + 2, reset_in=1800)  # one batch of 4, then 2 points
    plans = [plan(CREATE, f"k{i}") for i in range(8)]
    await _sender(pds).send(plans)
    assert pds.calls == ["applyWrites"]  # no second, refused, call
    assert set(pds.records) == {f"k{i}" for i in range(4)}
    parked = [p.parked for p in plans[4:]]
    assert all(isinstance(b, Blocked) and b.reason == "rate_limited" for b in parked)
    assert parked[0].until == pytest.approx(time.time() + 1800, abs=5)  # type: ignore[union-attr]


async def test_a_budget_that_resets_soon_is_waited_for_without_a_refused_call() -> None:
    pds = _BudgetPds(points=4 * 3, reset_in=1.0)
    plans = [plan(CREATE, f"k{i}") for i in range(6)]
    started = time.monotonic()
    await _sender(pds).send(plans)
    assert time.monotonic() - started >= 0.5  # waited for the reset ...
    assert pds.calls == ["applyWrites", "applyWrites"]  # ... and was never refused
    assert set(pds.records) == {f"k{i}" for i in range(6)}
    assert all(p.parked is None for p in plans)


async def test_the_part_the_budget_paid_for_is_written_not_parked() -> None:
    """A batch cut to the budget: its first part is written; when the rest cannot be paid
    for, only the rest is parked (the written part, parked too, would be committed as not
    written and sent again after the reset)."""
    pds = _BudgetPds(points=4 * 3 + 2 * 3 + 1, reset_in=1800)
    plans = [plan(CREATE, f"k{i}") for i in range(8)]
    await _sender(pds).send(plans)
    assert pds.calls == ["applyWrites", "applyWrites"]  # 4, then the 2 the points pay for
    assert set(pds.records) == {f"k{i}" for i in range(6)}
    assert [p.parked is None for p in plans] == [True] * 6 + [False] * 2
    assert all(p.cid == f"c-{p.rkey}" for p in plans[:6])
