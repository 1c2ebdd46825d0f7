"""Bare PDS clients for the benchmark: the applyWrites ceiling and a firehose listener."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import httpx
import libipld
import websockets

from syncd.mappings import MAPPINGS, MappingContext
from syncd.rkey import derive_rkey

_CTX = MappingContext()


def record_for(coll: str, doc: dict[str, Any]) -> tuple[str, str, dict[str, Any]]:
    """(nsid, rkey, record) exactly as syncd builds a text record (same mapping, same key)."""
    draft = MAPPINGS[coll].draft(doc, _CTX)
    return draft.nsid, derive_rkey(doc["when"], doc["_id"]), {"$type": draft.nsid, **draft.fields}


async def apply_writes_ceiling(
    pds_url: str,
    accounts: list[tuple[str, str]],
    writes_by_did: dict[str, list[dict[str, Any]]],
    *,
    concurrency: int,
    per_call: int = 200,
) -> dict[str, Any]:
    """The PDS's own ceiling: log in once per account (untimed), then a bare loop of
    ``applyWrites`` calls of ``per_call`` creates, one in flight per account and at most
    ``concurrency`` in flight overall (syncd's ``pds.account_concurrency``)."""
    async with httpx.AsyncClient(
        base_url=pds_url, timeout=120.0, limits=httpx.Limits(max_connections=concurrency * 2)
    ) as http:
        tokens: dict[str, str] = {}
        slots = asyncio.Semaphore(concurrency)

        async def login(did: str, password: str) -> None:
            async with slots:
                r = await http.post(
                    "/xrpc/com.atproto.server.createSession",
                    json={"identifier": did, "password": password},
                )
            r.raise_for_status()
            tokens[did] = r.json()["accessJwt"]

        await asyncio.gather(*(login(d, p) for d, p in accounts))
        calls = 0

        async def account(did: str) -> None:
            nonlocal calls
            writes = writes_by_did.get(did, [])
            for i in range(0, len(writes), per_call):
                async with slots:
                    r = await http.post(
                        "/xrpc/com.atproto.repo.applyWrites",
                        json={"repo": did, "writes": writes[i : i + per_call]},
                        headers={"Authorization": f"Bearer {tokens[did]}"},
                    )
                    r.raise_for_status()
                    calls += 1

        t0 = time.monotonic()
        await asyncio.gather(*(account(did) for did, _ in accounts))
        seconds = time.monotonic() - t0
    total = sum(len(w) for w in writes_by_did.values())
    return {
        "records": total,
        "seconds": round(seconds, 3),
        "records_per_s": round(total / seconds, 1),
        "calls": calls,
        "writes_per_call": round(total / max(calls, 1), 1),
    }


def create_write(nsid: str, rkey: str, record: dict[str, Any]) -> dict[str, Any]:
    return {
        "$type": "com.atproto.repo.applyWrites#create",
        "collection": nsid,
        "rkey": rkey,
        "value": record,
    }


def _parse_time(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


class Firehose:
    """Listen to ``com.atproto.sync.subscribeRepos`` in a thread.

    For every created/updated record it keeps the commit's own ``time`` (set by the
    PDS when it builds the commit, inside the write, by this machine's clock), so
    the firehose's delivery delay does not enter the figure, and watching costs
    the PDS one websocket rather than a poll per record.
    """

    def __init__(self, pds_url: str) -> None:
        self.url = pds_url.replace("http://", "ws://").rstrip("/")
        self.url += "/xrpc/com.atproto.sync.subscribeRepos"
        self.seen: dict[tuple[str, str], float] = {}
        self.received_at: dict[tuple[str, str], float] = {}
        self.commits = 0
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._connected = threading.Event()
        self._thread = threading.Thread(target=self._main, name="firehose", daemon=True)

    def start(self) -> Firehose:
        self._thread.start()
        if not self._connected.wait(15):
            raise RuntimeError(f"firehose: could not connect ({self.error!r})")
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _main(self) -> None:
        try:
            asyncio.run(self._listen())
        except BaseException as exc:
            self.error = exc

    async def _listen(self) -> None:
        async with websockets.connect(self.url, max_size=None, ping_interval=None) as ws:
            self._connected.set()
            while not self._stop.is_set():
                try:
                    msg = await asyncio.wait_for(ws.recv(), 0.5)
                except TimeoutError:
                    continue
                now = time.time()
                if not isinstance(msg, bytes):
                    continue
                header, body = libipld.decode_dag_cbor_multi(msg)[:2]
                if header.get("t") != "#commit":
                    continue
                self.commits += 1
                t = _parse_time(body["time"])
                repo = body["repo"]
                for op in body.get("ops", []):
                    if op.get("action") in ("create", "update"):
                        key = (repo, op["path"])
                        self.seen.setdefault(key, t)
                        self.received_at.setdefault(key, now)

    def count(self, keys: Iterable[tuple[str, str]]) -> int:
        return sum(1 for k in keys if k in self.seen)

    def wait_for(self, keys: set[tuple[str, str]], timeout: float) -> float | None:
        """Seconds until every key was seen (None on timeout)."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            if self.error is not None:
                raise RuntimeError(f"firehose failed: {self.error!r}")
            if all(k in self.seen for k in keys):
                return time.monotonic() - t0
            time.sleep(0.05)
        return None


def count_records(pds_url: str, dids: list[str], nsids: list[str]) -> int:
    """Every record of ``nsids`` in ``dids``, counted with ``listRecords`` (all pages)."""

    async def run() -> int:
        async with httpx.AsyncClient(base_url=pds_url, timeout=60.0) as http:
            sem = asyncio.Semaphore(4)

            async def one(did: str, nsid: str) -> int:
                n, cursor = 0, None
                while True:
                    params: dict[str, Any] = {"repo": did, "collection": nsid, "limit": 100}
                    if cursor:
                        params["cursor"] = cursor
                    async with sem:
                        r = await http.get("/xrpc/com.atproto.repo.listRecords", params=params)
                    r.raise_for_status()
                    page = r.json()
                    n += len(page.get("records", []))
                    cursor = page.get("cursor")
                    if not cursor or not page.get("records"):
                        return n

            counts = await asyncio.gather(*(one(d, n) for d in dids for n in nsids))
            return sum(counts)

    return asyncio.run(run())
