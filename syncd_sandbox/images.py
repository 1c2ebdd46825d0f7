"""A loopback HTTP server standing in for the platform's object storage.

Files live under ``ROOT`` (a world's ``images/`` directory) at
``ROOT/{bucket}/{decoded key}`` and are served at
``http://127.0.0.1:PORT/{bucket}/{key}`` (GET and HEAD), so syncd's
``images.url_template = "http://127.0.0.1:PORT/{bucket}/{key}"`` works.

Keys arrive percent-encoded (a user sub ``auth0|abc`` is ``auth0%7Cabc`` in a
URL, as syncd builds it); each path segment is decoded on its own and a
segment that decodes to ``.``, ``..``, something containing ``/`` or NUL, or
a hidden name is refused, so a request can never reach outside ``ROOT``.

Run it in a thread (:class:`ImageServer`, tests) or as a background process
(``python -m syncd_sandbox.images --root DIR --port N --ready-file F``).
Layout helpers (:func:`user_painting_keys`, :func:`guest_painting_keys`,
:func:`key_path`) mirror the layout in source-system.md, so writers and the
server agree on where a painting's PNG and recording zip live.
"""

from __future__ import annotations

import argparse
import json
import mimetypes
import os
import shutil
import signal
import sys
import threading
from collections import Counter
from collections.abc import Sequence
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import quote, unquote, urlsplit

USER_BUCKET = "user-aesthetic-computer"
GUEST_BUCKET = "art-aesthetic-computer"
HOST = "127.0.0.1"

_TYPES = {
    ".png": "image/png",
    ".zip": "application/zip",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
}


class UnsafeKeyError(ValueError):
    """A bucket or key that would not map to a file under the image root."""


def _enc(segment: str) -> str:
    return quote(segment, safe="")


def user_painting_keys(user: str, slug: str) -> tuple[str, str]:
    """(PNG key, recording zip key) of a user's painting, URL-encoded as syncd builds them.

    ``slug`` is either a plain name or the newer ``{user}/painting/{name}`` form.
    """
    if "/" in slug:
        owner, mid, name = slug.split("/", 2)
        if mid != "painting" or owner not in (user, _enc(user)):
            raise UnsafeKeyError(f"slug {slug!r} is not {{user}}/painting/{{name}}")
        base = f"{_enc(user)}/painting/{_enc(name)}"
    else:
        base = f"{_enc(user)}/{_enc(slug)}"
    return f"{base}.png", f"{base}.zip"


def guest_painting_keys(slug: str) -> tuple[str, str]:
    """(PNG key, recording zip key) of a guest painting; ``image:recording`` splits in two."""
    image, sep, recording = slug.partition(":")
    if not sep:
        recording = image
    return f"{_enc(image)}.png", f"{_enc(recording)}.zip"


def painting_keys(user: str | None, slug: str) -> tuple[str, str, str]:
    """(bucket, PNG key, zip key) for a painting document's ``user`` and ``slug``."""
    if user is None:
        return (GUEST_BUCKET, *guest_painting_keys(slug))
    return (USER_BUCKET, *user_painting_keys(user, slug))


def _segments(path: str) -> list[str]:
    parts = path.split("/")
    out: list[str] = []
    for raw in parts:
        seg = unquote(raw, errors="strict")
        if (
            not seg
            or seg in (".", "..")
            or "/" in seg
            or "\\" in seg
            or "\0" in seg
            or seg.startswith(".")
        ):
            raise UnsafeKeyError(f"unsafe path segment {raw!r}")
        out.append(seg)
    return out


def key_path(root: str | os.PathLike[str], bucket: str, key: str) -> Path:
    """The file for ``{bucket}/{key}`` (key URL-encoded) under ``root``; never outside it."""
    base = Path(root).resolve()
    segments = _segments(f"{bucket}/{key}")
    if len(segments) < 2:
        raise UnsafeKeyError("a bucket and a key are both needed")
    target = base.joinpath(*segments)
    resolved = target.resolve()
    if resolved != base and base not in resolved.parents:
        raise UnsafeKeyError(f"{bucket}/{key} escapes the image root")
    return target


def url_path_to_file(root: str | os.PathLike[str], url_path: str) -> Path:
    """Map a request path ``/{bucket}/{key...}`` to a file under ``root``."""
    path = urlsplit(url_path).path
    if not path.startswith("/"):
        raise UnsafeKeyError("path must be absolute")
    bucket, sep, key = path[1:].partition("/")
    if not sep:
        raise UnsafeKeyError("no key in path")
    return key_path(root, bucket, key)


def write_file(root: str | os.PathLike[str], bucket: str, key: str, data: bytes) -> Path:
    """Store ``data`` as ``{bucket}/{key}`` (key URL-encoded); returns the file path."""
    path = key_path(root, bucket, key)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
    return path


def content_type(path: Path) -> str:
    suffix = path.suffix.lower()
    return _TYPES.get(suffix) or mimetypes.guess_type(path.name)[0] or "application/octet-stream"


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.log_file is not None:
            self.server.log_file.write(
                f"{self.address_string()} {self.log_date_time_string()} {format % args}\n"
            )
            self.server.log_file.flush()

    def _reply(self, status: int, body: bytes, ctype: str, *, head: bool) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _serve(self, head: bool) -> None:
        self.server.note(self.command, self.path)
        fault = self.server.take_fault(self.path)
        if fault is not None:
            self._reply(fault, b"injected fault\n", "text/plain", head=head)
            return
        try:
            path = url_path_to_file(self.server.root, self.path)
        except (UnsafeKeyError, UnicodeDecodeError):
            self._reply(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain", head=head)
            return
        if not path.is_file():
            self._reply(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain", head=head)
            return
        size = path.stat().st_size
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", content_type(path))
        self.send_header("Content-Length", str(size))
        self.end_headers()
        if not head:
            with path.open("rb") as fh:
                shutil.copyfileobj(fh, self.wfile)

    def do_GET(self) -> None:
        self._serve(head=False)

    def do_HEAD(self) -> None:
        self._serve(head=True)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    # socketserver's default backlog of 5 dropped SYNs when syncd fetched a batch
    # of paintings at once; kernel SYN retries then stalled fetches by seconds.
    request_queue_size = 1024

    def __init__(self, addr: tuple[str, int], root: Path, log_file: Any = None) -> None:
        super().__init__(addr, _Handler)
        self.root = root
        self.log_file = log_file
        self.lock = threading.Lock()
        self.hits: Counter[str] = Counter()
        self.faults: dict[str, list[int]] = {}

    def note(self, method: str, path: str) -> None:
        with self.lock:
            self.hits[urlsplit(path).path] += 1

    def take_fault(self, path: str) -> int | None:
        key = urlsplit(path).path
        with self.lock:
            for prefix in (key, "*"):
                queue = self.faults.get(prefix)
                if queue:
                    return queue.pop(0)
        return None


class ImageServer:
    """The image server on a background thread (for tests); ``with ImageServer(root) as s``."""

    def __init__(self, root: str | os.PathLike[str], port: int = 0, host: str = HOST) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self._server = _Server((host, port), self.root)
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def url_template(self) -> str:
        return f"{self.base_url}/{{bucket}}/{{key}}"

    def url(self, bucket: str, key: str) -> str:
        return f"{self.base_url}/{bucket}/{key}"

    def hits(self, bucket: str, key: str) -> int:
        """How many requests (GET or HEAD) reached ``/{bucket}/{key}``."""
        with self._server.lock:
            return self._server.hits[f"/{bucket}/{key}"]

    def fail_next(
        self, status: int, count: int = 1, bucket: str | None = None, key: str | None = None
    ) -> None:
        """Answer the next ``count`` requests (for one object, or any) with ``status``."""
        target = "*" if bucket is None or key is None else f"/{bucket}/{key}"
        with self._server.lock:
            self._server.faults.setdefault(target, []).extend([status] * count)

    def start(self) -> ImageServer:
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="sandbox-images",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(5)
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> ImageServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m syncd_sandbox.images --root DIR [--port N] [--ready-file F]``."""
    parser = argparse.ArgumentParser(prog="python -m syncd_sandbox.images")
    parser.add_argument("--root", required=True, help="directory holding {bucket}/{key} files")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--ready-file", help="write {port, pid, url} JSON here when listening")
    parser.add_argument("--log-requests", action="store_true", help="log each request to stderr")
    args = parser.parse_args(argv)
    root = Path(args.root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    server = _Server((HOST, args.port), root, sys.stderr if args.log_requests else None)
    port = int(server.server_address[1])
    info = {
        "ready": True,
        "host": HOST,
        "port": port,
        "pid": os.getpid(),
        "url": f"http://{HOST}:{port}",
    }

    def _stop(signum: int, frame: FrameType | None) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    if args.ready_file:
        tmp = Path(f"{args.ready_file}.tmp")
        tmp.write_text(json.dumps(info) + "\n")
        tmp.replace(args.ready_file)
    print(json.dumps(info), flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
