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
Layout helpers (:func:`painting_objects`, :func:`painting_keys`, :func:`key_path`)
follow platform-facts.md §1 -- written from the facts, never from syncd's URL
builder -- so writers, the invariant checker and the platform hooks agree on
where a painting's PNG and recording zip live.
"""

from __future__ import annotations

import argparse
import json
import mimetypes
import os
import re
import shutil
import signal
import sys
import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import quote, unquote, urlsplit

USER_BUCKET = "user-aesthetic-computer"
GUEST_BUCKET = "art-aesthetic-computer"
HOST = "127.0.0.1"
#: The longest a held (slow) download waits to be released.
HOLD_LIMIT_SECONDS = 120.0

_TYPES = {
    ".png": "image/png",
    ".zip": "application/zip",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".mp4": "video/mp4",
}


class UnsafeKeyError(ValueError):
    """A bucket or key that would not map to a file under the image root."""


# -- where the platform stores a painting (platform-facts.md §1) ---------------------------
#
# Written from the facts, not from syncd: a signed-in user's upload
# ``painting-<slug>.png`` has its first ``-`` turned into ``/`` under the user's
# directory, so the object is ``{sub, URL-encoded}/painting/{slug}.png`` (recording
# ``.zip`` beside it); a stored slug may already be ``{sub}/painting/{name}`` (the
# same object); the oldest objects sit at ``{sub}/{slug}.png``; guests use
# ``art-aesthetic-computer`` and ``{image}.png`` / ``{recording}.zip`` for a slug
# ``image:recording``; a document's own ``bucket`` wins over the default.

LAYOUTS = ("painting", "old")  # {sub}/painting/{slug}.png (today) and {sub}/{slug}.png (oldest)


@dataclass(frozen=True)
class StoredObject:
    """One object in the object store: ``bucket`` and its URL-encoded ``key``."""

    bucket: str
    key: str

    def url(self, template: str) -> str:
        """The object's URL from a template with ``{bucket}`` and ``{key}``."""
        return template.replace("{bucket}", self.bucket).replace("{key}", self.key)


@dataclass(frozen=True)
class PaintingObjects:
    """Where a painting's image and recording may be, in the order to try them."""

    images: tuple[StoredObject, ...]
    recordings: tuple[StoredObject, ...]


def encode_sub(sub: str) -> str:
    """A user sub as it appears in an object key: URL-encoded (``auth0|x`` -> ``auth0%7Cx``)."""
    return quote(sub, safe="")


def _enc_path(name: str) -> str:
    # A slug is a path inside the user's directory: each segment URL-encoded.
    return quote(name, safe="/")


def check_slug(slug: object) -> str:
    """The slug if it can name an object; source-system.md: a slug containing ``..`` or a
    leading ``/`` is invalid and must never reach a URL (an empty slug names nothing)."""
    if not isinstance(slug, str) or not slug:
        raise UnsafeKeyError("a painting slug must be a non-empty string")
    if slug.startswith("/") or ".." in slug:
        raise UnsafeKeyError(f"slug {slug[:60]!r} contains '..' or starts with '/'")
    return slug


# An S3 bucket name (what a bucket can be called at all): 3-63 lowercase letters, digits,
# dots and hyphens, starting and ending with a letter or digit, no "..".
_BUCKET_RE = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")


def painting_bucket(user: str | None, bucket: object = None) -> str:
    """The bucket of a painting: the document's own ``bucket`` when it has one (``None``
    and ``""`` mean none, as a JavaScript ``doc.bucket || default`` reads them), else
    ``user-aesthetic-computer`` for users and ``art-aesthetic-computer`` for guests.

    A ``bucket`` that is not a plain name (a non-string, ``/``, ``..``, spaces...) would
    change the URL's shape and is refused like an unsafe slug.
    """
    if bucket is None or bucket == "":
        return GUEST_BUCKET if user is None else USER_BUCKET
    if not isinstance(bucket, str) or ".." in bucket or not _BUCKET_RE.fullmatch(bucket):
        raise UnsafeKeyError(f"bucket {str(bucket)[:40]!r} is not a bucket name")
    return bucket


def user_painting_objects(sub: str, slug: str, bucket: str = USER_BUCKET) -> PaintingObjects:
    """Candidates for a signed-in user's painting: ``{sub}/painting/{name}`` first, then
    (for a plain slug) the oldest ``{sub}/{slug}`` location."""
    check_slug(slug)
    owner = encode_sub(sub)
    name: str | None = None
    for prefix in (f"{sub}/painting/", f"{owner}/painting/"):
        if slug.startswith(prefix) and len(slug) > len(prefix):
            name = slug[len(prefix) :]
            break
    if name is not None:  # a newer slug already names {sub}/painting/{name}
        bases = [f"{owner}/painting/{_enc_path(name)}"]
    else:
        bases = [f"{owner}/painting/{_enc_path(slug)}", f"{owner}/{_enc_path(slug)}"]
    return PaintingObjects(
        images=tuple(StoredObject(bucket, f"{b}.png") for b in bases),
        recordings=tuple(StoredObject(bucket, f"{b}.zip") for b in bases),
    )


def guest_painting_objects(slug: str, bucket: str = GUEST_BUCKET) -> PaintingObjects:
    """A guest painting: ``{image}.png`` and ``{recording}.zip`` for a slug
    ``image:recording`` (without ``:`` both are the slug)."""
    check_slug(slug)
    image, sep, recording = slug.partition(":")
    if not sep:
        recording = image
    return PaintingObjects(
        images=(StoredObject(bucket, f"{_enc_path(image)}.png"),),
        recordings=(StoredObject(bucket, f"{_enc_path(recording)}.zip"),),
    )


def painting_objects(user: str | None, slug: str, bucket: object = None) -> PaintingObjects:
    """Where a painting document (its ``user``, ``slug``, ``bucket``) keeps its files."""
    where = painting_bucket(user, bucket)
    if user is None:
        return guest_painting_objects(slug, where)
    return user_painting_objects(user, slug, where)


def painting_keys(
    user: str | None, slug: str, *, layout: str = "painting", bucket: object = None
) -> tuple[str, str, str]:
    """(bucket, PNG key, zip key) where a writer puts a painting's files.

    ``layout="painting"`` (default) is today's ``{sub}/painting/{slug}``;
    ``layout="old"`` is the oldest ``{sub}/{slug}`` location (plain user slugs only).
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    objects = painting_objects(user, slug, bucket)
    index = 0 if layout == "painting" else 1
    if index >= len(objects.images):
        raise ValueError(
            f"no {layout!r} location for a {'guest' if user is None else 'prefixed'} slug"
        )
    image, recording = objects.images[index], objects.recordings[index]
    return image.bucket, image.key, recording.key


def tape_object(user: str | None, slug: str, bucket: object = None) -> StoredObject:
    """Where the world stores a tape's converted MP4: ``{sub}/{slug}.mp4`` in the user's
    bucket, ``{slug}.mp4`` in the guest bucket (beside the tape's zip). The document
    names it by its full URL (``mp4``), so readers never derive this layout."""
    check_slug(slug)
    where = painting_bucket(user, bucket)
    name = _enc_path(slug) + ".mp4"
    return StoredObject(where, name if user is None else f"{encode_sub(user)}/{name}")


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
        location = self.server.redirects.get(urlsplit(self.path).path)
        if location is not None:
            self.send_response(HTTPStatus.FOUND)
            self.send_header("Location", location)
            self.send_header("Content-Length", "0")
            self.end_headers()
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
                try:
                    held = self.server.held_for(self.path)
                    if held is not None:
                        # A slow download: half the body now, the rest once released.
                        self.wfile.write(fh.read(size // 2))
                        self.wfile.flush()
                        self.server.note_holding(self.path)
                        held.wait(HOLD_LIMIT_SECONDS)
                    shutil.copyfileobj(fh, self.wfile)
                except (BrokenPipeError, ConnectionResetError):
                    # The client stopped reading (a fetcher refusing a body too large).
                    self.close_connection = True

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
        self.redirects: dict[str, str] = {}  # URL path -> Location (302)
        self.held: dict[str, threading.Event] = {}
        self.holding: Counter[str] = Counter()

    def note(self, method: str, path: str) -> None:
        with self.lock:
            self.hits[urlsplit(path).path] += 1

    def held_for(self, path: str) -> threading.Event | None:
        with self.lock:
            return self.held.get(urlsplit(path).path)

    def note_holding(self, path: str) -> None:
        with self.lock:
            self.holding[urlsplit(path).path] += 1

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

    def redirect(self, bucket: str, key: str, location: str) -> None:
        """Answer ``/{bucket}/{key}`` with a 302 to ``location`` (anywhere)."""
        with self._server.lock:
            self._server.redirects[f"/{bucket}/{key}"] = location

    def hold(self, bucket: str, key: str) -> threading.Event:
        """Make ``/{bucket}/{key}`` a slow download: every GET gets its headers and half
        its body, then waits until the returned event is set (at most
        ``HOLD_LIMIT_SECONDS``) for the rest. :meth:`holding` says how many are waiting."""
        release = threading.Event()
        with self._server.lock:
            self._server.held[f"/{bucket}/{key}"] = release
        return release

    def holding(self, bucket: str, key: str) -> int:
        """How many GETs of ``/{bucket}/{key}`` have reached the held half of their body."""
        with self._server.lock:
            return self._server.holding[f"/{bucket}/{key}"]

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
        with self._server.lock:
            for release in self._server.held.values():
                release.set()
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
