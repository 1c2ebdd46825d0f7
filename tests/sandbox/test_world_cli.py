"""``syncd-sandbox up / status / fault / down`` end to end, as a developer runs them."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pymongo import MongoClient

from syncd.config import load
from syncd_sandbox.images import painting_objects
from syncd_sandbox.invariant import check_invariant
from syncd_sandbox.pds import PdsApi
from syncd_sandbox.procs import ProcessRecord, read_cmdline
from syncd_sandbox.seed import COLLECTIONS, is_public, make_mood

#: Starts processes (the PDS, the MongoDB sandbox, image workers, promtool, ...).
pytestmark = pytest.mark.slow


def sandbox(*args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "syncd_sandbox.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def world_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    d = tmp_path_factory.mktemp("cli-world")
    up = sandbox("up", "--dir", str(d), "--seed", "demo")
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        assert "syncd run --config" in up.stdout
        yield d
    finally:
        # Whatever happened, leave no process behind.
        if (d / "world.json").exists():
            sandbox("down", "--dir", str(d))


@pytest.fixture(scope="module")
def info(world_dir: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((world_dir / "world.json").read_text())
    return data


@pytest.fixture(scope="module")
def db(info: dict[str, Any]) -> Iterator[Any]:
    # Short server selection: the world is down when this client is closed.
    client: MongoClient[Any] = MongoClient(
        info["mongo"]["uri"], tz_aware=True, serverSelectionTimeoutMS=2000
    )
    try:
        yield client[info["mongo"]["database"]]
    finally:
        client.close()


def test_world_json(world_dir: Path, info: dict[str, Any]) -> None:
    assert info["state"] == "up"
    assert info["mongo"]["database"] == "aesthetic"
    assert info["mongo"]["uri"].startswith("mongodb://127.0.0.1:")
    assert info["pds"]["url"].startswith("http://127.0.0.1:")
    assert info["pds"]["plc_url"].startswith("http://127.0.0.1:")
    assert info["images"]["base_url"].startswith("http://127.0.0.1:")
    assert set(info["processes"]) == {"mongo", "pds", "images"}
    for rec in info["processes"].values():
        assert ProcessRecord.from_json(rec).is_running()
    accounts = info["accounts"]
    assert set(accounts) == {"art", "jeffrey", "fifi", "amelia", "kaito"}
    assert accounts["art"]["sub"] == "art-guest" and accounts["art"]["handle"] == "art.test"
    assert accounts["jeffrey"]["handle"] == "jeffrey.test"
    assert accounts["kaito"]["did"] is None


def test_config_loads_as_syncd_reads_it(world_dir: Path, info: dict[str, Any]) -> None:
    cfg = load(world_dir / "syncd.toml", environ={})
    assert cfg.mongo.uri == info["mongo"]["uri"]
    assert cfg.mongo.database == "aesthetic"
    assert cfg.pds.url == info["pds"]["url"]
    assert cfg.state.directory == str(world_dir / "state")
    assert cfg.images.url_template == f"{info['images']['base_url']}/{{bucket}}/{{key}}"
    assert cfg.images.recording_template == cfg.images.url_template
    assert cfg.images.allowed_hosts == (info["images"]["base_url"],)  # http://127.0.0.1:PORT
    assert cfg.metrics.listen == f"127.0.0.1:{info['metrics_port']}"
    assert cfg.logging.level == "info"


def test_credentials_are_stored_as_the_platform_does(info: dict[str, Any], db: Any) -> None:
    with PdsApi(info["pds"]["url"]) as api:
        for name, acc in info["accounts"].items():
            user = db.users.find_one({"_id": acc["sub"]})
            assert user is not None, name
            if acc["did"] is None:
                assert "atproto" not in user
                continue
            assert user["atproto"] == {
                "did": acc["did"],
                "handle": acc["handle"],
                "password": acc["password"],
            }
            session = api.create_session(user["atproto"]["handle"], user["atproto"]["password"])
            assert session["did"] == acc["did"]
            if name != "art":
                assert db["@handles"].find_one({"_id": acc["sub"]}) == {
                    "_id": acc["sub"],
                    "handle": name,
                }
    assert db.users.find_one({"_id": "art-guest"})["atproto"]["handle"] == "art.test"


def test_seeded_collections(info: dict[str, Any], db: Any) -> None:
    counts = {name: db[name].count_documents({}) for name in COLLECTIONS}
    assert all(n >= 4 for n in counts.values()), counts
    subs = {a["sub"] for a in info["accounts"].values()}
    flags: set[str] = set()
    for name in COLLECTIONS:
        for doc in db[name].find():
            assert doc["when"].tzinfo is not None  # a BSON date
            if "user" in doc:
                assert doc["user"] in subs
            for flag in ("nuked", "deleted", "private", "draft", "hidden"):
                if doc.get(flag) is True:
                    flags.add(flag)
            if doc.get("visibility") == "unlisted":
                flags.add("unlisted")
    assert flags == {"nuked", "deleted", "private", "draft", "hidden", "unlisted"}
    moods = list(db.moods.find())
    assert all("mood" in m and "text" not in m and "user" in m for m in moods)
    assert any(m.get("deleted") is True for m in moods)
    # Guest content has no `user` field.
    for name in ("paintings", "pieces", "kidlisp"):
        assert db[name].count_documents({"user": {"$exists": False}}) >= 1, name
    # Content of the user without an ATProto account.
    kaito = info["accounts"]["kaito"]["sub"]
    assert db.paintings.count_documents({"user": kaito}) == 1
    assert sum(is_public(d) for d in db.paintings.find()) >= 5


def test_images_are_where_the_platform_keeps_them(info: dict[str, Any], db: Any) -> None:
    """Every seeded painting's image is at one of its platform keys (platform-facts §1),
    except the one whose image is missing; the recording zips likewise."""
    template = info["images"]["url_template"]
    recordings = 0
    missing = []
    found_at: dict[str, str] = {}
    with httpx.Client(timeout=10) as http:
        for doc in db.paintings.find():
            objects = painting_objects(doc.get("user"), doc["slug"], doc.get("bucket"))
            for obj in objects.images:
                url = obj.url(template)
                got = http.get(url)
                if got.status_code == 200:
                    assert got.headers["content-type"] == "image/png"
                    assert got.content[:8] == b"\x89PNG\r\n\x1a\n"
                    head = http.head(url)
                    assert head.status_code == 200 and head.content == b""
                    assert int(head.headers["content-length"]) == len(got.content)
                    found_at[doc["slug"]] = obj.key
                    break
                assert got.status_code == 404
            else:
                missing.append(doc)
            for obj in objects.recordings:
                rec = http.head(obj.url(template))
                if rec.status_code == 200:
                    recordings += 1
                    assert rec.headers["content-type"] == "application/zip"
                else:
                    assert rec.status_code == 404
        assert recordings == 3
        assert len(missing) == 1 and is_public(missing[0])
        jeffrey = info["accounts"]["jeffrey"]["sub"].replace("|", "%7C")
        assert found_at["2023.8.21.19.42.03.043"] == f"{jeffrey}/2023.8.21.19.42.03.043.png"
        assert found_at["2025.03.01.12.00.00.123"] == (
            f"{jeffrey}/painting/2025.03.01.12.00.00.123.png"
        )
        base = info["images"]["base_url"]
        assert http.get(f"{base}/user-aesthetic-computer/nobody/missing.png").status_code == 404
        assert http.head(f"{base}/art-aesthetic-computer/missing.png").status_code == 404
        for evil in (
            "/art-aesthetic-computer/..%2F..%2Fworld.json",
            "/art-aesthetic-computer/%2e%2e/%2e%2e/world.json",
            "/..%2Fworld.json/x",
            "/art-aesthetic-computer/.hidden.png",
        ):
            assert http.get(base + evil).status_code == 404, evil


def test_the_demo_before_syncd(info: dict[str, Any], db: Any) -> None:
    """What the witness sees before syncd ran: a record is missing for every public
    document except the two legacy moods, whose mongoId records count as theirs (stale),
    and nothing else is on the PDS."""
    report = check_invariant(
        db, info["pds"]["url"], image_url_template=info["images"]["url_template"]
    )
    legacy = {str(m["_id"]) for m in db.moods.find({"mood": {"$regex": "^an early mood"}})}
    assert len(legacy) == 2
    by_kind: dict[str, set[str]] = {}
    for v in report.violations:
        by_kind.setdefault(v.kind, set()).add(v.doc)
    assert set(by_kind) == {"missing", "stale", "bad_backref"}, report.summary()
    assert by_kind["stale"] == legacy
    # The unnamed legacy mood's document carries no atproto.rkey for its record.
    unnamed = db.moods.find_one({"mood": "an early mood, never named"})
    assert "atproto" not in unnamed and by_kind["bad_backref"] == {str(unnamed["_id"])}
    assert report.records_checked == 2
    states: dict[str, int] = {}
    for e in report.expectations.values():
        states[e.state] = states.get(e.state, 0) + 1
    # paintings 9 public / 4 hidden (wip, nuked, private, hidden) / 1 kaito; moods 6 / 1
    # deleted / 1 kaito; pieces 4 / 2 (draft, nuked); kidlisp 4 / 2 (unlisted, nuked);
    # tapes 3 (a guest one) / 2 (processing, nuked) / 1 kaito.
    assert states == {"publish": 26, "hidden": 11, "no_account": 3}, states
    assert len(by_kind["missing"]) == 26 - 2
    wip = db.paintings.find_one({"status": "wip"})
    assert report.expectations[("paintings", str(wip["_id"]))].reason == "not public: wip"


def test_status_reports_healthy(world_dir: Path) -> None:
    out = sandbox("status", "--dir", str(world_dir))
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.count("healthy") == 3


def test_fault_drop_connections(world_dir: Path, db: Any) -> None:
    out = sandbox("fault", "--dir", str(world_dir), "drop-connections")
    assert out.returncode == 0, out.stdout + out.stderr
    assert json.loads(out.stdout)["fault"] == "dropConnections"
    assert db.paintings.count_documents({}) > 0  # clients reconnect


def test_platform_hooks_on_and_off(world_dir: Path, info: dict[str, Any], db: Any) -> None:
    on = sandbox(
        "hooks", "--dir", str(world_dir), "on", "--delay-ms", "5:20",
        "--writeback-delay-ms", "5:20", "--seed", "3",
    )  # fmt: skip
    assert on.returncode == 0, on.stdout + on.stderr
    again = sandbox("hooks", "--dir", str(world_dir), "on")
    assert again.returncode == 1 and "already on" in again.stderr
    status = sandbox("status", "--dir", str(world_dir))
    assert status.returncode == 0 and status.stdout.count("healthy") == 4, status.stdout
    fifi = info["accounts"]["fifi"]["sub"]
    mood = make_mood(fifi, "said while the platform's writers are on")
    db.moods.insert_one(mood)

    def written() -> Any:
        doc = db.moods.find_one({"_id": mood["_id"]})
        return doc.get("atproto") if doc else None

    deadline = time.monotonic() + 30
    while not written() and time.monotonic() < deadline:
        time.sleep(0.1)
    at = written()
    assert at and at["uri"].endswith("/" + at["rkey"]), at
    record = PdsApi(info["pds"]["url"]).get_record(
        info["accounts"]["fifi"]["did"], "computer.aesthetic.mood", at["rkey"]
    )
    assert record is not None and record["value"]["ref"] == str(mood["_id"])
    pid = json.loads((world_dir / "world.json").read_text())["processes"]["hooks"]["pid"]
    off = sandbox("hooks", "--dir", str(world_dir), "off")
    assert off.returncode == 0, off.stdout + off.stderr
    stats = json.loads(off.stdout)["stats"]
    assert stats["records_created"] == 1 and stats["writebacks_written"] == 1
    assert stats["sessions_created"] == 1
    assert read_cmdline(pid) is None
    assert "hooks" not in json.loads((world_dir / "world.json").read_text())["processes"]
    assert sandbox("hooks", "--dir", str(world_dir), "on", "--lose-fraction", "2").returncode == 2


def test_accounts_created_and_deleted_as_the_platform_does(world_dir: Path, db: Any) -> None:
    """``syncd-sandbox account``: a user without an account gets one (PDS account, then
    ``users.atproto``), it is deleted (PDS account gone, then ``atproto`` unset), a
    password is stored in ``users`` only; a new name is a new user."""
    info = json.loads((world_dir / "world.json").read_text())
    name = next(n for n, a in info["accounts"].items() if a["did"] is None)
    out = sandbox("account", "--dir", str(world_dir), "create", name)
    assert out.returncode == 0, out.stdout + out.stderr
    acc = json.loads(out.stdout)["account"]
    user = db.users.find_one({"_id": acc["sub"]})
    assert user["atproto"] == {
        "did": acc["did"],
        "handle": acc["handle"],
        "password": acc["password"],
    }
    with PdsApi(info["pds"]["url"]) as api:
        assert api.create_session(acc["did"], acc["password"])["did"] == acc["did"]
        stored = sandbox("account", "--dir", str(world_dir), "password", name, "nope")
        assert (
            stored.returncode == 0
            and db.users.find_one({"_id": acc["sub"]})["atproto"]["password"] == "nope"
        )
        assert api.create_session(acc["did"], acc["password"])["did"] == acc["did"]  # PDS kept it
        gone = sandbox("account", "--dir", str(world_dir), "delete", name)
        assert gone.returncode == 0, gone.stdout + gone.stderr
        assert "atproto" not in db.users.find_one({"_id": acc["sub"]})
        assert api.health()
        with pytest.raises(Exception, match="RepoNotFound"):
            api.describe_repo(acc["did"])
    saved = json.loads((world_dir / "world.json").read_text())["accounts"][name]
    assert saved["did"] is None and saved["sub"] == acc["sub"]
    fresh = sandbox("account", "--dir", str(world_dir), "create", "newcomer")
    assert fresh.returncode == 0 and db.users.find_one(
        {"_id": json.loads(fresh.stdout)["account"]["sub"]}
    )
    missing = sandbox("account", "--dir", str(world_dir), "delete", "nobody")
    assert missing.returncode == 1 and "no user 'nobody'" in missing.stderr


def test_bad_usage_exits_2(world_dir: Path) -> None:
    assert sandbox("fault", "--dir", str(world_dir), "fail-getmore").returncode == 2
    assert sandbox("fault", "--dir", str(world_dir), "no-such-fault").returncode == 2
    assert sandbox("up").returncode == 2
    assert sandbox("up", "--dir", str(world_dir), "--seed", "nope").returncode == 2


def test_up_twice_is_refused(world_dir: Path) -> None:
    again = sandbox("up", "--dir", str(world_dir))
    assert again.returncode == 1
    assert "already up" in again.stderr


def test_down_leaves_no_process(world_dir: Path, info: dict[str, Any]) -> None:
    # Runs last in this module: it takes the world down.
    recorded = [ProcessRecord.from_json(r) for r in info["processes"].values()]
    out = sandbox("down", "--dir", str(world_dir))
    assert out.returncode == 0, out.stdout + out.stderr
    for rec in recorded:
        assert not rec.is_running(), rec
        assert read_cmdline(rec.pid) != rec.cmdline
    after = json.loads((world_dir / "world.json").read_text())
    assert after["state"] == "down"
    # Taking it down again is harmless.
    assert sandbox("down", "--dir", str(world_dir)).returncode == 0
    assert sandbox("status", "--dir", str(world_dir)).returncode == 1
