"""Backends for the change-stream conformance tests, driven with plain pymongo only.

``sandbox``: the MongoDB sandbox (``syncd_sandbox.mongo``) as a subprocess, shared by the
session; every test gets a fresh database. ``real``: the server at
``SYNCD_TEST_MONGODB_URI`` (a replica set with test commands enabled, for
``configureFailPoint``); skipped when that variable is unset.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pymongo import MongoClient
from pymongo.database import Database

from syncd_sandbox.mongo.process import SandboxProcess, start_sandbox_process

REAL_URI_ENV = "SYNCD_TEST_MONGODB_URI"
_HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every conformance test talks to a server process (the sandbox child, or a real
    replica set): they belong to the ``slow`` tier."""
    for item in items:
        if _HERE in item.path.parents:
            item.add_marker(pytest.mark.slow)


@dataclass
class Backend:
    name: str
    uri: str
    process: SandboxProcess | None = None

    @property
    def is_sandbox(self) -> bool:
        return self.process is not None

    def client(self, **kwargs: Any) -> MongoClient[dict[str, Any]]:
        kwargs.setdefault("serverSelectionTimeoutMS", 10_000)
        return MongoClient(self.uri, **kwargs)


@pytest.fixture(scope="session")
def sandbox_process() -> Iterator[SandboxProcess]:
    handle = start_sandbox_process(oplog_size=50_000)
    try:
        yield handle
    finally:
        handle.stop()


@pytest.fixture(params=["sandbox", "real"])
def backend(request: pytest.FixtureRequest) -> Backend:
    if request.param == "real":
        uri = os.environ.get(REAL_URI_ENV)
        if not uri:
            pytest.skip(
                f"{REAL_URI_ENV} is not set: no real MongoDB replica set to compare against"
            )
        return Backend("real", uri)
    handle: SandboxProcess = request.getfixturevalue("sandbox_process")
    return Backend("sandbox", handle.uri, handle)


@pytest.fixture
def sandbox(sandbox_process: SandboxProcess) -> Backend:
    """The sandbox backend alone, for tests of sandbox-only fault kinds."""
    return Backend("sandbox", sandbox_process.uri, sandbox_process)


@pytest.fixture
def client(backend: Backend) -> Iterator[MongoClient[dict[str, Any]]]:
    c = backend.client()
    try:
        yield c
    finally:
        try:
            for point in ("failCommand", "failGetMoreAfterCursorCheckout"):
                c.admin.command("configureFailPoint", point, mode="off")
        finally:
            c.close()


@pytest.fixture
def db(client: MongoClient[dict[str, Any]]) -> Iterator[Database[dict[str, Any]]]:
    name = f"conf_{uuid.uuid4().hex[:12]}"
    try:
        yield client[name]
    finally:
        client.drop_database(name)
