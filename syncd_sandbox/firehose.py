"""The sandbox PDS's firehose (``com.atproto.sync.subscribeRepos``), read as a witness.

A repository read after the fact shows where things ended; the firehose shows
every commit on the way -- a record that existed for a moment and was deleted
again is in it. :class:`Firehose` connects over a websocket (``websockets``),
decodes each frame (DAG-CBOR header and body, the commit's blocks as a CAR,
with ``libipld``) on a background thread, and keeps every record operation:
repository, action, collection, record key, CID and -- for creates and
updates -- the record itself.

    with Firehose(pds_url) as hose:   # from the live tip (cursor=0: from the start)
        ...
        hose.wait_for(lambda ops: any(op.rkey == key for op in ops))
        creates = hose.ops(action="create", collection=NSID)

Nothing here imports syncd: the frames are the PDS's, decoded by the format.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import libipld
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

METHOD = "com.atproto.sync.subscribeRepos"


@dataclass(frozen=True)
class RepoOp:
    """One record operation of one commit."""

    seq: int
    repo: str
    action: str  # "create" | "update" | "delete"
    collection: str
    rkey: str
    cid: str | None
    record: dict[str, Any] | None = field(default=None, compare=False)

    @property
    def path(self) -> str:
        return f"{self.collection}/{self.rkey}"


def _cid(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        return str(libipld.encode_cid(value))
    return str(value)


def decode_frame(data: bytes) -> tuple[dict[str, Any], dict[str, Any]]:
    """A subscription frame: (header, body), both DAG-CBOR."""
    parts = libipld.decode_dag_cbor_multi(data)
    if len(parts) != 2 or not isinstance(parts[0], dict) or not isinstance(parts[1], dict):
        raise ValueError(f"not a subscription frame ({len(parts)} parts)")
    return parts[0], parts[1]


def commit_ops(body: dict[str, Any]) -> list[RepoOp]:
    """The record operations a ``#commit`` body carries, records decoded from its blocks."""
    blocks: dict[str, Any] = {}
    raw = body.get("blocks")
    if isinstance(raw, bytes) and raw:
        _, decoded = libipld.decode_car(raw)
        blocks = {_cid(k) or "": v for k, v in decoded.items()}
    out: list[RepoOp] = []
    for op in body.get("ops") or []:
        collection, _, rkey = str(op.get("path", "")).partition("/")
        cid = _cid(op.get("cid"))
        record = blocks.get(cid) if cid is not None else None
        out.append(
            RepoOp(
                seq=int(body.get("seq", 0)),
                repo=str(body.get("repo", "")),
                action=str(op.get("action", "")),
                collection=collection,
                rkey=rkey,
                cid=cid,
                record=record if isinstance(record, dict) else None,
            )
        )
    return out


class Firehose:
    """Every record operation the PDS sequences from ``cursor`` on (None: from now)."""

    def __init__(self, pds_url: str, *, cursor: int | None = None) -> None:
        base = pds_url.rstrip("/").replace("http://", "ws://", 1).replace("https://", "wss://", 1)
        self.uri = f"{base}/xrpc/{METHOD}" + ("" if cursor is None else f"?cursor={cursor}")
        self.pds_url = pds_url.rstrip("/")
        self._revs: dict[str, str] = {}  # repo -> the newest commit rev seen
        self._ops: list[RepoOp] = []
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._stop = threading.Event()
        self._connected = threading.Event()
        self._thread: threading.Thread | None = None
        self._conn: ClientConnection | None = None
        self.frames = 0
        self.last_seq = 0
        self.error: BaseException | None = None

    def start(self, timeout: float = 10.0) -> Firehose:
        """Connect; returns once the handshake is done (without a cursor the PDS streams
        from its tip from then on: start the reader before the writes it must see)."""
        self._thread = threading.Thread(target=self._run, name="firehose", daemon=True)
        self._thread.start()
        if not self._connected.wait(timeout):
            raise AssertionError(f"firehose: not connected within {timeout}s")
        self._check()
        return self

    def _run(self) -> None:
        try:
            with connect(self.uri, max_size=None, open_timeout=10) as conn:
                self._conn = conn
                self._connected.set()
                self._read(conn)
        except BaseException as exc:  # surfaced by ops()/wait_for(): a witness must not lie
            if not self._stop.is_set():
                self.error = exc
        finally:
            self._connected.set()
            with self._changed:
                self._changed.notify_all()

    def _read(self, conn: ClientConnection) -> None:
        while not self._stop.is_set():
            try:
                data = conn.recv(timeout=0.2)
            except TimeoutError:
                continue
            except ConnectionClosed:
                if self._stop.is_set():
                    return
                raise
            if isinstance(data, str):
                continue
            header, body = decode_frame(data)
            if header.get("op") == -1:
                raise RuntimeError(f"firehose error frame: {body}")
            ops = commit_ops(body) if header.get("t") == "#commit" else []
            with self._changed:
                self.frames += 1
                self.last_seq = max(self.last_seq, int(body.get("seq", 0) or 0))
                repo, rev = body.get("repo"), body.get("rev")
                if header.get("t") == "#commit" and isinstance(repo, str) and isinstance(rev, str):
                    self._revs[repo] = max(self._revs.get(repo, ""), rev)
                self._ops.extend(ops)
                self._changed.notify_all()

    def _check(self) -> None:
        if self.error is not None:
            raise AssertionError(f"the firehose reader failed: {self.error!r}")

    def ops(
        self,
        *,
        repo: str | None = None,
        action: str | None = None,
        collection: str | None = None,
    ) -> list[RepoOp]:
        """The operations seen so far, in order, filtered."""
        self._check()
        with self._lock:
            found = list(self._ops)
        return [
            op
            for op in found
            if (repo is None or op.repo == repo)
            and (action is None or op.action == action)
            and (collection is None or op.collection == collection)
        ]

    def wait_for(self, predicate: Callable[[list[RepoOp]], Any], timeout: float = 30.0) -> Any:
        """Until ``predicate(all ops so far)`` is truthy; its value."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                self._check()
                value = predicate(list(self._ops))
                if value:
                    return value
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"firehose: condition not met within {timeout}s")
                self._changed.wait(min(left, 0.5))

    def caught_up(self, *repos: str, timeout: float = 30.0) -> int:
        """Until every commit the PDS has made so far in ``repos`` has arrived (the
        firehose trails the writes: a count taken right after a write can miss it); the
        number of operations seen then. Each repo must have committed since the hose
        connected (its newest rev, from ``getLatestCommit``, is what is waited for)."""
        heads = {}
        for did in repos:
            answer = httpx.get(
                f"{self.pds_url}/xrpc/com.atproto.sync.getLatestCommit",
                params={"did": did},
                timeout=10.0,
            )
            answer.raise_for_status()
            heads[did] = str(answer.json()["rev"])
        self.wait_for(
            lambda _ops: all(self._revs.get(did, "") >= rev for did, rev in heads.items()),
            timeout,
        )
        with self._lock:
            return len(self._ops)

    def stop(self) -> None:
        self._stop.set()
        if self._conn is not None:
            self._conn.close()
        if self._thread is not None:
            self._thread.join(5)

    def __enter__(self) -> Firehose:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
