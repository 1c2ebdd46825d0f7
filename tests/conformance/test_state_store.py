"""Both state backends keep the same contract; the MongoDB one also fences stale leaders.

Runs on SQLite, on the MongoDB sandbox and (with ``SYNCD_TEST_MONGODB_URI``) on a
real replica set.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from bson import ObjectId
from pymongo import AsyncMongoClient, MongoClient

from syncd.lease import COLLECTION, Lease, LeaseLost
from syncd.state import (
    BlobAdd,
    BlobForget,
    LedgerDelete,
    LedgerPending,
    LedgerPut,
    Outcome,
    OwnerScan,
    StateStore,
    Store,
)
from syncd.state.aio import StateCalls
from syncd.state.mongo import MongoStateStore
from tests.conformance.conftest import REAL_URI_ENV, Backend

Factory = Callable[..., Store]


class FakeFence:
    """A lease stand-in: a token, and a switch for "the lease ran out"."""

    def __init__(self, token: int) -> None:
        self._token = token
        self.valid = True
        self.lost_reasons: list[str] = []

    @property
    def token(self) -> int:
        return self._token

    def check(self) -> None:
        if not self.valid:
            raise LeaseLost("expired")

    def lose(self, why: str) -> None:
        self.valid = False
        self.lost_reasons.append(why)


def _mongo_factory(backend: Backend) -> Iterator[Factory]:
    client: MongoClient[dict[str, Any]] = backend.client(tz_aware=True)
    dbname = f"state_{uuid.uuid4().hex[:10]}"

    def mongo(**kw: Any) -> Store:
        return MongoStateStore(client, dbname, cluster="c", own_client=False, **kw)

    yield mongo
    client.drop_database(dbname)
    client.close()


@pytest.fixture
def mongo_store(backend: Backend) -> Iterator[Factory]:
    """Stores in a fresh database of the sandbox (or real) MongoDB."""
    yield from _mongo_factory(backend)


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param("mongodb-sandbox", marks=pytest.mark.slow),
        pytest.param("mongodb-real", marks=pytest.mark.slow),
    ]
)
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, Factory]]:
    if request.param == "sqlite":
        opened: list[Store] = []

        def sqlite(**_: Any) -> Store:
            s = StateStore(tmp_path)
            opened.append(s)
            return s

        yield "sqlite", sqlite
        for s in opened:
            s.close()
    elif request.param == "mongodb-real":
        uri = os.environ.get(REAL_URI_ENV)
        if not uri:
            pytest.skip(f"{REAL_URI_ENV} is not set: no real MongoDB replica set")
        yield from ((request.param, f) for f in _mongo_factory(Backend("real", uri)))
    else:
        handle = request.getfixturevalue("sandbox_process")
        backend = Backend("sandbox", handle.uri, handle)
        yield from ((request.param, f) for f in _mongo_factory(backend))


def _put(s: Store, key: str, **kw: Any) -> None:
    fields: dict[str, Any] = dict(
        did="did:plc:a", nsid="n", rkey=f"r{key}", cid="c", fingerprint="f", blob_cid=None
    )
    fields.update(kw)
    fields.setdefault("pending", False)
    s.ledger_put("moods", key, **fields)


def test_position_and_backfill_round_trip(make_store: tuple[str, Factory]) -> None:
    _, make = make_store
    s = make()
    assert s.load_position() is None
    s.begin_backfill((10, 1), ["moods", "pieces"], reason="first_start")
    oid = ObjectId()
    s.save_backfill_progress("moods", oid, "objectid", 500, False)
    p = make().backfill_progress()  # a second handle (another process, another host) sees it
    assert p["moods"].last_id == oid and p["moods"].scanned == 500 and not p["pieces"].done
    assert s.backfill_reason() == "first_start" and s.backfill_start_time() == (10, 1)
    s.finish_backfill()
    assert s.backfill_start_time() is None and s.backfill_progress() == {}
    pos = s.load_position()
    assert pos is not None and pos.token is None and pos.cluster_time == (10, 1)
    s.save_position({"_data": "8263A1"}, (20, 2))
    pos = make().load_position()
    assert pos is not None and pos.token == {"_data": "8263A1"} and pos.cluster_time == (20, 2)
    s.clear_position()
    assert s.load_position() is None


def test_ledger_contract(make_store: tuple[str, Factory]) -> None:
    _, make = make_store
    s = make()
    with s.transaction():
        for i in range(30):
            _put(s, f"k{i:03d}", did="did:plc:a" if i % 3 else "did:plc:b", pending=i == 5)
    assert s.ledger_get("moods", "k001") is not None
    assert s.rkey_owner("did:plc:a", "n", "rk001") == "k001"
    assert s.pending_count() == 1
    many = s.ledger_get_many("moods", ["k001", "k002", "nope"])
    assert set(many) == {"k001", "k002"}
    assert [e.doc_key for e in s.ledger_iter("moods")] == [f"k{i:03d}" for i in range(30)]
    assert len(list(s.ledger_iter(did="did:plc:b"))) == 10
    assert s.ledger_counts() == [("moods", "did:plc:a", 20), ("moods", "did:plc:b", 10)]
    s.ledger_mark_pending("moods", "k002")
    entry = s.ledger_get("moods", "k002")
    assert entry is not None and entry.pending
    s.ledger_delete("moods", "k003", did="did:plc:other", rkey="rk003")  # names another record
    assert s.ledger_get("moods", "k003") is not None
    s.ledger_delete("moods", "k003", did="did:plc:b", rkey="rk003")
    assert s.ledger_get("moods", "k003") is None


def test_dead_letters_skips_blobs_sessions_wiped_keys(make_store: tuple[str, Factory]) -> None:
    _, make = make_store
    s = make()
    s.dead_letter("moods", "a", "bad", "x" * 3000)
    s.dead_letter("moods", "a", "worse", "y", retryable=True)
    s.dead_letter("pieces", "b", "bad", "z")
    letters = {d.doc_key: d for d in s.dead_letters()}
    assert letters["a"].attempts == 2 and letters["a"].reason == "worse" and letters["a"].retryable
    assert len(s.dead_letters(limit=1)) == 1 and s.dead_letter_counts() == {"moods": 1, "pieces": 1}
    s.clear_dead_letter("moods", "a")
    assert s.dead_letter_counts() == {"pieces": 1}
    s.skip("moods", "c", "no_account")
    s.skip("moods", "d", "no_account")
    s.unskip("moods", "d")
    assert s.skipped_counts() == [("moods", "no_account", 1)]
    s.blob_add("did:plc:a", "bafy1", 10)
    s.blob_add("did:plc:a", "bafy1", 10)
    assert s.blob_known("did:plc:a", "bafy1") and not s.blob_known("did:plc:b", "bafy1")
    s.blob_forget("did:plc:a")
    assert not s.blob_known("did:plc:a", "bafy1")
    s.save_session("did:plc:a", "acc", "ref")
    assert make().load_session("did:plc:a") == ("acc", "ref")
    s.drop_session("did:plc:a")
    assert s.load_session("did:plc:a") is None
    s.wiped_key_put("moods", "e", "did:plc:a", "n", "r1")
    assert s.wiped_keys("moods", "did:plc:a") == {"e": ("n", "r1")}
    s.wiped_key_clear("moods", "e", "did:plc:a")
    assert s.wiped_keys("moods", "did:plc:a") == {}


def test_batch_lookup_and_apply(make_store: tuple[str, Factory]) -> None:
    """The hot path's two calls: one read per batch, one write per batch."""
    _, make = make_store
    s = make()
    s.apply(
        [
            LedgerPut("moods", "k1", "did:plc:a", "n", "r1", "c1", "f1", None, False),
            LedgerPut("moods", "k2", "did:plc:a", "n", "r2", None, None, None, True),
            LedgerPut("pieces", "k3", "did:plc:b", "p", "r3", "c3", "f3", None, False),
            Outcome("moods", "k9", "dead", "bad_when", "no when"),
            Outcome("moods", "k8", "skip", "no_atproto_account"),
            BlobAdd("did:plc:a", "bafyA", 10),
        ]
    )
    found = make().lookup(
        [("moods", "k1"), ("moods", "k2"), ("pieces", "k3"), ("moods", "nope")],
        "did:plc:a",
        [("n", "r1"), ("n", "r3"), ("p", "r3"), ("n", "zz")],
    )
    assert set(found.entries) == {("moods", "k1"), ("moods", "k2"), ("pieces", "k3")}
    assert found.entries[("moods", "k2")].pending
    assert found.holders == {("n", "r1"): "k1"}  # r3 is did:plc:b's, under another NSID
    assert make().lookup([], None, [("n", "r1")]).holders == {}
    assert s.dead_letter_counts() == {"moods": 1}
    assert s.skipped_counts() == [("moods", "no_atproto_account", 1)]
    assert s.blob_known("did:plc:a", "bafyA")
    # A batch that settles, moves and deletes: outcomes clear what they supersede.
    s.apply(
        [
            Outcome("moods", "k9", "published"),
            Outcome("moods", "k8", "dead", "account_unavailable", "x", retryable=True),
            LedgerPending("moods", "k1"),
            LedgerDelete("pieces", "k3", did="did:plc:other", rkey="r3"),  # not its record
            LedgerDelete("moods", "k2"),
            BlobForget("did:plc:a", "bafyA"),
        ]
    )
    found = make().lookup([("moods", "k1"), ("moods", "k2"), ("pieces", "k3")], None, [])
    assert set(found.entries) == {("moods", "k1"), ("pieces", "k3")}
    assert found.entries[("moods", "k1")].pending
    assert s.skipped_counts() == [] and s.dead_letter_counts() == {"moods": 1}
    assert not s.blob_known("did:plc:a", "bafyA")


def test_a_batch_of_clears_keeps_its_order(make_store: tuple[str, Factory]) -> None:
    """Runs of "no dead letter, not skipped" are folded into one delete per run on
    MongoDB: a dead letter written between two runs, and one cleared after it is
    written, come out as the ops' order says."""
    _, make = make_store
    s = make()
    keys = [f"d{i}" for i in range(6)]
    s.apply([Outcome("moods", k, "dead", "bad_when", "x") for k in keys])
    s.apply([Outcome("moods", k, "skip", "wip") for k in ("s1", "s2")])
    s.apply(
        [
            Outcome("moods", "d0", "published"),
            Outcome("moods", "d1", "published"),
            Outcome("moods", "s1", "hidden"),
            Outcome("moods", "d2", "dead", "bad_mood", "again"),  # between two runs
            Outcome("moods", "d3", "published"),
            Outcome("moods", "new", "dead", "bad_when", "y"),
            Outcome("moods", "new", "published"),  # written, then cleared, in one batch
            Outcome("moods", "d4", "hidden"),
        ]
    )
    left = {d.doc_key: d.reason for d in s.dead_letters("moods")}
    assert left == {"d2": "bad_mood", "d5": "bad_when"}
    assert s.skipped_counts() == [("moods", "wip", 1)]


def test_dead_letter_counts_and_due_pages(make_store: tuple[str, Factory]) -> None:
    _, make = make_store
    s = make()
    with s.transaction():
        for i in range(25):
            s.dead_letter("moods", f"d{i:02d}", "r", "x", retryable=i % 5 != 0)
        s.dead_letter("pieces", "p1", "r", "x")
    for _ in range(3):
        s.dead_letter("moods", "d01", "again", "y", retryable=True)  # counted once
    assert s.dead_letter_counts() == {"moods": 25, "pieces": 1}
    s.clear_dead_letter("moods", "d00")
    s.clear_dead_letter("moods", "d00")
    s.clear_dead_letter("moods", "never")
    assert s.dead_letter_counts() == {"moods": 24, "pieces": 1}
    later = time.time() + 1
    pages: list[list[str]] = []
    after: tuple[str, str] | None = None
    while page := s.dead_letters_due(later, 7, after):
        pages.append([d.doc_key for d in page])
        after = (page[-1].collection, page[-1].doc_key)
    keys = [k for p in pages for k in p]
    assert keys == [f"d{i:02d}" for i in range(25) if i % 5 != 0]
    assert max(len(p) for p in pages) == 7
    assert s.dead_letters_due(time.time() - 3600, 100) == []  # none is that old


def test_read_inside_a_transaction_sees_its_writes(make_store: tuple[str, Factory]) -> None:
    _, make = make_store
    s = make()
    with s.transaction():
        _put(s, "k1")
        assert s.ledger_get("moods", "k1") is not None


# -- MongoDB only: partitions and fencing ------------------------------------------


def test_partitions_have_their_own_position_and_share_the_ledger(
    mongo_store: Factory,
) -> None:
    make = mongo_store
    p0, p1 = make(partition=0), make(partition=1)
    p0.save_position({"_data": "00"}, (1, 1))
    assert p1.load_position() is None
    _put(p0, "k1")
    assert p1.ledger_get("moods", "k1") is not None


def test_a_stale_leader_cannot_move_the_position_or_overwrite_the_ledger(
    mongo_store: Factory,
) -> None:
    make = mongo_store
    old_fence, new_fence = FakeFence(1), FakeFence(2)
    old = make(fence=old_fence)
    old.save_position({"_data": "01"}, (1, 1))
    _put(old, "k1", cid="old")
    new = make(fence=new_fence)
    assert isinstance(new, MongoStateStore)
    new.claim()  # the new leader stamps its token before doing anything
    # The old leader's lease still looks valid to it (paused between check and write):
    with pytest.raises(LeaseLost):
        old.save_position({"_data": "00"}, (0, 9))
    assert old_fence.lost_reasons  # and it now knows
    pos = new.load_position()
    assert pos is not None and pos.token == {"_data": "01"}
    _put(new, "k1", cid="new")
    old_fence.valid = True  # pretend again: only the document stamp can stop it now
    with pytest.raises(LeaseLost):
        _put(old, "k1", cid="stale")
    entry = new.ledger_get("moods", "k1")
    assert entry is not None and entry.cid == "new"
    # Writes of another partition's leader to a shared document are not fenced by ours.
    other = make(partition=1, fence=FakeFence(1))
    _put(other, "k1", cid="moved")
    entry = new.ledger_get("moods", "k1")
    assert entry is not None and entry.cid == "moved"


def test_a_store_whose_lease_ran_out_writes_nothing(mongo_store: Factory) -> None:
    make = mongo_store
    fence = FakeFence(1)
    s = make(fence=fence)
    fence.valid = False
    with pytest.raises(LeaseLost):
        s.save_position({"_data": "01"}, (1, 1))
    with pytest.raises(LeaseLost), s.transaction():
        s.dead_letter("moods", "a", "bad", "x")
    assert make().load_position() is None and make().dead_letters() == []


# -- the lease itself ------------------------------------------------------------------


def test_lease_takeover_only_after_expiry_and_fencing_tokens_grow(backend: Backend) -> None:
    dbname = f"lease_{uuid.uuid4().hex[:10]}"

    async def scenario() -> None:
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(backend.uri)
        coll = client[dbname][COLLECTION]
        now = [1000.0]
        mono = [50.0]

        def lease(owner: str) -> Lease:
            return Lease(
                coll,
                cluster="c",
                partition=0,
                owner=owner,
                seconds=15.0,
                clock=lambda: now[0],
                monotonic=lambda: mono[0],
            )

        a, b = lease("a"), lease("b")
        assert await a.try_acquire() and a.token == 1
        assert not await b.try_acquire()
        now[0] += 10
        mono[0] += 10
        assert await a.renew()
        a.check()
        now[0] += 14  # renewed at 1010 for 15 s: still held at 1024
        assert not await b.try_acquire()
        mono[0] += 12.5  # the holder's own view: past renewal + 15 - 3 (margin)
        with pytest.raises(LeaseLost):
            a.check()
        now[0] += 2  # 1026: lapsed for everyone
        assert await b.try_acquire() and b.token == 2
        a.held = True  # even if a believed otherwise, renewing cannot succeed
        assert not await a.renew() and a.lost.is_set()
        await b.release()
        c = lease("c")
        assert await c.try_acquire() and c.token == 3  # released: no wait for expiry
        await client.drop_database(dbname)
        await client.close()

    asyncio.run(scenario())


def test_renewals_survive_a_blocked_event_loop(backend: Backend) -> None:
    """A loop busy for longer than the lease must not cost the lease (renewal thread)."""
    dbname = f"lease_{uuid.uuid4().hex[:10]}"
    sync: MongoClient[dict[str, Any]] = backend.client()

    async def scenario() -> None:
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(backend.uri)
        lease = Lease(
            client[dbname][COLLECTION],
            cluster="c",
            partition=0,
            owner="a",
            seconds=1.5,
            renewals=sync[dbname][COLLECTION],
        )
        assert await lease.try_acquire()
        keeper = asyncio.create_task(lease.keep())
        await asyncio.sleep(0)
        time.sleep(3.0)  # noqa: ASYNC251 -- on purpose: the loop is stuck for twice the lease
        lease.check()  # still ours: the thread renewed it meanwhile
        doc = await lease.holder()
        assert doc is not None and doc["owner"] == "a" and doc["expires_at"] > time.time()
        other = Lease(client[dbname][COLLECTION], cluster="c", partition=0, owner="b", seconds=1.5)
        assert not await other.try_acquire()
        keeper.cancel()
        await asyncio.gather(keeper, return_exceptions=True)
        await client.drop_database(dbname)
        await client.close()

    try:
        asyncio.run(scenario())
    finally:
        sync.close()


def test_parked_accounts(make_store: tuple[str, Factory]) -> None:
    """An account that cannot write: its documents wait by key; re-parking wins over an
    unpark that started before it."""
    _, make = make_store
    s = make()
    t0 = time.time()
    s.park("did:plc:a", "rate_limited", t0 + 60, [("pieces", f"p{i:02d}") for i in range(12)])
    s.park("did:plc:b", "auth", t0 + 600, [("moods", "m1")])
    accounts = {a.did: a for a in make().parked_accounts()}
    assert accounts["did:plc:a"].documents == 12 and accounts["did:plc:a"].reason == "rate_limited"
    assert accounts["did:plc:b"].until == pytest.approx(t0 + 600)
    started = time.time()  # an unpark begins (the window has reset)
    first = s.parked_page("did:plc:a", started, 5)
    assert first == [("pieces", f"p{i:02d}") for i in range(5)]
    assert s.parked_page("did:plc:a", started, 5, after=first[-1])[0] == ("pieces", "p05")
    assert s.parked_page("did:plc:a", t0 - 10, 5) == []  # none parked that early
    s.unpark("did:plc:a", first, started)
    assert not s.unpark_account("did:plc:a", started + 60)  # documents are still parked
    time.sleep(0.01)
    s.park("did:plc:a", "rate_limited", started + 3600, [("pieces", "p07")])  # parked anew
    rest = s.parked_page("did:plc:a", started, 100)
    assert ("pieces", "p07") not in rest  # parked after the unpark began
    s.unpark("did:plc:a", [*rest, ("pieces", "p07")], started)
    assert s.parked_page("did:plc:a", time.time(), 100) == [("pieces", "p07")]
    s.unpark("did:plc:a", [("pieces", "p07")], time.time())
    assert not s.unpark_account("did:plc:a", started + 60)  # parked again until later
    assert s.unpark_account("did:plc:a", started + 3600)
    assert [a.did for a in s.parked_accounts()] == ["did:plc:b"]


def test_known_accounts_and_account_backfills(make_store: tuple[str, Factory]) -> None:
    """A user's account as the stream last showed it, and the resumable progress of the
    account backfill due for it; a newer backfill drops the older one's progress, and
    progress saved for a backfill that was replaced meanwhile is ignored."""
    _, make = make_store
    s = make()
    assert s.known_account("auth0|a") is None
    s.put_known_account("auth0|a", "did:plc:a", "a.test", backfill=False)
    known = make().known_account("auth0|a")
    assert known is not None and (known.did, known.handle, known.backfill_since) == (
        "did:plc:a",
        "a.test",
        None,
    )
    assert s.account_backfills() == []
    s.put_known_account("auth0|b", "did:plc:b", "b.test", backfill=True)
    (job,) = make().account_backfills()
    assert job.sub == "auth0|b" and job.backfill_since is not None and job.progress == {}
    since = job.backfill_since
    oid = ObjectId()
    s.save_account_scan("auth0|b", since, "moods", OwnerScan(oid, "objectid", 40, 100))
    s.save_account_scan("auth0|b", since, "pieces", OwnerScan(None, "done", 3, 3))
    (job,) = make().account_backfills()
    assert job.progress["moods"] == OwnerScan(oid, "objectid", 40, 100)
    assert job.progress["pieces"].phase == "done"
    # The handle changes: the backfill due is kept.
    s.put_known_account("auth0|b", "did:plc:b", "b2.test", backfill=False)
    (job,) = s.account_backfills()
    assert job.handle == "b2.test" and job.progress["moods"].scanned == 40
    # A new account (a new DID): a new backfill from the start.
    time.sleep(0.01)
    s.put_known_account("auth0|b", "did:plc:b2", "b2.test", backfill=True)
    (job,) = s.account_backfills()
    assert job.did == "did:plc:b2" and job.progress == {} and job.backfill_since != since
    s.save_account_scan("auth0|b", since, "moods", OwnerScan(oid, "objectid", 99, 100))
    assert s.account_backfills()[0].progress == {}  # the replaced backfill's progress
    s.finish_account_backfill("auth0|b", since)  # ... and its end change nothing
    assert len(s.account_backfills()) == 1
    s.finish_account_backfill("auth0|b", job.backfill_since or 0.0)
    assert s.account_backfills() == []
    known = s.known_account("auth0|b")
    assert known is not None and known.did == "did:plc:b2" and known.backfill_since is None
    s.put_known_account("auth0|c", "did:plc:c", "c.test", backfill=False)
    assert [k.sub for k in s.known_accounts("", 10)] == ["auth0|a", "auth0|b", "auth0|c"]
    assert [k.did for k in s.known_accounts("auth0|a", 1)] == ["did:plc:b2"]
    s.drop_known_account("auth0|b")
    assert s.known_account("auth0|b") is None and s.known_account("auth0|a") is not None
    assert [k.sub for k in make().known_accounts("", 10)] == ["auth0|a", "auth0|c"]


def test_gone_accounts(make_store: tuple[str, Factory]) -> None:
    _, make = make_store
    s = make()
    assert s.gone_accounts() == []
    s.mark_gone("did:plc:x", "auth0|x", "x.test", "refused: AccountNotFound")
    time.sleep(0.01)
    s.mark_gone("did:plc:x", None, "", "removed_from_users")  # newest reason, first since
    s.mark_gone("did:plc:y", None, "", "refused: AccountTakedown")
    gone = {g.did: g for g in make().gone_accounts()}
    x = gone["did:plc:x"]
    assert (x.sub, x.handle, x.reason) == ("auth0|x", "x.test", "removed_from_users")
    assert x.since < time.time() and gone["did:plc:y"].sub is None
    s.clear_gone("did:plc:x")
    assert [g.did for g in s.gone_accounts()] == ["did:plc:y"]


def test_the_retry_pass_reads_dead_letters_off_the_event_loop(
    make_store: tuple[str, Factory],
) -> None:
    """``StateCalls.read`` runs the page query on another thread, on every backend (SQLite
    with a read-only connection of that thread), and sees what is committed."""
    _, make = make_store
    s = make()
    with s.transaction():
        for i in range(12):
            s.dead_letter("moods", f"r{i:02d}", "image_fetch_failed", "x", retryable=True)
    calls = StateCalls.for_store(s)
    loop_thread: list[int] = []
    read_on: list[int] = []

    def due(before: float, limit: int, after: tuple[str, str] | None) -> list[str]:
        read_on.append(threading.get_ident())
        return [d.doc_key for d in s.dead_letters_due(before, limit, after)]

    async def run() -> list[str]:
        loop_thread.append(threading.get_ident())
        keys: list[str] = []
        after: tuple[str, str] | None = None
        while page := await calls.read(due, time.time() + 1, 5, after):
            keys += page
            after = ("moods", page[-1])
        s.dead_letter("moods", "r99", "image_fetch_failed", "x", retryable=True)  # later
        keys += await calls.read(due, time.time() + 1, 5, after)
        return keys

    try:
        keys = asyncio.run(run())
    finally:
        calls.close()
    assert keys == [f"r{i:02d}" for i in range(12)] + ["r99"]
    assert read_on and loop_thread[0] not in read_on


def test_calls_side_by_side_are_each_one_unit(make_store: tuple[str, Factory]) -> None:
    """A store's calls on several threads at once (``StateCalls(threads=4)``): one call's
    transaction block is still one unit (all of its writes, or none when it fails),
    whatever the others are doing. SQLite runs them inline, one after another."""
    name, make = make_store
    s = make()
    calls = StateCalls(s, offload=name != "sqlite", threads=4)

    class Boom(Exception):
        pass

    def batch(i: int) -> None:
        with s.transaction():
            for j in range(8):
                _put(s, f"b{i:02d}-{j}", rkey=f"r{i:02d}{j}")
                time.sleep(0.002)  # let the other threads' blocks interleave with this one
            if i % 3 == 0:
                raise Boom

    async def run() -> None:
        async def one(i: int) -> None:
            with contextlib.suppress(Boom):
                await calls(batch, i)

        await asyncio.gather(*(one(i) for i in range(24)))

    try:
        asyncio.run(run())
    finally:
        calls.close()
    stored = {
        f"b{i:02d}-{j}"
        for i in range(24)
        for j in range(8)
        if s.ledger_get("moods", f"b{i:02d}-{j}")
    }
    assert stored == {f"b{i:02d}-{j}" for i in range(24) if i % 3 for j in range(8)}
