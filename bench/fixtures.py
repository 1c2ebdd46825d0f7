"""The benchmark's world: one sandbox (PDS + Mongo sandbox + image server), many databases.

Every scenario (and each side of a comparison) gets its own MongoDB database,
its own fresh PDS accounts, its own syncd config and state directory, so no run
starts from another run's repositories or ledger.
"""

from __future__ import annotations

import random
import shutil
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pymongo import MongoClient
from pymongo.database import Database

from syncd_sandbox import tokens
from syncd_sandbox.accounts import WorldAccount, store_user
from syncd_sandbox.pds import PdsApi
from syncd_sandbox.procs import ProcessRecord, free_port, spawn, stop_record, wait_ready_file
from syncd_sandbox.seed import (
    GUEST_USER_ID,
    make_kidlisp,
    make_mood,
    make_painting,
    make_piece,
    new_sub,
    short_code,
    when_ms,
    write_painting_files,
)
from syncd_sandbox.syncd_config import merge_sections, sandbox_sections, write_config
from syncd_sandbox.world import World

WORDS = ("sun", "rain", "paint", "blue", "happy", "tired", "code", "kid", "lisp", "ok", "🌈")
# Config values applied to every syncd config the benchmark writes (``--syncd-set``).
EXTRA_OVERRIDES: dict[str, dict[str, Any]] = {}

NSID = {
    "paintings": "computer.aesthetic.painting",
    "moods": "computer.aesthetic.mood",
    "pieces": "computer.aesthetic.piece",
    "kidlisp": "computer.aesthetic.kidlisp",
    "tapes": "computer.aesthetic.tape",
}


def up_world(directory: Path, *, rate_limits: bool = False) -> World:
    if directory.exists():
        try:
            World.load(directory).down()
        except Exception:
            pass
        shutil.rmtree(directory)
    world = World.up(directory, "empty", rate_limits)
    # Swap the image server for the same one with a deep listen backlog (bench/images.py).
    stop_record(world.processes()["images"])
    log_path = directory / "images.log"
    ready = directory / "images.ready.json"
    ready.unlink(missing_ok=True)
    argv = [sys.executable, "-m", "bench.images", "--root", world.info["images"]["root"]]
    proc = spawn([*argv, "--ready-file", str(ready)], log_path=log_path)
    info = wait_ready_file(proc, ready, name="image server", timeout=15.0, log_path=log_path)
    world.info["images"]["base_url"] = str(info["url"])
    world.info["images"]["url_template"] = f"{info['url']}/{{bucket}}/{{key}}"
    world.info["processes"]["images"] = ProcessRecord.capture(
        "images", proc.pid, log_path
    ).to_json()
    world.save()
    return world


@dataclass
class Space:
    """One database with its users (each with a fresh PDS account) and a syncd config."""

    world: World
    name: str
    users: list[WorldAccount]
    guest: WorldAccount
    config_path: Path
    state_dir: Path
    metrics_port: int
    _client: MongoClient[Any] | None = field(default=None, repr=False)

    @property
    def client(self) -> MongoClient[Any]:
        if self._client is None:
            self._client = MongoClient(self.world.mongo_uri, tz_aware=True)
        return self._client

    @property
    def db(self) -> Database[Any]:
        return self.client[self.name]

    def did_of(self, sub: str | None) -> str:
        if sub is None:
            assert self.guest.did is not None
            return self.guest.did
        for u in self.users:
            if u.sub == sub:
                assert u.did is not None
                return u.did
        raise KeyError(sub)

    def all_dids(self) -> list[str]:
        return [str(a.did) for a in [*self.users, self.guest]]

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


def _create_accounts(api_url: str, names: list[str], workers: int = 4) -> list[tuple[str, Any]]:
    local = threading.local()

    def one(name: str) -> tuple[str, Any]:
        api = getattr(local, "api", None)
        if api is None:
            api = local.api = PdsApi(api_url, timeout=60.0)
        handle = f"{name}-{tokens.token_hex(3)}"
        return name, api.create_account(handle)

    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(one, names))


def make_space(
    world: World,
    root: Path,
    name: str,
    n_users: int,
    *,
    overrides: dict[str, dict[str, Any]] | None = None,
) -> Space:
    """A database ``name`` with ``n_users`` users + the guest, all with new PDS accounts."""
    short = "".join(c for c in name if c.isalnum())[:6]
    names = [f"{short}u{i}" for i in range(n_users)] + [f"{short}art"]
    created = dict(_create_accounts(world.pds_url, names))
    client: MongoClient[Any] = MongoClient(world.mongo_uri, tz_aware=True)
    db = client[name]
    users = []
    for n in names[:-1]:
        a = created[n]
        acc = WorldAccount(n, new_sub(), a.did, a.handle, a.password)
        store_user(db, acc)
        users.append(acc)
    g = created[names[-1]]
    guest = WorldAccount("art", GUEST_USER_ID, g.did, g.handle, g.password)
    store_user(db, guest, platform_handle=False)
    for coll in NSID:
        if coll not in db.list_collection_names():
            db.create_collection(coll)
    state_dir = root / "state" / name
    if state_dir.exists():
        shutil.rmtree(state_dir)
    state_dir.mkdir(parents=True)
    port = free_port()
    sections = sandbox_sections(
        mongo_uri=world.mongo_uri,
        database=name,
        pds_url=world.pds_url,
        state_dir=state_dir,
        image_base_url=world.image_base_url,
        metrics_port=port,
    )
    config_path = root / "config" / f"{name}.toml"
    write_config(config_path, merge_sections(merge_sections(sections, overrides), EXTRA_OVERRIDES))
    return Space(world, name, users, guest, config_path, state_dir, port, client)


# -- documents ---------------------------------------------------------------


class DocFactory:
    """Seeded documents with the platform's field names; ``when`` spread over a past range."""

    def __init__(self, seed: int, start: datetime | None = None) -> None:
        self.rng = random.Random(seed)
        self.t = start or datetime(2023, 1, 1, tzinfo=UTC)

    def _when(self) -> datetime:
        self.t += timedelta(milliseconds=self.rng.randrange(1, 60_000))
        return when_ms(self.t)

    def text_doc(self, coll: str, user: str | None, when: datetime | None = None) -> dict[str, Any]:
        w = when or self._when()
        r = self.rng
        if coll == "moods":
            assert user is not None
            text = " ".join(r.choice(WORDS) for _ in range(r.randrange(2, 12)))
            return make_mood(user, text, w)
        if coll == "pieces":
            slug = f"piece-{short_code(r, 8)}".lower()
            if r.random() < 0.3:
                return make_piece(
                    user, slug, w, code=short_code(r, 4), source="function paint() {}"
                )
            return make_piece(user, slug, w)
        if coll == "kidlisp":
            src = "\n".join(
                f"({r.choice(('wipe', 'ink', 'line', 'box', 'repeat'))} {r.choice(WORDS[:6])})"
                for _ in range(r.randrange(1, 6))
            )
            return make_kidlisp(user, short_code(r, 6), src, w)
        raise ValueError(coll)

    def painting(
        self,
        image_root: Path,
        user: str | None,
        size: int,
        seed: int,
        when: datetime | None = None,
    ) -> dict[str, Any]:
        w = when or self._when()
        slug = w.strftime("%Y.%m.%d.%H.%M.%S.") + f"{w.microsecond // 1000:03d}{seed}"
        write_painting_files(image_root, user, slug, width=size, height=size, seed=seed)
        return make_painting(user, slug, short_code(self.rng, 6), w)


def mixed_text_docs(
    factory: DocFactory, owners: list[str | None], n: int, *, when_now: bool = False
) -> list[tuple[str, dict[str, Any]]]:
    """``n`` text documents: 45% kidlisp, 40% moods, 15% pieces, owners round-robin.

    Moods always belong to a user (the guest share is kidlisp and pieces only).
    """
    out = []
    users = [o for o in owners if o is not None]
    for i in range(n):
        x = factory.rng.random()
        coll = "kidlisp" if x < 0.45 else "moods" if x < 0.85 else "pieces"
        owner = owners[i % len(owners)]
        if coll == "moods" and owner is None:
            owner = users[i % len(users)]
        when = when_ms(datetime.now(UTC)) if when_now else None
        out.append((coll, factory.text_doc(coll, owner, when)))
    return out


def insert_grouped(
    db: Database[Any], docs: list[tuple[str, dict[str, Any]]], chunk: int = 2000
) -> None:
    """insert_many per collection, in chunks (fast bulk loading)."""
    by: dict[str, list[dict[str, Any]]] = {}
    for coll, doc in docs:
        by.setdefault(coll, []).append(doc)
    for coll, items in by.items():
        for i in range(0, len(items), chunk):
            db[coll].insert_many(items[i : i + chunk], ordered=False)
