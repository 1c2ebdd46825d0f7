"""Non-public content never reaches the PDS, also through races; the ops listener is
loopback-only by default; document content cannot point the image fetcher at other hosts."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from syncd.config import Config
from syncd.images.errors import ImageError
from syncd.images.settings import ImageSettings
from syncd.images.urls import painting_source_from_doc
from syncd_sandbox import tally
from syncd_sandbox.rig import Rig
from syncd_sandbox.seed import make_kidlisp, make_mood


def test_made_private_while_create_in_flight(rig: Rig) -> None:
    """Each applyWrites is held 1 s at the proxy; meanwhile its documents are made private
    (or deleted, or soft-deleted). The end state must hold no record for any of them."""
    w = rig.world
    proxy = rig.proxy
    assert proxy is not None
    alice = w.sub("alice")
    assert alice is not None
    rig.syncd.start()
    rig.wait_quiet(30)
    pending: list[tuple[str, dict[str, object]]] = []
    lock = threading.Lock()

    def hook(event: str, method: str) -> None:
        if (event, method) != ("request", "com.atproto.repo.applyWrites"):
            return
        with lock:
            batch, pending[:] = list(pending), []
        for i, (coll, doc) in enumerate(batch):
            if i % 3 == 0:
                w.db[coll].update_one({"_id": doc["_id"]}, {"$set": {"private": True}})
            elif i % 3 == 1:
                w.db[coll].delete_one({"_id": doc["_id"]})
            else:
                w.db[coll].update_one({"_id": doc["_id"]}, {"$set": {"nuked": True}})

    proxy.on_event = hook
    proxy.add("delay", methods="com.atproto.repo.applyWrites", delay=1.0)
    for round_ in range(3):
        docs = [("moods", make_mood(alice, f"race {round_} {i}")) for i in range(4)]
        docs += [("kidlisp", make_kidlisp(None)) for _ in range(2)]
        # Inserted under the lock: a hook that fires on the first of them waits for the
        # rest (else it changes documents not yet inserted, and they go in public).
        with lock:
            pending.extend(docs)
            for coll, doc in docs:
                w.db[coll].insert_one(doc)
        w.wait_for(lambda: not pending, timeout=20)
    proxy.on_event = None
    proxy.clear()
    report = rig.wait_quiet(40)
    assert report.expected_records == 0, report.expectations
    assert report.records_checked == 0
    tally.count("pds_faults", proxy.total_injected)
    assert rig.syncd.stop() == 0


def _listening_addresses(pid: int, port: int) -> set[str]:
    out: set[str] = set()
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            addr, hexport = local.rsplit(":", 1)
            if state == "0A" and int(hexport, 16) == port:
                out.add(addr)
    return out


def test_ops_listener_binds_loopback_by_default(rig: Rig) -> None:
    assert Config().metrics.listen.startswith("127.0.0.1:")
    rig.syncd.start()
    rig.wait_quiet(30)
    addrs = _listening_addresses(rig.syncd.pid, rig.world.metrics_port)
    assert addrs == {"0100007F"}, addrs  # 127.0.0.1, and nothing else
    assert rig.syncd.stop() == 0


@pytest.mark.parametrize(
    "doc",
    [
        {"user": "auth0|a", "slug": "x", "bucket": "evil.example.com"},
        {"user": "auth0|a", "slug": "x", "bucket": "169.254.169.254"},
        {"slug": "../../../etc/passwd"},
        {"slug": "/absolute"},
        {"slug": "x?y=http://evil.example.com/"},
        {"slug": "x#@evil.example.com"},
        {"user": "auth0|a@evil.example.com", "slug": "x"},
        {"user": "auth0|a", "slug": "auth0|b/painting/x"},
        {"slug": "img:../../other"},
        {"slug": "x\r\nHost: evil.example.com"},
    ],
)
def test_document_content_cannot_choose_the_image_host(doc: dict[str, str]) -> None:
    settings = ImageSettings()  # production template and allowed hosts
    try:
        source = painting_source_from_doc(doc, settings)
    except ImageError:
        tally.count("bad_documents")
        return
    from urllib.parse import urlsplit

    for url in (source.image_url, source.recording_url):
        assert url is not None
        assert urlsplit(url).hostname in settings.allowed_hosts, url
    tally.count("bad_documents")
