"""A real HTTP server on 127.0.0.1 for fetch tests (stdlib, one thread per request)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Reply:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds before the status line
    chunks: Callable[[], Iterator[bytes]] | None = None  # streamed body, no Content-Length


@dataclass
class Logged:
    method: str
    path: str
    host: str
    bytes_sent: int = 0
    aborted: bool = False


Route = Callable[[int], Reply]  # gets the 1-based count of hits on this path


class LoopbackServer:
    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.log: list[Logged] = []
        self.hits: dict[str, int] = {}
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

            def _serve(self, head_only: bool) -> None:
                entry = Logged(self.command, self.path, self.headers.get("Host", ""))
                with outer._lock:
                    outer.log.append(entry)
                    n = outer.hits[self.path] = outer.hits.get(self.path, 0) + 1
                route = outer.routes.get(self.path)
                reply = route(n) if route else Reply(404, b"no such key")
                if reply.delay:
                    time.sleep(reply.delay)
                try:
                    self.send_response(reply.status)
                    for k, v in reply.headers.items():
                        self.send_header(k, v)
                    if reply.chunks is None and "Content-Length" not in reply.headers:
                        self.send_header("Content-Length", str(len(reply.body)))
                    self.end_headers()
                    if head_only:
                        return
                    if reply.chunks is not None:
                        for chunk in reply.chunks():
                            self.wfile.write(chunk)
                            self.wfile.flush()
                            entry.bytes_sent += len(chunk)
                    else:
                        self.wfile.write(reply.body)
                        entry.bytes_sent += len(reply.body)
                except (BrokenPipeError, ConnectionResetError):
                    entry.aborted = True

            def do_GET(self) -> None:
                self._serve(head_only=False)

            def do_HEAD(self) -> None:
                self._serve(head_only=True)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    def route(self, path: str, reply: Reply | Route) -> None:
        if isinstance(reply, Reply):
            fixed = reply

            def route(n: int) -> Reply:
                return fixed

            self.routes[path] = route
        else:
            self.routes[path] = reply

    def paths(self) -> list[str]:
        with self._lock:
            return [e.path for e in self.log]

    def start(self) -> LoopbackServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
