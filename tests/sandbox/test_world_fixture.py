"""The function-scoped ``world`` fixture: what every end-to-end test starts from."""

from __future__ import annotations

from io import BytesIO
from typing import Any

import httpx
import pytest
from PIL import Image

from syncd.config import Config
from syncd_sandbox.seed import make_mood
from syncd_sandbox.testing import SandboxWorld

_seen_databases: set[str] = set()
_seen_dids: set[str] = set()


@pytest.mark.parametrize("run", [1, 2])
def test_each_world_is_fresh(world: SandboxWorld, run: int) -> None:
    assert world.database not in _seen_databases
    _seen_databases.add(world.database)
    dids = {acc.did for acc in world.accounts.values()}
    assert not dids & _seen_dids
    _seen_dids.update(d for d in dids if d)
    assert world.db.list_collection_names() == [] or set(world.db.list_collection_names()) <= {
        "users",
        "@handles",
    }


def test_accounts_are_stored_as_the_platform_does(world: SandboxWorld) -> None:
    assert set(world.accounts) == {"art", "alice", "bob"}
    alice = world.accounts["alice"]
    assert alice.sub.startswith("auth0|") and alice.did and alice.did.startswith("did:plc:")
    assert alice.handle and alice.handle.endswith(".test")
    user = world.db.users.find_one({"_id": alice.sub})
    assert user == {
        "_id": alice.sub,
        "atproto": {"did": alice.did, "handle": alice.handle, "password": alice.password},
    }
    assert world.db["@handles"].find_one({"_id": alice.sub}) == {
        "_id": alice.sub,
        "handle": "alice",
    }
    guest = world.db.users.find_one({"_id": "art-guest"})
    assert guest is not None and guest["atproto"]["did"] == world.guest.did
    assert world.guest.handle and world.guest.handle.startswith("art-")
    # The credentials work.
    assert world.api.create_session(alice.handle, alice.password or "")["did"] == alice.did


def test_add_user_without_atproto(world: SandboxWorld) -> None:
    carol = world.add_user("carol", with_atproto=False)
    assert carol.did is None and not carol.has_atproto
    assert world.db.users.find_one({"_id": carol.sub}) == {"_id": carol.sub}
    assert world.db["@handles"].find_one({"_id": carol.sub}) == {
        "_id": carol.sub,
        "handle": "carol",
    }


@pytest.mark.sandbox_world(users=["solo"])
def test_marker_chooses_users(world: SandboxWorld) -> None:
    assert set(world.accounts) == {"art", "solo"}


def test_config_is_generated_and_loads(world: SandboxWorld) -> None:
    cfg = world.config
    assert isinstance(cfg, Config)
    assert cfg.mongo.uri == world.mongo_uri
    assert cfg.mongo.database == world.database
    assert cfg.pds.url == world.pds.url
    assert cfg.state.directory == str(world.state_dir)
    assert cfg.images.url_template == f"{world.image_base_url}/{{bucket}}/{{key}}"
    assert cfg.images.recording_template == cfg.images.url_template
    assert cfg.images.allowed_hosts == (world.image_base_url,)  # http://127.0.0.1:PORT
    assert cfg.metrics.listen == f"127.0.0.1:{world.metrics_port}"
    changed = world.write_config({"pds": {"max_writes_per_call": 7}})
    assert changed.pds.max_writes_per_call == 7
    assert world.write_config().pds.max_writes_per_call == 7  # overrides are kept


def test_images_follow_the_storage_layout(world: SandboxWorld) -> None:
    files = world.write_image("alice", "2025.01.01.00.00.00.000", width=30, height=20)
    sub = world.accounts["alice"].sub
    assert files.bucket == "user-aesthetic-computer"
    assert files.image_key == f"{sub.replace('|', '%7C')}/painting/2025.01.01.00.00.00.000.png"
    resp = httpx.get(world.images.url(files.bucket, files.image_key))
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "image/png"
    assert resp.content == files.image_bytes
    assert world.images.hits(files.bucket, files.image_key) == 1

    guest = world.write_image(None, "pic:rec", recording=True)
    assert (guest.bucket, guest.image_key, guest.recording_key) == (
        "art-aesthetic-computer",
        "pic.png",
        "rec.zip",
    )
    zipped = httpx.head(world.images.url(guest.bucket, guest.recording_key))
    assert zipped.status_code == 200 and zipped.headers["content-type"] == "application/zip"


def test_add_painting_writes_document_and_image(world: SandboxWorld) -> None:
    doc = world.add_painting("bob", width=100, height=50, recording=True)
    stored = world.db.paintings.find_one({"_id": doc["_id"]})
    assert stored is not None and stored["user"] == world.accounts["bob"].sub
    assert stored["when"].tzinfo is not None
    url = world.images.url(
        "user-aesthetic-computer",
        f"{world.accounts['bob'].sub.replace('|', '%7C')}/painting/{doc['slug']}.png",
    )
    img = httpx.get(url)
    assert img.status_code == 200
    assert Image.open(BytesIO(img.content)).size == (100, 50)
    assert httpx.head(url.removesuffix(".png") + ".zip").status_code == 200


def test_add_painting_variants(world: SandboxWorld) -> None:
    enc = world.accounts["alice"].sub.replace("|", "%7C")
    old = world.add_painting("alice", layout="old", pixel_art=True, width=16, height=16)
    assert (
        httpx.head(
            world.images.url("user-aesthetic-computer", f"{enc}/{old['slug']}.png")
        ).status_code
        == 200
    )
    assert (
        httpx.head(
            world.images.url("user-aesthetic-computer", f"{enc}/painting/{old['slug']}.png")
        ).status_code
        == 404
    )
    gone = world.add_painting("alice", image=False)
    assert world.db.paintings.find_one({"_id": gone["_id"]}) is not None
    assert not list((world.image_dir / "user-aesthetic-computer").rglob(f"{gone['slug']}*"))
    own = world.add_painting(None, "g:r", bucket="wand-bucket", recording=True)
    assert own["bucket"] == "wand-bucket"
    assert httpx.head(world.images.url("wand-bucket", "g.png")).status_code == 200
    assert httpx.head(world.images.url("wand-bucket", "r.zip")).status_code == 200
    wip = world.add_painting("alice", "wip/x1", status="wip")
    assert wip["status"] == "wip"


def test_image_faults(world: SandboxWorld) -> None:
    files = world.write_image(None, "flaky")
    url = world.images.url(files.bucket, files.image_key)
    world.images.fail_next(503, count=2, bucket=files.bucket, key=files.image_key)
    assert [httpx.get(url).status_code for _ in range(3)] == [503, 503, 200]


def test_list_records_reads_the_pds(world: SandboxWorld) -> None:
    alice = world.accounts["alice"]
    token = world.access_token("alice")
    world.api.apply_writes(
        token,
        alice.did or "",
        [
            {
                "$type": "com.atproto.repo.applyWrites#create",
                "collection": "computer.aesthetic.mood",
                "value": {"mood": "hi", "ref": "abc"},
            }
        ],
    )
    assert [r["value"]["mood"] for r in world.list_records("alice", "computer.aesthetic.mood")] == [
        "hi"
    ]
    assert set(world.records_by_ref("alice", "computer.aesthetic.mood")) == {"abc"}
    assert world.list_records("bob", "computer.aesthetic.mood") == []


def test_mongo_restart_keeps_data(world: SandboxWorld) -> None:
    doc: dict[str, Any] = make_mood(world.accounts["alice"].sub, "before restart")
    world.db.moods.insert_one(doc)
    uri = world.mongo_uri
    world.restart_mongo(pause_seconds=0.2)
    assert world.mongo_uri == uri
    stored = world.db.moods.find_one({"_id": doc["_id"]})
    assert stored is not None and stored["mood"] == "before restart"


def test_mongo_fault_drop_connections(world: SandboxWorld) -> None:
    world.db.moods.insert_one(make_mood(world.accounts["alice"].sub, "x"))
    reply = world.fault("dropConnections")
    assert reply.get("ok") == 1
    assert world.db.moods.count_documents({}) == 1  # pymongo reconnects


def test_a_test_that_leaves_servers_down(world: SandboxWorld) -> None:
    world.mongo.kill()
    world.pds_process.stop()


def test_the_next_test_finds_them_running_again(world: SandboxWorld) -> None:
    # The previous test's teardown restarted both (same URI/URL).
    assert world.db.command("ping")["ok"] == 1
    assert world.api.health()
    assert world.accounts["alice"].did
