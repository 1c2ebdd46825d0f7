"""Paintings end to end: thumbnails as blobs, fetched safely, uploaded once."""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar
from urllib.parse import unquote

import pytest
from PIL import Image

from syncd_sandbox.seed import make_painting, png_bytes
from syncd_sandbox.syncd_process import SyncdProcess, metric_sum, run_cli
from syncd_sandbox.testing import SandboxWorld

from .mirror import NSIDS, assert_mirrored

PAINTING = NSIDS["paintings"]


def blob_image(world: SandboxWorld, who: str, record: dict[str, Any]) -> Image.Image:
    thumb = record["value"]["thumbnail"]
    data = world.api.get_blob(world.did(who), thumb["ref"]["$link"])
    assert len(data) == thumb["size"] <= 1_048_576
    image = Image.open(io.BytesIO(data))
    image.load()
    assert image.get_format_mimetype() == thumb["mimeType"]
    return image


def test_paintings_become_records_with_thumbnail_blobs(
    world: SandboxWorld, syncd: SyncdProcess
) -> None:
    big = world.add_painting("alice", width=1024, height=768, recording=True)
    small = world.add_painting("alice", width=100, height=50)
    guest = world.add_painting(
        None, slug="guestpic:guestrec", width=600, height=600, recording=True
    )
    world.add_painting("bob", nuked=True)
    syncd.start()
    syncd.wait_ready()
    syncd.wait_idle()
    assert_mirrored(world, ("paintings",))
    alice = world.records_by_ref("alice", PAINTING)
    # The platform's thumbnail: always 512x512 (tests/daemon/test_platform_parity.py
    # checks the letterbox and the pixel blocks).
    assert blob_image(world, "alice", alice[str(big["_id"])]).size == (512, 512)
    assert blob_image(world, "alice", alice[str(small["_id"])]).size == (512, 512)
    assert alice[str(big["_id"])]["value"]["recordingUrl"].endswith(
        f"/media/paintings/{big['code']}.zip"
    )
    assert "recordingUrl" not in alice[str(small["_id"])]["value"]
    art = world.records_by_ref("art", PAINTING)
    assert set(art) == {str(guest["_id"])}  # guest painting in the shared art account
    assert blob_image(world, "art", art[str(guest["_id"])]).size == (512, 512)
    assert art[str(guest["_id"])]["value"]["recordingUrl"]
    assert world.list_records("bob", PAINTING) == []
    uploads = metric_sum(
        syncd.metrics(), "syncd_pds_requests_total", method="com.atproto.repo.uploadBlob"
    )
    assert uploads == 3

    # An update that leaves the image alone makes the same thumbnail: no second upload.
    world.db.paintings.update_one({"_id": big["_id"]}, {"$set": {"code": "newcode"}})
    syncd.wait_until(
        lambda: (
            world.records_by_ref("alice", PAINTING)[str(big["_id"])]["value"]["code"] == "newcode"
        ),
        20,
    )
    syncd.wait_idle()
    assert (
        metric_sum(
            syncd.metrics(), "syncd_pds_requests_total", method="com.atproto.repo.uploadBlob"
        )
        == 3
    )
    syncd.terminate()

    # A restart and a repeated backfill upload nothing either.
    result = run_cli(world.config_path, "backfill")
    assert result.returncode == 0 and "uploadBlob 0" in result.stdout, result.stdout
    syncd.start()
    syncd.wait_ready()
    syncd.wait_idle()
    assert (
        metric_sum(
            syncd.metrics(), "syncd_pds_requests_total", method="com.atproto.repo.uploadBlob"
        )
        == 0
    )


class _Hostile(BaseHTTPRequestHandler):
    """Serves good PNGs, a 404, a non-image, and a redirect to a host syncd must not visit."""

    foreign_hits: list[str]
    other_port: int

    def log_message(self, *args: Any) -> None:
        pass

    def do_HEAD(self) -> None:
        self.send_response(404)
        self.end_headers()

    def do_GET(self) -> None:
        path = unquote(self.path)
        if path.endswith("/good.png"):
            body = png_bytes(300, 200, seed=1)
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        elif path.endswith("/text.png"):
            body = b"<html>definitely not a png</html>"
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        elif path.endswith("/redirect.png"):
            self.send_response(302)
            self.send_header("Location", f"http://localhost:{self.other_port}/steal.png")
            self.send_header("Content-Length", "0")
            self.end_headers()
        else:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()


class _Foreign(BaseHTTPRequestHandler):
    hits: ClassVar[list[str]] = []

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self.hits.append(self.path)
        self.send_response(500)
        self.end_headers()


@pytest.fixture
def hostile_images() -> Iterator[tuple[int, list[str]]]:
    foreign = ThreadingHTTPServer(("127.0.0.1", 0), _Foreign)
    _Foreign.hits = []
    handler = type("H", (_Hostile,), {"other_port": foreign.server_address[1]})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in (server, foreign)]
    for t in threads:
        t.start()
    yield server.server_address[1], _Foreign.hits
    for s in (server, foreign):
        s.shutdown()
        s.server_close()


def test_hostile_paintings_are_dead_lettered_and_the_daemon_keeps_running(
    world: SandboxWorld, syncd: SyncdProcess, hostile_images: tuple[int, list[str]]
) -> None:
    port, foreign_hits = hostile_images
    template = f"http://127.0.0.1:{port}/{{bucket}}/{{key}}"
    world.write_config(
        {
            "images": {
                "url_template": template,
                "recording_template": template,
                "allowed_hosts": [f"http://127.0.0.1:{port}"],
                "retries": 0,
            }
        }
    )
    alice = world.sub("alice")
    docs = {
        "traversal": make_painting(alice, slug="../../etc/passwd"),
        "missing": make_painting(alice, slug="missing"),
        "not_image": make_painting(alice, slug="text"),
        "redirect": make_painting(alice, slug="redirect"),
        "good": make_painting(alice, slug="good"),
    }
    world.insert("paintings", *docs.values())
    syncd.start()
    syncd.wait_ready()
    syncd.wait_idle()
    reasons = {d["id"]: d["reason"] for d in json_status(world)["dead_letters"]["recent"]}
    assert reasons[str(docs["traversal"]["_id"])] == "unsafe_slug"
    assert reasons[str(docs["not_image"]["_id"])] == "not_an_image"
    assert reasons[str(docs["redirect"]["_id"])] == "redirect_disallowed_host"
    assert str(docs["missing"]["_id"]) not in reasons  # missing is not hostile
    assert foreign_hits == []  # the foreign host was never contacted
    records = world.records_by_ref("alice", PAINTING)
    assert set(records) == {str(docs["good"]["_id"]), str(docs["missing"]["_id"])}
    assert "thumbnail" not in records[str(docs["missing"]["_id"])]["value"]
    assert syncd.alive and syncd.get("/healthz").status_code == 200


def json_status(world: SandboxWorld) -> dict[str, Any]:
    import json

    return dict(json.loads(run_cli(world.config_path, "status", "--json").stdout))


def test_transient_image_failures_are_retried_by_themselves(
    world: SandboxWorld, syncd: SyncdProcess
) -> None:
    world.write_config(
        {
            "mongo": {"max_await_ms": 100},
            "images": {"retries": 0},
            "pipeline": {"dead_letter_retry_seconds": 1.0},
        }
    )
    doc = make_painting(world.sub("alice"), slug="flaky")
    world.write_image("alice", "flaky")
    world.images.fail_next(503, count=3)
    world.insert("paintings", doc)
    syncd.start()
    syncd.wait_ready()
    syncd.wait_until(lambda: str(doc["_id"]) in world.records_by_ref("alice", PAINTING), 30)
    syncd.wait_idle()
    assert json_status(world)["dead_letters"]["counts"] == {}
    assert syncd.events("dead_letters_redriven")


def test_a_blob_the_pds_dropped_is_uploaded_again(world: SandboxWorld, syncd: SyncdProcess) -> None:
    """Regression: the state store trusted a blob the PDS had garbage-collected."""
    doc = world.add_painting("alice", width=200, height=200)
    syncd.start()
    syncd.wait_ready()
    rec = syncd.wait_until(lambda: world.records_by_ref("alice", PAINTING).get(str(doc["_id"])), 20)
    syncd.wait_idle()
    # Someone deletes the record behind syncd's back: the PDS drops its blob.
    rkey = rec["uri"].rsplit("/", 1)[1]
    world.api.procedure(
        "com.atproto.repo.deleteRecord",
        {"repo": world.did("alice"), "collection": PAINTING, "rkey": rkey},
        token=world.access_token("alice"),
    )
    world.db.paintings.update_one({"_id": doc["_id"]}, {"$set": {"code": "again"}})
    rec = syncd.wait_until(
        lambda: (
            (r := world.records_by_ref("alice", PAINTING).get(str(doc["_id"])))
            and r["value"]["code"] == "again"
            and r
        ),
        30,
    )
    assert blob_image(world, "alice", rec).size == (512, 512)
    assert syncd.events("blob_gone_reuploading")
    assert json_status(world)["dead_letters"]["counts"] == {}
