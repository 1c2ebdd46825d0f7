"""Client connections of the MongoDB sandbox (dev/test only).

An :class:`asyncio.Protocol` per connection: bytes in, whole messages out, requests run
strictly one after another per connection. Handlers are coroutines, but almost all of
them finish without ever suspending, so instead of paying for an ``asyncio.Task`` per
request the protocol drives each coroutine itself: ``send(None)`` runs it, and only
if it suspends on a future (a change-stream ``getMore`` waiting for the oplog, an
awaitable ``hello``, a journal ``fsync``, a fault's delay) is it resumed from that
future's done-callback.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any

from .wire import HEADER, MAX_MESSAGE_SIZE, ProtocolError, Request, bad_request, parse_message

log = logging.getLogger("syncd_sandbox.mongo")

#: ``handle(request, connection)`` returns the encoded reply, or None for no reply.
RequestHandler = Callable[[Request, "Connection"], Coroutine[Any, Any, bytes | None]]


class CloseConnection(Exception):
    """Close the client connection without replying (fault injection)."""


class Connection(asyncio.Protocol):
    """One client connection."""

    def __init__(
        self,
        conn_id: int,
        handler: RequestHandler,
        on_close: Callable[[Connection], None],
    ) -> None:
        self.id = conn_id
        self.peer = ""
        self.app_name: str | None = None
        self._handler = handler
        self._on_close = on_close
        self._transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._queue: deque[Request] = deque()
        self._running: Coroutine[Any, Any, bytes | None] | None = None
        self._closed = False
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- asyncio.Protocol --------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._loop = asyncio.get_running_loop()
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        while len(buf) >= 16:
            header = HEADER.unpack_from(buf)
            length = header[0]
            if length < 16 or length > MAX_MESSAGE_SIZE:
                log.warning("sandbox: connection %s sent a bad message length %s", self.id, length)
                self.abort()
                return
            if len(buf) < length:
                break
            body = bytes(buf[16:length])
            del buf[:length]
            try:
                self._queue.append(parse_message(header, body))
            except ProtocolError as exc:
                log.warning("sandbox: closing connection %s: %s", self.id, exc)
                self.abort()
                return
            except Exception as exc:  # undecodable BSON: answer with an error, keep going
                self._queue.append(bad_request(header, exc))
        if self._running is None:
            self._next()

    def connection_lost(self, exc: Exception | None) -> None:
        self._shutdown()

    # -- requests ------------------------------------------------------------------------
    def _next(self) -> None:
        while self._queue and self._running is None and not self._closed:
            request = self._queue.popleft()
            self._running = self._handler(request, self)
            self._step(None)

    def _step(self, _fut: Any) -> None:
        coro = self._running
        if coro is None or self._closed:
            return
        try:
            yielded = coro.send(None)
        except StopIteration as stop:
            self._running = None
            reply = stop.value
            if reply is not None and self._transport is not None:
                self._transport.write(reply)
            if self._queue:
                self._next()
            return
        except CloseConnection:
            self._running = None
            self.abort()
            return
        except BaseException:
            self._running = None
            log.exception("sandbox: connection %s: request failed", self.id)
            self.abort()
            return
        if yielded is None:
            # A bare yield (asyncio.sleep(0)): resume on the next loop iteration.
            assert self._loop is not None
            self._loop.call_soon(self._step, None)
        elif getattr(yielded, "_asyncio_future_blocking", False):
            yielded._asyncio_future_blocking = False
            yielded.add_done_callback(self._step)
        else:
            self._running = None
            coro.close()
            log.error("sandbox: handler yielded %r; closing connection %s", yielded, self.id)
            self.abort()

    # -- closing -------------------------------------------------------------------------
    def abort(self) -> None:
        """Drop the connection now (no reply), as a network failure would."""
        if self._transport is not None and not self._transport.is_closing():
            self._transport.abort()
        self._shutdown()

    def _shutdown(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._queue.clear()
        coro, self._running = self._running, None
        if coro is not None:
            try:
                coro.close()
            except (RuntimeError, ValueError):
                pass
        self._on_close(self)
