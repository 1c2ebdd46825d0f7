"""An HTTP reverse proxy on loopback in front of the PDS, with programmable faults.

syncd's config points ``pds.url`` at :attr:`FaultProxy.url`; tests arm faults
in-process and read the counts. The proxy runs its own asyncio loop in a
background thread, so synchronous tests can drive it.

Faults (per XRPC method or for all; for the next ``n`` matching requests or
with a probability):

* ``status`` -- answer ``status`` (500/502/503...) without forwarding;
* ``ratelimit`` -- answer 429 ``RateLimitExceeded`` with ``ratelimit-limit``,
  ``ratelimit-remaining``, ``ratelimit-reset`` (Unix time) and
  ``ratelimit-policy`` (and ``retry-after`` when asked) without forwarding;
* ``delay`` -- forward, then hold the reply ``delay`` seconds (beyond the
  client's timeout: the PDS applied the write, the client gave up);
* ``reset`` -- reset the client's connection without forwarding;
* ``apply_then_drop`` -- forward, wait for the PDS's reply, then reset the
  client's connection (the write happened, the client never heard).

``on_event(event, method)`` is called (in the proxy thread) with
``"request"`` when a request arrives and ``"response"`` right after a reply
was relayed: the chaos tests use it to SIGKILL syncd at exact moments.
"""

from __future__ import annotations

import asyncio
import json
import random
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

KINDS = ("status", "ratelimit", "delay", "reset", "apply_then_drop")


@dataclass
class Fault:
    kind: str
    methods: frozenset[str] | None = None  # None: every method
    n: int | None = None  # next-N matching requests (None: unlimited)
    probability: float = 1.0
    status: int = 500
    delay: float = 0.0
    remaining: int = 0  # ratelimit-remaining
    reset_in: float = 1.0  # ratelimit-reset = now + reset_in
    retry_after: float | None = None
    fired: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def matches(self, method: str, rng: random.Random) -> bool:
        if self.methods is not None and method not in self.methods:
            return False
        if self.n is not None and self.fired >= self.n:
            return False
        return self.probability >= 1.0 or rng.random() < self.probability


class _Reset(Exception):
    pass


class FaultProxy:
    """``with FaultProxy(upstream) as proxy: ...`` or ``start()``/``stop()``."""

    def __init__(self, upstream: str, *, host: str = "127.0.0.1", port: int = 0, seed: int = 0):
        parts = urlsplit(upstream)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"upstream must be http://host:port, got {upstream!r}")
        self.upstream_host = parts.hostname
        self.upstream_port = parts.port or 80
        self.host = host
        self.port = port
        self.rng = random.Random(seed)
        self.faults: list[Fault] = []
        self.injected: Counter[str] = Counter()
        self.requests: Counter[str] = Counter()
        self.on_event: Callable[[str, str], None] | None = None
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.base_events.Server | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    # -- control (any thread) ---------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def add(
        self,
        kind: str,
        *,
        methods: Iterable[str] | str | None = None,
        n: int | None = None,
        probability: float = 1.0,
        **params: Any,
    ) -> Fault:
        if kind not in KINDS:
            raise ValueError(f"unknown fault {kind!r}; one of {KINDS}")
        if isinstance(methods, str):
            methods = [methods]
        fault = Fault(
            kind,
            methods=None if methods is None else frozenset(methods),
            n=n,
            probability=probability,
            **params,
        )
        with self._lock:
            self.faults.append(fault)
        return fault

    def clear(self) -> None:
        with self._lock:
            self.faults.clear()

    @property
    def total_injected(self) -> int:
        with self._lock:
            return sum(self.injected.values())

    def _pick(self, method: str) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.matches(method, self.rng):
                    fault.fired += 1
                    self.injected[fault.kind] += 1
                    return fault
            return None

    # -- lifecycle --------------------------------------------------------------
    def start(self) -> FaultProxy:
        self._thread = threading.Thread(target=self._run, name="faultproxy", daemon=True)
        self._thread.start()
        self._ready.wait(10)
        if self._error is not None:
            raise RuntimeError(f"fault proxy failed to start: {self._error}")
        return self

    def stop(self) -> None:
        loop = self._loop
        if loop is not None and loop.is_running():
            loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(10)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            self._server = loop.run_until_complete(
                asyncio.start_server(self._handle, self.host, self.port)
            )
            self.port = int(self._server.sockets[0].getsockname()[1])
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            self._server.close()
            for task in asyncio.all_tasks(loop):
                task.cancel()
            loop.run_until_complete(asyncio.sleep(0))
            loop.close()

    # -- proxying ---------------------------------------------------------------
    def _emit(self, event: str, method: str) -> None:
        hook = self.on_event
        if hook is not None:
            try:
                hook(event, method)
            except Exception:
                pass

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                request_line, headers = _parse_head(head)
                length = int(headers.get("content-length", "0") or 0)
                body = await reader.readexactly(length) if length else b""
                if headers.get("transfer-encoding", "").lower() == "chunked":
                    body = await _read_chunked(reader)
                    headers.pop("transfer-encoding")
                    headers["content-length"] = str(len(body))
                method_name = _xrpc_method(request_line)
                with self._lock:
                    self.requests[method_name] += 1
                self._emit("request", method_name)
                fault = self._pick(method_name)
                keep = headers.get("connection", "").lower() != "close"
                if fault is not None and fault.kind == "reset":
                    raise _Reset()
                if fault is not None and fault.kind in ("status", "ratelimit"):
                    await self._write(writer, *_fault_response(fault), keep)
                    if not keep:
                        break
                    continue
                status_line, rheaders, rbody = await self._forward(request_line, headers, body)
                if fault is not None and fault.kind == "apply_then_drop":
                    self._emit("applied", method_name)
                    raise _Reset()
                if fault is not None and fault.kind == "delay":
                    await asyncio.sleep(fault.delay)
                await self._write(writer, status_line, rheaders, rbody, keep)
                self._emit("response", method_name)
                if not keep:
                    break
        except _Reset:
            _abort(writer)
            return
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        except Exception:
            _abort(writer)
            return
        try:
            writer.close()
        except Exception:
            pass

    async def _forward(
        self, request_line: bytes, headers: dict[str, str], body: bytes
    ) -> tuple[bytes, dict[str, str], bytes]:
        try:
            up_r, up_w = await asyncio.open_connection(self.upstream_host, self.upstream_port)
        except OSError:
            # The PDS is down: what a client sees from a gateway.
            return _fault_response(Fault("status", status=502))
        try:
            out = dict(headers)
            out["connection"] = "close"
            out["host"] = f"{self.upstream_host}:{self.upstream_port}"
            up_w.write(request_line + b"\r\n" + _render_headers(out) + body)
            await up_w.drain()
            raw = await up_r.read()
        finally:
            up_w.close()
        if b"\r\n\r\n" not in raw:
            raise _Reset()
        head, _, rbody = raw.partition(b"\r\n\r\n")
        status_line, rheaders = _parse_head(head + b"\r\n\r\n")
        if rheaders.get("transfer-encoding", "").lower() == "chunked":
            rbody = _dechunk(rbody)
            rheaders.pop("transfer-encoding")
        elif "content-length" in rheaders:
            rbody = rbody[: int(rheaders["content-length"])]
        rheaders["content-length"] = str(len(rbody))
        return status_line, rheaders, rbody

    @staticmethod
    async def _write(
        writer: asyncio.StreamWriter,
        status_line: bytes,
        headers: dict[str, str],
        body: bytes,
        keep: bool,
    ) -> None:
        headers = dict(headers)
        headers["connection"] = "keep-alive" if keep else "close"
        headers["content-length"] = str(len(body))
        writer.write(status_line + b"\r\n" + _render_headers(headers) + body)
        await writer.drain()


def _abort(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    try:
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    writer.transport.abort()


def _parse_head(head: bytes) -> tuple[bytes, dict[str, str]]:
    lines = head.split(b"\r\n")
    first = lines[0]
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    return first, headers


def _render_headers(headers: dict[str, str]) -> bytes:
    return b"".join(f"{k}: {v}\r\n".encode("latin-1") for k, v in headers.items()) + b"\r\n"


def _xrpc_method(request_line: bytes) -> str:
    try:
        target = request_line.split(b" ")[1].decode("latin-1")
    except IndexError:
        return "?"
    path = target.split("?", 1)[0]
    return path.removeprefix("/xrpc/") if path.startswith("/xrpc/") else path


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    out = bytearray()
    while True:
        size_line = await reader.readuntil(b"\r\n")
        size = int(size_line.split(b";")[0].strip(), 16)
        if size == 0:
            await reader.readuntil(b"\r\n")
            return bytes(out)
        out += await reader.readexactly(size)
        await reader.readexactly(2)


def _dechunk(data: bytes) -> bytes:
    out = bytearray()
    pos = 0
    while True:
        end = data.index(b"\r\n", pos)
        size = int(data[pos:end].split(b";")[0].strip(), 16)
        if size == 0:
            return bytes(out)
        out += data[end + 2 : end + 2 + size]
        pos = end + 2 + size + 2


def _fault_response(fault: Fault) -> tuple[bytes, dict[str, str], bytes]:
    if fault.kind == "ratelimit":
        reset = int(time.time() + fault.reset_in)
        headers = {
            "content-type": "application/json",
            "ratelimit-limit": "5000",
            "ratelimit-remaining": str(fault.remaining),
            "ratelimit-reset": str(reset),
            "ratelimit-policy": "5000;w=3600",
        }
        if fault.retry_after is not None:
            headers["retry-after"] = str(int(fault.retry_after))
        limited = json.dumps({"error": "RateLimitExceeded", "message": "Rate Limit Exceeded"})
        return b"HTTP/1.1 429 Too Many Requests", headers, limited.encode()
    reasons = {500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable"}
    status = fault.status
    error = {500: "InternalServerError", 502: "UpstreamFailure", 503: "NotEnoughResources"}.get(
        status, "InternalServerError"
    )
    body = json.dumps({"error": error, "message": "injected by the fault proxy"}).encode()
    line = f"HTTP/1.1 {status} {reasons.get(status, 'Error')}".encode()
    return line, {"content-type": "application/json"}, body
