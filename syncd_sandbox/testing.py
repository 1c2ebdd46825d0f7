"""pytest fixtures for the sandbox world (import them in a ``conftest.py``).

Session-scoped, started once per test run and stopped at its end (also when
tests fail; the PDS also exits by itself if the test process dies):

* ``sandbox_pds_process`` / ``sandbox_pds`` -- the PDS (:class:`PdsProcess` /
  its :class:`PdsHandle`), rate limits off;
* ``sandbox_mongo`` -- the Mongo sandbox (:class:`ChildMongo`, ``.uri``);
* ``sandbox_mongo_client`` -- a ``MongoClient`` on it (``tz_aware=True``);
* ``rate_limited_pds_process`` / ``rate_limited_pds`` -- a second PDS with
  ``PDS_RATE_LIMITS_ENABLED=true``, started only when a test asks for it;
* ``short_window_pds`` -- ``short_window_pds(seconds)``: a rate-limited PDS whose
  repository-write budget lasts ``seconds`` instead of an hour (one per window,
  started when first asked for).

Function-scoped:

* ``world`` -- a :class:`SandboxWorld`: fresh database name, fresh PDS accounts
  (unique handles), fresh image dir with its own image server, generated
  ``syncd.toml``. Default users ``alice`` and ``bob`` (with ATProto accounts)
  and the guest ``art``; change them with
  ``@pytest.mark.sandbox_world(users=["alice"])``.
* ``rate_limited_world`` -- the same against the rate-limited PDS.
* ``make_world`` -- a factory: ``make_world(users=[...], rate_limited=False,
  rate_limit_window=None)`` (a window in seconds: the world is on ``short_window_pds``).

Usage in a conftest::

    from syncd_sandbox.testing import *  # noqa: F403
"""

from __future__ import annotations

import os
import re
import time
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from pymongo import MongoClient
from pymongo.database import Database

from syncd.config import Config, load
from syncd_sandbox import tokens
from syncd_sandbox.accounts import (
    GUEST_NAME,
    WorldAccount,
    create_account,
    delete_account,
    set_password,
    store_user,
)
from syncd_sandbox.hooks import HookOptions, PlatformHooks
from syncd_sandbox.images import ImageServer
from syncd_sandbox.invariant import InvariantReport, check_invariant
from syncd_sandbox.mongo_server import ChildMongo
from syncd_sandbox.pds import PdsApi, PdsHandle, PdsProcess, unique_handle
from syncd_sandbox.procs import free_port
from syncd_sandbox.seed import (
    GUEST_USER_ID,
    PaintingFiles,
    make_painting,
    new_sub,
    write_painting_files,
)
from syncd_sandbox.syncd_config import merge_sections, sandbox_sections, write_config

__all__ = [
    "SandboxWorld",
    "make_world",
    "pytest_configure",
    "rate_limited_pds",
    "rate_limited_pds_process",
    "rate_limited_world",
    "sandbox_mongo",
    "sandbox_mongo_client",
    "sandbox_pds",
    "sandbox_pds_process",
    "short_window_pds",
    "world",
]

DEFAULT_USERS = ("alice", "bob")
KEEP_ENV = "SYNCD_SANDBOX_KEEP"  # set to 1 to keep each test's database


class SandboxWorld:
    """One test's world on the shared servers.

    Attributes: ``pds`` (:class:`PdsHandle`), ``api`` (:class:`PdsApi`),
    ``mongo_uri``, ``database``, ``client``, ``db``, ``images``
    (:class:`ImageServer`), ``image_dir``, ``image_base_url``, ``state_dir``,
    ``config_path``, ``config`` (:class:`syncd.config.Config`), ``accounts``
    (name -> :class:`WorldAccount`, the guest is ``accounts["art"]``).
    """

    def __init__(
        self,
        *,
        tmp: Path,
        pds_process: PdsProcess,
        mongo: ChildMongo,
        client: MongoClient[Any],
        database: str,
    ) -> None:
        self.tmp = tmp
        self.pds_process = pds_process
        self.mongo = mongo
        self.client = client
        self.database = database
        self.db: Database[Any] = client[database]
        self.api = PdsApi(self.pds.url, admin_password=self.pds.admin_password)
        self.image_dir = tmp / "images"
        self.images = ImageServer(self.image_dir).start()
        self.state_dir = tmp / "state"
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.config_path = tmp / "syncd.toml"
        self.metrics_port = free_port()
        self.accounts: dict[str, WorldAccount] = {}
        self._config: Config | None = None
        self._overrides: dict[str, dict[str, Any]] = {}
        self._hooks: list[PlatformHooks] = []
        self._tokens: dict[str, str] = {}

    # -- servers --------------------------------------------------------------

    @property
    def pds(self) -> PdsHandle:
        return self.pds_process.handle

    @property
    def mongo_uri(self) -> str:
        return self.mongo.uri

    @property
    def image_base_url(self) -> str:
        return self.images.base_url

    def restart_mongo(self, pause_seconds: float = 0.0, *, kill: bool = False) -> None:
        """Stop (or SIGKILL) the Mongo sandbox, wait, start it again: same URI, data kept."""
        self.mongo.restart(pause_seconds, kill=kill)

    def restart_pds(self) -> None:
        """Stop the PDS and start it again on the same data and ports (accounts kept)."""
        self.pds_process.restart()

    def fault(self, kind: str, **params: Any) -> Any:
        """``syncd_sandbox.mongo.faults.send_fault(uri, kind, **params)``."""
        from syncd_sandbox.mongo.faults import send_fault

        return send_fault(self.mongo_uri, kind, **params)

    # -- config -----------------------------------------------------------------

    def write_config(self, overrides: Mapping[str, Mapping[str, Any]] | None = None) -> Config:
        """(Re)write ``syncd.toml``; ``overrides`` are merged per table and kept for later calls."""
        for name, table in (overrides or {}).items():
            self._overrides.setdefault(name, {}).update(table)
        sections = sandbox_sections(
            mongo_uri=self.mongo_uri,
            database=self.database,
            pds_url=self.pds.url,
            state_dir=self.state_dir,
            image_base_url=self.image_base_url,
            metrics_port=self.metrics_port,
        )
        write_config(self.config_path, merge_sections(sections, self._overrides))
        self._config = load(self.config_path, environ={})
        return self._config

    @property
    def config(self) -> Config:
        if self._config is None:
            return self.write_config()
        return self._config

    # -- accounts ---------------------------------------------------------------

    def add_user(
        self, name: str, with_atproto: bool = True, *, sub: str | None = None
    ) -> WorldAccount:
        """A platform user (``users`` + ``@handles`` docs), with a fresh PDS account if asked."""
        if name in self.accounts:
            raise ValueError(f"user {name!r} already exists in this world")
        sub = sub or new_sub()
        if with_atproto:
            created = self.api.create_account(unique_handle(name))
            account = WorldAccount(name, sub, created.did, created.handle, created.password)
            self._tokens[name] = created.access_jwt
        else:
            account = WorldAccount(name, sub)
        store_user(self.db, account)
        self.accounts[name] = account
        return account

    def create_account(self, who: str) -> WorldAccount:
        """The platform gives the existing user ``who`` (a new) ATProto account: created on
        the PDS, then ``users.atproto`` set."""
        acc = create_account(self.db, self.api, self.account(who))
        self.accounts[acc.name] = acc
        self._tokens.pop(acc.name, None)
        return acc

    def delete_account(self, who: str) -> WorldAccount:
        """The platform deletes ``who``'s ATProto account on the PDS, then unsets
        ``users.atproto``."""
        acc = delete_account(self.db, self.api, self.account(who))
        self.accounts[acc.name] = acc
        self._tokens.pop(acc.name, None)
        return acc

    def set_password(self, who: str, password: str) -> WorldAccount:
        """Store ``password`` in ``users`` for ``who`` (the PDS keeps the real one)."""
        acc = set_password(self.db, self.account(who), password)
        self.accounts[acc.name] = acc
        return acc

    def add_guest(self) -> WorldAccount:
        """The guest ``art`` account (``users._id == "art-guest"``)."""
        created = self.api.create_account(unique_handle(GUEST_NAME))
        account = WorldAccount(
            GUEST_NAME, GUEST_USER_ID, created.did, created.handle, created.password
        )
        self._tokens[GUEST_NAME] = created.access_jwt
        store_user(self.db, account, platform_handle=False)
        self.accounts[GUEST_NAME] = account
        return account

    @property
    def guest(self) -> WorldAccount:
        return self.accounts[GUEST_NAME]

    def account(self, who: str) -> WorldAccount:
        """By world name (``"alice"``, ``"art"``), sub or DID."""
        if who in self.accounts:
            return self.accounts[who]
        for acc in self.accounts.values():
            if who in (acc.sub, acc.did):
                return acc
        raise KeyError(who)

    def sub(self, who: str | None) -> str | None:
        """The ``user`` field for a document owned by ``who`` (None: guest content)."""
        return None if who is None else self.account(who).sub

    def did(self, who: str | None) -> str:
        acc = self.guest if who is None else self.account(who)
        if acc.did is None:
            raise ValueError(f"{acc.name} has no ATProto account")
        return acc.did

    def access_token(self, who: str) -> str:
        """A fresh access token (one createSession: mind its 30 per 5 minutes limit)."""
        acc = self.account(who)
        assert acc.did is not None and acc.password is not None
        return str(self.api.create_session(acc.did, acc.password)["accessJwt"])

    def session_token(self, who: str) -> str:
        """An access token of ``who`` ("art" for the guest) for writing straight to the PDS,
        kept per account: the one ``createAccount`` returned, else one ``createSession``."""
        name = self.account(who).name
        if name not in self._tokens:
            self._tokens[name] = self.access_token(name)
        return self._tokens[name]

    # -- PDS reads ----------------------------------------------------------------

    def list_records(self, who: str, nsid: str) -> list[dict[str, Any]]:
        """All records (``{uri, cid, value}``) of a collection, read from the PDS, all pages."""
        did = who if who.startswith("did:") else self.did(who)
        return self.api.list_records(did, nsid)

    def records_by_ref(self, who: str, nsid: str) -> dict[str, dict[str, Any]]:
        """Records keyed by their ``ref`` (the source document id); duplicates raise."""
        out: dict[str, dict[str, Any]] = {}
        for rec in self.list_records(who, nsid):
            ref = rec["value"].get("ref")
            if ref in out:
                raise AssertionError(f"two records for ref {ref}: {out[ref]['uri']}, {rec['uri']}")
            out[ref] = rec
        return out

    def get_record(self, who: str, nsid: str, rkey: str) -> dict[str, Any] | None:
        did = who if who.startswith("did:") else self.did(who)
        return self.api.get_record(did, nsid, rkey)

    def wait_for(
        self, predicate: Callable[[], Any], timeout: float = 20.0, interval: float = 0.1
    ) -> Any:
        """Poll ``predicate`` until it returns something truthy; fail after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"condition not met within {timeout}s")
            time.sleep(interval)

    # -- source content -------------------------------------------------------------

    def write_image(
        self,
        who: str | None,
        slug: str,
        *,
        width: int = 64,
        height: int = 64,
        seed: int = 0,
        data: bytes | None = None,
        recording: bool | bytes = False,
        layout: str = "painting",
        bucket: str | None = None,
        pixel_art: bool = False,
    ) -> PaintingFiles:
        """Store a painting's PNG (and recording zip) for owner ``who`` (None: guest) where
        the platform keeps it: ``{sub}/painting/{slug}.png`` in ``user-aesthetic-computer``
        (``layout="old"``: the oldest ``{sub}/{slug}.png``), ``{image}.png`` in
        ``art-aesthetic-computer`` for guests; ``bucket``: the document's own bucket."""
        return write_painting_files(
            self.image_dir,
            self.sub(who),
            slug,
            width=width,
            height=height,
            seed=seed,
            data=data,
            recording=recording,
            layout=layout,
            bucket=bucket,
            pixel_art=pixel_art,
        )

    def add_painting(
        self,
        who: str | None,
        slug: str | None = None,
        *,
        image: bool = True,
        width: int = 64,
        height: int = 64,
        recording: bool = False,
        layout: str = "painting",
        pixel_art: bool = False,
        data: bytes | None = None,
        **fields: Any,
    ) -> dict[str, Any]:
        """Insert a ``paintings`` document and store its image (see :meth:`write_image`).

        ``image=False``: the document's image is missing from storage. ``layout="old"``:
        the image sits at the oldest ``{sub}/{slug}.png`` key. A ``bucket`` field in
        ``fields`` is the document's own bucket and the files go there.
        """
        doc = make_painting(self.sub(who), slug, **fields)
        if image:
            self.write_image(
                who,
                doc["slug"],
                width=width,
                height=height,
                seed=zlib.crc32(doc["slug"].encode()),
                data=data,
                recording=recording,
                layout=layout,
                bucket=doc.get("bucket"),
                pixel_art=pixel_art,
            )
        self.db.paintings.insert_one(doc)
        return doc

    def insert(self, collection: str, *docs: dict[str, Any]) -> list[dict[str, Any]]:
        if docs:
            self.db[collection].insert_many(list(docs))
        return list(docs)

    def check_invariant(self, **kwargs: Any) -> InvariantReport:
        """The independent invariant checker on this world (MongoDB + PDS + image store)."""
        kwargs.setdefault("image_url_template", self.images.url_template)
        kwargs.setdefault("pds_blob_limit", self.pds.blob_upload_limit or None)
        return check_invariant(self.db, self.pds.url, **kwargs)

    # -- the platform's own writers ------------------------------------------------------

    def start_hooks(
        self,
        *,
        delay_ms: tuple[int, int] = (20, 200),
        writeback_delay_ms: tuple[int, int] = (20, 200),
        lose_fraction: float = 0.0,
        seed: int | None = None,
        **options: Any,
    ) -> PlatformHooks:
        """Start the platform's inline writers on this world (see :mod:`syncd_sandbox.hooks`):
        every public insert from now on gets a record with a PDS-picked key after
        ``delay_ms``, and its ``atproto.rkey``/``uri`` after ``writeback_delay_ms`` -- except a
        ``lose_fraction`` of them. Stopped by :meth:`PlatformHooks.stop` or at teardown."""
        hooks = PlatformHooks(
            self.mongo_uri,
            self.database,
            self.pds.url,
            self.images.url_template,
            HookOptions(
                delay_ms=delay_ms,
                writeback_delay_ms=writeback_delay_ms,
                lose_fraction=lose_fraction,
                seed=seed,
                **options,
            ),
        ).start()
        self._hooks.append(hooks)
        return hooks

    @contextmanager
    def hooks(self, **options: Any) -> Iterator[PlatformHooks]:
        """``with world.hooks(delay_ms=(10, 50), lose_fraction=0.2, seed=1) as h:`` --
        :meth:`start_hooks` for the block; ``h.stats``, ``h.created``, ``h.wait_idle()``."""
        hooks = self.start_hooks(**options)
        try:
            yield hooks
        finally:
            self._stop_hooks(hooks)

    def _stop_hooks(self, hooks: PlatformHooks) -> None:
        if hooks in self._hooks:
            self._hooks.remove(hooks)
            hooks.stop()

    # -- teardown ---------------------------------------------------------------------

    def close(self, *, drop: bool = True) -> None:
        for hooks in list(self._hooks):
            try:
                self._stop_hooks(hooks)
            except Exception:  # the Mongo sandbox may be down after a chaos test
                pass
        self.images.stop()
        self.api.close()
        if drop and not os.environ.get(KEEP_ENV):
            try:
                self.client.drop_database(self.database)
            except Exception:  # the Mongo sandbox may be down after a chaos test
                pass


def _start_pds(
    base: Path, name: str, rate_limits: bool, rate_limit_window: int | None = None
) -> PdsProcess:
    proc = PdsProcess(
        base / name,
        rate_limits=rate_limits,
        rate_limit_window=rate_limit_window,
        log_path=base / f"{name}.log",
    )
    proc.start()
    return proc


@pytest.fixture(scope="session")
def sandbox_pds_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PdsProcess]:
    proc = _start_pds(tmp_path_factory.mktemp("sandbox-pds"), "pds", rate_limits=False)
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="session")
def sandbox_pds(sandbox_pds_process: PdsProcess) -> PdsHandle:
    return sandbox_pds_process.handle


@pytest.fixture(scope="session")
def rate_limited_pds_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PdsProcess]:
    proc = _start_pds(tmp_path_factory.mktemp("sandbox-pds-rl"), "pds", rate_limits=True)
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="session")
def rate_limited_pds(rate_limited_pds_process: PdsProcess) -> PdsHandle:
    return rate_limited_pds_process.handle


@pytest.fixture(scope="session")
def short_window_pds(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[[int], PdsProcess]]:
    """``short_window_pds(seconds)``: a rate-limited PDS whose write budget lasts ``seconds``."""
    started: dict[int, PdsProcess] = {}

    def get(seconds: int) -> PdsProcess:
        if seconds not in started:
            base = tmp_path_factory.mktemp(f"sandbox-pds-w{seconds}")
            started[seconds] = _start_pds(base, "pds", True, seconds)
        return started[seconds]

    try:
        yield get
    finally:
        for proc in started.values():
            proc.stop()


@pytest.fixture(scope="session")
def sandbox_mongo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChildMongo]:
    mongo = ChildMongo(tmp_path_factory.mktemp("sandbox-mongo") / "data")
    mongo.start()
    try:
        yield mongo
    finally:
        mongo.stop()


@pytest.fixture(scope="session")
def sandbox_mongo_client(sandbox_mongo: ChildMongo) -> Iterator[MongoClient[Any]]:
    client: MongoClient[Any] = MongoClient(
        sandbox_mongo.uri, tz_aware=True, serverSelectionTimeoutMS=10_000
    )
    try:
        yield client
    finally:
        client.close()


_counter = 0


def _database_name(node_name: str) -> str:
    global _counter
    _counter += 1
    clean = re.sub(r"[^A-Za-z0-9_]", "_", node_name)[:36]
    return f"t{_counter:04d}_{clean}_{tokens.token_hex(2)}"


def _marker_users(request: pytest.FixtureRequest) -> Sequence[str]:
    marker = request.node.get_closest_marker("sandbox_world")
    if marker is None:
        return DEFAULT_USERS
    return tuple(marker.kwargs.get("users", DEFAULT_USERS))


WorldFactory = Callable[..., SandboxWorld]


@pytest.fixture
def make_world(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    sandbox_mongo: ChildMongo,
    sandbox_mongo_client: MongoClient[Any],
) -> Iterator[WorldFactory]:
    """``make_world(users=("alice", "bob"), rate_limited=False, guest=True,
    rate_limit_window=None)``."""
    made: list[SandboxWorld] = []

    def factory(
        users: Sequence[str] | None = None,
        *,
        rate_limited: bool = False,
        guest: bool = True,
        rate_limit_window: int | None = None,
    ) -> SandboxWorld:
        pds_process: PdsProcess
        if rate_limit_window is not None:
            pds_process = request.getfixturevalue("short_window_pds")(rate_limit_window)
        else:
            pds_fixture = "rate_limited_pds_process" if rate_limited else "sandbox_pds_process"
            pds_process = request.getfixturevalue(pds_fixture)
        tmp = tmp_path / f"world{len(made)}"
        tmp.mkdir()
        w = SandboxWorld(
            tmp=tmp,
            pds_process=pds_process,
            mongo=sandbox_mongo,
            client=sandbox_mongo_client,
            database=_database_name(request.node.name),
        )
        made.append(w)
        if guest:
            w.add_guest()
        for name in _marker_users(request) if users is None else users:
            w.add_user(name)
        w.write_config()
        return w

    try:
        yield factory
    finally:
        for w in made:
            # A chaos test may leave a shared server stopped: bring it back for the next test.
            w.mongo.ensure_running()
            w.pds_process.ensure_running()
            w.close()


@pytest.fixture
def world(make_world: WorldFactory) -> SandboxWorld:
    """A fresh world on the session PDS (rate limits off) and the session Mongo sandbox."""
    return make_world()


@pytest.fixture
def rate_limited_world(make_world: WorldFactory) -> SandboxWorld:
    """A fresh world on the rate-limited PDS."""
    return make_world(rate_limited=True)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "sandbox_world(users=[...]): platform users (with ATProto accounts) the `world` "
        "fixture creates besides the guest `art` (default: alice, bob)",
    )
