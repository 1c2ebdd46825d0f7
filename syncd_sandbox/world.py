"""A sandbox world in a directory: Mongo sandbox, PDS and image server in the background.

``World.up(dir, seed, rate_limits)`` starts the three servers as detached
processes, creates the ATProto accounts of the seeded users and of the guest
``art`` account, stores their credentials in Mongo as the platform does, seeds
the collections and writes ``DIR/world.json`` and ``DIR/syncd.toml``.
``World.load(dir).down()`` stops exactly the processes it started (each is
checked against its recorded command line and start time before a signal).

Layout of DIR::

    world.json  syncd.toml  state/  images/{bucket}/{key}
    mongo/ mongo.log   pds/ pds.log   images.log   (and *.ready.json)
    hooks.log  hooks.stats.json      (while the platform hooks have been on)
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from pymongo import MongoClient

from syncd_sandbox.accounts import (
    WorldAccount,
    create_account,
    delete_account,
    provision_guest,
    provision_user,
    set_password,
)
from syncd_sandbox.hooks import STATS_FILE, HookOptions, read_stats
from syncd_sandbox.mongo_server import DetachedMongo, ping
from syncd_sandbox.pds import PdsApi, PdsHandle, start_detached
from syncd_sandbox.procs import (
    ProcessRecord,
    SandboxProcessError,
    free_port,
    spawn,
    stop_record,
    wait_ready_file,
)
from syncd_sandbox.seed import COLLECTIONS, SEEDS, create_legacy_records, demo_dataset
from syncd_sandbox.syncd_config import sandbox_sections, write_config

DATABASE = "aesthetic"
WORLD_FILE = "world.json"
CONFIG_FILE = "syncd.toml"
# Everything `up` creates in DIR (and what `up --reset` removes).
_OWNED = (
    WORLD_FILE,
    CONFIG_FILE,
    "state",
    "images",
    "mongo",
    "mongo.log",
    "mongo.ready.json",
    "pds",
    "pds.log",
    "pds.ready.json",
    "images.log",
    "images.ready.json",
    "hooks.log",
    "hooks.ready.json",
    STATS_FILE,
)


class WorldError(RuntimeError):
    """The world cannot do what was asked (already up, not found, ...)."""


@dataclass(frozen=True)
class ProcessStatus:
    name: str
    pid: int
    running: bool
    healthy: bool


def _start_images(root: Path, log_path: Path, port: int = 0) -> tuple[str, ProcessRecord]:
    ready = root.parent / "images.ready.json"
    ready.unlink(missing_ok=True)
    argv = [
        sys.executable,
        "-m",
        "syncd_sandbox.images",
        "--root",
        str(root),
        "--port",
        str(port),
        "--ready-file",
        str(ready),
        "--log-requests",
    ]
    proc = spawn(argv, log_path=log_path)
    info = wait_ready_file(proc, ready, name="image server", timeout=15.0, log_path=log_path)
    return str(info["url"]), ProcessRecord.capture("images", proc.pid, log_path)


class World:
    """A world directory and what its ``world.json`` says."""

    def __init__(self, directory: str | Path, info: dict[str, Any]) -> None:
        self.dir = Path(directory).resolve()
        self.info = info

    # -- lifecycle ------------------------------------------------------------

    @classmethod
    def up(
        cls,
        directory: str | Path,
        seed: str = "demo",
        rate_limits: bool = False,
        *,
        oplog_size: int | None = None,
        reset: bool = False,
    ) -> World:
        """Start a world in ``directory`` (created if needed)."""
        if seed not in SEEDS:
            raise WorldError(f"unknown seed {seed!r} (one of {', '.join(SEEDS)})")
        root = Path(directory).resolve()
        existing = root / WORLD_FILE
        if existing.exists():
            old = cls.load(root)
            if any(rec.is_running() for rec in old.processes().values()):
                raise WorldError(f"a world is already up in {root}; run `syncd-sandbox down` first")
            if not reset:
                raise WorldError(
                    f"{root} holds a stopped world; pass --reset to replace it (its data is deleted)"
                )
        if reset:
            for name in _OWNED:
                p = root / name
                if p.is_dir():
                    shutil.rmtree(p)
                elif p.exists():
                    p.unlink()
        root.mkdir(parents=True, exist_ok=True)
        for sub in ("state", "images"):
            (root / sub).mkdir(exist_ok=True)

        mongo = DetachedMongo(root / "mongo", oplog_size=oplog_size, log_path=root / "mongo.log")
        records: dict[str, ProcessRecord] = {}
        try:
            # The three start in parallel (the PDS takes the longest, ~2 s).
            with ThreadPoolExecutor(3) as pool:
                f_mongo = pool.submit(mongo.start)
                f_pds = pool.submit(
                    start_detached, root / "pds", rate_limits=rate_limits, log_path=root / "pds.log"
                )
                f_img = pool.submit(_start_images, root / "images", root / "images.log")
                errors: list[BaseException] = []
                pds: PdsHandle | None = None
                image_url = ""
                try:
                    f_mongo.result()
                    assert mongo.record is not None
                    records["mongo"] = mongo.record
                except BaseException as exc:
                    errors.append(exc)
                try:
                    pds, records["pds"] = f_pds.result()
                except BaseException as exc:
                    errors.append(exc)
                try:
                    image_url, records["images"] = f_img.result()
                except BaseException as exc:
                    errors.append(exc)
                if errors:
                    raise errors[0]
            assert pds is not None
            info: dict[str, Any] = {
                "version": 1,
                "state": "starting",
                "created": datetime.now(UTC).isoformat(),
                "dir": str(root),
                "seed": seed,
                "rate_limits": rate_limits,
                "mongo": {
                    "uri": mongo.uri,
                    "database": DATABASE,
                    "port": mongo.port,
                    "data_dir": str(mongo.data_dir),
                    "oplog_size": oplog_size,
                },
                "pds": {
                    "url": pds.url,
                    "plc_url": pds.plc_url,
                    "port": pds.port,
                    "plc_port": pds.plc_port,
                    "data_dir": pds.data_dir,
                    "admin_password": pds.admin_password,
                },
                "images": {
                    "base_url": image_url,
                    "url_template": f"{image_url}/{{bucket}}/{{key}}",
                    "port": int(image_url.rsplit(":", 1)[1]),
                    "root": str(root / "images"),
                },
                "metrics_port": free_port(),
                "config_path": str(root / CONFIG_FILE),
                "state_dir": str(root / "state"),
                "accounts": {},
                "processes": {name: rec.to_json() for name, rec in records.items()},
            }
            world = cls(root, info)
            world.save()  # pids on disk before anything else can fail
            world._populate(seed)
            world.write_config()
            world.info["state"] = "up"
            world.save()
            return world
        except BaseException:
            for rec in records.values():
                stop_record(rec)
            mongo.stop()
            raise

    @classmethod
    def load(cls, directory: str | Path) -> World:
        root = Path(directory).resolve()
        path = root / WORLD_FILE
        try:
            info = json.loads(path.read_text())
        except FileNotFoundError:
            raise WorldError(f"no world in {root} ({WORLD_FILE} not found)") from None
        return cls(root, info)

    def save(self) -> None:
        path = self.dir / WORLD_FILE
        tmp = path.with_name(f".{WORLD_FILE}.tmp")
        tmp.write_text(json.dumps(self.info, indent=2) + "\n")
        tmp.replace(path)

    def processes(self) -> dict[str, ProcessRecord]:
        return {
            name: ProcessRecord.from_json(rec)
            for name, rec in self.info.get("processes", {}).items()
        }

    def down(self, timeout: float = 10.0) -> list[str]:
        """Stop every process this world started; returns the names that were running."""
        # The platform hooks first: they write to Mongo and the PDS.
        order = sorted(self.processes().items(), key=lambda item: item[0] != "hooks")
        stopped = [name for name, rec in order if stop_record(rec, timeout)]
        self.info["state"] = "down"
        self.save()
        return stopped

    def restart_mongo(self, pause_seconds: float = 0.0) -> str:
        """Stop the Mongo sandbox, wait, start it again: same port, data kept."""
        rec = self.processes().get("mongo")
        if rec is not None:
            stop_record(rec)
        mongo = DetachedMongo(
            self.info["mongo"]["data_dir"],
            port=int(self.info["mongo"]["port"]),
            oplog_size=self.info["mongo"].get("oplog_size"),
            log_path=self.dir / "mongo.log",
        )
        time.sleep(pause_seconds)
        mongo.start()
        assert mongo.record is not None
        self.info["processes"]["mongo"] = mongo.record.to_json()
        self.info["mongo"]["uri"] = mongo.uri
        self.save()
        return mongo.uri

    def restart_pds(self) -> str:
        """Stop the PDS and start it again on the same data directory and ports."""
        rec = self.processes().get("pds")
        if rec is not None:
            stop_record(rec)
        p = self.info["pds"]
        handle, record = start_detached(
            p["data_dir"],
            port=int(p["port"]),
            plc_port=int(p["plc_port"]),
            rate_limits=bool(self.info.get("rate_limits")),
            admin_password=p["admin_password"],
            log_path=self.dir / "pds.log",
        )
        if handle.url != p["url"]:
            raise SandboxProcessError(f"PDS came back at {handle.url}, not {p['url']}")
        self.info["processes"]["pds"] = record.to_json()
        self.save()
        return handle.url

    def hooks_on(
        self, options: HookOptions | None = None, *, timeout: float = 20.0
    ) -> ProcessRecord:
        """Switch the platform's own inline writers on: ``python -m syncd_sandbox.hooks``
        in the background (see :mod:`syncd_sandbox.hooks`); counters in ``hooks.stats.json``."""
        current = self.processes().get("hooks")
        if current is not None and current.is_running():
            raise WorldError(f"the platform hooks are already on in {self.dir} (pid {current.pid})")
        opts = options or HookOptions()
        ready = self.dir / "hooks.ready.json"
        ready.unlink(missing_ok=True)
        log_path = self.dir / "hooks.log"
        argv = [
            sys.executable,
            "-m",
            "syncd_sandbox.hooks",
            "--dir",
            str(self.dir),
            "--ready-file",
            str(ready),
            "--delay-ms",
            "{}:{}".format(*opts.delay_ms),
            "--writeback-delay-ms",
            "{}:{}".format(*opts.writeback_delay_ms),
            "--lose-fraction",
            str(opts.lose_fraction),
        ]
        if opts.seed is not None:
            argv += ["--seed", str(opts.seed)]
        proc = spawn(argv, log_path=log_path)
        wait_ready_file(proc, ready, name="platform hooks", timeout=timeout, log_path=log_path)
        record = ProcessRecord.capture("hooks", proc.pid, log_path)
        self.info.setdefault("processes", {})["hooks"] = record.to_json()
        self.info["hooks"] = {
            "delay_ms": list(opts.delay_ms),
            "writeback_delay_ms": list(opts.writeback_delay_ms),
            "lose_fraction": opts.lose_fraction,
            "seed": opts.seed,
            "stats_file": str(self.dir / STATS_FILE),
        }
        self.save()
        return record

    def hooks_off(self, timeout: float = 10.0) -> dict[str, Any]:
        """Switch the platform hooks off; returns their final stats file (``{}`` if none)."""
        record = self.processes().get("hooks")
        if record is not None:
            stop_record(record, timeout)
            self.info["processes"].pop("hooks", None)
            self.save()
        return read_stats(self.dir)

    def account(self, action: str, name: str, *, password: str | None = None) -> WorldAccount:
        """The platform's account lifecycle on a running world: ``create`` (an ATProto
        account for user ``name``, who is made first if the world has no such user: PDS
        account, then ``users.atproto``), ``delete`` (PDS account deleted, then
        ``users.atproto`` unset) or ``password`` (store ``password`` in ``users`` only)."""
        accounts = self.accounts
        client: MongoClient[Any] = MongoClient(self.mongo_uri, tz_aware=True)
        try:
            db = client[self.database]
            with PdsApi(self.pds_url, admin_password=self.admin_password) as api:
                current = accounts.get(name)
                if action == "create":
                    if current is None:
                        current = provision_user(db, api, name, with_atproto=False)
                    acc = create_account(db, api, current)
                elif current is None:
                    raise WorldError(f"no user {name!r} in this world")
                elif action == "delete":
                    if not current.has_atproto:
                        raise WorldError(f"{name} has no ATProto account")
                    acc = delete_account(db, api, current)
                elif action == "password":
                    if password is None:
                        raise WorldError("password needs a password")
                    acc = set_password(db, current, password)
                else:
                    raise WorldError(f"unknown account action {action!r}")
        finally:
            client.close()
        self.info.setdefault("accounts", {})[name] = acc.to_json()
        self.save()
        return acc

    def fault(self, kind: str, **params: Any) -> Any:
        """Send a fault to the Mongo sandbox (``syncd_sandbox.mongo.faults.send_fault``)."""
        from syncd_sandbox.mongo.faults import send_fault

        return send_fault(self.mongo_uri, kind, **params)

    # -- contents ---------------------------------------------------------------

    def _populate(self, seed: str) -> None:
        client: MongoClient[Any] = MongoClient(self.mongo_uri, tz_aware=True)
        try:
            db = client[self.database]
            with PdsApi(self.pds_url) as api:
                accounts: dict[str, WorldAccount] = {}
                guest = provision_guest(db, api)
                accounts[guest.name] = guest
                if seed == "demo":
                    ds = demo_dataset(self.dir / "images", store_base_url=self.image_base_url)
                    for user in ds.users:
                        accounts[user.name] = provision_user(
                            db, api, user.name, sub=user.sub, with_atproto=user.with_atproto
                        )
                    for name, docs in ds.documents.items():
                        if docs:
                            db[name].insert_many(docs)
                    sessions: dict[str, tuple[str, str]] = {}
                    for doc, _ in ds.legacy_moods:
                        acc = next(a for a in accounts.values() if a.sub == doc["user"])
                        if acc.sub not in sessions and acc.did and acc.password:
                            token = api.create_session(acc.did, acc.password)["accessJwt"]
                            sessions[acc.sub] = (acc.did, str(token))
                    create_legacy_records(db, api, sessions, ds)
                else:
                    for name in COLLECTIONS:
                        db.create_collection(name)
            self.info["accounts"] = {name: acc.to_json() for name, acc in accounts.items()}
            self.save()
        finally:
            client.close()

    def write_config(self) -> Path:
        sections = sandbox_sections(
            mongo_uri=self.mongo_uri,
            database=self.database,
            pds_url=self.pds_url,
            state_dir=self.info["state_dir"],
            image_base_url=self.image_base_url,
            metrics_port=int(self.info["metrics_port"]),
        )
        return write_config(self.config_path, sections)

    @property
    def mongo_uri(self) -> str:
        return str(self.info["mongo"]["uri"])

    @property
    def database(self) -> str:
        return str(self.info["mongo"]["database"])

    @property
    def pds_url(self) -> str:
        return str(self.info["pds"]["url"])

    @property
    def plc_url(self) -> str:
        return str(self.info["pds"]["plc_url"])

    @property
    def admin_password(self) -> str:
        return str(self.info["pds"]["admin_password"])

    @property
    def image_base_url(self) -> str:
        return str(self.info["images"]["base_url"])

    @property
    def config_path(self) -> Path:
        return Path(self.info["config_path"])

    @property
    def accounts(self) -> dict[str, WorldAccount]:
        return {n: WorldAccount.from_json(a) for n, a in self.info.get("accounts", {}).items()}

    def status(self) -> dict[str, ProcessStatus]:
        out: dict[str, ProcessStatus] = {}
        for name, rec in self.processes().items():
            running = rec.is_running()
            healthy = False
            if running:
                if name == "mongo":
                    healthy = ping(self.mongo_uri)
                elif name == "hooks":
                    healthy = bool(read_stats(self.dir).get("running"))
                elif name == "pds":
                    with PdsApi(self.pds_url) as api:
                        healthy = api.health()
                else:
                    try:
                        healthy = (
                            httpx.get(f"{self.image_base_url}/", timeout=2.0).status_code == 404
                        )
                    except httpx.HTTPError:
                        healthy = False
            out[name] = ProcessStatus(name, rec.pid, running, healthy)
        return out


def up(directory: str | Path, seed: str = "demo", rate_limits: bool = False) -> World:
    return World.up(directory, seed, rate_limits)


def down(directory: str | Path) -> list[str]:
    return World.load(directory).down()
