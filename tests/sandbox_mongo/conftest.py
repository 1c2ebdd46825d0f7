"""Fixtures for the MongoDB sandbox's own tests (sandbox only, plain pymongo)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from pymongo import MongoClient
from pymongo.database import Database

from syncd_sandbox.mongo.process import SandboxProcess, start_sandbox_process


@pytest.fixture(scope="module")
def mongo() -> Iterator[SandboxProcess]:
    handle = start_sandbox_process(oplog_size=20_000)
    try:
        yield handle
    finally:
        handle.stop()


@pytest.fixture
def client(mongo: SandboxProcess) -> Iterator[MongoClient[dict[str, Any]]]:
    c: MongoClient[dict[str, Any]] = MongoClient(mongo.uri, serverSelectionTimeoutMS=10_000)
    try:
        yield c
    finally:
        c.close()


@pytest.fixture
def db(client: MongoClient[dict[str, Any]]) -> Iterator[Database[dict[str, Any]]]:
    name = f"sb_{uuid.uuid4().hex[:12]}"
    try:
        yield client[name]
    finally:
        client.drop_database(name)
