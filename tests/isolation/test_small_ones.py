"""Issue 18's small ones, end to end through the real daemon (their unit tests are in
tests/unit/test_logs.py, tests/unit/test_state.py, tests/images/test_urls.py and
tests/images/test_fetch.py):

* a password in the configured PDS URL is refused at start, in one line that does not
  repeat it (its redaction wherever a URL is logged is tests/unit/test_logs.py's);
* the image allow-list is scheme, host *and* port: a redirect to the same host on
  another port or another scheme, or with a userinfo, is refused without a request, and
  a template whose origin differs from the allowed one only by its scheme is refused
  without a request too;
* the state directory is 0700 and every state file 0600 from the first byte, under a
  umask of 0.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit

import pytest

from syncd_sandbox.images import painting_keys
from syncd_sandbox.platform import MOOD, PAINTING
from syncd_sandbox.seed import make_mood, make_painting
from syncd_sandbox.syncd_process import SyncdProcess, run_cli
from syncd_sandbox.testing import SandboxWorld

SECRET = "hunter2-in-the-pds-url"


def _dead(world: SandboxWorld) -> dict[str, str]:
    db = sqlite3.connect(world.state_dir / "syncd.sqlite3")
    try:
        return dict(db.execute("SELECT doc_key, reason FROM dead_letters"))
    finally:
        db.close()


def test_a_password_in_the_pds_url_is_refused_at_start_and_never_printed(
    world: SandboxWorld,
) -> None:
    """httpx would send a userinfo as Basic auth in place of each account's session
    token (every write refused as InvalidToken): the daemon and every command refuse
    the config in one line that names the key and not the secret, and exit 2 (the
    unit's RestartPreventExitStatus, so systemd does not loop on it)."""
    parts = urlsplit(world.pds.url)
    url = f"{parts.scheme}://syncd:{SECRET}@{parts.netloc}"
    text = world.config_path.read_text()
    assert world.pds.url in text
    world.config_path.write_text(text.replace(world.pds.url, url))
    for args in (("run",), ("status",), ("backfill",)):
        done = run_cli(world.config_path, *args, timeout=60)
        assert done.returncode == 2, (args, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and "pds.url" in lines[0], (args, done.stderr)
        assert SECRET not in done.stdout + done.stderr, args
    assert not list(world.state_dir.glob("*.sqlite3*"))  # refused before anything opened


# -- the allow-list: scheme, host and port ------------------------------------------------


class _Hits(BaseHTTPRequestHandler):
    """Answers 500 and remembers every request (a server syncd must never reach)."""

    hits: ClassVar[list[str]] = []

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self.hits.append(self.path)
        self.send_response(500)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_HEAD = do_GET


class _Redirector(BaseHTTPRequestHandler):
    """Redirects ``/{bucket}/{key}`` to ``targets[slug]`` + the same path."""

    targets: ClassVar[dict[str, str]] = {}

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        name = self.path.rsplit("/", 1)[-1].split(".", 1)[0]
        target = self.targets.get(name)
        if target is None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(302)
        self.send_header("Location", target + self.path)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_HEAD = do_GET


@pytest.fixture
def servers() -> Iterator[tuple[int, int]]:
    """(redirector port, never-to-be-reached port), both on 127.0.0.1."""
    _Hits.hits = []
    started = [ThreadingHTTPServer(("127.0.0.1", 0), h) for h in (_Redirector, _Hits)]
    threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in started]
    for t in threads:
        t.start()
    yield started[0].server_address[1], started[1].server_address[1]
    for s in started:
        s.shutdown()
        s.server_close()


def test_redirects_stay_on_an_allowed_scheme_host_and_port(
    world: SandboxWorld, servers: tuple[int, int]
) -> None:
    redirector, forbidden = servers
    image_port = world.images.port
    _Redirector.targets = {
        "same": f"http://127.0.0.1:{image_port}",  # allowed: the image server's origin
        "otherport": f"http://127.0.0.1:{forbidden}",  # same scheme and host, other port
        "otherscheme": f"https://127.0.0.1:{image_port}",  # same host and port, https
        "userinfo": f"http://user:pw@127.0.0.1:{image_port}",
    }
    template = f"http://127.0.0.1:{redirector}/{{bucket}}/{{key}}"
    world.write_config(
        {
            "mongo": {"max_await_ms": 100},
            "images": {
                "url_template": template,
                "recording_template": template,
                "allowed_hosts": [
                    f"http://127.0.0.1:{redirector}",
                    f"http://127.0.0.1:{image_port}",
                ],
                "retries": 0,
            },
        }
    )
    docs = {name: world.add_painting("alice", name) for name in _Redirector.targets}
    with SyncdProcess(world.config_path, log_path=world.tmp / "syncd.log") as proc:
        proc.wait_ready()
        proc.wait_idle(60)
        assert proc.alive
    dead = _dead(world)
    assert set(world.records_by_ref("alice", PAINTING)) == {str(docs["same"]["_id"])}
    for name in ("otherport", "otherscheme", "userinfo"):
        assert dead.get(str(docs[name]["_id"])) == "redirect_disallowed_host", name
    assert _Hits.hits == []  # the other port was never asked
    bucket, key, _ = painting_keys(world.sub("alice"), "otherscheme")
    assert world.images.hits(bucket, key) == 0  # nor the image server over another scheme


def test_a_template_whose_scheme_is_not_allowed_is_never_fetched(world: SandboxWorld) -> None:
    origin = urlsplit(world.image_base_url).netloc
    world.write_config(
        {
            "mongo": {"max_await_ms": 100},
            "images": {"allowed_hosts": [f"https://{origin}"], "retries": 0},
        }
    )
    doc = make_painting(world.sub("alice"), slug="schemed")
    world.write_image("alice", "schemed")
    world.insert("paintings", doc)
    world.insert("moods", make_mood(world.sub("alice"), "still published"))
    with SyncdProcess(world.config_path, log_path=world.tmp / "syncd.log") as proc:
        proc.wait_ready()
        proc.wait_until(lambda: world.list_records("alice", MOOD), 30)
        proc.wait_idle(30)
    assert _dead(world).get(str(doc["_id"])) == "disallowed_host"
    bucket, key, _ = painting_keys(world.sub("alice"), "schemed")
    assert world.images.hits(bucket, key) == 0
    assert world.list_records("alice", PAINTING) == []


# -- state files ---------------------------------------------------------------------------


def _modes(directory: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mode & 0o777 for p in directory.iterdir()}


def test_state_files_are_owner_only_under_a_umask_of_zero(world: SandboxWorld) -> None:
    state = world.tmp / "fresh" / "state"  # syncd makes it
    world.write_config({"mongo": {"max_await_ms": 100}, "state": {"directory": str(state)}})
    world.insert("moods", make_mood(world.sub("alice"), "a session is saved"))
    old = os.umask(0)  # the child inherits it: everything would be world-readable
    try:
        proc = SyncdProcess(world.config_path, log_path=world.tmp / "syncd.log").start()
    finally:
        os.umask(old)
    try:
        proc.wait_ready()
        proc.wait_until(lambda: world.list_records("alice", MOOD), 30)
        proc.wait_idle()
        modes = _modes(state)
        code, _ = proc.terminate()
    finally:
        proc.kill()
    assert code == 0
    assert state.stat().st_mode & 0o777 == 0o700
    assert modes and set(modes.values()) == {0o600}, {n: oct(m) for n, m in modes.items()}
    assert {"syncd.sqlite3", "syncd.sqlite3-wal"} <= set(modes)
    db = sqlite3.connect(state / "syncd.sqlite3")
    try:
        assert db.execute("SELECT COUNT(*) FROM sessions").fetchone()[0] == 1  # tokens inside
    finally:
        db.close()
