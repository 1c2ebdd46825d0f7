"""Streamed uploads: one CID, one upload; the PDS's limit learned from its 413 and named in
the dead letter; uploads bounded in number and bytes (a PDS played by MockTransport, the
MP4s served by a real HTTP server on 127.0.0.1)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from syncd.images.cid import blob_cid
from syncd.images.fetch import ImageFetcher, make_client
from syncd.images.settings import ImageSettings
from syncd.mappings.base import StreamedBlob
from syncd.media.limits import ByteBudget, UploadLimit
from syncd.pds.repo import Repo
from syncd.pds.sessions import Account
from syncd.pds.xrpc import XrpcClient
from syncd.write.blobs import Blobs
from syncd.write.streamed import StreamedSettings, StreamedStage
from syncd_sandbox.seed import mp4_bytes
from tests.images.server import LoopbackServer, Reply

ACCOUNT = Account(sub="u", did="did:plc:tapes", handle="t.test", password="pw")
LEXICON = 52_428_800


class FakePds:
    """``uploadBlob`` as the reference PDS answers it: the CID of the bytes, 413 over its
    limit (judged by Content-Length, before the body)."""

    def __init__(self, limit: int | None = None) -> None:
        self.limit = limit
        self.uploads: list[dict[str, Any]] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.gate: asyncio.Event | None = None

    async def handler(self, request: httpx.Request) -> httpx.Response:
        length = int(request.headers["Content-Length"])
        if self.limit is not None and length > self.limit:
            return httpx.Response(
                413, json={"error": "PayloadTooLarge", "message": "request entity too large"}
            )
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.gate is not None:
                await self.gate.wait()
            body = await request.aread()
        finally:
            self.in_flight -= 1
        self.uploads.append(
            {
                "size": len(body),
                "length": length,
                "chunked": "transfer-encoding" in request.headers,
                "type": request.headers["Content-Type"],
            }
        )
        blob = {"$type": "blob", "ref": {"$link": blob_cid(body)}, "mimeType": "video/mp4"}
        return httpx.Response(200, json={"blob": {**blob, "size": len(body)}})


class _Sessions:
    async def token(self, account: Account) -> str:
        return "token"

    async def expired(self, account: Account, token: str) -> None:
        return None


class _Store:
    def __init__(self) -> None:
        self.blobs: set[tuple[str, str]] = set()

    def blob_known(self, did: str, cid: str) -> bool:
        return (did, cid) in self.blobs


class _Calls:
    def __init__(self) -> None:
        self.store = _Store()

    async def __call__(self, fn: Callable[..., Any], *args: Any) -> Any:
        return fn(*args)


@pytest.fixture
def server() -> Iterator[LoopbackServer]:
    srv = LoopbackServer().start()
    try:
        yield srv
    finally:
        srv.stop()


def stage_for(
    server: LoopbackServer, pds: FakePds, limit: UploadLimit | None = None, **kw: Any
) -> tuple[StreamedStage, Blobs, Repo]:
    settings = ImageSettings(allowed_hosts=(f"http://127.0.0.1:{server.port}",), retries=0)
    fetcher = ImageFetcher(make_client(settings), settings)
    repo = Repo(
        XrpcClient("http://pds.test", transport=httpx.MockTransport(pds.handler)),
        _Sessions(),  # type: ignore[arg-type]
    )
    blobs = Blobs(lambda: ACCOUNT, repo, _Calls(), asyncio.Event())  # type: ignore[arg-type]
    stage = StreamedStage(fetcher, limit or UploadLimit(), StreamedSettings(retries=0, **kw))
    return stage, blobs, repo


def tape(server: LoopbackServer, path: str, data: bytes) -> StreamedBlob:
    server.route(path, Reply(200, data, {"Content-Type": "video/mp4"}))
    return StreamedBlob("video", server.url(path), ("video/mp4",), LEXICON)


async def test_the_mp4_is_streamed_to_upload_blob_with_its_length(server: LoopbackServer) -> None:
    pds = FakePds()
    stage, blobs, _ = stage_for(server, pds)
    data = mp4_bytes(2_500_000, seed=1)
    result = await stage.prepare("tapes", tape(server, "/t/a.mp4", data), blobs)
    assert result.error is None and result.parked is None
    assert pds.uploads == [
        {"size": len(data), "length": len(data), "chunked": False, "type": "video/mp4"}
    ]
    assert result.link == blob_cid(data) and result.uploaded
    assert result.ref() == {
        "$type": "blob",
        "ref": {"$link": blob_cid(data)},
        "mimeType": "video/mp4",
        "size": len(data),
    }
    stage.release(result)
    assert result.spool is not None and result.spool.closed


async def test_the_same_bytes_are_not_uploaded_twice(server: LoopbackServer) -> None:
    pds = FakePds()
    stage, blobs, _ = stage_for(server, pds)
    data = mp4_bytes(50_000, seed=2)
    first = await stage.prepare("tapes", tape(server, "/t/a.mp4", data), blobs)
    second = await stage.prepare("tapes", tape(server, "/t/copy.mp4", data), blobs)
    assert first.link == second.link == blob_cid(data)
    assert len(pds.uploads) == 1 and not second.uploaded
    # A CID the state store knows (a committed record references it) is not uploaded either.
    other = mp4_bytes(60_000, seed=3)
    blobs._calls.store.blobs.add((ACCOUNT.did, blob_cid(other)))  # type: ignore[attr-defined]
    third = await stage.prepare("tapes", tape(server, "/t/b.mp4", other), blobs)
    assert third.link == blob_cid(other) and len(pds.uploads) == 1


async def test_a_413_is_a_dead_letter_naming_the_limit_it_teaches(server: LoopbackServer) -> None:
    pds = FakePds(limit=40_000)
    limit = UploadLimit()
    stage, blobs, _ = stage_for(server, pds, limit)
    ok = await stage.prepare("tapes", tape(server, "/t/ok.mp4", mp4_bytes(30_000)), blobs)
    assert ok.error is None and limit.accepted == 30_000
    big = await stage.prepare("tapes", tape(server, "/t/big.mp4", mp4_bytes(50_000)), blobs)
    assert big.error is not None and big.link is None
    assert big.error.reason == "blob_over_pds_limit" and not big.error.retryable
    detail = big.error.detail
    assert "50,000 bytes" in detail and "PDS_BLOB_UPLOAD_LIMIT" in detail
    assert "at least 30,000 and below 50,000" in detail, detail
    assert limit.refused_at == 50_000
    # Learned: a larger MP4 is refused by its Content-Length, never uploaded.
    bigger = await stage.prepare("tapes", tape(server, "/t/x.mp4", mp4_bytes(60_000)), blobs)
    assert bigger.error is not None and bigger.error.reason == "tape_too_large"
    assert "below 50,000" in bigger.error.detail and len(pds.uploads) == 1


async def test_a_configured_limit_refuses_before_downloading(server: LoopbackServer) -> None:
    pds = FakePds(limit=10_000)
    stage, blobs, _ = stage_for(server, pds, UploadLimit(10_000))
    result = await stage.prepare("tapes", tape(server, "/t/a.mp4", mp4_bytes(20_000)), blobs)
    assert result.error is not None and result.error.reason == "tape_too_large"
    assert "upload limit of 10,000 bytes (pds.blob_upload_limit" in result.error.detail
    assert pds.uploads == []


async def test_uploads_are_bounded_in_number(server: LoopbackServer) -> None:
    pds = FakePds()
    pds.gate = asyncio.Event()
    stage, blobs, _ = stage_for(server, pds, upload_concurrency=2, prepared_max=8)
    tapes = [tape(server, f"/t/{i}.mp4", mp4_bytes(20_000, seed=i)) for i in range(5)]
    tasks = [asyncio.create_task(stage.prepare("tapes", t, blobs)) for t in tapes]
    for _ in range(100):
        await asyncio.sleep(0.01)
        if pds.in_flight == 2:
            break
    await asyncio.sleep(0.05)
    assert pds.in_flight == 2  # the others wait for a slot
    pds.gate.set()
    results = await asyncio.gather(*tasks)
    assert pds.max_in_flight == 2 and all(r.link for r in results)


async def test_bytes_in_flight_are_bounded_and_a_big_blob_goes_alone() -> None:
    budget = ByteBudget(100)
    await budget.acquire(60)
    waiting = asyncio.create_task(budget.acquire(60))
    await asyncio.sleep(0)
    assert not waiting.done() and budget.held == 60
    budget.release(60)
    await waiting
    assert budget.held == 60
    big = asyncio.create_task(budget.acquire(150))  # over the capacity: alone, once empty
    small = asyncio.create_task(budget.acquire(10))  # in order: behind the big one
    await asyncio.sleep(0)
    assert not big.done() and not small.done()
    budget.release(60)
    await asyncio.sleep(0)
    assert big.done() and not small.done() and budget.held == 150
    budget.release(150)
    await small
    assert budget.held == 10
    cancelled = asyncio.create_task(budget.acquire(95))
    await asyncio.sleep(0)
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    budget.release(10)
    assert budget.held == 0 and not budget._waiters


def test_the_upload_limit_as_precisely_as_it_is_known() -> None:
    limit = UploadLimit()
    assert limit.bound is None
    assert limit.effective(LEXICON) == (LEXICON, "the lexicon's maxSize of 52,428,800 bytes")
    limit.took(1_000_000)
    limit.refused(6_000_000)
    limit.refused(8_000_000)  # the smallest refusal is the bound
    assert limit.bound == 5_999_999
    size, why = limit.effective(LEXICON)
    assert size == 5_999_999 and "at least 1,000,000 and below 6,000,000" in why
    configured = UploadLimit(5_242_880)
    assert configured.effective(LEXICON)[0] == 5_242_880
    assert "5,242,880 bytes (pds.blob_upload_limit" in configured.refusal(6_000_000, LEXICON)
    configured.refused(4_000_000)  # the PDS says less than the config: believe the PDS
    assert configured.bound == 3_999_999


async def test_prepared_blobs_are_bounded_until_their_ops_finish(server: LoopbackServer) -> None:
    """Each prepared MP4 is a spool file on disk: at most ``prepared_max`` exist at once."""
    stage, blobs, _ = stage_for(server, FakePds(), prepared_max=2)
    tapes = [tape(server, f"/t/{i}.mp4", mp4_bytes(5_000, seed=i)) for i in range(3)]
    tasks = [asyncio.create_task(stage.prepare("tapes", t, blobs)) for t in tapes]
    done, pending = await asyncio.wait(tasks, timeout=0.5)
    assert len(done) == 2 and len(pending) == 1  # the third waits for a place
    stage.release(next(iter(done)).result())
    third = await asyncio.wait_for(pending.pop(), 2.0)
    assert third.link is not None


async def test_a_batch_preparing_inline_does_not_wait_for_a_place(server: LoopbackServer) -> None:
    """A batch already holds a PDS slot: it must not wait for places that ops waiting
    for PDS slots hold."""
    stage, blobs, _ = stage_for(server, FakePds(), prepared_max=1)
    held = await stage.prepare("tapes", tape(server, "/t/a.mp4", mp4_bytes(5_000, 1)), blobs)
    inline = await asyncio.wait_for(
        stage.prepare("tapes", tape(server, "/t/b.mp4", mp4_bytes(5_000, 2)), blobs, ahead=False),
        2.0,
    )
    assert inline.link is not None and not inline.held and held.held
    stage.release(inline)
    stage.release(held)
